//! The function library shared by both syntaxes: Lynq's own functions, the Sprig subset people
//! use in manifests and Go's template builtins. Every function takes its arguments in Sprig order.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use heck::{ToKebabCase, ToSnakeCase, ToUpperCamelCase};
use minijinja::value::{Enumerator, Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use sha1::Digest as _;

use super::gofmt::{format_value, is_float, quote, sprintf};
use super::typed::{
    self, bool_marker, float_marker, int_marker, number_to_f64, number_to_i64, parse_go_float, strip_markers,
};

/// Prefix of the error detail produced by a forbidden function (recognised by the engine).
pub const FORBIDDEN_TAG: &str = "lynq-forbidden-function:";
/// Name of the internal helper the Go translation uses for `range`.
pub const RANGE_HELPER: &str = "__lynq_range";

type FnResult = Result<Value, String>;
type LibFn = fn(&[Value]) -> FnResult;

/// One library function and how it is exposed.
struct FnSpec {
    name: &'static str,
    f: LibFn,
    /// Accepts undefined (missing) arguments instead of failing with "undefined variable".
    undefined_ok: bool,
    /// Also registered as a Jinja filter (piped value = last Sprig argument).
    filter: bool,
}

const fn strict(name: &'static str, f: LibFn) -> FnSpec {
    FnSpec { name, f, undefined_ok: false, filter: true }
}

const fn lenient(name: &'static str, f: LibFn) -> FnSpec {
    FnSpec { name, f, undefined_ok: true, filter: true }
}

const fn function_only(name: &'static str, f: LibFn) -> FnSpec {
    FnSpec { name, f, undefined_ok: false, filter: false }
}

static LIBRARY: &[FnSpec] = &[
    // Lynq's own functions.
    strict("toHost", |a| one_str(a).map(|s| to_host(&s).into())),
    strict("trunc63", |a| one_str(a).map(|s| s.chars().take(63).collect::<String>().into())),
    strict("sha1sum", |a| one_str(a).map(|s| hex(&sha1::Sha1::digest(s.as_bytes())).into())),
    strict("fromJson", |a| one_str(a).map(|s| from_json(&s))),
    strict("int", |a| one(a).map(|v| int_marker(v).into())),
    strict("float", |a| one(a).map(|v| float_marker(v).into())),
    strict("bool", |a| one(a).map(|v| bool_marker(v).into())),
    // Sprig: defaults and flow.
    lenient("default", default),
    lenient("empty", |a| one(a).map(|v| is_empty(v).into())),
    lenient("coalesce", |a| Ok(a.iter().find(|v| !is_empty(v)).cloned().unwrap_or(Value::from(())))),
    lenient("ternary", ternary),
    // Sprig: strings.
    strict("quote", |a| Ok(quote_all(a, quote).into())),
    strict("squote", |a| Ok(quote_all(a, |s| format!("'{s}'")).into())),
    strict("upper", |a| one_str(a).map(|s| s.to_uppercase().into())),
    strict("lower", |a| one_str(a).map(|s| s.to_lowercase().into())),
    strict("title", |a| one_str(a).map(|s| title(&s).into())),
    strict("untitle", |a| one_str(a).map(|s| untitle(&s).into())),
    strict("trim", |a| one_str(a).map(|s| s.trim().into())),
    strict("trimAll", |a| two_str(a).map(|(cut, s)| s.trim_matches(|c| cut.contains(c)).into())),
    strict("trimPrefix", |a| two_str(a).map(|(p, s)| s.strip_prefix(p.as_str()).unwrap_or(&s).into())),
    strict("trimSuffix", |a| two_str(a).map(|(p, s)| s.strip_suffix(p.as_str()).unwrap_or(&s).into())),
    strict("trunc", trunc),
    strict("replace", replace),
    strict("contains", |a| two_str(a).map(|(sub, s)| s.contains(sub.as_str()).into())),
    strict("hasPrefix", |a| two_str(a).map(|(p, s)| s.starts_with(p.as_str()).into())),
    strict("hasSuffix", |a| two_str(a).map(|(p, s)| s.ends_with(p.as_str()).into())),
    function_only("split", split),
    strict("splitList", |a| two_str(a).map(|(sep, s)| Value::from(split_go(&s, &sep)))),
    strict("join", join),
    strict("printf", printf),
    strict("print", |a| Ok(go_sprint(a).into())),
    strict("println", |a| Ok(go_sprintln(a).into())),
    strict("repeat", repeat),
    strict("substr", substr),
    strict("abbrev", abbrev),
    strict("nospace", |a| one_str(a).map(|s| s.chars().filter(|c| !c.is_whitespace()).collect::<String>().into())),
    strict("indent", |a| indent(a, false)),
    strict("nindent", |a| indent(a, true)),
    strict("wrap", wrap),
    strict("plural", plural),
    strict("kebabcase", |a| one_str(a).map(|s| s.to_kebab_case().into())),
    strict("snakecase", |a| one_str(a).map(|s| s.to_snake_case().into())),
    strict("camelcase", |a| one_str(a).map(|s| s.to_upper_camel_case().into())),
    strict("cat", |a| Ok(strslice(&Value::from(a.to_vec())).join(" ").into())),
    // Sprig: encodings and hashes.
    strict("toJson", |a| one(a).and_then(|v| to_json(v, false)).map(Value::from)),
    strict("toPrettyJson", |a| one(a).and_then(|v| to_json(v, true)).map(Value::from)),
    strict("toYaml", to_yaml),
    strict("b64enc", |a| one_str(a).map(|s| base64::engine::general_purpose::STANDARD.encode(s).into())),
    strict("b64dec", b64dec),
    strict("sha256sum", |a| one_str(a).map(|s| hex(&sha2::Sha256::digest(s.as_bytes())).into())),
    strict("adler32sum", |a| one_str(a).map(|s| adler32(s.as_bytes()).to_string().into())),
    // Sprig: math (int64 semantics, strings are parsed).
    strict("add", |a| Ok(a.iter().map(to_int64).fold(0i64, i64::wrapping_add).into())),
    strict("add1", |a| one(a).map(|v| to_int64(v).wrapping_add(1).into())),
    strict("sub", |a| two(a).map(|(x, y)| to_int64(x).wrapping_sub(to_int64(y)).into())),
    strict("mul", |a| Ok(a.iter().map(to_int64).fold(1i64, i64::wrapping_mul).into())),
    strict("div", |a| two(a).and_then(|(x, y)| checked(to_int64(x).checked_div(to_int64(y))))),
    strict("mod", |a| two(a).and_then(|(x, y)| checked(to_int64(x).checked_rem(to_int64(y))))),
    function_only("max", |a| fold_ints(a, i64::max)),
    function_only("min", |a| fold_ints(a, i64::min)),
    strict("atoi", |a| one_str(a).map(|s| s.parse::<i64>().unwrap_or(0).into())),
    strict("int64", |a| one(a).map(|v| to_int64(v).into())),
    strict("float64", |a| one(a).map(|v| to_float64(v).into())),
    strict("toString", |a| one(a).map(|v| strval(v).into())),
    strict("toStrings", |a| one(a).map(|v| Value::from(strslice(v)))),
    // Sprig: lists and dicts.
    function_only("list", |a| Ok(Value::from(a.to_vec()))),
    function_only("dict", dict),
    strict("get", get),
    strict("set", set),
    lenient("hasKey", has_key),
    strict("keys", keys),
    strict("values", values),
    strict("index", index),
    strict("len", |a| one(a).and_then(length)),
    strict("first", |a| one(a).and_then(|v| Ok(items(v)?.into_iter().next().unwrap_or(Value::from(()))))),
    strict("last", |a| one(a).and_then(|v| Ok(items(v)?.pop().unwrap_or(Value::from(()))))),
    strict("append", append),
    strict("uniq", uniq),
    strict("has", |a| two(a).and_then(|(needle, list)| Ok(items(list)?.contains(needle).into()))),
    strict("sortAlpha", |a| one(a).map(|v| sorted_strings(v).into())),
    // Sprig: regular expressions.
    strict("regexMatch", |a| regex_two(a).map(|(re, s)| re.is_match(&s).into())),
    strict("regexFind", |a| regex_two(a).map(|(re, s)| re.find(&s).map_or("", |m| m.as_str()).into())),
    strict("regexReplaceAll", regex_replace_all),
    strict("regexSplit", regex_split),
    // Go builtins: comparisons (`and`, `or`, `not` are translated to Jinja operators).
    strict("eq", eq),
    strict("ne", |a| two(a).and_then(|(x, y)| Ok((!go_equal(x, y)?).into()))),
    strict("lt", |a| compare(a, |o| o.is_lt())),
    strict("le", |a| compare(a, |o| o.is_le())),
    strict("gt", |a| compare(a, |o| o.is_gt())),
    strict("ge", |a| compare(a, |o| o.is_ge())),
];

/// Go builtins handled by the translator rather than by a registered function.
const OPERATORS: [&str; 3] = ["and", "or", "not"];

/// Functions refused with a `Forbidden` error, and why.
static FORBIDDEN: &[(&str, &str)] = &[
    ("env", SECRET_REASON),
    ("expandenv", SECRET_REASON),
    ("getHostByName", "depends on DNS at render time, so rendered manifests would not be reproducible"),
    ("now", TIME_REASON),
    ("ago", TIME_REASON),
    ("date", TIME_REASON),
    ("dateInZone", TIME_REASON),
    ("date_in_zone", TIME_REASON),
    ("dateModify", TIME_REASON),
    ("date_modify", TIME_REASON),
    ("mustDateModify", TIME_REASON),
    ("must_date_modify", TIME_REASON),
    ("htmlDate", TIME_REASON),
    ("htmlDateInZone", TIME_REASON),
    ("unixEpoch", TIME_REASON),
    ("toDate", TIME_REASON),
    ("mustToDate", TIME_REASON),
    ("duration", TIME_REASON),
    ("durationRound", TIME_REASON),
    ("randAlphaNum", RANDOM_REASON),
    ("randAlpha", RANDOM_REASON),
    ("randNumeric", RANDOM_REASON),
    ("randAscii", RANDOM_REASON),
    ("randInt", RANDOM_REASON),
    ("randBytes", RANDOM_REASON),
    ("shuffle", RANDOM_REASON),
    ("uuidv4", RANDOM_REASON),
    ("genPrivateKey", RANDOM_REASON),
    ("genCA", RANDOM_REASON),
    ("genCAWithKey", RANDOM_REASON),
    ("genSelfSignedCert", RANDOM_REASON),
    ("genSelfSignedCertWithKey", RANDOM_REASON),
    ("genSignedCert", RANDOM_REASON),
    ("genSignedCertWithKey", RANDOM_REASON),
    ("derivePassword", RANDOM_REASON),
];

const SECRET_REASON: &str = "reads the operator's environment variables, which would leak its secrets into manifests";
const TIME_REASON: &str =
    "depends on the current time, so every render would differ and resources would be re-applied forever";
const RANDOM_REASON: &str =
    "is non-deterministic, so every render would differ and resources would be re-applied forever";

/// Every function name templates may call (both syntaxes), sorted.
pub fn supported_functions() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: Vec<&'static str> = LIBRARY.iter().map(|f| f.name).chain(OPERATORS).collect();
        names.sort_unstable();
        names
    })
}

