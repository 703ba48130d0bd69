//! The hub's desired state: its view of the table, the LynqNodes that view implies, and the plan
//! that turns the existing nodes into the desired ones. Plain data in, plain data out.
//!
//! Deliberate departures from Lynq (reference Appendix C 10 and 16, §2.1 step 7):
//! - A uid that would give an invalid node name (or `lynq.sh/uid` label value) is skipped and
//!   reported; it is never truncated or rewritten.
//! - More than one active row with the same uid ("last row wins" in Lynq) is ambiguous: no node is
//!   created for it and an existing node is left exactly as it is until only one active row remains.
//! - Two (uid, form) pairs with the same `{uid}-{form}` name: the pair that already owns the node
//!   keeps it; if none does, the lexicographically smallest uid wins. The loser is reported.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};

pub use crate::node::variables::{ANN_ACTIVATE, ANN_EXTRA, ANN_HOST_OR_URL, ANN_HUB_ID};
use crate::{
    api::{LynqHubSpec, LynqNode},
    apply::hash::canonical_json,
    source::{ColumnValue, Row, RowChange},
};

/// Label: name of the hub that owns the node.
pub const LABEL_HUB: &str = "lynq.sh/hub";
/// Label: the row's uid.
pub const LABEL_UID: &str = "lynq.sh/uid";
/// Annotation: the form generation rendered into the node.
pub const ANN_TEMPLATE_GENERATION: &str = "lynq.sh/template-generation";
/// Annotation: RFC3339 time of the node's last create or update by the hub.
pub const ANN_ROLLOUT_UPDATE_START: &str = "lynq.sh/rollout-update-start";

/// Longest valid object name (DNS-1123 subdomain).
const MAX_NAME_LEN: usize = 253;
/// Longest valid label value.
const MAX_LABEL_VALUE_LEN: usize = 63;
/// Lynq's truthy activate values, compared exactly (§2.11).
const TRUTHY: [&str; 7] = ["1", "true", "TRUE", "True", "yes", "YES", "Yes"];

/// Whether an activate value provisions the row: exactly one of Lynq's truthy strings.
pub fn is_active(value: &str) -> bool {
    TRUTHY.contains(&value)
}

/// Which columns of the hub's table mean what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Column holding the row's uid.
    pub uid: String,
    /// Column whose value decides whether the row is provisioned.
    pub activate: String,
    /// Deprecated hostOrUrl column, when mapped.
    pub host_or_url: Option<String>,
    /// Template variable name to column name.
    pub extra: BTreeMap<String, String>,
}

impl Mapping {
    /// The mapping of a hub spec; an empty hostOrUrl column counts as unmapped, as in Lynq.
    pub fn from_spec(spec: &LynqHubSpec) -> Self {
        let m = &spec.value_mappings;
        Self {
            uid: m.uid.clone(),
            activate: m.activate.clone(),
            host_or_url: m.host_or_url.clone().filter(|c| !c.is_empty()),
            extra: spec.extra_value_mappings.clone().unwrap_or_default(),
        }
    }

    /// Every column to read, deduplicated: uid, activate, hostOrUrl, then extras by variable name.
    pub fn columns(&self) -> Vec<String> {
        let all = [&self.uid, &self.activate].into_iter().chain(&self.host_or_url).chain(self.extra.values());
        let mut seen = BTreeSet::new();
        all.filter(|c| seen.insert(c.as_str())).cloned().collect()
    }

    /// The node values a row gives (NULL and missing columns read as "").
    pub fn values(&self, row: &Row) -> NodeValues {
        NodeValues {
            activate: text(row, &self.activate).to_string(),
            host_or_url: self.host_or_url.as_deref().map(|c| text(row, c)).unwrap_or_default().to_string(),
            extra: self.extra.iter().map(|(var, col)| (var.clone(), text(row, col).to_string())).collect(),
        }
    }
}

/// A column's value as Lynq's `sql.NullString` scan gives it: NULL (and anything unknown) is "".
fn text<'a>(row: &'a Row, column: &str) -> &'a str {
    match row.get(column) {
        Some(ColumnValue::Text(s)) => s,
        _ => "",
    }
}

/// What [`TableState::apply`] could not map exactly; the periodic full resync heals all of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Deletes of a row the hub never saw (ignored).
    pub unknown_deletes: usize,
    /// Updates whose old image was not found (the new image was added as a new row).
    pub unmatched_updates: usize,
    /// Rows found by uid only, because no stored image agreed with the change's old image.
    pub inexact_matches: usize,
    /// `Unchanged` values with no previous value to take (stored as NULL).
    pub unresolved_unchanged: usize,
}

/// The hub's view of its table: a multiset of row images keyed by uid (a table may repeat uids).
/// Deliberately without `Default`: it must know its uid column ([`TableState::new`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TableState {
    uid_column: String,
    rows: BTreeMap<String, Vec<Row>>,
    /// Uids whose rows come from a read newer than the changes being replayed (a stream resumed from
    /// a checkpoint): the first change of such a uid replaces them instead of adding to them.
    provisional: BTreeSet<String>,
}

impl TableState {
    /// An empty table whose rows are keyed by `mapping`'s uid column.
    pub fn new(mapping: &Mapping) -> Self {
        Self { uid_column: mapping.uid.clone(), rows: BTreeMap::new(), provisional: BTreeSet::new() }
    }

    /// A table holding exactly `rows` (a snapshot or a poll).
    pub fn from_rows(mapping: &Mapping, rows: Vec<Row>) -> Self {
        let mut state = Self::new(mapping);
        state.replace_all(rows);
        state
    }

    /// Replaces every row with a full read; `Unchanged` cannot occur in one and reads as NULL.
    pub fn replace_all(&mut self, rows: Vec<Row>) {
        self.rows.clear();
        self.provisional.clear();
        let mut ignored = ApplyReport::default();
        for row in rows {
            self.insert(resolve(&row, None, &mut ignored));
        }
    }

    /// Takes a read made after the position a stream resumes from as the base the replayed changes
    /// apply to: a row the replay never mentions keeps its node, and a replayed change of a row the
    /// read already shows replaces that row rather than duplicating it.
    pub fn replace_all_as_replay_base(&mut self, rows: Vec<Row>) {
        self.replace_all(rows);
        self.provisional = self.rows.keys().cloned().collect();
    }

    /// Applies the changes of one committed transaction, in order.
    pub fn apply(&mut self, changes: &[RowChange]) -> ApplyReport {
        let mut report = ApplyReport::default();
        for change in changes {
            match change {
                RowChange::Insert { after } => self.insert_replayed(resolve(after, None, &mut report)),
                RowChange::Update { before, after } => self.update(before.as_ref(), after, &mut report),
                RowChange::Delete { before } => {
                    if self.take_matching(before, &mut report).is_none() {
                        report.unknown_deletes += 1;
                    }
                    if let Some(uid) = self.uid_of(before) {
                        self.provisional.remove(&uid);
                    }
                }
                RowChange::Truncate => {
                    self.rows.clear();
                    self.provisional.clear();
                }
            }
        }
        report
    }

