//! `ignoreFields`: JSONPath expressions (RFC 9535) whose values are taken from the live object on
//! updates, so that lynq never fights another writer (an HPA, a user) over them.
//!
//! For every location a path matches in the live object, the live value is copied to the same
//! location of the desired object (Lynq copied only the first match into all matches); a location
//! the path matches in the desired object but not in the live one is removed from the desired
//! object (as Lynq does). Lynq's JSONPath library also took dot-paths without `$` (`spec.replicas`);
//! those are accepted by prefixing `$.`.

use std::cmp::Reverse;

use serde_json::{Map, Value};
use serde_json_path::{JsonPath, PathElement};

/// Why an `ignoreFields` entry is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreFieldsError {
    /// The entry is empty.
    #[error("invalid JSONPath \"\": the path is empty")]
    Empty,
    /// The entry is not a valid JSONPath expression.
    #[error("invalid JSONPath {path:?}: {message}")]
    Invalid { path: String, message: String },
}

/// One step of a concrete location: an object member or an array index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Name(String),
    Index(usize),
}

type Location = Vec<Step>;

/// Checks that `path` is a usable JSONPath expression (with or without the leading `$`).
pub fn validate(path: &str) -> Result<(), IgnoreFieldsError> {
    parse(path).map(|_| ())
}

/// Takes every location matched by `paths` from `live` into `desired` (see the module docs).
/// All paths are validated before `desired` is touched.
pub fn apply_ignore_fields(desired: &mut Value, live: &Value, paths: &[String]) -> Result<(), IgnoreFieldsError> {
    let parsed = paths.iter().map(|p| parse(p)).collect::<Result<Vec<_>, _>>()?;
    for path in &parsed {
        preserve(desired, live, path);
    }
    Ok(())
}

fn parse(path: &str) -> Result<JsonPath, IgnoreFieldsError> {
    let trimmed = path.trim();
    if trimmed.is_empty() {
        return Err(IgnoreFieldsError::Empty);
    }
    let rooted = with_root(trimmed);
    JsonPath::parse(&rooted).map_err(|e| {
        // Positions refer to the rooted expression; say so when it differs from the input.
        let message = if rooted == path { e.to_string() } else { format!("{e} (read as {rooted:?})") };
        IgnoreFieldsError::Invalid { path: path.to_string(), message }
    })
}

/// Adds the `$` root Lynq's library did not require: `spec.x` ⇒ `$.spec.x`, `['a']` ⇒ `$['a']`.
fn with_root(path: &str) -> String {
    if path.starts_with('$') {
        path.to_string()
    } else if path.starts_with('.') || path.starts_with('[') {
        format!("${path}")
    } else {
        format!("$.{path}")
    }
}

fn preserve(desired: &mut Value, live: &Value, path: &JsonPath) {
    let from_live: Vec<(Location, Value)> =
        path.query_located(live).iter().map(|n| (owned(n.location().iter()), n.node().clone())).collect();
    let mut absent_in_live: Vec<Location> = path
        .query_located(desired)
        .locations()
        .map(|l| owned(l.iter()))
        .filter(|location| lookup(live, location).is_none())
        .collect();
    for (location, value) in from_live {
        set(desired, &location, value);
    }
    // Deepest and highest indices first, so removing one location never shifts another.
    absent_in_live.sort_by(|a, b| Reverse(a).cmp(&Reverse(b)));
    absent_in_live.dedup();
    for location in absent_in_live {
        remove(desired, &location);
    }
}

fn owned<'a>(elements: impl Iterator<Item = &'a PathElement<'a>>) -> Location {
    elements
        .map(|e| match e {
            PathElement::Name(name) => Step::Name((*name).to_string()),
            PathElement::Index(i) => Step::Index(*i),
        })
        .collect()
}

fn lookup<'a>(value: &'a Value, location: &[Step]) -> Option<&'a Value> {
    location.iter().try_fold(value, |current, step| match step {
        Step::Name(name) => current.get(name.as_str()),
        Step::Index(i) => current.get(*i),
    })
}

