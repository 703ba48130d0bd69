//! A small registry of per-object series, rendered in the Prometheus text format at scrape time.
//!
//! metrics-exporter-prometheus cannot drop one series, so every family labelled with a node, hub or
//! form lives here instead: removing an object removes its series from the next scrape.

use std::{collections::BTreeMap, fmt::Write as _, sync::Mutex};

/// What a family is, as written on its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing value.
    Counter,
    /// Observations counted into cumulative buckets, with a sum and a count.
    Histogram(&'static [f64]),
}

/// A metric family: name, help text and kind.
#[derive(Debug)]
pub struct Desc {
    /// Full metric name (without `_bucket`/`_sum`/`_count`).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Gauge, counter or histogram (with its bucket bounds).
    pub kind: Kind,
}

/// Label pairs of one series, in the order they are rendered.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Scalar(f64),
    /// A gauge that reads as the seconds elapsed since this instant (never negative) at render time.
    Since(chrono::DateTime<chrono::Utc>),
    Histogram {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

struct Family {
    desc: &'static Desc,
    series: BTreeMap<Labels, Value>,
}

/// The current per-object series of every family.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Self {
        Self { families: Mutex::new(BTreeMap::new()) }
    }

    fn with_series(&self, desc: &'static Desc, labels: Labels, f: impl FnOnce(&mut Value)) {
        // A poisoned lock only means another thread panicked mid-update; the map itself stays usable.
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = families.entry(desc.name).or_insert_with(|| Family { desc, series: BTreeMap::new() });
        let value = family.series.entry(labels).or_insert_with(|| match desc.kind {
            Kind::Histogram(bounds) => Value::Histogram { counts: vec![0; bounds.len()], sum: 0.0, count: 0 },
            Kind::Gauge | Kind::Counter => Value::Scalar(0.0),
        });
        f(value);
    }

    /// Sets a gauge.
    pub fn set(&self, desc: &'static Desc, labels: Labels, v: f64) {
        self.with_series(desc, labels, |value| *value = Value::Scalar(v));
    }

    /// Sets a gauge that grows with time: it renders as the seconds elapsed since `t`.
    pub fn set_since(&self, desc: &'static Desc, labels: Labels, t: chrono::DateTime<chrono::Utc>) {
        self.with_series(desc, labels, |value| *value = Value::Since(t));
    }

    /// Adds to a counter (or gauge).
    pub fn add(&self, desc: &'static Desc, labels: Labels, by: f64) {
        self.with_series(desc, labels, |value| {
            if let Value::Scalar(v) = value {
                *v += by;
            }
        });
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, desc: &'static Desc, labels: Labels, v: f64) {
        let Kind::Histogram(bounds) = desc.kind else { return };
        self.with_series(desc, labels, |value| {
            if let Value::Histogram { counts, sum, count } = value {
                // Buckets are stored non-cumulatively; rendering accumulates them.
                if let Some(i) = bounds.iter().position(|b| v <= *b) {
                    counts[i] += 1;
                }
                *sum += v;
                *count += 1;
            }
        });
    }

    /// The current value of a gauge or counter series, if it exists.
    pub fn get(&self, name: &str, labels: &[(&'static str, String)]) -> Option<f64> {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        match families.get(name)?.series.get(labels)? {
            Value::Scalar(v) => Some(*v),
            Value::Since(t) => Some(seconds_since(*t, chrono::Utc::now())),
            Value::Histogram { .. } => None,
        }
    }

    /// The values of `label` in the series of `name` whose label list starts with `prefix`.
    ///
    /// A range read of the sorted series, not a scan: nodes record their status on every pass, and a
    /// scan of every node's series made a bulk load quadratic.
    pub fn label_values_with_prefix(&self, name: &str, prefix: &[(&'static str, String)], label: &str) -> Vec<String> {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let Some(family) = families.get(name) else { return Vec::new() };
        prefixed(&family.series, prefix)
            .filter_map(|labels| labels.iter().find(|(k, _)| *k == label).map(|(_, v)| v.clone()))
            .collect()
    }

    /// Removes every series (of every family) whose label list starts with `prefix`, by range reads.
    pub fn remove_with_prefix(&self, prefix: &[(&'static str, String)]) {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for f in families.values_mut() {
            let gone: Vec<Labels> = prefixed(&f.series, prefix).cloned().collect();
            for labels in gone {
                f.series.remove(&labels);
            }
        }
        families.retain(|_, f| !f.series.is_empty());
    }

    /// Removes every series (of every family) carrying all of `selector`'s label pairs.
    pub fn remove_matching(&self, selector: &[(&str, &str)]) {
        self.remove_where(|_| true, selector);
    }

    /// Removes the series of the families `names` carrying all of `selector`'s label pairs.
    pub fn remove_matching_in(&self, names: &[&str], selector: &[(&str, &str)]) {
        self.remove_where(|name| names.contains(&name), selector);
    }

    fn remove_where(&self, family: impl Fn(&str) -> bool, selector: &[(&str, &str)]) {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for (name, f) in families.iter_mut() {
            if family(name) {
                f.series.retain(|labels, _| !matches(labels, selector));
            }
        }
        families.retain(|_, f| !f.series.is_empty());
    }

    /// The exposition text of every family with at least one series.
    pub fn render(&self) -> String {
        self.render_at(chrono::Utc::now())
    }

    /// The exposition text with time-based gauges evaluated at `now`.
    pub fn render_at(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for family in families.values() {
            render_family(&mut out, family, now);
        }
        out
    }
}

/// The label lists of `series` that start with `prefix` (they sort right after it).
fn prefixed<'a>(
    series: &'a BTreeMap<Labels, Value>,
    prefix: &'a [(&'static str, String)],
) -> impl Iterator<Item = &'a Labels> + 'a {
    use std::ops::Bound;
    series
        .range::<[(&'static str, String)], _>((Bound::Included(prefix), Bound::Unbounded))
        .map(|(labels, _)| labels)
        .take_while(move |labels| labels.starts_with(prefix))
}

fn matches(labels: &Labels, selector: &[(&str, &str)]) -> bool {
    selector.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// Seconds from `t` to `now`, never negative.
fn seconds_since(t: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> f64 {
    ((now - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
}

fn render_family(out: &mut String, family: &Family, now: chrono::DateTime<chrono::Utc>) {
    let desc = family.desc;
    let kind = match desc.kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
        Kind::Histogram(_) => "histogram",
    };
    let _ = writeln!(out, "# HELP {} {}", desc.name, escape_help(desc.help));
    let _ = writeln!(out, "# TYPE {} {kind}", desc.name);
    for (labels, value) in &family.series {
        match (value, desc.kind) {
            (Value::Scalar(v), _) => {
                let _ = writeln!(out, "{}{} {}", desc.name, label_set(labels, None), number(*v));
            }
            (Value::Since(t), _) => {
                let v = seconds_since(*t, now);
                let _ = writeln!(out, "{}{} {}", desc.name, label_set(labels, None), number(v));
            }
            (Value::Histogram { counts, sum, count }, Kind::Histogram(bounds)) => {
                let mut cumulative = 0;
                for (bound, n) in bounds.iter().zip(counts) {
                    cumulative += n;
                    let le = number(*bound);
                    let _ = writeln!(out, "{}_bucket{} {cumulative}", desc.name, label_set(labels, Some(&le)));
                }
                let _ = writeln!(out, "{}_bucket{} {count}", desc.name, label_set(labels, Some("+Inf")));
                let _ = writeln!(out, "{}_sum{} {}", desc.name, label_set(labels, None), number(*sum));
                let _ = writeln!(out, "{}_count{} {count}", desc.name, label_set(labels, None));
            }
            (Value::Histogram { .. }, _) => {}
        }
    }
}

fn label_set(labels: &Labels, le: Option<&str>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() { String::new() } else { format!("{{{}}}", pairs.join(",")) }
}

/// A label value escaped per the text format: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the text format spells it (`+Inf`, `-Inf`, `NaN`, else the shortest decimal).
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static GAUGE: Desc = Desc { name: "test_gauge", help: "A gauge.\nSecond line \\ here", kind: Kind::Gauge };
    static COUNTER: Desc = Desc { name: "test_total", help: "A counter.", kind: Kind::Counter };
    static HIST: Desc = Desc { name: "test_seconds", help: "A histogram.", kind: Kind::Histogram(&[0.1, 1.0]) };

    fn labels(node: &str) -> Labels {
        vec![("lynqnode", node.to_string()), ("namespace", "ns".to_string())]
    }

    #[test]
    fn gauges_counters_and_histograms_render_in_the_text_format() {
        let r = Registry::new();
        r.set(&GAUGE, labels("a"), 3.0);
        r.add(&COUNTER, labels("a"), 1.0);
        r.add(&COUNTER, labels("a"), 2.0);
        r.observe(&HIST, labels("a"), 0.05);
        r.observe(&HIST, labels("a"), 0.5);
        r.observe(&HIST, labels("a"), 5.0);
        let text = r.render();
        let expected = "\
# HELP test_gauge A gauge.\\nSecond line \\\\ here
# TYPE test_gauge gauge
test_gauge{lynqnode=\"a\",namespace=\"ns\"} 3
# HELP test_seconds A histogram.
# TYPE test_seconds histogram
test_seconds_bucket{lynqnode=\"a\",namespace=\"ns\",le=\"0.1\"} 1
test_seconds_bucket{lynqnode=\"a\",namespace=\"ns\",le=\"1\"} 2
test_seconds_bucket{lynqnode=\"a\",namespace=\"ns\",le=\"+Inf\"} 3
test_seconds_sum{lynqnode=\"a\",namespace=\"ns\"} 5.55
test_seconds_count{lynqnode=\"a\",namespace=\"ns\"} 3
# HELP test_total A counter.
# TYPE test_total counter
test_total{lynqnode=\"a\",namespace=\"ns\"} 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::new();
        r.set(&GAUGE, vec![("lynqnode", "a\"b\\c\nd".into())], 1.0);
        assert!(r.render().contains(r#"test_gauge{lynqnode="a\"b\\c\nd"} 1"#), "{}", r.render());
    }

    #[test]
    fn special_values_use_the_text_format_spelling() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.005), "0.005");
        assert_eq!(number(300.0), "300");
    }

    #[test]
    fn removing_an_object_drops_all_its_series_and_empty_families() {
        let r = Registry::new();
        r.set(&GAUGE, labels("a"), 1.0);
        r.set(&GAUGE, labels("b"), 2.0);
        r.observe(&HIST, labels("a"), 0.5);
        r.remove_matching(&[("namespace", "ns"), ("lynqnode", "a")]);
        let text = r.render();
        assert!(!text.contains("lynqnode=\"a\""), "{text}");
        assert!(text.contains("test_gauge{lynqnode=\"b\",namespace=\"ns\"} 2"), "{text}");
        assert!(!text.contains("test_seconds"), "an empty family has no HELP/TYPE lines: {text}");
    }

    #[test]
    fn prefix_reads_and_removals_touch_only_that_objects_series() {
        static REASONS: Desc = Desc { name: "test_reason", help: "Reasons.", kind: Kind::Gauge };
        let r = Registry::new();
        let with_reason = |node: &str, reason: &str| {
            let mut l = labels(node);
            l.push(("reason", reason.to_string()));
            l
        };
        // "a" is a prefix of "ab" as a string: only whole label pairs may match.
        for (node, reason) in [("a", "X"), ("a", "Y"), ("ab", "Z"), ("b", "W")] {
            r.set(&REASONS, with_reason(node, reason), 1.0);
        }
        r.set(&GAUGE, labels("a"), 1.0);
        r.set(&GAUGE, labels("ab"), 1.0);
        assert_eq!(r.label_values_with_prefix("test_reason", &labels("a"), "reason"), ["X", "Y"]);
        assert_eq!(r.label_values_with_prefix("test_reason", &labels("ab"), "reason"), ["Z"]);
        assert!(r.label_values_with_prefix("test_reason", &labels("c"), "reason").is_empty());
        assert!(r.label_values_with_prefix("missing", &labels("a"), "reason").is_empty());

        r.remove_with_prefix(&labels("a"));
        let text = r.render();
        assert!(!text.contains("lynqnode=\"a\""), "{text}");
        assert!(text.contains("test_reason{lynqnode=\"ab\",namespace=\"ns\",reason=\"Z\"} 1"), "{text}");
        assert!(text.contains("test_gauge{lynqnode=\"ab\",namespace=\"ns\"} 1"), "{text}");
        r.remove_with_prefix(&labels("ab"));
        r.remove_with_prefix(&labels("b"));
        assert_eq!(r.render(), "", "empty families are dropped");
    }

    #[test]
    fn a_since_gauge_grows_with_time() {
        let r = Registry::new();
        let t = chrono::DateTime::from_timestamp(1_000, 0).expect("valid time");
        r.set_since(&GAUGE, labels("a"), t);
        let later = chrono::DateTime::from_timestamp(1_002, 500_000_000).expect("valid time");
        assert!(
            r.render_at(later).contains(r#"test_gauge{lynqnode="a",namespace="ns"} 2.5"#),
            "{}",
            r.render_at(later)
        );
        let earlier = chrono::DateTime::from_timestamp(999, 0).expect("valid time");
        assert!(r.render_at(earlier).contains(r#"test_gauge{lynqnode="a",namespace="ns"} 0"#));
    }

    #[test]
    fn removal_can_be_limited_to_some_families() {
        let r = Registry::new();
        r.set(&GAUGE, labels("a"), 1.0);
        r.add(&COUNTER, labels("a"), 1.0);
        r.remove_matching_in(&["test_gauge"], &[("lynqnode", "a")]);
        assert_eq!(r.get("test_gauge", &labels("a")), None);
        assert_eq!(r.get("test_total", &labels("a")), Some(1.0));
    }

    #[test]
    fn a_selector_must_match_every_pair() {
        let r = Registry::new();
        r.set(&GAUGE, labels("a"), 1.0);
        r.remove_matching(&[("namespace", "other"), ("lynqnode", "a")]);
        assert_eq!(r.get("test_gauge", &labels("a")), Some(1.0));
    }
}