    /// Number of rows (duplicates included).
    pub fn len(&self) -> usize {
        self.rows.values().map(Vec::len).sum()
    }

    /// Whether the table holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.values().all(Vec::is_empty)
    }

    /// Every row image, by uid.
    pub fn rows(&self) -> impl Iterator<Item = (&str, &Row)> {
        self.rows.iter().flat_map(|(uid, rows)| rows.iter().map(move |r| (uid.as_str(), r)))
    }

    /// The row images with this uid.
    pub fn rows_with_uid(&self, uid: &str) -> &[Row] {
        self.rows.get(uid).map(Vec::as_slice).unwrap_or_default()
    }

    /// Uids whose mapped values differ between `self` and `other` (a resync finding missed changes).
    pub fn divergent_uids(&self, other: &TableState, mapping: &Mapping) -> Vec<String> {
        let columns = mapping.columns();
        let uids: BTreeSet<&String> = self.rows.keys().chain(other.rows.keys()).collect();
        uids.into_iter()
            .filter(|uid| self.projection(uid, &columns) != other.projection(uid, &columns))
            .cloned()
            .collect()
    }

    /// The sorted images of `uid` restricted to `columns`, as text.
    fn projection(&self, uid: &str, columns: &[String]) -> Vec<Vec<String>> {
        let mut images: Vec<Vec<String>> = self
            .rows_with_uid(uid)
            .iter()
            .map(|row| columns.iter().map(|c| text(row, c).to_string()).collect())
            .collect();
        images.sort();
        images
    }

    fn uid_of(&self, row: &Row) -> Option<String> {
        match row.get(&self.uid_column)? {
            ColumnValue::Text(s) => Some(s.clone()),
            ColumnValue::Null => Some(String::new()),
            ColumnValue::Unchanged => None,
        }
    }

    fn insert(&mut self, row: Row) {
        let uid = self.uid_of(&row).unwrap_or_default();
        self.rows.entry(uid).or_default().push(row);
    }

    /// Inserts a row image from a change; a provisional (newer) image of its uid is replaced.
    fn insert_replayed(&mut self, row: Row) {
        let uid = self.uid_of(&row).unwrap_or_default();
        if self.provisional.remove(&uid) {
            self.rows.remove(&uid);
        }
        self.insert(row);
    }

    /// The old image is found by the before image, else by the after image's uid; the new image is
    /// the old one overlaid with the after image, so `Unchanged` (TOAST) and columns missing from a
    /// minimal binlog image keep their previous values. A uid change moves the row.
    fn update(&mut self, before: Option<&Row>, after: &Row, report: &mut ApplyReport) {
        let old = before.and_then(|b| self.take_matching(b, report)).or_else(|| self.take_by_uid(after));
        if old.is_none() {
            report.unmatched_updates += 1;
        }
        if let Some(uid) = before.and_then(|b| self.uid_of(b)) {
            self.provisional.remove(&uid);
        }
        self.insert_replayed(resolve(after, old.as_ref(), report));
    }

    /// Removes the stored image best matching `probe`: by the probe's uid when it has one (an image
    /// agreeing on every probe column first, else the first with that uid), otherwise the first
    /// image agreeing on every probe column.
    fn take_matching(&mut self, probe: &Row, report: &mut ApplyReport) -> Option<Row> {
        match self.uid_of(probe) {
            Some(uid) => self.take_from_uid(&uid, probe, report),
            None => self.take_by_columns(probe),
        }
    }

    /// The old image of an update without a before image: the after image's values are new, so
    /// disagreeing with it is expected and not reported.
    fn take_by_uid(&mut self, after: &Row) -> Option<Row> {
        let uid = self.uid_of(after)?;
        self.take_from_uid(&uid, after, &mut ApplyReport::default())
    }

    fn take_from_uid(&mut self, uid: &str, probe: &Row, report: &mut ApplyReport) -> Option<Row> {
        let rows = self.rows.get_mut(uid)?;
        let index = match rows.iter().position(|r| agrees(r, probe)) {
            Some(i) => i,
            None if rows.is_empty() => return None,
            None => {
                report.inexact_matches += 1;
                0
            }
        };
        let row = rows.remove(index);
        if rows.is_empty() {
            self.rows.remove(uid);
        }
        Some(row)
    }

    fn take_by_columns(&mut self, probe: &Row) -> Option<Row> {
        if probe.values().all(|v| *v == ColumnValue::Unchanged) {
            return None;
        }
        let uid = self.rows.iter().find(|(_, rows)| rows.iter().any(|r| agrees(r, probe)))?.0.clone();
        let rows = self.rows.get_mut(&uid)?;
        let index = rows.iter().position(|r| agrees(r, probe))?;
        let row = rows.remove(index);
        if rows.is_empty() {
            self.rows.remove(&uid);
        }
        Some(row)
    }
}

/// Whether `stored` has the probe's value in every column the probe knows.
fn agrees(stored: &Row, probe: &Row) -> bool {
    probe.iter().filter(|(_, v)| **v != ColumnValue::Unchanged).all(|(c, v)| stored.get(c) == Some(v))
}

/// `after` overlaid on `old`: `Unchanged` and absent columns keep the old value (NULL without one).
fn resolve(after: &Row, old: Option<&Row>, report: &mut ApplyReport) -> Row {
    let mut row = old.cloned().unwrap_or_default();
    for (column, value) in after {
        match value {
            ColumnValue::Unchanged if row.contains_key(column) => {}
            ColumnValue::Unchanged => {
                report.unresolved_unchanged += 1;
                row.insert(column.clone(), ColumnValue::Null);
            }
            v => {
                row.insert(column.clone(), v.clone());
            }
        }
    }
    row
}

/// A LynqForm as the hub needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormRef {
    /// Form name.
    pub name: String,
    /// Form `metadata.generation`.
    pub generation: i64,
}

/// The row values a node carries in its annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeValues {
    /// Raw activate value (e.g. "1").
    pub activate: String,
    /// hostOrUrl value ("" when unmapped or NULL).
    pub host_or_url: String,
    /// Extra template variables.
    pub extra: BTreeMap<String, String>,
}

impl NodeValues {
    /// The `lynq.sh/extra` annotation: the map as Go's `json.Marshal` writes it (sorted keys, HTML escaped).
    pub fn extra_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> =
            self.extra.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        canonical_json(&serde_json::Value::Object(map))
    }
}

/// One LynqNode the table asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredNode {
    /// `{uid}-{form}`.
    pub name: String,
    /// Row uid.
    pub uid: String,
    /// Form name.
    pub form: String,
    /// Form generation to render.
    pub template_generation: i64,
    /// Row values.
    pub values: NodeValues,
}

