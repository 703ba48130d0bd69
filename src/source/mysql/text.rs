//! Binlog values rendered exactly as `SELECT` over the text protocol shows them, so a streamed row
//! and a snapshot row of the same data are byte-identical.
//!
//! The numeric and temporal rules below were checked against MariaDB 10.11 (`SELECT` output of the
//! same values); the MySQL-only JSONB printer follows MySQL's documented output and is untested here.

use std::fmt::Write as _;

use chrono::DateTime;
use mysql_async::Value;
use mysql_async::binlog::jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar};
use mysql_async::binlog::value::BinlogValue;

use crate::source::ColumnValue;

/// How a column's binlog value must be rendered; derived from the TABLE_MAP column type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// TINYINT..BIGINT; `width` bytes, for re-reading a sign-extended value as unsigned.
    Integer { width: u8 },
    /// FLOAT, optionally with a fixed number of decimals (`FLOAT(M,D)`).
    Float { scale: Option<u32> },
    /// DOUBLE, optionally with a fixed number of decimals (`DOUBLE(M,D)`).
    Double { scale: Option<u32> },
    /// DATE.
    Date,
    /// DATETIME(fsp).
    DateTime { fsp: u8 },
    /// TIME(fsp).
    Time { fsp: u8 },
    /// TIMESTAMP(fsp): the binlog carries epoch seconds, the text protocol session time (UTC here).
    Timestamp { fsp: u8 },
    /// YEAR.
    Year,
    /// ENUM: the binlog carries the 1-based index.
    Enum { values: Vec<String> },
    /// SET: the binlog carries a little-endian bitmask.
    Set { values: Vec<String> },
    /// Everything shown as its bytes: DECIMAL, strings, blobs, BIT, JSON on MariaDB, GEOMETRY.
    Bytes,
    /// MySQL binary JSON.
    Json,
}

/// The information needed to render one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnInfo {
    /// Column name as the server reports it.
    pub name: String,
    /// Rendering rule.
    pub kind: ColumnKind,
    /// The column is UNSIGNED but the binlog lacked signedness metadata, so negative values are
    /// sign-extended unsigned values.
    pub reinterpret_unsigned: bool,
}

/// Why a binlog value could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TextError {
    /// MySQL partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`) carry diffs, not values.
    #[error("column {column}: partial JSON update cannot be rendered; set binlog_row_value_options=''")]
    PartialJson {
        /// Column name.
        column: String,
    },
    /// The binary JSON could not be parsed.
    #[error("column {column}: invalid binary JSON: {detail}")]
    Json {
        /// Column name.
        column: String,
        /// Parser message.
        detail: String,
    },
}

/// Per-value facts the binlog decoder knows from the TABLE_MAP metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BinlogFacts {
    /// The decoder applied UNSIGNED (signedness metadata).
    pub unsigned: bool,
    /// Collation id of a character column (0 when unknown).
    pub collation: u16,
}

/// MySQL/MariaDB collation ids of the `latin1` character set (which is Windows-1252).
const LATIN1_COLLATIONS: &[u16] = &[5, 8, 15, 31, 47, 48, 49, 94, 1032, 1071];

/// Windows-1252 code points for bytes 0x80..=0x9F (MySQL's latin1 keeps 0x81/0x8D/0x8F/0x90/0x9D).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D,
    0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
    0x0153, 0x009D, 0x017E, 0x0178,
];

/// Character bytes as UTF-8 text: the binlog carries them in the column's charset, while the text
/// protocol converts to the connection's utf8mb4. latin1 is converted; UTF-8, ASCII and binary
/// are shown as is (lossy for invalid UTF-8); other charsets are not converted.
pub(crate) fn decode_chars(bytes: &[u8], collation: u16) -> String {
    if !LATIN1_COLLATIONS.contains(&collation) {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => {
                CP1252_HIGH.get(usize::from(b - 0x80)).and_then(|&c| char::from_u32(u32::from(c))).unwrap_or('\u{fffd}')
            }
            _ => char::from(b),
        })
        .collect()
}

