//! Go `fmt` formatting of template values: `%v` printing and a `printf` implementation.

use std::fmt::Write as _;

use minijinja::value::{Value, ValueKind};

use super::typed::{number_to_f64, number_to_i64};

/// Go's `%v` rendering of a value (what `{{ x }}` prints in Go syntax).
pub fn format_value(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => "<nil>".to_owned(),
        ValueKind::Bool => value.is_true().to_string(),
        ValueKind::Number if is_float(value) => format_float(number_to_f64(value)),
        ValueKind::Number => value.to_string(),
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Bytes => String::from_utf8_lossy(value.as_bytes().unwrap_or_default()).into(),
        ValueKind::Map => format_map(value, &format_value),
        ValueKind::Seq | ValueKind::Iterable => format_seq(value, &format_value),
        _ => value.to_string(),
    }
}

fn format_seq(value: &Value, item: &dyn Fn(&Value) -> String) -> String {
    let items: Vec<String> = value.try_iter().map(|iter| iter.map(|v| item(&v)).collect()).unwrap_or_default();
    format!("[{}]", items.join(" "))
}

fn format_map(value: &Value, item: &dyn Fn(&Value) -> String) -> String {
    let mut pairs: Vec<(String, String)> = value
        .try_iter()
        .map(|keys| {
            keys.map(|k| {
                let v = value.get_item(&k).unwrap_or_default();
                (format_value(&k), item(&v))
            })
            .collect()
        })
        .unwrap_or_default();
    // Go prints maps sorted by key.
    pairs.sort();
    let body: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", body.join(" "))
}

/// True when the value is a floating point number.
pub fn is_float(value: &Value) -> bool {
    value.is_number() && !value.is_integer()
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
pub fn format_float(f: f64) -> String {
    if let Some(special) = non_finite(f) {
        return special.to_owned();
    }
    let (digits, exp) = shortest_digits(f);
    // Go switches to exponent form below 1e-4 and from 1e6 on ("shortest" uses precision 6).
    if !(-4..6).contains(&exp) {
        return exponent_form(f.is_sign_negative(), &digits, exp);
    }
    let plain = format!("{f}");
    if plain == "-0" { "-0".to_owned() } else { plain }
}

fn non_finite(f: f64) -> Option<&'static str> {
    if f.is_nan() {
        Some("NaN")
    } else if f.is_infinite() {
        Some(if f > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        None
    }
}

/// Shortest round-trip decimal digits and the decimal exponent of the first digit.
fn shortest_digits(f: f64) -> (String, i32) {
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    (mantissa.replace('.', ""), exp.parse().unwrap_or(0))
}

fn exponent_form(negative: bool, digits: &str, exp: i32) -> String {
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    let mut chars = digits.chars();
    out.extend(chars.next());
    let rest: String = chars.collect();
    if !rest.is_empty() {
        out.push('.');
        out.push_str(&rest);
    }
    out.push_str(&go_exponent(exp));
    out
}

fn go_exponent(exp: i32) -> String {
    let sign = if exp < 0 { '-' } else { '+' };
    format!("e{sign}{:02}", exp.abs())
}

/// Go's `strconv.Quote`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_quoted_char(&mut out, c, '"');
    }
    out.push('"');
    out
}

fn push_quoted_char(out: &mut String, c: char, delim: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if c == delim => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => out.push(c),
    }
}

/// One parsed `%` directive.
#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// Go's `fmt.Sprintf` for the verbs templates use (`%s %d %v %q %x %X %f %e %g %t %c %o %b %%`).
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next_arg = 0usize;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = take_number(&mut chars, args, &mut next_arg);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(take_number(&mut chars, args, &mut next_arg).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(next_arg) {
            Some(arg) => {
                let text = format_verb(verb, &spec, arg);
                out.push_str(&pad(&text, &spec, arg));
            }
            None => {
                let _ = write!(out, "%!{verb}(MISSING)");
            }
        }
        next_arg += 1;
    }
    if let Some(extra) = args.get(next_arg..).filter(|rest| !rest.is_empty()) {
        let items: Vec<String> = extra.iter().map(|v| format!("{}={}", go_type(v), format_value(v))).collect();
        let _ = write!(out, "%!(EXTRA {})", items.join(", "));
    }
    out
}