/// Why an active row (or one of its forms) gets no node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// The node name or uid label value would be rejected by the apiserver.
    InvalidName,
    /// More than one active row has this uid.
    DuplicateUid,
    /// Another (uid, form) pair gives the same node name and won.
    NameCollision,
    /// The node name is held by a node of another (uid, form) that is being deleted first.
    NameInUse,
}

impl SkipReason {
    /// Stable label for events, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidName => "InvalidName",
            Self::DuplicateUid => "DuplicateUid",
            Self::NameCollision => "NameCollision",
            Self::NameInUse => "NameInUse",
        }
    }
}

/// An active row (or row × form) that gets no node, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRow {
    /// Row uid.
    pub uid: String,
    /// The form concerned; None when the whole row is skipped.
    pub form: Option<String>,
    /// Why.
    pub reason: SkipReason,
    /// Human-readable explanation.
    pub message: String,
}

impl std::fmt::Display for SkippedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.form {
            Some(form) => {
                write!(f, "row {:?} × form {form:?} skipped ({}): {}", self.uid, self.reason.as_str(), self.message)
            }
            None => write!(f, "row {:?} skipped ({}): {}", self.uid, self.reason.as_str(), self.message),
        }
    }
}

/// Every node the table asks for, before the existing nodes are considered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredSet {
    /// The hub's name.
    pub hub: String,
    /// Forms of the hub.
    pub forms: BTreeSet<String>,
    /// Nodes whose name no other pair produces, by name.
    pub nodes: Vec<DesiredNode>,
    /// Groups (≥ 2) of nodes sharing one name; `diff` picks the winner.
    pub contested: Vec<Vec<DesiredNode>>,
    /// Uids with more than one active row; their existing nodes are kept untouched.
    pub duplicate_uids: BTreeSet<String>,
    /// Rows skipped so far (invalid names, duplicate uids).
    pub skipped: Vec<SkippedRow>,
    /// Active rows, duplicates included (Lynq's `status.desired` is forms × this).
    pub active_rows: usize,
}

/// The nodes that every active row × form asks for.
pub fn desired_nodes(state: &TableState, mapping: &Mapping, forms: &[FormRef], hub_name: &str) -> DesiredSet {
    let mut set = DesiredSet {
        hub: hub_name.to_string(),
        forms: forms.iter().map(|f| f.name.clone()).collect(),
        ..Default::default()
    };
    let mut by_name: BTreeMap<String, Vec<DesiredNode>> = BTreeMap::new();
    for (uid, rows) in &state.rows {
        let active: Vec<&Row> = rows.iter().filter(|r| is_active(text(r, &mapping.activate))).collect();
        set.active_rows += active.len();
        let row = match active.as_slice() {
            [] => continue,
            [row] => *row,
            many => {
                set.duplicate_uids.insert(uid.clone());
                set.skipped.push(duplicate_skip(uid, many.len()));
                continue;
            }
        };
        let values = mapping.values(row);
        for form in forms {
            match node_for(uid, form, &values) {
                Ok(node) => by_name.entry(node.name.clone()).or_default().push(node),
                Err(skip) => set.skipped.push(skip),
            }
        }
    }
    for (_, mut group) in by_name {
        match group.len() {
            1 => set.nodes.append(&mut group),
            _ => set.contested.push(group),
        }
    }
    set
}

fn duplicate_skip(uid: &str, count: usize) -> SkippedRow {
    SkippedRow {
        uid: uid.to_string(),
        form: None,
        reason: SkipReason::DuplicateUid,
        message: format!(
            "{count} active rows have uid {uid:?}; which one is meant is ambiguous, so existing nodes of this uid \
             are left unchanged and none is created until exactly one active row remains"
        ),
    }
}

/// The node of one row × form, or why it cannot exist.
fn node_for(uid: &str, form: &FormRef, values: &NodeValues) -> Result<DesiredNode, SkippedRow> {
    let name = format!("{uid}-{}", form.name);
    if let Some(problem) = name_problem(uid, &name) {
        return Err(SkippedRow {
            uid: uid.to_string(),
            form: Some(form.name.clone()),
            reason: SkipReason::InvalidName,
            message: format!(
                "node name {name:?} (uid {uid:?} + \"-\" + form {:?}) cannot be used: {problem}; uids are never \
                 rewritten, fix the row or map another uid column",
                form.name
            ),
        });
    }
    Ok(DesiredNode {
        name,
        uid: uid.to_string(),
        form: form.name.clone(),
        template_generation: form.generation,
        values: values.clone(),
    })
}

/// Why `name` (built from `uid`) would be rejected as a node name or `lynq.sh/uid` label value.
fn name_problem(uid: &str, name: &str) -> Option<String> {
    if uid.is_empty() {
        return Some("the uid is empty (NULL or '')".into());
    }
    subdomain_problem(name)
        .map(|p| format!("not a valid DNS-1123 subdomain: {p}"))
        .or_else(|| label_value_problem(uid).map(|p| format!("the uid is not a valid {LABEL_UID} label value: {p}")))
}

/// Kubernetes' DNS-1123 subdomain rule: ≤ 253 chars of `[a-z0-9.-]`, dot-separated segments that
/// start and end with a letter or digit.
fn subdomain_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NAME_LEN {
        return Some(format!("{} characters long, more than {MAX_NAME_LEN}", name.len()));
    }
    if let Some((i, c)) = name.chars().enumerate().find(|(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.')) {
        let hint = if c.is_ascii_uppercase() { " (uppercase)" } else { "" };
        return Some(format!(
            "character {c:?}{hint} at position {i}; only lowercase letters, digits, '-' and '.' are allowed"
        ));
    }
    name.split('.').find_map(|segment| {
        let edges_ok = segment.starts_with(|c: char| c.is_ascii_alphanumeric())
            && segment.ends_with(|c: char| c.is_ascii_alphanumeric());
        (!edges_ok).then(|| format!("segment {segment:?} must start and end with a letter or digit"))
    })
}

/// Kubernetes' label value rule: ≤ 63 chars of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > MAX_LABEL_VALUE_LEN {
        return Some(format!("{} characters long, more than {MAX_LABEL_VALUE_LEN}", value.len()));
    }
    let chars_ok = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let edges_ok = value.is_empty()
        || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    (!(chars_ok && edges_ok))
        .then(|| "only letters, digits, '-', '_' and '.' are allowed, starting and ending alphanumeric".into())
}

/// The labels of a node, as Lynq.
pub fn node_labels(node: &DesiredNode, hub: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_HUB.to_string(), hub.to_string()), (LABEL_UID.to_string(), node.uid.clone())])
}