/// Renders one binlog value as the text protocol would.
pub(crate) fn render(
    value: &BinlogValue<'_>,
    column: &ColumnInfo,
    facts: BinlogFacts,
) -> Result<ColumnValue, TextError> {
    let binlog_unsigned = facts.unsigned;
    match value {
        BinlogValue::Value(Value::NULL) => Ok(ColumnValue::Null),
        BinlogValue::Value(Value::Bytes(b)) if column.kind == ColumnKind::Bytes => {
            Ok(ColumnValue::Text(decode_chars(b, facts.collation)))
        }
        BinlogValue::Value(Value::Int(i)) if column.kind == (ColumnKind::Integer { width: 3 }) && !binlog_unsigned => {
            Ok(ColumnValue::Text(render_value(&Value::Int(sign_extend_24(*i)), column)))
        }
        BinlogValue::Value(v) => Ok(ColumnValue::Text(render_value(v, column))),
        BinlogValue::Jsonb(j) => {
            let dom = j
                .clone()
                .parse()
                .map_err(|e| TextError::Json { column: column.name.clone(), detail: e.to_string() })?;
            let mut out = String::new();
            write_json(&mut out, &dom);
            Ok(ColumnValue::Text(out))
        }
        BinlogValue::JsonDiff(_) => Err(TextError::PartialJson { column: column.name.clone() }),
    }
}

/// mysql_common 0.37 reads a signed MEDIUMINT without sign extension (`eat_i24_le` zero-pads),
/// so -1 arrives as 16777215.
fn sign_extend_24(value: i64) -> i64 {
    if (1 << 23..1 << 24).contains(&value) { value - (1 << 24) } else { value }
}

fn render_value(value: &Value, column: &ColumnInfo) -> String {
    match (value, &column.kind) {
        (Value::Int(i), ColumnKind::Enum { values }) => enum_name(*i, values),
        (Value::Int(i), ColumnKind::Timestamp { fsp }) => timestamp_text(*i, 0, *fsp),
        (Value::Int(i), ColumnKind::Integer { width }) if column.reinterpret_unsigned && *i < 0 => {
            as_unsigned(*i, *width).to_string()
        }
        (Value::Int(i), _) => i.to_string(),
        (Value::UInt(u), _) => u.to_string(),
        (Value::Float(f), ColumnKind::Float { scale: Some(s) } | ColumnKind::Double { scale: Some(s) }) => {
            fixed(f64::from(*f), *s)
        }
        (Value::Double(d), ColumnKind::Float { scale: Some(s) } | ColumnKind::Double { scale: Some(s) }) => {
            fixed(*d, *s)
        }
        (Value::Float(f), _) => format_float(*f),
        (Value::Double(d), _) => format_double(*d),
        (Value::Date(y, m, d, ..), ColumnKind::Date) => format!("{y:04}-{m:02}-{d:02}"),
        (Value::Date(y, mo, d, h, mi, s, us), kind) => {
            let fsp = match kind {
                ColumnKind::DateTime { fsp } | ColumnKind::Timestamp { fsp } => *fsp,
                _ => 0,
            };
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}", fraction(*us, fsp))
        }
        (Value::Time(neg, days, h, m, s, us), kind) => {
            let fsp = if let ColumnKind::Time { fsp } = kind { *fsp } else { 0 };
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            format!("{sign}{hours:02}:{m:02}:{s:02}{}", fraction(*us, fsp))
        }
        (Value::Bytes(b), ColumnKind::Timestamp { fsp }) => epoch_bytes_text(b, *fsp),
        (Value::Bytes(b), ColumnKind::Year) if b.as_slice() == b"1900" => "0000".to_owned(),
        (Value::Bytes(b), ColumnKind::Set { values }) => set_names(b, values),
        (Value::Bytes(b), _) => String::from_utf8_lossy(b).into_owned(),
        (Value::NULL, _) => String::new(),
    }
}

