//! Lynq's typed values: `int`, `float` and `bool` render to marker strings that
//! `Engine::render_object` turns back into JSON numbers / booleans.

use minijinja::value::{Value, ValueKind};

use super::gofmt::format_float;

/// Prefix of an integer marker (`__LYNQ_TYPE_INT__42`).
pub const INT_MARKER: &str = "__LYNQ_TYPE_INT__";
/// Prefix of a float marker (`__LYNQ_TYPE_FLOAT__1.5`).
pub const FLOAT_MARKER: &str = "__LYNQ_TYPE_FLOAT__";
/// Prefix of a boolean marker (`__LYNQ_TYPE_BOOL__true`).
pub const BOOL_MARKER: &str = "__LYNQ_TYPE_BOOL__";

const MARKERS: [&str; 3] = [INT_MARKER, FLOAT_MARKER, BOOL_MARKER];

/// Lynq's `int` conversion: numbers truncate, strings try an integer then a float, bools are 1/0.
pub fn to_int(value: &Value) -> i64 {
    match value.kind() {
        ValueKind::Bool => i64::from(value.is_true()),
        ValueKind::Number => number_to_i64(value),
        ValueKind::String => value.as_str().map_or(0, |s| parse_int_lenient(&strip_markers(s))),
        _ => 0,
    }
}

/// Lynq's `float` conversion: strings parse as floats (else 0), bools are 1/0.
pub fn to_float(value: &Value) -> f64 {
    match value.kind() {
        ValueKind::Bool => f64::from(u8::from(value.is_true())),
        ValueKind::Number => number_to_f64(value),
        ValueKind::String => value.as_str().and_then(|s| parse_go_float(&strip_markers(s))).unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Lynq's `bool` conversion: `true/1/yes/on/t/y` (any case) and non-zero numbers are true.
pub fn to_bool(value: &Value) -> bool {
    match value.kind() {
        ValueKind::Bool => value.is_true(),
        ValueKind::Number => number_to_f64(value) != 0.0,
        ValueKind::String => value.as_str().is_some_and(|s| {
            matches!(strip_markers(s).to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on" | "t" | "y")
        }),
        _ => false,
    }
}

/// Integer conversion of a numeric value (floats truncate toward zero, saturating).
pub fn number_to_i64(value: &Value) -> i64 {
    if let Ok(i) = i64::try_from(value.clone()) {
        return i;
    }
    // Truncation is the documented semantics of Go's float→int conversion.
    number_to_f64(value) as i64
}

/// Float conversion of a numeric value.
pub fn number_to_f64(value: &Value) -> f64 {
    f64::try_from(value.clone()).unwrap_or(0.0)
}

/// Go's `strconv.ParseFloat` approximation (Rust's parser accepts the same decimal/inf/nan forms).
pub fn parse_go_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

fn parse_int_lenient(s: &str) -> i64 {
    s.parse::<i64>().ok().or_else(|| parse_go_float(s).map(|f| f as i64)).unwrap_or(0)
}

/// The marker string produced by `int`.
pub fn int_marker(value: &Value) -> String {
    format!("{INT_MARKER}{}", to_int(value))
}

/// The marker string produced by `float`.
pub fn float_marker(value: &Value) -> String {
    format!("{FLOAT_MARKER}{}", format_float(to_float(value)))
}

/// The marker string produced by `bool`.
pub fn bool_marker(value: &Value) -> String {
    format!("{BOOL_MARKER}{}", to_bool(value))
}

/// The number a whole int/float marker stands for (`__LYNQ_TYPE_FLOAT__1.5` ⇒ 1.5).
pub fn marker_number(s: &str) -> Option<Value> {
    if let Some(n) = single_payload(s, INT_MARKER).and_then(|r| r.parse::<i64>().ok()) {
        return Some(Value::from(n));
    }
    single_payload(s, FLOAT_MARKER).and_then(parse_go_float).map(Value::from)
}

/// Removes every marker prefix, leaving the plain text (`__LYNQ_TYPE_INT__3` ⇒ `3`).
pub fn strip_markers(s: &str) -> String {
    if !s.contains("__LYNQ_TYPE_") {
        return s.to_owned();
    }
    MARKERS.iter().fold(s.to_owned(), |acc, marker| acc.replace(marker, ""))
}

/// Outcome of resolving a rendered string that is exactly one marker.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// The string is not (entirely) a marker.
    NotMarker,
    /// A typed JSON value.
    Typed(serde_json::Value),
    /// A marker whose value cannot be represented in JSON (NaN, infinities).
    Invalid(String),
}

/// Resolves a string that consists of one marker (surrounding whitespace ignored) into a JSON value.
pub fn resolve_whole(s: &str) -> Resolved {
    let trimmed = s.trim();
    if let Some(n) = single_payload(trimmed, INT_MARKER).and_then(|r| r.parse::<i64>().ok()) {
        return Resolved::Typed(n.into());
    }
    if let Some(f) = single_payload(trimmed, FLOAT_MARKER).and_then(parse_go_float) {
        return serde_json::Number::from_f64(f).map_or_else(
            || Resolved::Invalid(format!("float value {f} cannot be represented in JSON")),
            |n| Resolved::Typed(serde_json::Value::Number(n)),
        );
    }
    match single_payload(trimmed, BOOL_MARKER) {
        Some("true") => return Resolved::Typed(true.into()),
        Some("false") => return Resolved::Typed(false.into()),
        _ => {}
    }
    Resolved::NotMarker
}

fn single_payload<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(marker)?;
    // A second marker means the string is a concatenation, not one typed value.
    (!rest.contains("__LYNQ_TYPE_") && !rest.is_empty()).then_some(rest)
}