/// True for functions the Go translator knows (library plus operators).
pub fn is_supported(name: &str) -> bool {
    OPERATORS.contains(&name) || LIBRARY.iter().any(|f| f.name == name)
}

/// Why a function is forbidden, if it is.
pub fn forbidden_reason(name: &str) -> Option<&'static str> {
    FORBIDDEN.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// Registers the library (functions + filters), the forbidden stubs and the internal helpers.
pub fn register(env: &mut Environment<'static>) {
    for spec in LIBRARY {
        env.add_function(spec.name, move |args: Rest<Value>| call(spec, &args));
        if spec.filter {
            env.add_filter(spec.name, move |value: Value, args: Rest<Value>| {
                let mut all = args.0;
                all.push(value);
                call(spec, &all)
            });
        }
    }
    for (name, _) in FORBIDDEN {
        let detail = format!("{FORBIDDEN_TAG}{name}");
        let stub = move |_: Rest<Value>| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, detail.clone()))
        };
        env.add_function(*name, stub.clone());
        env.add_filter(*name, stub);
    }
    env.add_function(RANGE_HELPER, |v: Value| range_pairs(&v));
}

fn call(spec: &FnSpec, args: &[Value]) -> Result<Value, Error> {
    if !spec.undefined_ok && args.iter().any(Value::is_undefined) {
        return Err(Error::new(ErrorKind::UndefinedError, format!("function {}: an argument is undefined", spec.name)));
    }
    (spec.f)(args).map_err(|msg| Error::new(ErrorKind::InvalidOperation, format!("function {}: {msg}", spec.name)))
}