/// ENUM index to its name; 0 is the "invalid value" MySQL shows as the empty string.
pub(crate) fn enum_name(index: i64, values: &[String]) -> String {
    usize::try_from(index).ok().and_then(|i| i.checked_sub(1)).and_then(|i| values.get(i)).cloned().unwrap_or_default()
}

/// SET bitmask (little-endian bytes) to the comma-joined member names, in definition order.
pub(crate) fn set_names(mask: &[u8], values: &[String]) -> String {
    let is_set = |bit: usize| mask.get(bit / 8).is_some_and(|byte| byte & (1 << (bit % 8)) != 0);
    values
        .iter()
        .enumerate()
        .filter(|(bit, _)| is_set(*bit))
        .map(|(_, name)| name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn as_unsigned(value: i64, width: u8) -> u64 {
    // Two's complement re-read of a sign-extended `width`-byte integer.
    let bits = u32::from(width.clamp(1, 8)) * 8;
    let raw = value as u64;
    if bits == 64 { raw } else { raw & ((1u64 << bits) - 1) }
}

/// `.ffffff` cut to the column's fractional-second precision (empty for fsp 0).
fn fraction(micros: u32, fsp: u8) -> String {
    if fsp == 0 {
        return String::new();
    }
    let digits = format!("{micros:06}");
    let keep = usize::from(fsp.min(6));
    format!(".{}", digits.get(..keep).unwrap_or(&digits))
}

/// TIMESTAMP from the binlog's `"<seconds>[.<micros>]"`.
fn epoch_bytes_text(bytes: &[u8], fsp: u8) -> String {
    let text = String::from_utf8_lossy(bytes);
    let (secs, micros) = text.split_once('.').unwrap_or((&text, "0"));
    match (secs.parse::<i64>(), micros.parse::<u32>()) {
        (Ok(s), Ok(us)) => timestamp_text(s, us, fsp),
        _ => text.into_owned(),
    }
}

/// Epoch to UTC text; epoch 0 is MySQL's zero TIMESTAMP.
pub(crate) fn timestamp_text(secs: i64, micros: u32, fsp: u8) -> String {
    if secs == 0 && micros == 0 {
        return format!("0000-00-00 00:00:00{}", fraction(0, fsp));
    }
    match DateTime::from_timestamp(secs, 0) {
        Some(t) => format!("{}{}", t.format("%Y-%m-%d %H:%M:%S"), fraction(micros, fsp)),
        None => secs.to_string(),
    }
}

fn fixed(value: f64, scale: u32) -> String {
    format!("{:.*}", scale as usize, value)
}

/// DOUBLE as MariaDB/MySQL print it: shortest round-trip digits, `%g`-like layout.
pub(crate) fn format_double(value: f64) -> String {
    gcvt(&format!("{value:e}"))
}

/// FLOAT as MariaDB/MySQL print it: 6 significant digits (FLT_DIG), `%g`-like layout.
pub(crate) fn format_float(value: f32) -> String {
    gcvt(&format!("{:.5e}", f64::from(value)))
}

/// Lays out Rust's `d.ddde±x` the way the server's `my_gcvt` does: fixed notation while the decimal
/// point is within 15 digits (DBL_DIG) of the first digit or all digits are already printed,
/// exponent notation (`1e20`, `1.5e-16`) otherwise.
fn gcvt(scientific: &str) -> String {
    let Some((mantissa, exp)) = scientific.split_once('e') else {
        return scientific.to_owned(); // inf/NaN: not storable in MySQL anyway
    };
    let Ok(exp) = exp.parse::<i64>() else {
        return scientific.to_owned();
    };
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let all: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = all.trim_end_matches('0');
    if digits.is_empty() {
        return format!("{sign}0");
    }
    let len = digits.len() as i64;
    let decpt = exp + 1;
    let fixed_form = if decpt <= 0 { decpt > -15 } else { decpt <= 15 || len > decpt };
    let body = if fixed_form { fixed_layout(digits, decpt) } else { exp_layout(digits, exp) };
    format!("{sign}{body}")
}

fn fixed_layout(digits: &str, decpt: i64) -> String {
    let len = digits.len() as i64;
    if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
    } else if decpt < len {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{int}.{frac}")
    } else {
        format!("{digits}{}", "0".repeat((decpt - len) as usize))
    }
}

fn exp_layout(digits: &str, exp: i64) -> String {
    let (first, rest) = digits.split_at(1);
    if rest.is_empty() { format!("{first}e{exp}") } else { format!("{first}.{rest}e{exp}") }
}

/// MySQL's JSON text form: `{"k": [1, 2]}`, keys ordered by length then bytes.
fn write_json(out: &mut String, dom: &JsonDom) {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        JsonDom::Container(JsonContainer::Object(map)) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_string(out, key);
                out.push_str(": ");
                write_json(out, value);
            }
            out.push('}');
        }
        JsonDom::Scalar(scalar) => write_json_scalar(out, scalar),
    }
}