fn take_number(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    args: &[Value],
    next_arg: &mut usize,
) -> Option<usize> {
    if chars.peek() == Some(&'*') {
        chars.next();
        let n = args.get(*next_arg).map(number_to_i64);
        *next_arg += 1;
        return n.and_then(|n| usize::try_from(n).ok());
    }
    let mut digits = String::new();
    while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
        digits.push(d);
        chars.next();
    }
    digits.parse().ok()
}

/// Go's type name used in `%!verb(type=value)` diagnostics.
fn go_type(value: &Value) -> &'static str {
    match value.kind() {
        ValueKind::String => "string",
        ValueKind::Bool => "bool",
        ValueKind::Number if is_float(value) => "float64",
        ValueKind::Number => "int",
        ValueKind::Seq | ValueKind::Iterable => "[]interface {}",
        ValueKind::Map => "map[string]interface {}",
        _ => "<nil>",
    }
}

fn bad_verb(verb: char, value: &Value) -> String {
    match value.kind() {
        ValueKind::None | ValueKind::Undefined => format!("%!{verb}(<nil>)"),
        _ => format!("%!{verb}({}={})", go_type(value), format_value(value)),
    }
}

fn format_verb(verb: char, spec: &Spec, value: &Value) -> String {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable if verb != 'v' && verb != 'q' => {
            format_seq(value, &|v| format_verb(verb, spec, v))
        }
        ValueKind::Map if verb != 'v' => format_map(value, &|v| format_verb(verb, spec, v)),
        _ => match verb {
            'v' => format_v(spec, value),
            's' => format_s(spec, value),
            'q' => format_q(value),
            'd' | 'x' | 'X' | 'o' | 'b' | 'c' | 'U' => format_integer_verb(verb, spec, value),
            'f' | 'F' | 'e' | 'E' | 'g' | 'G' => format_float_verb(verb, spec, value),
            't' if value.kind() == ValueKind::Bool => value.is_true().to_string(),
            _ => bad_verb(verb, value),
        },
    }
}

fn format_v(spec: &Spec, value: &Value) -> String {
    if value.kind() == ValueKind::Number {
        if is_float(value) {
            return sign_prefix(spec, number_to_f64(value) >= 0.0) + &format_float(number_to_f64(value));
        }
        return sign_prefix(spec, number_to_i64(value) >= 0) + &value.to_string();
    }
    format_value(value)
}

fn format_s(spec: &Spec, value: &Value) -> String {
    match value.kind() {
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.to_owned(),
            }
        }
        _ => bad_verb('s', value),
    }
}

fn format_q(value: &Value) -> String {
    match value.kind() {
        ValueKind::String => quote(value.as_str().unwrap_or_default()),
        ValueKind::Number if !is_float(value) => {
            let c = u32::try_from(number_to_i64(value)).ok().and_then(char::from_u32);
            let mut out = String::from("'");
            push_quoted_char(&mut out, c.unwrap_or('\u{fffd}'), '\'');
            out.push('\'');
            out
        }
        ValueKind::Seq | ValueKind::Iterable => format_seq(value, &format_q),
        _ => bad_verb('q', value),
    }
}

fn sign_prefix(spec: &Spec, non_negative: bool) -> String {
    match (non_negative, spec.plus, spec.space) {
        (true, true, _) => "+".to_owned(),
        (true, false, true) => " ".to_owned(),
        _ => String::new(),
    }
}