// ---------------------------------------------------------------------------------------------
// Argument helpers

fn one(args: &[Value]) -> Result<&Value, String> {
    match args {
        [v] => Ok(v),
        _ => Err(arity_error(1, args.len())),
    }
}

fn two(args: &[Value]) -> Result<(&Value, &Value), String> {
    match args {
        [a, b] => Ok((a, b)),
        _ => Err(arity_error(2, args.len())),
    }
}

fn three(args: &[Value]) -> Result<(&Value, &Value, &Value), String> {
    match args {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(arity_error(3, args.len())),
    }
}

fn arity_error(expected: usize, got: usize) -> String {
    format!("expected {expected} argument(s), got {got}")
}

fn one_str(args: &[Value]) -> Result<String, String> {
    one(args).map(strval)
}

fn two_str(args: &[Value]) -> Result<(String, String), String> {
    two(args).map(|(a, b)| (strval(a), strval(b)))
}

fn checked(result: Option<i64>) -> FnResult {
    result.map(Value::from).ok_or_else(|| "integer divide by zero".to_owned())
}

/// Sprig's `strval`: strings as-is, nil as empty, everything else Go-formatted.
pub fn strval(value: &Value) -> String {
    match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::None | ValueKind::Undefined => String::new(),
        _ => format_value(value),
    }
}