fn write_json_scalar(out: &mut String, scalar: &JsonScalar) {
    match scalar {
        JsonScalar::Null => out.push_str("null"),
        JsonScalar::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        JsonScalar::String(s) => write_json_string(out, s),
        JsonScalar::DateTime(t) => write_json_string(out, &format!("{t:.6}")),
        JsonScalar::Opaque(o) => write_json_string(out, &o.to_string()),
        JsonScalar::Number(JsonNumber::Int(i)) => out.push_str(&i.to_string()),
        JsonScalar::Number(JsonNumber::Uint(u)) => out.push_str(&u.to_string()),
        JsonScalar::Number(JsonNumber::Decimal(d)) => out.push_str(&d.to_string()),
        JsonScalar::Number(JsonNumber::Double(d)) => {
            let text = format_double(*d);
            out.push_str(&text);
            // MySQL keeps a double recognisable as one: 1.0, not 1.
            if !text.contains(['.', 'e']) {
                out.push_str(".0");
            }
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses the member list of an `enum('a','b')` / `set('x','y')` COLUMN_TYPE (SQL quoting).
pub(crate) fn parse_member_list(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else {
        return Vec::new();
    };
    let mut members = Vec::new();
    let mut chars = column_type.get(start + 1..).unwrap_or("").chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                '\\' => member.extend(chars.next()),
                c => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnKind) -> ColumnInfo {
        ColumnInfo { name: "c".into(), kind, reinterpret_unsigned: false }
    }

    fn text(v: Value, kind: ColumnKind) -> String {
        match render(&BinlogValue::Value(v), &col(kind), BinlogFacts::default()).unwrap() {
            ColumnValue::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn null_is_null_for_every_kind() {
        for kind in [ColumnKind::Bytes, ColumnKind::Integer { width: 4 }, ColumnKind::Timestamp { fsp: 3 }] {
            assert_eq!(
                render(&BinlogValue::Value(Value::NULL), &col(kind), BinlogFacts::default()),
                Ok(ColumnValue::Null)
            );
        }
    }

    #[test]
    fn integers_signed_and_unsigned() {
        assert_eq!(text(Value::Int(1), ColumnKind::Integer { width: 1 }), "1");
        assert_eq!(text(Value::Int(0), ColumnKind::Integer { width: 1 }), "0");
        assert_eq!(text(Value::Int(-128), ColumnKind::Integer { width: 1 }), "-128");
        assert_eq!(text(Value::UInt(u64::MAX), ColumnKind::Integer { width: 8 }), "18446744073709551615");
        let mut c = col(ColumnKind::Integer { width: 8 });
        c.reinterpret_unsigned = true;
        assert_eq!(
            render(&BinlogValue::Value(Value::Int(-6)), &c, BinlogFacts::default()),
            Ok(ColumnValue::Text("18446744073709551610".into()))
        );
        c.kind = ColumnKind::Integer { width: 3 };
        assert_eq!(
            render(&BinlogValue::Value(Value::Int(-1)), &c, BinlogFacts::default()),
            Ok(ColumnValue::Text("16777215".into()))
        );
        // Zero-padded signed MEDIUMINT from mysql_common, with and without UNSIGNED.
        let m = col(ColumnKind::Integer { width: 3 });
        assert_eq!(
            render(&BinlogValue::Value(Value::Int(8_388_608)), &m, BinlogFacts::default()),
            Ok(ColumnValue::Text("-8388608".into()))
        );
        assert_eq!(
            render(&BinlogValue::Value(Value::Int(16_777_215)), &m, BinlogFacts::default()),
            Ok(ColumnValue::Text("-1".into()))
        );
        assert_eq!(
            render(&BinlogValue::Value(Value::Int(16_777_215)), &m, BinlogFacts { unsigned: true, collation: 0 }),
            Ok(ColumnValue::Text("16777215".into()))
        );
        assert_eq!(
            render(&BinlogValue::Value(Value::Int(8_388_607)), &m, BinlogFacts::default()),
            Ok(ColumnValue::Text("8388607".into()))
        );
    }

    #[test]
    fn doubles_match_mariadb_output() {
        let cases = [
            (1e20, "1e20"),
            (1e15, "1e15"),
            (1e14, "100000000000000"),
            (1.2345678901234567e15, "1234567890123456.8"),
            (1.2345678901234568e16, "1.2345678901234568e16"),
            (1e-15, "0.000000000000001"),
            (1e-16, "1e-16"),
            (1.2345678901234568e-22, "1.2345678901234568e-22"),
            (-2.5e-7, "-0.00000025"),
            (0.3, "0.3"),
            (100.0, "100"),
            (0.0, "0"),
            (-1.5, "-1.5"),
        ];
        for (v, want) in cases {
            assert_eq!(format_double(v), want, "{v:e}");
        }
    }

    #[test]
    fn floats_use_six_significant_digits() {
        let cases = [
            (123_456.7_f32, "123457"),
            (1_234_567.0, "1234570"),
            (12_345_678.0, "12345700"),
            (3.4e38, "3.4e38"),
            (1e7, "10000000"),
            (0.1, "0.1"),
            (1.5e-5, "0.000015"),
            (1.234567e15, "1.23457e15"),
            (1.234567e-16, "1.23457e-16"),
        ];
        for (v, want) in cases {
            assert_eq!(format_float(v), want, "{v:e}");
        }
        assert_eq!(text(Value::Double(1.5), ColumnKind::Double { scale: Some(3) }), "1.500");
        assert_eq!(text(Value::Float(1.5), ColumnKind::Float { scale: Some(2) }), "1.50");
    }

    #[test]
    fn temporal_values() {
        assert_eq!(text(Value::Date(2024, 1, 2, 0, 0, 0, 0), ColumnKind::Date), "2024-01-02");
        assert_eq!(
            text(Value::Date(2024, 1, 2, 3, 4, 5, 678_000), ColumnKind::DateTime { fsp: 3 }),
            "2024-01-02 03:04:05.678"
        );
        assert_eq!(text(Value::Date(2024, 1, 2, 3, 4, 5, 0), ColumnKind::DateTime { fsp: 0 }), "2024-01-02 03:04:05");
        assert_eq!(text(Value::Date(0, 0, 0, 0, 0, 0, 0), ColumnKind::DateTime { fsp: 0 }), "0000-00-00 00:00:00");
        assert_eq!(text(Value::Time(true, 1, 2, 3, 4, 500_000), ColumnKind::Time { fsp: 1 }), "-26:03:04.5");
        assert_eq!(text(Value::Time(false, 34, 22, 59, 59, 0), ColumnKind::Time { fsp: 0 }), "838:59:59");
        assert_eq!(text(Value::Bytes(b"1704164645".to_vec()), ColumnKind::Timestamp { fsp: 0 }), "2024-01-02 03:04:05");
        assert_eq!(
            text(Value::Bytes(b"1704164645.120000".to_vec()), ColumnKind::Timestamp { fsp: 2 }),
            "2024-01-02 03:04:05.12"
        );
        assert_eq!(text(Value::Bytes(b"0".to_vec()), ColumnKind::Timestamp { fsp: 0 }), "0000-00-00 00:00:00");
        assert_eq!(text(Value::Int(1704164645), ColumnKind::Timestamp { fsp: 0 }), "2024-01-02 03:04:05");
        assert_eq!(text(Value::Bytes(b"2155".to_vec()), ColumnKind::Year), "2155");
        assert_eq!(text(Value::Bytes(b"1900".to_vec()), ColumnKind::Year), "0000");
    }

    #[test]
    fn enum_and_set_map_through_member_names() {
        let members = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(text(Value::Int(2), ColumnKind::Enum { values: members.clone() }), "b");
        assert_eq!(text(Value::Int(0), ColumnKind::Enum { values: members.clone() }), "");
        assert_eq!(text(Value::Int(9), ColumnKind::Enum { values: members.clone() }), "");
        assert_eq!(text(Value::Bytes(vec![0b101]), ColumnKind::Set { values: members.clone() }), "a,c");
        assert_eq!(text(Value::Bytes(vec![0]), ColumnKind::Set { values: members.clone() }), "");
        let many: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        assert_eq!(set_names(&[0x01, 0x02], &many), "m0,m9");
    }

    #[test]
    fn bytes_are_binary_safe() {
        assert_eq!(text(Value::Bytes(b"12.50".to_vec()), ColumnKind::Bytes), "12.50");
        assert_eq!(text(Value::Bytes(vec![0xff, b'a']), ColumnKind::Bytes), "\u{fffd}a");
        assert_eq!(text(Value::Bytes("héllo".as_bytes().to_vec()), ColumnKind::Bytes), "héllo");
        assert_eq!(text(Value::Bytes(br#"{"a": 1}"#.to_vec()), ColumnKind::Json), r#"{"a": 1}"#);
        // latin1 (Windows-1252) bytes become UTF-8 like the text protocol's conversion.
        assert_eq!(decode_chars(&[b'h', 0xE9, 0x80, 0x81], 8), "hé€\u{81}");
        assert_eq!(decode_chars(&[0xE9], 45), "\u{fffd}");
        assert_eq!(decode_chars(&[0xE9], 63), "\u{fffd}");
    }

    #[test]
    fn mysql_json_is_printed_like_mysql() {
        use std::collections::BTreeMap;
        let mut map = BTreeMap::new();
        map.insert("bb".to_owned(), JsonDom::Scalar(JsonScalar::Number(JsonNumber::Double(1.0))));
        map.insert("c".to_owned(), JsonDom::Scalar(JsonScalar::String("x\"\n".into())));
        map.insert(
            "a".to_owned(),
            JsonDom::Container(JsonContainer::Array(vec![
                JsonDom::Scalar(JsonScalar::Number(JsonNumber::Int(1))),
                JsonDom::Scalar(JsonScalar::Boolean(true)),
                JsonDom::Scalar(JsonScalar::Null),
            ])),
        );
        let mut out = String::new();
        write_json(&mut out, &JsonDom::Container(JsonContainer::Object(map)));
        assert_eq!(out, r#"{"a": [1, true, null], "c": "x\"\n", "bb": 1.0}"#);
    }

    #[test]
    fn member_lists_from_information_schema() {
        assert_eq!(parse_member_list("enum('a','b c','it''s')"), vec!["a", "b c", "it's"]);
        assert_eq!(parse_member_list("set('x','y')"), vec!["x", "y"]);
        assert!(parse_member_list("int(11)").is_empty());
    }
}