fn format_integer_verb(verb: char, spec: &Spec, value: &Value) -> String {
    if (verb == 'x' || verb == 'X') && value.kind() == ValueKind::String {
        let s = value.as_str().unwrap_or_default();
        let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
        return if verb == 'X' { hex.to_uppercase() } else { hex };
    }
    if value.kind() != ValueKind::Number || is_float(value) {
        return bad_verb(verb, value);
    }
    let n = number_to_i64(value);
    let magnitude = n.unsigned_abs();
    let body = match verb {
        'd' => magnitude.to_string(),
        'x' => with_prefix(spec.sharp, "0x", format!("{magnitude:x}")),
        'X' => with_prefix(spec.sharp, "0X", format!("{magnitude:X}")),
        'o' => with_prefix(spec.sharp, "0", format!("{magnitude:o}")),
        'b' => format!("{magnitude:b}"),
        'c' => return char_of(n).to_string(),
        _ => return format!("U+{:04X}", n),
    };
    let sign = if n < 0 { "-".to_owned() } else { sign_prefix(spec, true) };
    sign + &body
}

fn with_prefix(sharp: bool, prefix: &str, body: String) -> String {
    if sharp { format!("{prefix}{body}") } else { body }
}

fn char_of(n: i64) -> char {
    u32::try_from(n).ok().and_then(char::from_u32).unwrap_or('\u{fffd}')
}

fn format_float_verb(verb: char, spec: &Spec, value: &Value) -> String {
    if value.kind() != ValueKind::Number || !is_float(value) {
        return bad_verb(verb, value);
    }
    let f = number_to_f64(value);
    if let Some(special) = non_finite(f) {
        return special.to_owned();
    }
    let body = match verb {
        'f' | 'F' => format!("{:.*}", spec.precision.unwrap_or(6), f.abs()),
        'e' | 'E' => exp_with_precision(f.abs(), spec.precision.unwrap_or(6)),
        _ => match spec.precision {
            None => format_float(f.abs()),
            Some(p) => g_with_precision(f.abs(), p.max(1)),
        },
    };
    let body = if verb.is_ascii_uppercase() { body.to_uppercase() } else { body };
    let sign = if f.is_sign_negative() { "-".to_owned() } else { sign_prefix(spec, true) };
    sign + &body
}

fn exp_with_precision(f: f64, precision: usize) -> String {
    let sci = format!("{:.*e}", precision, f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    format!("{mantissa}{}", go_exponent(exp.parse().unwrap_or(0)))
}

fn g_with_precision(f: f64, precision: usize) -> String {
    let sci = format!("{:.*e}", precision - 1, f);
    let exp: i32 = sci.split_once('e').and_then(|(_, e)| e.parse().ok()).unwrap_or(0);
    let limit = i32::try_from(precision).unwrap_or(i32::MAX);
    if exp < -4 || exp >= limit {
        let (mantissa, _) = sci.split_once('e').unwrap_or((sci.as_str(), ""));
        format!("{}{}", trim_fraction(mantissa), go_exponent(exp))
    } else {
        let decimals = usize::try_from(limit - 1 - exp).unwrap_or(0);
        trim_fraction(&format!("{:.*}", decimals, f)).to_owned()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

fn pad(text: &str, spec: &Spec, value: &Value) -> String {
    let Some(width) = spec.width else {
        return text.to_owned();
    };
    let len = text.chars().count();
    if len >= width {
        return text.to_owned();
    }
    let fill = width - len;
    if spec.minus {
        return format!("{text}{}", " ".repeat(fill));
    }
    if spec.zero && value.kind() == ValueKind::Number {
        let (sign, digits) = split_sign(text);
        return format!("{sign}{}{digits}", "0".repeat(fill));
    }
    format!("{}{text}", " ".repeat(fill))
}

fn split_sign(text: &str) -> (&str, &str) {
    match text.chars().next() {
        Some('-' | '+' | ' ') => text.split_at(1),
        _ => ("", text),
    }
}