/// Sprig's `strslice`: list items as strings (nil items dropped); a scalar becomes a 1-item list.
fn strslice(value: &Value) -> Vec<String> {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .map(|it| it.filter(|v| !v.is_none() && !v.is_undefined()).map(|v| strval(&v)).collect())
            .unwrap_or_default(),
        ValueKind::None | ValueKind::Undefined => Vec::new(),
        _ => vec![strval(value)],
    }
}

/// Sprig's `toInt64` (via spf13/cast): numbers truncate, strings parse (base prefixes ok), else 0.
pub fn to_int64(value: &Value) -> i64 {
    match value.kind() {
        ValueKind::Number => number_to_i64(value),
        ValueKind::Bool => i64::from(value.is_true()),
        // Markers are understood so `add1 (int .x)` works (Lynq's `int` shadowing Sprig's broke it).
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            typed::marker_number(s).map_or_else(|| parse_cast_int(s), |n| number_to_i64(&n))
        }
        _ => 0,
    }
}

fn parse_cast_int(s: &str) -> i64 {
    let s = trim_zero_decimal(s);
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = digits.to_ascii_lowercase();
    let parsed = if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16)
    } else if let Some(bin) = lower.strip_prefix("0b") {
        i64::from_str_radix(bin, 2)
    } else if let Some(oct) = lower.strip_prefix("0o") {
        i64::from_str_radix(oct, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8)
    } else {
        lower.parse::<i64>()
    };
    parsed.map(|n| if negative { -n } else { n }).unwrap_or(0)
}

/// cast's `trimZeroDecimal`: "3.00" ⇒ "3".
fn trim_zero_decimal(s: &str) -> &str {
    match s.split_once('.') {
        Some((int, frac)) if !frac.is_empty() && frac.chars().all(|c| c == '0') => int,
        _ => s,
    }
}

