//! The desired-object hash stored in `lynq.sh/applied-hash`: an unchanged hash means nothing to write.
//!
//! The hash is byte-compatible with Lynq's (`sha256(json.Marshal(obj))[:8]` as hex, with Lynq's own
//! tracking annotations removed), so objects Lynq applied are recognised as up to date. That needs
//! Go's `encoding/json` output exactly: keys sorted bytewise, `<`, `>`, `&`, U+2028 and U+2029
//! escaped, and Go's float formatting. The serialisation is written out here rather than left to
//! serde_json, whose key order depends on the `preserve_order` feature of the final build.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use super::{ANN_APPLIED_HASH, ANN_APPLY_START};

/// 16 lowercase hex chars: the first 8 bytes of the SHA-256 of `obj`'s canonical JSON, ignoring
/// the `lynq.sh/applied-hash` and `lynq.sh/apply-start-time` annotations.
pub fn desired_hash(obj: &Value) -> String {
    let digest = Sha256::digest(canonical_json(&without_tracking_annotations(obj)).as_bytes());
    digest.iter().take(8).fold(String::with_capacity(16), |mut hex, byte| {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// `obj` without the two tracking annotations; an annotation map left empty by that is dropped,
/// while one that was empty to begin with is kept (as Lynq does).
fn without_tracking_annotations(obj: &Value) -> Value {
    let mut out = obj.clone();
    let Some(Value::Object(metadata)) = out.get_mut("metadata") else { return out };
    let Some(Value::Object(annotations)) = metadata.get_mut("annotations") else { return out };
    if annotations.is_empty() {
        return out;
    }
    annotations.remove(ANN_APPLIED_HASH);
    annotations.remove(ANN_APPLY_START);
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    out
}

/// `value` serialised exactly as Go's `json.Marshal` does for decoded JSON (maps with sorted keys).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // Go sorts map keys as byte strings, which is also str's Ord.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

/// Go's string encoding with HTML escaping (the `json.Marshal` default, Go ≥ 1.22 for `\b`/`\f`).
fn write_string(out: &mut String, s: &str) {
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
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Integers as-is; floats as Go prints a float64: plain decimal, or exponent form (`1e+21`,
/// `1.5e-7`) below 1e-6 and from 1e21 on.
fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&go_float(f));
    }
}

fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let formatted = format!("{f:e}");
        match formatted.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => format!("{mantissa}e+{exponent}"),
            _ => formatted,
        }
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(text: &str) -> Value {
        match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => panic!("bad test JSON {text}: {e}"),
        }
    }

    /// Hashes and serialisations computed with Go's encoding/json using Lynq's own sanitising code.
    #[test]
    fn matches_lynq_go_vectors() {
        let cases = [
            (
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"ns"},"data":{"k":"v"}}"#,
                "29cb83dbfdd100f9",
                r#"{"apiVersion":"v1","data":{"k":"v"},"kind":"ConfigMap","metadata":{"name":"a","namespace":"ns"}}"#,
            ),
            (
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","annotations":{}}}"#,
                "4f3584f09398ec60",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"annotations":{},"name":"a"}}"#,
            ),
            (
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","annotations":{"lynq.sh/deletion-policy":"Delete","lynq.sh/applied-hash":"x"}},"data":{"html":"<a href=\"x\">&amp;</a>","ctl":"tab\there\nnl\r\u0001\u001f","uni":"é ü \u2028 \u2029 😀","bs":"back\\slash"}}"#,
                "caa84047c66b9e69",
                r#"{"apiVersion":"v1","data":{"bs":"back\\slash","ctl":"tab\there\nnl\r\u0001\u001f","html":"\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e","uni":"é ü \u2028 \u2029 😀"},"kind":"ConfigMap","metadata":{"annotations":{"lynq.sh/deletion-policy":"Delete"},"name":"a"}}"#,
            ),
            (
                r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"replicas":3,"paused":false,"x":null,"f":1.5,"big":1e21,"small":1.5e-7,"whole":100.0,"neg":-0.25,"list":[1,"two",{"b":2,"a":1}]}}"#,
                "6730520846800297",
                r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"app":"web"},"name":"web"},"spec":{"big":1e+21,"f":1.5,"list":[1,"two",{"a":1,"b":2}],"neg":-0.25,"paused":false,"replicas":3,"small":1.5e-7,"whole":100,"x":null}}"#,
            ),
        ];
        for (input, hash, canonical) in cases {
            let obj = parse(input);
            assert_eq!(canonical_json(&without_tracking_annotations(&obj)), canonical);
            assert_eq!(desired_hash(&obj), hash, "{input}");
        }
    }

    #[test]
    fn format_is_16_lowercase_hex() {
        let h = desired_hash(&json!({"kind": "Secret"}));
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{h}");
    }

    #[test]
    fn stable_across_key_order() {
        let a = parse(
            r#"{"kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"1","y":"2"}},"data":{"b":"2","a":"1"}}"#,
        );
        let b = parse(
            r#"{"data":{"a":"1","b":"2"},"metadata":{"labels":{"y":"2","x":"1"},"name":"a"},"kind":"ConfigMap"}"#,
        );
        assert_eq!(desired_hash(&a), desired_hash(&b));
    }

    #[test]
    fn ignores_only_the_two_tracking_annotations() {
        let base = json!({"kind": "ConfigMap", "metadata": {"name": "a", "annotations": {"keep": "1"}}});
        let mut stamped = base.clone();
        stamped["metadata"]["annotations"][ANN_APPLIED_HASH] = json!("0123456789abcdef");
        stamped["metadata"]["annotations"][ANN_APPLY_START] = json!("2026-01-01T00:00:00.5Z");
        assert_eq!(desired_hash(&stamped), desired_hash(&base));

        let mut other = base.clone();
        other["metadata"]["annotations"]["lynq.sh/deletion-policy"] = json!("Retain");
        assert_ne!(desired_hash(&other), desired_hash(&base));

        // Only tracking annotations ⇒ same as no annotations at all.
        let bare = json!({"kind": "ConfigMap", "metadata": {"name": "a"}});
        let only_tracking =
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "annotations": {ANN_APPLIED_HASH: "x"}}});
        assert_eq!(desired_hash(&only_tracking), desired_hash(&bare));
    }

    #[test]
    fn changes_on_any_other_change() {
        let base =
            json!({"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": 1, "tags": ["a", "b"]}});
        let variants = [
            json!({"kind": "Deployment", "metadata": {"name": "b"}, "spec": {"replicas": 1, "tags": ["a", "b"]}}),
            json!({"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": 2, "tags": ["a", "b"]}}),
            json!({"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": "1", "tags": ["a", "b"]}}),
            json!({"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": 1, "tags": ["b", "a"]}}),
            json!({"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": 1, "tags": ["a", "b"], "x": null}}),
            json!({"kind": "Deployment", "metadata": {"name": "a", "labels": {}}, "spec": {"replicas": 1, "tags": ["a", "b"]}}),
        ];
        for v in variants {
            assert_ne!(desired_hash(&v), desired_hash(&base), "{v}");
        }
    }

    #[test]
    fn does_not_modify_its_input() {
        let obj = json!({"metadata": {"annotations": {ANN_APPLIED_HASH: "x"}}});
        let before = obj.clone();
        let _ = desired_hash(&obj);
        assert_eq!(obj, before);
    }

    #[test]
    fn go_string_and_number_edge_cases() {
        // Go ≥ 1.22 (Lynq is built with 1.24) writes \b and \f in short form.
        assert_eq!(canonical_json(&json!("\u{8}\u{c}\u{7f}")), "\"\\b\\f\u{7f}\"");
        assert_eq!(go_float(1e-7), "1e-7");
        assert_eq!(go_float(1e-6), "0.000001");
        assert_eq!(go_float(1e20), "100000000000000000000");
        assert_eq!(go_float(1.25e100), "1.25e+100");
        assert_eq!(go_float(-0.0), "-0");
        assert_eq!(canonical_json(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(canonical_json(&json!(-5)), "-5");
    }
}