/// The annotations of a node as Lynq writes them on create and update (`now` stamps the rollout start).
pub fn node_annotations(node: &DesiredNode, hub: &str, now: DateTime<Utc>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANN_HOST_OR_URL.to_string(), node.values.host_or_url.clone()),
        (ANN_ACTIVATE.to_string(), node.values.activate.clone()),
        (ANN_EXTRA.to_string(), node.values.extra_json()),
        (ANN_HUB_ID.to_string(), hub.to_string()),
        (ANN_TEMPLATE_GENERATION.to_string(), node.template_generation.to_string()),
        (ANN_ROLLOUT_UPDATE_START.to_string(), now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    ])
}

/// A LynqNode of the hub as it exists in the cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExistingNode {
    /// Node name.
    pub name: String,
    /// `spec.uid`.
    pub uid: String,
    /// `spec.templateRef`.
    pub form: String,
    /// The node's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Status of the Ready condition; None without one.
    pub ready: Option<bool>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// Every Deployment/StatefulSet/DaemonSet the node applied is "actually ready" (§2.12, live check).
    pub workloads_ready: bool,
    /// The node reports failures (`status.failedResources > 0` or condition `Degraded=True`).
    pub failing: bool,
}

impl ExistingNode {
    /// The planner's view of a LynqNode; `workloads_ready` is the caller's live check of the node's
    /// Deployments/StatefulSets/DaemonSets (true when it has none).
    pub fn from_node(node: &LynqNode, workloads_ready: bool) -> Self {
        let status = node.status.as_ref();
        let condition = |type_: &str| {
            let conditions = status.and_then(|s| s.conditions.as_ref())?;
            conditions.iter().find(|c| c.type_ == type_).map(|c| c.status == "True")
        };
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            uid: node.spec.uid.clone(),
            form: node.spec.template_ref.clone(),
            annotations: node.metadata.annotations.clone().unwrap_or_default(),
            ready: condition("Ready"),
            generation: node.metadata.generation,
            observed_generation: status.and_then(|s| s.observed_generation),
            workloads_ready,
            failing: status.and_then(|s| s.failed_resources).is_some_and(|f| f > 0)
                || condition("Degraded") == Some(true),
        }
    }

    fn annotation(&self, key: &str) -> &str {
        self.annotations.get(key).map(String::as_str).unwrap_or_default()
    }
}

/// The hub's `status.ready` / `status.failed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubCounts {
    /// Nodes whose Ready condition is True.
    pub ready: usize,
    /// Nodes not Ready that report failures; nodes merely still progressing are neither (Lynq counted
    /// them as failed, Appendix C 8).
    pub failed: usize,
}

/// Ready and failed counts over the hub's nodes.
pub fn hub_counts(existing: &[ExistingNode]) -> HubCounts {
    existing.iter().fold(HubCounts::default(), |mut acc, node| {
        if node.ready == Some(true) {
            acc.ready += 1;
        } else if node.failing {
            acc.failed += 1;
        }
        acc
    })
}

/// Why an existing node is rewritten; the order is Lynq's event precedence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateReason {
    /// The form generation differs (event `TemplateApplied`).
    TemplateChanged {
        /// The node's `lynq.sh/template-generation` ("" when absent).
        from: String,
        /// The form generation.
        to: i64,
    },
    /// hostOrUrl or activate differ (event `DataUpdated`).
    DataChanged,
    /// Only the extra values differ (no event).
    ExtraChanged,
}

impl UpdateReason {
    /// The Lynq event reason on the node, if this kind of update has one.
    pub fn event_reason(&self) -> Option<&'static str> {
        match self {
            Self::TemplateChanged { .. } => Some("TemplateApplied"),
            Self::DataChanged => Some("DataUpdated"),
            Self::ExtraChanged => None,
        }
    }
}

/// What to do to go from the existing nodes to the desired ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create.
    pub create: Vec<DesiredNode>,
    /// Nodes to rewrite, and why.
    pub update: Vec<(DesiredNode, UpdateReason)>,
    /// Names of nodes to delete (subject to the deletion guard).
    pub delete: Vec<String>,
    /// Names of existing nodes left untouched because their uid is duplicated in the table.
    pub kept: Vec<String>,
    /// Desired nodes already up to date.
    pub unchanged: usize,
    /// Every row (× form) that gets no node: those of the desired set plus lost name collisions.
    pub skipped: Vec<SkippedRow>,
}

impl Plan {
    /// Nodes the table currently asks for (created, updated or unchanged).
    pub fn desired_count(&self) -> usize {
        self.create.len() + self.update.len() + self.unchanged
    }
}

/// Compares the desired nodes with the existing ones.
pub fn diff(desired: &DesiredSet, existing: &[ExistingNode]) -> Plan {
    let by_name: BTreeMap<&str, &ExistingNode> = existing.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut plan = Plan { skipped: desired.skipped.clone(), ..Default::default() };
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let winners: Vec<&DesiredNode> =
        desired.contested.iter().filter_map(|group| settle_collision(group, &by_name, &mut plan.skipped)).collect();
    for node in desired.nodes.iter().chain(winners) {
        match by_name.get(node.name.as_str()) {
            None => plan.create.push(node.clone()),
            Some(e) if e.uid == node.uid && e.form == node.form => {
                claimed.insert(e.name.as_str());
                match update_reason(node, e) {
                    Some(reason) => plan.update.push((node.clone(), reason)),
                    None => plan.unchanged += 1,
                }
            }
            Some(e) => plan.skipped.push(name_in_use(node, e)),
        }
    }
    for node in existing.iter().filter(|n| !claimed.contains(n.name.as_str())) {
        if desired.duplicate_uids.contains(&node.uid) && desired.forms.contains(&node.form) {
            plan.kept.push(node.name.clone());
        } else {
            plan.delete.push(node.name.clone());
        }
    }
    plan.create.sort_by(|a, b| a.name.cmp(&b.name));
    plan.update.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    plan.delete.sort();
    plan.kept.sort();
    plan
}

/// The winner of a name collision: the pair owning the existing node, else the smallest uid.
/// The others are reported as skipped.
fn settle_collision<'a>(
    group: &'a [DesiredNode],
    existing: &BTreeMap<&str, &ExistingNode>,
    skipped: &mut Vec<SkippedRow>,
) -> Option<&'a DesiredNode> {
    let owner = |n: &&DesiredNode| existing.get(n.name.as_str()).is_some_and(|e| e.uid == n.uid && e.form == n.form);
    let winner = group.iter().find(owner).or_else(|| group.iter().min_by(|a, b| a.uid.cmp(&b.uid)))?;
    for loser in group.iter().filter(|n| *n != winner) {
        skipped.push(SkippedRow {
            uid: loser.uid.clone(),
            form: Some(loser.form.clone()),
            reason: SkipReason::NameCollision,
            message: format!(
                "node name {:?} is also produced by uid {:?} + form {:?}, which keeps it",
                loser.name, winner.uid, winner.form
            ),
        });
    }
    Some(winner)
}