fn to_float64(value: &Value) -> f64 {
    match value.kind() {
        ValueKind::Number => number_to_f64(value),
        ValueKind::Bool => f64::from(u8::from(value.is_true())),
        ValueKind::String => parse_go_float(&strip_markers(value.as_str().unwrap_or_default())).unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Items of a list (error for other kinds; nil is an empty list).
fn items(value: &Value) -> Result<Vec<Value>, String> {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => Ok(value.try_iter().map(Iterator::collect).unwrap_or_default()),
        ValueKind::None => Ok(Vec::new()),
        other => Err(format!("expected a list, got {other}")),
    }
}

/// Key/value pairs of a map, sorted by key.
fn map_entries(value: &Value) -> Result<Vec<(Value, Value)>, String> {
    if value.kind() != ValueKind::Map {
        return Err(format!("expected a map, got {}", value.kind()));
    }
    let mut entries: Vec<(Value, Value)> = value
        .try_iter()
        .map(|keys| keys.map(|k| (k.clone(), value.get_item(&k).unwrap_or_default())).collect())
        .unwrap_or_default();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

// ---------------------------------------------------------------------------------------------
// Emptiness, defaults, comparisons

/// Sprig's emptiness: nil, undefined, "", 0, 0.0, false, empty list/map.
pub fn is_empty(value: &Value) -> bool {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => true,
        ValueKind::Bool => !value.is_true(),
        ValueKind::Number => number_to_f64(value) == 0.0,
        ValueKind::String => value.as_str().is_none_or(str::is_empty),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => value.len().is_none_or(|n| n == 0),
        _ => !value.is_true(),
    }
}

/// Sprig's `default DEFAULT VALUE`. The value is the last argument, so Jinja's
/// `x | default("d", true)` (extra boolean) behaves like `default "d" x`.
fn default(args: &[Value]) -> FnResult {
    match args {
        [] => Err(arity_error(2, 0)),
        [fallback] => Ok(fallback.clone()),
        [fallback, .., given] if is_empty(given) => Ok(fallback.clone()),
        [_, .., given] => Ok(given.clone()),
    }
}

fn ternary(args: &[Value]) -> FnResult {
    let (yes, no, cond) = three(args)?;
    Ok(if cond.is_true() { yes.clone() } else { no.clone() })
}

fn eq(args: &[Value]) -> FnResult {
    let Some((first, rest)) = args.split_first().filter(|(_, rest)| !rest.is_empty()) else {
        return Err("missing arguments for comparison".to_owned());
    };
    for other in rest {
        if go_equal(first, other)? {
            return Ok(true.into());
        }
    }
    Ok(false.into())
}

/// Go's `eq` on basic values; mixing kinds (e.g. the string "3" and the number 3) is an error.
fn go_equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a.kind(), b.kind()) {
        (ValueKind::Number, ValueKind::Number) => Ok(numeric_cmp(a, b) == std::cmp::Ordering::Equal),
        (ValueKind::None, ValueKind::None) => Ok(true),
        (x, y) if x == y && matches!(x, ValueKind::String | ValueKind::Bool) => Ok(a == b),
        (x, y) => Err(format!("incompatible types for comparison: {x} and {y}")),
    }
}

fn numeric_cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
    if a.is_integer() && b.is_integer() {
        return number_to_i64(a).cmp(&number_to_i64(b));
    }
    number_to_f64(a).total_cmp(&number_to_f64(b))
}

fn compare(args: &[Value], pick: fn(std::cmp::Ordering) -> bool) -> FnResult {
    let (a, b) = two(args)?;
    let ordering = match (a.kind(), b.kind()) {
        (ValueKind::Number, ValueKind::Number) => numeric_cmp(a, b),
        (ValueKind::String, ValueKind::String) => a.as_str().cmp(&b.as_str()),
        (x, y) => return Err(format!("incompatible types for comparison: {x} and {y}")),
    };
    Ok(pick(ordering).into())
}

// ---------------------------------------------------------------------------------------------
// Strings

/// Hostname of a URL (`https://a.example.com:8443/x` ⇒ `a.example.com`), else the text before
/// the first `:` — Lynq's `toHost`.
pub fn to_host(s: &str) -> String {
    match authority_host(s) {
        Some(host) if !host.is_empty() => host,
        _ => s.split(':').next().unwrap_or_default().to_owned(),
    }
}

/// The host of `scheme://authority/...` or `//authority/...` (port and userinfo removed).
fn authority_host(s: &str) -> Option<String> {
    let rest = match s.strip_prefix("//") {
        Some(rest) => rest,
        None => {
            let (scheme, rest) = s.split_once("://")?;
            let mut chars = scheme.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if !valid {
                return None;
            }
            rest
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h.to_owned());
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => Some(host.to_owned()),
        Some(_) => None,
        None => Some(host_port.to_owned()),
    }
}

fn quote_all(args: &[Value], q: impl Fn(&str) -> String) -> String {
    let quoted: Vec<String> = args.iter().filter(|v| !v.is_none()).map(|v| q(&strval(v))).collect();
    quoted.join(" ")
}

/// Go's deprecated `strings.Title`: upper-cases letters that follow a separator.
fn title(s: &str) -> String {
    let mut prev_separator = true;
    s.chars()
        .map(|c| {
            let out = if prev_separator { c.to_uppercase().collect::<String>() } else { c.to_string() };
            prev_separator = is_title_separator(c);
            out
        })
        .collect()
}

fn is_title_separator(c: char) -> bool {
    if c.is_ascii() {
        return !(c.is_ascii_alphanumeric() || c == '_');
    }
    c.is_whitespace() || !c.is_alphanumeric()
}