/// Writes `value` at `location`, creating missing object members on the way. An index can only
/// replace an existing item or append right after the last one; a location that cannot be
/// reached (a scalar in the way, an index further out) is left alone.
fn set(target: &mut Value, location: &[Step], value: Value) {
    let Some((step, rest)) = location.split_first() else {
        *target = value;
        return;
    };
    match (target, step) {
        (Value::Object(map), Step::Name(name)) => {
            let child = map.entry(name.clone()).or_insert_with(|| placeholder(rest));
            set(child, rest, value);
        }
        (Value::Array(items), Step::Index(i)) => {
            if *i == items.len() {
                items.push(placeholder(rest));
            }
            if let Some(child) = items.get_mut(*i) {
                set(child, rest, value);
            }
        }
        _ => {}
    }
}

/// The container a missing step must be created as, so that the rest of the location fits.
fn placeholder(rest: &[Step]) -> Value {
    match rest.first() {
        Some(Step::Index(_)) => Value::Array(Vec::new()),
        _ => Value::Object(Map::new()),
    }
}

fn remove(target: &mut Value, location: &[Step]) {
    let Some((last, parent_location)) = location.split_last() else {
        // The root itself cannot be removed from an object.
        return;
    };
    let mut parent = target;
    for step in parent_location {
        let next = match (parent, step) {
            (Value::Object(map), Step::Name(name)) => map.get_mut(name.as_str()),
            (Value::Array(items), Step::Index(i)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(child) => parent = child,
            None => return,
        }
    }
    match (parent, last) {
        (Value::Object(map), Step::Name(name)) => {
            map.remove(name.as_str());
        }
        (Value::Array(items), Step::Index(i)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(desired: Value, live: &Value, paths: &[&str]) -> Value {
        let mut desired = desired;
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        if let Err(e) = apply_ignore_fields(&mut desired, live, &paths) {
            panic!("unexpected error for {paths:?}: {e}");
        }
        desired
    }

    #[test]
    fn validates_paths() {
        for ok in [
            "$.spec.replicas",
            "$.data.key",
            "$.spec.template.spec.containers[*].resources",
            "$['metadata']['annotations']['a.b/c']",
            "$.metadata.annotations['app.kubernetes.io/name']",
            "$.spec.containers[0].image",
            "$.items[?(@.status == 'active')]",
            "$..image",
            "spec.replicas",
            ".spec.replicas",
            "['data']['k']",
            "$",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in ["$.spec[", "$.spec.containers[*", "$$", "$.a..", "spec..", "$['unterminated]"] {
            assert!(matches!(validate(bad), Err(IgnoreFieldsError::Invalid { .. })), "{bad}");
        }
        assert_eq!(validate(""), Err(IgnoreFieldsError::Empty));
        assert_eq!(validate("  "), Err(IgnoreFieldsError::Empty));
        let message = validate("$.spec[").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("invalid JSONPath \"$.spec[\":"), "{message}");
        let message = validate("spec..").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.ends_with("(read as \"$.spec..\")"), "{message}");
    }

    #[test]
    fn copies_a_scalar_from_live() {
        let live = json!({"spec": {"replicas": 5, "paused": false}});
        let out = run(json!({"spec": {"replicas": 1, "paused": true}}), &live, &["$.spec.replicas"]);
        assert_eq!(out, json!({"spec": {"replicas": 5, "paused": true}}));
    }

    #[test]
    fn dot_path_without_root_is_accepted() {
        let live = json!({"spec": {"replicas": 5}});
        assert_eq!(run(json!({"spec": {"replicas": 1}}), &live, &["spec.replicas"]), live);
    }

    #[test]
    fn copies_a_config_map_key_and_creates_it_when_desired_lacks_it() {
        let live = json!({"data": {"key": "edited", "other": "live"}});
        let out = run(json!({"data": {"key": "template", "other": "template"}}), &live, &["$.data.key"]);
        assert_eq!(out, json!({"data": {"key": "edited", "other": "template"}}));
        let out = run(json!({"metadata": {"name": "a"}}), &live, &["$.data.key"]);
        assert_eq!(out, json!({"metadata": {"name": "a"}, "data": {"key": "edited"}}));
    }

    #[test]
    fn removes_from_desired_what_live_lacks() {
        let live = json!({"spec": {"paused": false}});
        let out = run(json!({"spec": {"replicas": 3, "paused": true}}), &live, &["$.spec.replicas"]);
        assert_eq!(out, json!({"spec": {"paused": true}}));
    }

    #[test]
    fn path_matching_nothing_anywhere_is_a_no_op() {
        let desired = json!({"spec": {"replicas": 3}});
        assert_eq!(run(desired.clone(), &json!({"spec": {}}), &["$.spec.nothing.here"]), desired);
        assert_eq!(run(desired.clone(), &json!({}), &["$.status.x"]), desired);
    }

    #[test]
    fn wildcard_copies_every_match_not_only_the_first() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "resources": {"limits": {"cpu": "1"}}},
            {"name": "b", "image": "b:1", "resources": {"limits": {"cpu": "2"}}},
        ]}}}});
        let desired = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:2", "resources": {"limits": {"cpu": "9"}}},
            {"name": "b", "image": "b:2"},
        ]}}}});
        let out = run(desired, &live, &["$.spec.template.spec.containers[*].resources"]);
        assert_eq!(
            out,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "a:2", "resources": {"limits": {"cpu": "1"}}},
                {"name": "b", "image": "b:2", "resources": {"limits": {"cpu": "2"}}},
            ]}}}})
        );
    }

    #[test]
    fn wildcard_removes_matches_live_lacks() {
        let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "resources": {"x": 1}}]}});
        let desired = json!({"spec": {"containers": [
            {"name": "a", "resources": {"x": 9}},
            {"name": "b", "resources": {"x": 9}},
            {"name": "new", "resources": {"x": 9}},
        ]}});
        let out = run(desired, &live, &["$.spec.containers[*].resources"]);
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "resources": {"x": 1}}, {"name": "new"}]}})
        );
    }

    #[test]
    fn wildcard_over_list_items_takes_the_live_list() {
        let live = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}, {"key": "c"}]}});
        let out = run(json!({"spec": {"tolerations": [{"key": "x"}]}}), &live, &["$.spec.tolerations[*]"]);
        assert_eq!(out, live);
        let short = json!({"spec": {"tolerations": [{"key": "a"}]}});
        let out = run(
            json!({"spec": {"tolerations": [{"key": "x"}, {"key": "y"}, {"key": "z"}]}}),
            &short,
            &["$.spec.tolerations[*]"],
        );
        assert_eq!(out, short);
    }

    #[test]
    fn bracket_keys_with_dots_and_slashes() {
        let live = json!({"metadata": {"annotations": {"a.b/c": "live", "other": "live"}}});
        let desired = json!({"metadata": {"annotations": {"a.b/c": "mine", "other": "mine"}}});
        let out = run(desired, &live, &["$['metadata']['annotations']['a.b/c']"]);
        assert_eq!(out, json!({"metadata": {"annotations": {"a.b/c": "live", "other": "mine"}}}));
    }

    #[test]
    fn filter_and_descendant_selectors() {
        let live = json!({"spec": {"containers": [{"name": "app", "image": "app:live"}, {"name": "side", "image": "side:live"}]}});
        let desired = json!({"spec": {"containers": [{"name": "app", "image": "app:new"}, {"name": "side", "image": "side:new"}]}});
        let out = run(desired.clone(), &live, &["$.spec.containers[?@.name == 'side'].image"]);
        assert_eq!(out["spec"]["containers"][0]["image"], "app:new");
        assert_eq!(out["spec"]["containers"][1]["image"], "side:live");
        let out = run(desired, &live, &["$..image"]);
        assert_eq!(out, live);
    }

    #[test]
    fn several_paths_apply_in_turn() {
        let live = json!({"spec": {"replicas": 4}, "data": {"k": "live"}});
        let out = run(
            json!({"spec": {"replicas": 1}, "data": {"k": "mine", "j": "mine"}}),
            &live,
            &["$.spec.replicas", "data.k"],
        );
        assert_eq!(out, json!({"spec": {"replicas": 4}, "data": {"k": "live", "j": "mine"}}));
    }

    #[test]
    fn invalid_path_leaves_desired_untouched() {
        let live = json!({"spec": {"replicas": 4}});
        let mut desired = json!({"spec": {"replicas": 1}});
        let paths = vec!["$.spec.replicas".to_string(), "$.spec[".to_string()];
        assert!(apply_ignore_fields(&mut desired, &live, &paths).is_err());
        assert_eq!(desired, json!({"spec": {"replicas": 1}}));
    }

    #[test]
    fn unreachable_location_is_skipped() {
        // live has an object where desired has a scalar: the value cannot be placed inside it.
        let live = json!({"spec": {"strategy": {"type": "Recreate"}}});
        let out = run(json!({"spec": {"strategy": "flat"}}), &live, &["$.spec.strategy.type"]);
        assert_eq!(out, json!({"spec": {"strategy": "flat"}}));
    }
}