fn name_in_use(node: &DesiredNode, holder: &ExistingNode) -> SkippedRow {
    SkippedRow {
        uid: node.uid.clone(),
        form: Some(node.form.clone()),
        reason: SkipReason::NameInUse,
        message: format!(
            "node name {:?} still belongs to uid {:?} + form {:?}; it is created once that node is gone",
            node.name, holder.uid, holder.form
        ),
    }
}

/// Why `existing` must be rewritten to match `node`, if it must.
fn update_reason(node: &DesiredNode, existing: &ExistingNode) -> Option<UpdateReason> {
    let from = existing.annotation(ANN_TEMPLATE_GENERATION);
    if from != node.template_generation.to_string() {
        return Some(UpdateReason::TemplateChanged { from: from.to_string(), to: node.template_generation });
    }
    if existing.annotation(ANN_HOST_OR_URL) != node.values.host_or_url
        || existing.annotation(ANN_ACTIVATE) != node.values.activate
    {
        return Some(UpdateReason::DataChanged);
    }
    (!extra_matches(existing.annotations.get(ANN_EXTRA), &node.values.extra)).then_some(UpdateReason::ExtraChanged)
}

/// Compared as maps rather than text, so an equivalent JSON spelling never forces a rewrite;
/// a missing or unparsable annotation does.
fn extra_matches(annotation: Option<&String>, extra: &BTreeMap<String, String>) -> bool {
    annotation
        .and_then(|a| serde_json::from_str::<BTreeMap<String, String>>(a).ok())
        .is_some_and(|parsed| parsed == *extra)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::ValueMappings;

    fn mapping() -> Mapping {
        Mapping {
            uid: "id".into(),
            activate: "on".into(),
            host_or_url: Some("url".into()),
            extra: BTreeMap::from([("plan".into(), "plan_col".into())]),
        }
    }

    fn row(cells: &[(&str, Option<&str>)]) -> Row {
        cells
            .iter()
            .map(|(c, v)| (c.to_string(), v.map_or(ColumnValue::Null, |t| ColumnValue::Text(t.into()))))
            .collect()
    }

    fn tenant(id: &str, on: &str, plan: &str) -> Row {
        row(&[
            ("id", Some(id)),
            ("on", Some(on)),
            ("url", Some(&format!("{id}.example.com"))),
            ("plan_col", Some(plan)),
        ])
    }

    #[test]
    fn a_replay_over_a_newer_read_neither_duplicates_nor_forgets_rows() {
        let mut state = TableState::new(&mapping());
        // The read (newer) shows a, b (updated since), c; the replay inserts b and updates it, deletes
        // d (gone before the read), and renames e to c (the read shows its result).
        state.replace_all_as_replay_base(vec![tenant("a", "1", "p"), tenant("b", "1", "new"), tenant("c", "1", "p")]);
        state.apply(&[RowChange::Insert { after: tenant("b", "1", "old") }]);
        state.apply(&[RowChange::Update { before: Some(tenant("b", "1", "old")), after: tenant("b", "1", "new") }]);
        state.apply(&[RowChange::Delete { before: tenant("d", "1", "p") }]);
        state.apply(&[RowChange::Update { before: Some(tenant("e", "1", "p")), after: tenant("c", "1", "p") }]);
        assert_eq!(state.len(), 3, "{state:?}");
        assert_eq!(state.rows_with_uid("a"), [tenant("a", "1", "p")], "untouched rows keep the read's image");
        assert_eq!(state.rows_with_uid("b"), [tenant("b", "1", "new")]);
        assert_eq!(state.rows_with_uid("c"), [tenant("c", "1", "p")]);
        // Once replayed, a uid is exact again: a later insert of the same uid is a real duplicate.
        state.apply(&[RowChange::Insert { after: tenant("b", "1", "dup") }]);
        assert_eq!(state.rows_with_uid("b").len(), 2);
    }

    fn forms(list: &[(&str, i64)]) -> Vec<FormRef> {
        list.iter().map(|(n, g)| FormRef { name: n.to_string(), generation: *g }).collect()
    }

    fn names(nodes: &[DesiredNode]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    fn plan_of(state: &TableState, form_list: &[FormRef], existing: &[ExistingNode]) -> Plan {
        diff(&desired_nodes(state, &mapping(), form_list, "hub"), existing)
    }

    /// An existing node exactly as the hub would have written `node`.
    fn existing_from(node: &DesiredNode) -> ExistingNode {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
        ExistingNode {
            name: node.name.clone(),
            uid: node.uid.clone(),
            form: node.form.clone(),
            annotations: node_annotations(node, "hub", now),
            ready: Some(true),
            generation: Some(1),
            observed_generation: Some(1),
            workloads_ready: true,
            failing: false,
        }
    }

    fn existing_nodes(state: &TableState, form_list: &[FormRef]) -> Vec<ExistingNode> {
        desired_nodes(state, &mapping(), form_list, "hub").nodes.iter().map(existing_from).collect()
    }

    #[test]
    fn existing_node_from_a_lynq_node() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

        use crate::api::{LynqNodeSpec, LynqNodeStatus};
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        let node = LynqNode {
            metadata: ObjectMeta {
                name: Some("a-web".into()),
                generation: Some(4),
                annotations: Some(BTreeMap::from([(ANN_TEMPLATE_GENERATION.into(), "2".into())])),
                ..Default::default()
            },
            spec: LynqNodeSpec { uid: "a".into(), template_ref: "web".into(), ..Default::default() },
            status: Some(LynqNodeStatus {
                observed_generation: Some(3),
                conditions: Some(vec![condition("Ready", "False"), condition("Degraded", "True")]),
                ..Default::default()
            }),
        };
        let e = ExistingNode::from_node(&node, false);
        assert_eq!((e.name.as_str(), e.uid.as_str(), e.form.as_str()), ("a-web", "a", "web"));
        assert_eq!((e.ready, e.generation, e.observed_generation), (Some(false), Some(4), Some(3)));
        assert!(e.failing && !e.workloads_ready);
        assert_eq!(e.annotation(ANN_TEMPLATE_GENERATION), "2");
        let bare = ExistingNode::from_node(&LynqNode::new("", Default::default()), true);
        assert_eq!((bare.ready, bare.failing), (None, false));
    }

    #[test]
    fn skipped_rows_display_their_reason() {
        let s = SkippedRow { uid: "a".into(), form: None, reason: SkipReason::DuplicateUid, message: "m".into() };
        assert_eq!(s.to_string(), "row \"a\" skipped (DuplicateUid): m");
    }

    #[test]
    fn hub_counts_separate_failing_from_progressing() {
        let n = |ready, failing| ExistingNode { ready, failing, ..Default::default() };
        let nodes = [
            n(Some(true), false),
            n(Some(true), true),
            n(Some(false), false),
            n(Some(false), true),
            n(None, true),
            n(None, false),
        ];
        assert_eq!(hub_counts(&nodes), HubCounts { ready: 2, failed: 2 });
    }

    #[test]
    fn truthy_set_is_exactly_lynqs() {
        for v in ["1", "true", "TRUE", "True", "yes", "YES", "Yes"] {
            assert!(is_active(v), "{v}");
        }
        for v in ["", "0", "false", "tRue", "y", "on", " 1", "1 ", "2", "YeS"] {
            assert!(!is_active(v), "{v}");
        }
    }

    #[test]
    fn mapping_from_spec_and_columns_are_deduplicated_in_order() {
        let spec = LynqHubSpec {
            value_mappings: ValueMappings { uid: "id".into(), host_or_url: Some("".into()), activate: "on".into() },
            extra_value_mappings: Some(BTreeMap::from([
                ("zone".into(), "region".into()),
                ("again".into(), "id".into()),
                ("alpha".into(), "plan".into()),
            ])),
            ..Default::default()
        };
        let m = Mapping::from_spec(&spec);
        assert_eq!(m.host_or_url, None);
        assert_eq!(m.columns(), ["id", "on", "plan", "region"]);
        let with_host = Mapping { host_or_url: Some("on".into()), ..m };
        assert_eq!(with_host.columns(), ["id", "on", "plan", "region"]);
    }

    #[test]
    fn nulls_read_as_empty_strings() {
        let state = TableState::from_rows(
            &mapping(),
            vec![row(&[("id", Some("a")), ("on", Some("1")), ("url", None), ("plan_col", None)])],
        );
        let set = desired_nodes(&state, &mapping(), &forms(&[("web", 1)]), "hub");
        let values = &set.nodes[0].values;
        assert_eq!(values.host_or_url, "");
        assert_eq!(values.extra["plan"], "");
        assert_eq!(values.extra_json(), r#"{"plan":""}"#);
        // A NULL activate is not active; a NULL uid is the empty uid and is reported.
        let state = TableState::from_rows(
            &mapping(),
            vec![row(&[("id", Some("b")), ("on", None)]), row(&[("id", None), ("on", Some("1"))])],
        );
        let set = desired_nodes(&state, &mapping(), &forms(&[("web", 1)]), "hub");
        assert!(set.nodes.is_empty());
        assert_eq!(set.skipped.len(), 1);
        assert_eq!(set.skipped[0].reason, SkipReason::InvalidName);
        assert!(set.skipped[0].message.contains("empty"), "{}", set.skipped[0].message);
    }

    #[test]
    fn every_active_uid_times_every_form() {
        let state = TableState::from_rows(
            &mapping(),
            vec![tenant("a", "1", "p"), tenant("b", "0", "p"), tenant("c", "yes", "q")],
        );
        let set = desired_nodes(&state, &mapping(), &forms(&[("web", 3), ("db", 7)]), "hub");
        assert_eq!(names(&set.nodes), ["a-db", "a-web", "c-db", "c-web"]);
        assert_eq!(set.active_rows, 2);
        let c_db = &set.nodes[2];
        assert_eq!((c_db.uid.as_str(), c_db.form.as_str(), c_db.template_generation), ("c", "db", 7));
        assert_eq!(c_db.values.host_or_url, "c.example.com");
        assert_eq!(c_db.values.activate, "yes");
    }

    #[test]
    fn labels_and_annotations_are_lynqs() {
        let node = DesiredNode {
            name: "acme-web".into(),
            uid: "acme".into(),
            form: "web".into(),
            template_generation: 4,
            values: NodeValues {
                activate: "1".into(),
                host_or_url: "https://acme.example.com".into(),
                extra: BTreeMap::from([("z".into(), "<b>&".into()), ("a".into(), "x".into())]),
            },
        };
        let labels = node_labels(&node, "hub1");
        assert_eq!(labels, BTreeMap::from([(LABEL_HUB.into(), "hub1".into()), (LABEL_UID.into(), "acme".into())]));
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).single().unwrap_or_default();
        let ann = node_annotations(&node, "hub1", now);
        let expected: BTreeMap<String, String> = [
            ("lynq.sh/hostOrUrl", "https://acme.example.com"),
            ("lynq.sh/activate", "1"),
            ("lynq.sh/extra", r#"{"a":"x","z":"\u003cb\u003e\u0026"}"#),
            ("lynq.sh/hubId", "hub1"),
            ("lynq.sh/template-generation", "4"),
            ("lynq.sh/rollout-update-start", "2026-03-04T05:06:07Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(ann, expected);
        assert_eq!(NodeValues::default().extra_json(), "{}");
    }

    #[test]
    fn invalid_uids_are_skipped_beside_valid_ones() {
        let long = "a".repeat(64);
        let too_long_name = "b".repeat(250);
        let rows = ["ok", "Upper", "under_score", "", &long, &too_long_name, "dot.ted", "trailing-", "x.-y"]
            .iter()
            .map(|id| tenant(id, "1", "p"))
            .collect();
        let state = TableState::from_rows(&mapping(), rows);
        let set = desired_nodes(&state, &mapping(), &forms(&[("web", 1)]), "hub");
        assert_eq!(names(&set.nodes), ["dot.ted-web", "ok-web"]);
        let skipped: BTreeMap<&str, &str> = set.skipped.iter().map(|s| (s.uid.as_str(), s.message.as_str())).collect();
        assert!(set.skipped.iter().all(|s| s.reason == SkipReason::InvalidName && s.form.as_deref() == Some("web")));
        assert!(skipped["Upper"].contains("(uppercase)"), "{}", skipped["Upper"]);
        assert!(skipped["under_score"].contains("'_'"), "{}", skipped["under_score"]);
        assert!(skipped[""].contains("empty"));
        assert!(skipped[long.as_str()].contains("label value") && skipped[long.as_str()].contains("64 characters"));
        assert!(skipped[too_long_name.as_str()].contains("254 characters long, more than 253"));
        assert!(skipped["trailing-"].contains("label value"), "{}", skipped["trailing-"]);
        assert!(skipped["x.-y"].contains("segment \"-y-web\""), "{}", skipped["x.-y"]);
        assert_eq!(set.skipped.len(), 7);
        // Nothing was truncated or sanitised into a node.
        assert!(set.nodes.iter().all(|n| n.uid == "ok" || n.uid == "dot.ted"));
    }

    #[test]
    fn duplicate_active_uid_keeps_the_existing_node_and_creates_nothing() {
        let f = forms(&[("web", 1)]);
        let before = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p"), tenant("b", "1", "p")]);
        let existing = existing_nodes(&before, &f);
        // A second active row for "a" appears with other values, and one for "c" (no node yet).
        let mut state = before.clone();
        state.apply(&[
            RowChange::Insert { after: tenant("a", "1", "other") },
            RowChange::Insert { after: tenant("c", "1", "p") },
            RowChange::Insert { after: tenant("c", "true", "q") },
        ]);
        let plan = plan_of(&state, &f, &existing);
        assert_eq!(plan.kept, ["a-web"]);
        assert!(plan.delete.is_empty() && plan.update.is_empty() && plan.create.is_empty(), "{plan:?}");
        let dups: Vec<&str> =
            plan.skipped.iter().filter(|s| s.reason == SkipReason::DuplicateUid).map(|s| s.uid.as_str()).collect();
        assert_eq!(dups, ["a", "c"]);
        // An inactive duplicate does not count.
        state.apply(&[RowChange::Update { before: Some(tenant("c", "true", "q")), after: tenant("c", "0", "q") }]);
        let plan = plan_of(&state, &f, &existing);
        assert_eq!(names(&plan.create), ["c-web"]);
        // The duplicate disappears: the surviving row drives the node again.
        state.apply(&[RowChange::Delete { before: tenant("a", "1", "p") }]);
        let plan = plan_of(&state, &f, &existing);
        assert!(plan.kept.is_empty());
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].0.values.extra["plan"], "other");
        assert_eq!(plan.update[0].1, UpdateReason::ExtraChanged);
    }

    #[test]
    fn duplicate_uid_of_a_removed_form_is_still_deleted() {
        let state = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p")]);
        let existing = existing_nodes(&state, &forms(&[("web", 1), ("old", 1)]));
        let mut dup = state.clone();
        dup.apply(&[RowChange::Insert { after: tenant("a", "1", "q") }]);
        let plan = plan_of(&dup, &forms(&[("web", 1)]), &existing);
        assert_eq!(plan.kept, ["a-web"]);
        assert_eq!(plan.delete, ["a-old"]);
    }

    #[test]
    fn name_collisions_are_settled_deterministically() {
        // uid "a-b" + form "c" and uid "a" + form "b-c" both give "a-b-c".
        let f = forms(&[("c", 1), ("b-c", 1)]);
        let state = TableState::from_rows(&mapping(), vec![tenant("a-b", "1", "p"), tenant("a", "1", "p")]);
        let set = desired_nodes(&state, &mapping(), &f, "hub");
        assert_eq!(set.contested.len(), 1);
        assert_eq!(names(&set.nodes), ["a-b-b-c", "a-c"]);
        // Nobody owns it: the smaller uid ("a") wins, whatever the row order.
        let reversed = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p"), tenant("a-b", "1", "p")]);
        for s in [&state, &reversed] {
            let plan = plan_of(s, &f, &[]);
            let winner = plan.create.iter().find(|n| n.name == "a-b-c").map(|n| (n.uid.as_str(), n.form.as_str()));
            assert_eq!(winner, Some(("a", "b-c")));
            let lost: Vec<_> = plan.skipped.iter().filter(|s| s.reason == SkipReason::NameCollision).collect();
            assert_eq!(lost.len(), 1);
            assert_eq!((lost[0].uid.as_str(), lost[0].form.as_deref()), ("a-b", Some("c")));
        }
        // The pair that owns the node keeps it, and it is never deleted.
        let owner = set.contested[0].iter().find(|n| n.uid == "a-b").map(existing_from);
        let existing: Vec<ExistingNode> = owner.into_iter().collect();
        let plan = plan_of(&state, &f, &existing);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.unchanged, 1);
        assert!(!names(&plan.create).contains(&"a-b-c"));
        let lost: Vec<_> = plan.skipped.iter().filter(|s| s.reason == SkipReason::NameCollision).collect();
        assert_eq!((lost[0].uid.as_str(), lost[0].form.as_deref()), ("a", Some("b-c")));
    }

    #[test]
    fn a_name_held_by_another_pair_is_freed_before_reuse() {
        let f = forms(&[("c", 1), ("b-c", 1)]);
        let old = TableState::from_rows(&mapping(), vec![tenant("a-b", "1", "p")]);
        let existing: Vec<ExistingNode> = existing_nodes(&old, &f).into_iter().filter(|n| n.name == "a-b-c").collect();
        // Row "a-b" is deactivated and row "a" activated in the same pass.
        let state = TableState::from_rows(&mapping(), vec![tenant("a-b", "0", "p"), tenant("a", "1", "p")]);
        let plan = plan_of(&state, &f, &existing);
        assert_eq!(plan.delete, ["a-b-c"]);
        assert!(!names(&plan.create).contains(&"a-b-c"));
        assert!(plan.skipped.iter().any(|s| s.reason == SkipReason::NameInUse && s.uid == "a"));
    }

    #[test]
    fn diff_classifies_creates_updates_and_deletes() {
        let f1 = forms(&[("web", 1), ("db", 1)]);
        let old = TableState::from_rows(
            &mapping(),
            vec![tenant("a", "1", "p"), tenant("b", "1", "p"), tenant("c", "1", "p"), tenant("d", "1", "p")],
        );
        let existing = existing_nodes(&old, &f1);
        let mut state = old.clone();
        state.apply(&[
            RowChange::Update { before: Some(tenant("a", "1", "p")), after: tenant("a", "true", "p") },
            RowChange::Update { before: Some(tenant("b", "1", "p")), after: tenant("b", "1", "q") },
            RowChange::Update { before: Some(tenant("c", "1", "p")), after: tenant("c", "0", "p") },
            RowChange::Insert { after: tenant("e", "1", "p") },
        ]);
        // Form "web" moved to generation 2, form "db" is gone.
        let plan = plan_of(&state, &forms(&[("web", 2)]), &existing);
        assert_eq!(names(&plan.create), ["e-web"]);
        assert_eq!(plan.delete, ["a-db", "b-db", "c-db", "c-web", "d-db"]);
        let updates: Vec<(&str, &UpdateReason)> = plan.update.iter().map(|(n, r)| (n.name.as_str(), r)).collect();
        let template = UpdateReason::TemplateChanged { from: "1".into(), to: 2 };
        assert_eq!(updates, [("a-web", &template), ("b-web", &template), ("d-web", &template)]);
        // Same generation: data vs extra changes, and Lynq's event reasons.
        let plan = plan_of(&state, &forms(&[("web", 1)]), &existing);
        let updates: Vec<(&str, &UpdateReason)> = plan.update.iter().map(|(n, r)| (n.name.as_str(), r)).collect();
        assert_eq!(updates, [("a-web", &UpdateReason::DataChanged), ("b-web", &UpdateReason::ExtraChanged)]);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.desired_count(), 4);
        assert_eq!(template.event_reason(), Some("TemplateApplied"));
        assert_eq!(UpdateReason::DataChanged.event_reason(), Some("DataUpdated"));
        assert_eq!(UpdateReason::ExtraChanged.event_reason(), None);
    }

    #[test]
    fn extra_is_compared_as_a_map_and_missing_annotations_count_as_changes() {
        let state = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p")]);
        let f = forms(&[("web", 1)]);
        let mut node = existing_nodes(&state, &f).remove(0);
        node.annotations.insert(ANN_EXTRA.into(), "{ \"plan\" : \"p\" }".into());
        assert_eq!(plan_of(&state, &f, std::slice::from_ref(&node)).unchanged, 1);
        node.annotations.remove(ANN_EXTRA);
        assert_eq!(plan_of(&state, &f, std::slice::from_ref(&node)).update[0].1, UpdateReason::ExtraChanged);
        node.annotations.remove(ANN_TEMPLATE_GENERATION);
        let template = UpdateReason::TemplateChanged { from: String::new(), to: 1 };
        assert_eq!(plan_of(&state, &f, &[node]).update[0].1, template);
    }

    #[test]
    fn toast_unchanged_takes_the_previous_value() {
        let mut state = TableState::from_rows(&mapping(), vec![tenant("a", "1", "big-plan")]);
        let after = BTreeMap::from([
            ("id".to_string(), ColumnValue::Text("a".into())),
            ("on".to_string(), ColumnValue::Text("1".into())),
            ("url".to_string(), ColumnValue::Text("new.example.com".into())),
            ("plan_col".to_string(), ColumnValue::Unchanged),
        ]);
        let report = state.apply(&[RowChange::Update { before: None, after }]);
        assert_eq!(report, ApplyReport::default());
        let values = mapping().values(&state.rows_with_uid("a")[0]);
        assert_eq!(values.extra["plan"], "big-plan");
        assert_eq!(values.host_or_url, "new.example.com");
        // Minimal binlog images: absent columns keep their values too.
        state.apply(&[RowChange::Update {
            before: Some(row(&[("id", Some("a"))])),
            after: row(&[("id", Some("a")), ("on", Some("0"))]),
        }]);
        let values = mapping().values(&state.rows_with_uid("a")[0]);
        assert_eq!((values.activate.as_str(), values.extra["plan"].as_str()), ("0", "big-plan"));
        // With no previous image, Unchanged becomes NULL and is reported.
        let report = state.apply(&[RowChange::Update {
            before: None,
            after: BTreeMap::from([
                ("id".to_string(), ColumnValue::Text("z".into())),
                ("plan_col".to_string(), ColumnValue::Unchanged),
            ]),
        }]);
        assert_eq!(report.unmatched_updates, 1);
        assert_eq!(report.unresolved_unchanged, 1);
        assert_eq!(state.rows_with_uid("z")[0].get("plan_col"), Some(&ColumnValue::Null));
    }

    #[test]
    fn uid_change_moves_the_row() {
        let mut state = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p")]);
        state.apply(&[RowChange::Update { before: Some(tenant("a", "1", "p")), after: tenant("b", "1", "p") }]);
        assert!(state.rows_with_uid("a").is_empty());
        assert_eq!(state.rows_with_uid("b").len(), 1);
        assert_eq!(state.len(), 1);
        // PostgreSQL default replica identity: the before image holds only the key column.
        state.apply(&[RowChange::Update { before: Some(row(&[("id", Some("b"))])), after: tenant("c", "1", "p") }]);
        assert_eq!(state.rows().map(|(uid, _)| uid).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn rows_keyed_by_another_column_are_found_without_their_uid() {
        let with_pk = |pk: &str, id: &str| {
            let mut r = tenant(id, "1", "p");
            r.insert("pk".into(), ColumnValue::Text(pk.into()));
            r
        };
        let mut state = TableState::from_rows(&mapping(), vec![with_pk("1", "a"), with_pk("2", "b")]);
        let report = state.apply(&[RowChange::Delete { before: row(&[("pk", Some("2"))]) }]);
        assert_eq!(report, ApplyReport::default());
        assert_eq!(state.rows().map(|(uid, _)| uid).collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn multi_row_transaction_applies_in_order() {
        let mut state = TableState::new(&mapping());
        let report = state.apply(&[
            RowChange::Insert { after: tenant("a", "1", "p") },
            RowChange::Insert { after: tenant("b", "1", "p") },
            RowChange::Update { before: Some(tenant("a", "1", "p")), after: tenant("a", "0", "p") },
            RowChange::Delete { before: tenant("b", "1", "p") },
            RowChange::Insert { after: tenant("b", "1", "again") },
        ]);
        assert_eq!(report, ApplyReport::default());
        let set = desired_nodes(&state, &mapping(), &forms(&[("web", 1)]), "hub");
        assert_eq!(names(&set.nodes), ["b-web"]);
        assert_eq!(set.nodes[0].values.extra["plan"], "again");
    }

    #[test]
    fn truncate_clears_and_unknown_deletes_are_ignored() {
        let mut state = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p"), tenant("b", "1", "p")]);
        let report = state.apply(&[RowChange::Delete { before: tenant("zz", "1", "p") }]);
        assert_eq!(report.unknown_deletes, 1);
        assert_eq!(state.len(), 2);
        state.apply(&[RowChange::Truncate, RowChange::Insert { after: tenant("c", "1", "p") }]);
        assert_eq!(state.rows().map(|(uid, _)| uid).collect::<Vec<_>>(), ["c"]);
        state.apply(&[RowChange::Truncate, RowChange::Delete { before: tenant("c", "1", "p") }]);
        assert!(state.is_empty());
        // A delete with an empty image matches nothing.
        let mut state = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p")]);
        assert_eq!(state.apply(&[RowChange::Delete { before: Row::new() }]).unknown_deletes, 1);
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn deletes_pick_the_matching_duplicate() {
        let mut state = TableState::from_rows(&mapping(), vec![tenant("a", "1", "p"), tenant("a", "0", "p")]);
        state.apply(&[RowChange::Delete { before: tenant("a", "1", "p") }]);
        assert_eq!(mapping().values(&state.rows_with_uid("a")[0]).activate, "0");
        // A stale image still removes a row of that uid, and says so.
        let report = state.apply(&[RowChange::Delete { before: tenant("a", "yes", "zzz") }]);
        assert_eq!(report.inexact_matches, 1);
        assert!(state.is_empty());
    }

    #[test]
    fn divergent_uids_compare_mapped_values_only() {
        let m = mapping();
        let mut extra_col = tenant("a", "1", "p");
        extra_col.insert("unmapped".into(), ColumnValue::Text("x".into()));
        let ours = TableState::from_rows(&m, vec![extra_col, tenant("b", "1", "p"), tenant("c", "1", "p")]);
        let read = TableState::from_rows(&m, vec![tenant("a", "1", "p"), tenant("b", "0", "p"), tenant("d", "1", "p")]);
        assert_eq!(ours.divergent_uids(&read, &m), ["b", "c", "d"]);
    }
}