fn untitle(s: &str) -> String {
    let mut in_word = false;
    s.chars()
        .map(|c| {
            if c.is_whitespace() {
                in_word = false;
                c.to_string()
            } else if !in_word {
                in_word = true;
                c.to_lowercase().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn trunc(args: &[Value]) -> FnResult {
    let (n, s) = two(args)?;
    let (n, s) = (to_int64(n), strval(s));
    let len = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let out: String = if n < 0 && len + n > 0 {
        s.chars().skip(usize::try_from(len + n).unwrap_or(0)).collect()
    } else if n >= 0 && len > n {
        s.chars().take(usize::try_from(n).unwrap_or(0)).collect()
    } else {
        s
    };
    Ok(out.into())
}

fn replace(args: &[Value]) -> FnResult {
    let (old, new, s) = three(args)?;
    Ok(strval(s).replace(&strval(old), &strval(new)).into())
}

/// Go's `strings.Split` (an empty separator splits into characters).
fn split_go(s: &str, sep: &str) -> Vec<String> {
    if sep.is_empty() {
        return s.chars().map(String::from).collect();
    }
    s.split(sep).map(str::to_owned).collect()
}

fn split(args: &[Value]) -> FnResult {
    let (sep, s) = two_str(args)?;
    let parts: BTreeMap<String, Value> =
        split_go(&s, &sep).into_iter().enumerate().map(|(i, part)| (format!("_{i}"), Value::from(part))).collect();
    Ok(Dict::value(parts))
}

fn join(args: &[Value]) -> FnResult {
    let (sep, list) = two(args)?;
    Ok(strslice(list).join(&strval(sep)).into())
}

fn printf(args: &[Value]) -> FnResult {
    let Some((format, rest)) = args.split_first() else {
        return Err(arity_error(1, 0));
    };
    Ok(sprintf(&strval(format), rest).into())
}

/// Go's `fmt.Sprint`: spaces only between operands when neither is a string.
fn go_sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        let is_string = |v: &Value| v.kind() == ValueKind::String;
        if i > 0 && !is_string(arg) && args.get(i - 1).is_some_and(|p| !is_string(p)) {
            out.push(' ');
        }
        out.push_str(&format_value(arg));
    }
    out
}

fn go_sprintln(args: &[Value]) -> String {
    let parts: Vec<String> = args.iter().map(format_value).collect();
    format!("{}\n", parts.join(" "))
}

fn repeat(args: &[Value]) -> FnResult {
    let (n, s) = two(args)?;
    let n = usize::try_from(to_int64(n)).map_err(|_| "negative repeat count".to_owned())?;
    Ok(strval(s).repeat(n).into())
}

fn substr(args: &[Value]) -> FnResult {
    let (start, end, s) = three(args)?;
    let chars: Vec<char> = strval(s).chars().collect();
    let len = i64::try_from(chars.len()).unwrap_or(i64::MAX);
    let (start, end) = (to_int64(start), to_int64(end));
    let (from, to) = match (start < 0, end < 0 || end > len) {
        (true, _) => (0, end.clamp(0, len)),
        (false, true) => (start.min(len), len),
        (false, false) => (start.min(end), end),
    };
    let range = usize::try_from(from).unwrap_or(0)..usize::try_from(to).unwrap_or(0);
    Ok(chars.get(range).map(|c| c.iter().collect::<String>()).unwrap_or_default().into())
}

fn abbrev(args: &[Value]) -> FnResult {
    let (width, s) = two(args)?;
    let (width, s) = (to_int64(width), strval(s));
    let len = s.chars().count();
    match usize::try_from(width) {
        Ok(w) if w >= 4 && len > w => Ok(format!("{}...", s.chars().take(w - 3).collect::<String>()).into()),
        _ => Ok(s.into()),
    }
}

fn indent(args: &[Value], leading_newline: bool) -> FnResult {
    let (n, s) = two(args)?;
    let pad = " ".repeat(usize::try_from(to_int64(n)).unwrap_or(0));
    let body = format!("{pad}{}", strval(s).replace('\n', &format!("\n{pad}")));
    Ok(if leading_newline { format!("\n{body}") } else { body }.into())
}

/// Word wrap at spaces (long words are not broken), as Sprig's `wrap`.
fn wrap(args: &[Value]) -> FnResult {
    let (width, s) = two(args)?;
    let width = usize::try_from(to_int64(width)).unwrap_or(0).max(1);
    let lines: Vec<String> = strval(s).split('\n').map(|line| wrap_line(line, width)).collect();
    Ok(lines.join("\n").into())
}

fn wrap_line(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut current = 0usize;
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if current > 0 && current + 1 + len > width {
            out.push('\n');
            current = 0;
        } else if current > 0 {
            out.push(' ');
            current += 1;
        }
        out.push_str(word);
        current += len;
    }
    out
}

fn plural(args: &[Value]) -> FnResult {
    let (one_form, many, count) = three(args)?;
    Ok(if to_int64(count) == 1 { one_form.clone() } else { many.clone() })
}

// ---------------------------------------------------------------------------------------------
// Encodings

fn from_json(s: &str) -> Value {
    // Lynq's lenient fromJson: invalid JSON is an empty map.
    serde_json::from_str::<serde_json::Value>(s).map_or_else(|_| Dict::value(BTreeMap::new()), |j| json_to_value(&j))
}

/// JSON ⇒ template value; objects become mutable dicts so `set` works on them.
pub fn json_to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .unwrap_or_else(|| Value::from(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::from(items.iter().map(json_to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(map) => Dict::value(map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect()),
    }
}

/// Go's `json.Marshal` output (HTML-safe escaping of `<`, `>`, `&`).
fn to_json(value: &Value, pretty: bool) -> Result<String, String> {
    let encoded = if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
    let encoded = encoded.map_err(|e| format!("cannot encode value as JSON: {e}"))?;
    Ok(encoded
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

fn to_yaml(args: &[Value]) -> FnResult {
    let value = one(args)?;
    let yaml = serde_yaml_ng::to_string(value).map_err(|e| format!("cannot encode value as YAML: {e}"))?;
    Ok(yaml.strip_suffix('\n').unwrap_or(&yaml).into())
}

fn b64dec(args: &[Value]) -> FnResult {
    let s = one_str(args)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(|e| format!("invalid base64 input: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (a, b) = bytes.iter().fold((1u32, 0u32), |(a, b), &byte| {
        let a = (a + u32::from(byte)) % MOD;
        (a, (b + a) % MOD)
    });
    (b << 16) | a
}

// ---------------------------------------------------------------------------------------------
// Math

fn fold_ints(args: &[Value], pick: fn(i64, i64) -> i64) -> FnResult {
    let mut ints = args.iter().map(to_int64);
    let first = ints.next().ok_or_else(|| arity_error(1, 0))?;
    Ok(ints.fold(first, pick).into())
}

// ---------------------------------------------------------------------------------------------
// Lists and dicts

/// A mutable string-keyed map (what Sprig's `dict` returns), so `set` can modify it in place.
#[derive(Debug, Default)]
pub struct Dict(Mutex<BTreeMap<String, Value>>);

impl Dict {
    /// Wraps entries into a template value.
    pub fn value(entries: BTreeMap<String, Value>) -> Value {
        Value::from_object(Dict(Mutex::new(entries)))
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Value>> {
        // A poisoned lock only means another render panicked mid-update; the map is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Object for Dict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|k| self.entries().get(k).cloned())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = self.entries().keys().map(|k| Value::from(k.as_str())).collect();
        Enumerator::Values(keys)
    }
}

/// Sprig's `dict k1 v1 k2 v2 …` (a missing last value is ""); Jinja's `dict(a=1)` also works.
fn dict(args: &[Value]) -> FnResult {
    if let [kwargs] = args
        && kwargs.is_kwargs()
    {
        return Ok(Dict::value(map_entries(kwargs)?.into_iter().map(|(k, v)| (strval(&k), v)).collect()));
    }
    let entries = args
        .chunks(2)
        .map(|pair| match pair {
            [k, v] => (strval(k), v.clone()),
            [k] => (strval(k), Value::from("")),
            _ => (String::new(), Value::from(())),
        })
        .collect();
    Ok(Dict::value(entries))
}

fn get(args: &[Value]) -> FnResult {
    let (map, key) = two(args)?;
    map_entries(map)?;
    Ok(map.get_item(key).ok().filter(|v| !v.is_undefined()).unwrap_or_else(|| Value::from("")))
}

fn set(args: &[Value]) -> FnResult {
    let (map, key, value) = three(args)?;
    let dict = map
        .downcast_object_ref::<Dict>()
        .ok_or_else(|| format!("can only modify maps created by dict or fromJson, got {}", map.kind()))?;
    dict.entries().insert(strval(key), value.clone());
    Ok(map.clone())
}

fn has_key(args: &[Value]) -> FnResult {
    let (map, key) = two(args)?;
    if map.is_undefined() {
        return Err("the map is undefined".to_owned());
    }
    let found = map_entries(map)?.iter().any(|(k, _)| k == key || strval(k) == strval(key));
    Ok(found.into())
}

fn keys(args: &[Value]) -> FnResult {
    let mut all = Vec::new();
    for map in args {
        all.extend(map_entries(map)?.into_iter().map(|(k, _)| k));
    }
    all.sort();
    Ok(Value::from(all))
}

fn values(args: &[Value]) -> FnResult {
    let map = one(args)?;
    Ok(Value::from(map_entries(map)?.into_iter().map(|(_, v)| v).collect::<Vec<_>>()))
}

/// Go's `index`: a missing map key is undefined (so `default` can replace it), a bad list index fails.
fn index(args: &[Value]) -> FnResult {
    let Some((coll, keys)) = args.split_first() else {
        return Err(arity_error(1, 0));
    };
    keys.iter().try_fold(coll.clone(), |current, key| index_one(&current, key))
}

fn index_one(coll: &Value, key: &Value) -> FnResult {
    match coll.kind() {
        ValueKind::Map => Ok(coll.get_item(key).unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let list = items(coll)?;
            let i = usize::try_from(to_int64(key)).map_err(|_| format!("index {key} out of range"))?;
            list.get(i).cloned().ok_or_else(|| format!("index {i} out of range (length {})", list.len()))
        }
        ValueKind::None | ValueKind::Undefined => Err(format!("cannot index a nil value with {key}")),
        other => Err(format!("cannot index a {other}")),
    }
}

fn length(value: &Value) -> FnResult {
    match value.kind() {
        ValueKind::String => Ok(value.as_str().unwrap_or_default().chars().count().into()),
        ValueKind::None => Ok(0.into()),
        _ => value.len().map(Value::from).ok_or_else(|| format!("len of a {} is not defined", value.kind())),
    }
}

fn append(args: &[Value]) -> FnResult {
    let (list, value) = two(args)?;
    let mut all = items(list)?;
    all.push(value.clone());
    Ok(Value::from(all))
}

fn uniq(args: &[Value]) -> FnResult {
    let mut out: Vec<Value> = Vec::new();
    for item in items(one(args)?)? {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(Value::from(out))
}

fn sorted_strings(value: &Value) -> Vec<String> {
    let mut all = strslice(value);
    all.sort();
    all
}

/// `range` support for the Go translation: `[key, value]` pairs (lists by index, maps sorted by
/// key, integers as 0..n).
fn range_pairs(value: &Value) -> Result<Value, Error> {
    let pair = |k: Value, v: Value| Value::from(vec![k, v]);
    let pairs: Vec<Value> = match value.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(ErrorKind::UndefinedError, "range over an undefined value"));
        }
        ValueKind::None => Vec::new(),
        ValueKind::Map => map_entries(value)
            .map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?
            .into_iter()
            .map(|(k, v)| pair(k, v))
            .collect(),
        ValueKind::Seq | ValueKind::Iterable => {
            value.try_iter()?.enumerate().map(|(i, v)| pair(Value::from(i), v)).collect()
        }
        ValueKind::Number if !is_float(value) => (0..number_to_i64(value)).map(|i| pair(i.into(), i.into())).collect(),
        other => {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("range can't iterate over a {other}")));
        }
    };
    Ok(Value::from(pairs))
}

// ---------------------------------------------------------------------------------------------
// Regular expressions

fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

fn regex_two(args: &[Value]) -> Result<(regex::Regex, String), String> {
    let (pattern, s) = two_str(args)?;
    Ok((regex(&pattern)?, s))
}

fn regex_replace_all(args: &[Value]) -> FnResult {
    let (pattern, s, replacement) = three(args)?;
    let re = regex(&strval(pattern))?;
    Ok(re.replace_all(&strval(s), strval(replacement).as_str()).into_owned().into())
}

fn regex_split(args: &[Value]) -> FnResult {
    let (pattern, s, n) = three(args)?;
    let (re, s, n) = (regex(&strval(pattern))?, strval(s), to_int64(n));
    let parts: Vec<Value> = match usize::try_from(n) {
        Ok(0) => Vec::new(),
        Ok(limit) => re.splitn(&s, limit).map(Value::from).collect(),
        Err(_) => re.split(&s).map(Value::from).collect(),
    };
    Ok(Value::from(parts))
}
