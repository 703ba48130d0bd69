//! Validation of a LynqForm spec, done by the form controller because lynq has no admission webhook.
//!
//! The checks are Lynq's webhook and controller checks, run in Lynq's order (hubId, hub existence,
//! duplicate ids, empty ids, dependencies, templates, ignoreFields) and worded with Lynq's messages
//! where Lynq has one. Unlike the webhook, every check runs and every problem is reported, not just
//! the first. Deliberate differences from Lynq:
//! - templates are only parsed, never executed with sample values, so a name/label/annotation template
//!   may use the hub's `extraValueMappings` variables (Lynq's webhook rejected them: Appendix C item 4);
//! - `targetNamespace` and every string of each resource's `spec` body are parsed too;
//! - a variable that is neither built in nor mapped by the hub is a *warning*, never an error: it may
//!   be guarded (`{{ .planId | default "basic" }}`, `{{ if .x }}`), which only rendering can tell, and
//!   a warning must not block such a form. `valid` depends on errors alone;
//! - dependency cycles are reported with their whole path (`a -> b -> a`);
//! - `ignoreFields` are checked by a [`PathChecker`]: [`BasicJsonPath`] (a close subset of ojg's
//!   grammar) unless the caller plugs in the apply engine's own parser with [`validate_form_with`].
//!
//! Templates are parsed by a [`TemplateChecker`]; [`EngineChecker`] is lynq's engine in the form's syntax.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use crate::api::{LynqFormSpec, ResourceLists, TResource, schema::RESOURCE_LISTS};
use crate::template::{Engine, Syntax};

/// Form annotation recording the hubId the controller keeps using (hubId is immutable).
pub const HUB_ID_ANNOTATION: &str = "lynq.sh/hub-id";

/// Type of the form condition this module computes.
pub const VALID_CONDITION: &str = "Valid";

/// Variables every node provides, whatever the hub maps.
pub const BUILTIN_VARIABLES: [&str; 4] = ["uid", "activate", "hubId", "templateRef"];

/// Lynq's deprecated variables, provided only when the hub maps `valueMappings.hostOrUrl`.
pub const HOST_VARIABLES: [&str; 2] = ["hostOrUrl", "host"];

/// Kubernetes' limit on a condition message (bytes); longer messages make the status write fail.
const MAX_CONDITION_MESSAGE: usize = 32_768;

/// What the validation needs to know about the hub the form references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubFacts {
    /// The hub's `extraValueMappings` keys (template variable names).
    pub extra_variables: BTreeSet<String>,
    /// Whether the hub maps the deprecated `valueMappings.hostOrUrl` (providing `.hostOrUrl`, `.host`).
    pub has_host_or_url: bool,
}

/// Parses one template string in the form's template syntax.
pub trait TemplateChecker {
    /// Ok(variables referenced) or Err(message naming the problem and position).
    fn check(&self, source: &str) -> Result<BTreeSet<String>, String>;
}

/// [`TemplateChecker`] backed by lynq's template engine, in the form's template syntax.
#[derive(Clone, Copy, Debug)]
pub struct EngineChecker<'a> {
    /// The shared engine (compiled templates are cached, so rendering later reuses this work).
    pub engine: &'a Engine,
    /// The form's `templateSyntax`.
    pub syntax: Syntax,
}

impl TemplateChecker for EngineChecker<'_> {
    fn check(&self, source: &str) -> Result<BTreeSet<String>, String> {
        self.engine.referenced_variables(source, self.syntax).map_err(|e| e.to_string())
    }
}

/// Checks the syntax of one `ignoreFields` JSONPath expression.
pub trait PathChecker {
    /// Ok when `path` parses, else why not.
    fn check(&self, path: &str) -> Result<(), String>;
}

impl<F: Fn(&str) -> Result<(), String>> PathChecker for F {
    fn check(&self, path: &str) -> Result<(), String> {
        self(path)
    }
}

/// The built-in `ignoreFields` syntax check, used until the apply engine's JSONPath parser is plugged in.
///
/// Accepts an optional `$` root followed by `.name`, `..name`, `.*`, `[n]`, `[*]`, `['key']`,
/// `[n,m]`, `[start:end:step]` and `[?(...)]` segments; a path may also start with a bare name
/// (`spec.replicas`), as ojg (Lynq's parser) allows. Filter bodies are only checked for balance.
#[derive(Clone, Copy, Debug, Default)]
pub struct BasicJsonPath;

impl PathChecker for BasicJsonPath {
    fn check(&self, path: &str) -> Result<(), String> {
        jsonpath::check(path)
    }
}

/// What a finding is about; decides the Lynq event reason it raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    /// `spec.hubId` is empty.
    HubIdRequired,
    /// The referenced hub does not exist in the form's namespace.
    HubNotFound,
    /// `spec.hubId` was changed after creation (it is immutable).
    HubIdChanged,
    /// Two or more resources share an id.
    DuplicateIds,
    /// A resource has an empty id.
    EmptyId,
    /// A `dependIds` entry names no resource of the form.
    MissingDependency,
    /// `dependIds` form a cycle (self-reference included).
    DependencyCycle,
    /// A template string does not parse.
    InvalidTemplate,
    /// A template refers to a variable neither built in nor mapped by the hub (warning).
    UnknownVariable,
    /// An `ignoreFields` entry is not a valid JSONPath.
    InvalidIgnoreField,
}

impl FindingKind {
    /// The Lynq event reason raised on every reconcile while such an error exists, if any.
    pub fn event_reason(self) -> Option<&'static str> {
        match self {
            FindingKind::HubNotFound => Some("HubNotFound"),
            FindingKind::DuplicateIds => Some("DuplicateResourceIDs"),
            FindingKind::MissingDependency | FindingKind::DependencyCycle => Some("DependencyValidationFailed"),
            _ => None,
        }
    }
}

/// One problem found in a form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The resource it concerns, when it concerns one.
    pub resource_id: Option<String>,
    /// What kind of problem it is.
    pub kind: FindingKind,
    /// Human-readable description (Lynq's wording where Lynq has one).
    pub message: String,
}

impl Finding {
    fn new(kind: FindingKind, resource_id: Option<&str>, message: String) -> Self {
        Finding { resource_id: resource_id.map(str::to_owned), kind, message }
    }
}

/// Outcome of validating a form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormValidation {
    /// True when there are no errors (warnings never make a form invalid).
    pub valid: bool,
    /// Problems that make the form invalid, in Lynq's check order.
    pub errors: Vec<Finding>,
    /// Problems that may or may not break rendering (unknown variables).
    pub warnings: Vec<Finding>,
}

impl FormValidation {
    /// Adds an error found outside `validate_form` (e.g. a hubId change), making the form invalid.
    pub fn add_error(&mut self, kind: FindingKind, resource_id: Option<&str>, message: String) {
        self.errors.push(Finding::new(kind, resource_id, message));
        self.valid = false;
    }

    /// The `Valid` condition Lynq writes for this outcome.
    pub fn valid_condition(&self) -> ValidCondition {
        if self.valid {
            let mut message = "Template validation passed".to_owned();
            if !self.warnings.is_empty() {
                message.push_str(&format!(" with warnings: {}", message_list(&self.warnings)));
            }
            ValidCondition { status: true, reason: "ValidationPassed", message: truncate_message(message) }
        } else {
            let message = format!("Validation errors: {}", message_list(&self.errors));
            ValidCondition { status: false, reason: "ValidationFailed", message: truncate_message(message) }
        }
    }
}

/// The `Valid` condition's status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidCondition {
    /// True for `ValidationPassed`.
    pub status: bool,
    /// `ValidationPassed` or `ValidationFailed`.
    pub reason: &'static str,
    /// `Template validation passed` or `Validation errors: [...]`.
    pub message: String,
}

impl ValidCondition {
    /// The full condition; keeps `previous`'s lastTransitionTime unless the status flips, as Lynq's
    /// `meta.SetStatusCondition`.
    pub fn to_condition(&self, previous: Option<&Condition>, observed_generation: Option<i64>, now: Time) -> Condition {
        let status = if self.status { "True" } else { "False" }.to_owned();
        let last_transition_time = match previous {
            Some(old) if old.status == status => old.last_transition_time.clone(),
            _ => now,
        };
        Condition {
            type_: VALID_CONDITION.to_owned(),
            status,
            reason: self.reason.to_owned(),
            message: self.message.clone(),
            observed_generation,
            last_transition_time,
        }
    }
}

/// An event the controller should record on the form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// Lynq's event reason.
    pub reason: &'static str,
    /// Event message.
    pub note: String,
}

/// Events Lynq raises on every reconcile while the form has such errors: `HubNotFound`,
/// `DuplicateResourceIDs`, `DependencyValidationFailed` (one event per reason).
pub fn finding_events(now: &FormValidation, hub_id: &str, namespace: &str) -> Vec<FormEvent> {
    let mut by_reason: BTreeMap<(FindingKind, &'static str), Vec<&Finding>> = BTreeMap::new();
    for finding in &now.errors {
        if let Some(reason) = finding.kind.event_reason() {
            // Both dependency kinds share one event, keyed by the first kind in Lynq's order.
            let key =
                if reason == "DependencyValidationFailed" { FindingKind::MissingDependency } else { finding.kind };
            by_reason.entry((key, reason)).or_default().push(finding);
        }
    }
    by_reason
        .into_iter()
        .map(|((kind, reason), findings)| FormEvent {
            type_: EventType::Warning,
            reason,
            note: match kind {
                FindingKind::HubNotFound => {
                    format!("Referenced LynqHub '{hub_id}' not found in namespace '{namespace}'")
                }
                FindingKind::DuplicateIds => join_messages(&findings),
                _ => format!("Dependency graph validation failed: {}", join_messages(&findings)),
            },
        })
        .collect()
}

/// The `ValidationFailed` / `ValidationPassed` event due on a change of validity, if any.
///
/// `previous_valid` is the status of the form's `Valid` condition before this reconcile (None: no
/// condition yet). As Lynq, a form seen for the first time and valid gets `ValidationPassed`. Unlike
/// Lynq, one seen for the first time and invalid gets `ValidationFailed`: Lynq's webhook would have
/// rejected it at admission, and the event is the user's only prompt notice.
pub fn transition_events(previous_valid: Option<bool>, now: &FormValidation) -> Option<FormEvent> {
    match (previous_valid, now.valid) {
        (Some(true), true) | (Some(false), false) => None,
        (_, true) => Some(FormEvent {
            type_: EventType::Normal,
            reason: "ValidationPassed",
            note: "Template validation passed successfully".to_owned(),
        }),
        (_, false) => Some(FormEvent {
            type_: EventType::Warning,
            reason: "ValidationFailed",
            note: truncate_message(format!("Template validation failed: {}", message_list(&now.errors))),
        }),
    }
}

/// The error message when `spec.hubId` differs from the one recorded at creation (`previous`, from
/// the `lynq.sh/hub-id` annotation; None or empty when not recorded yet). The controller keeps using
/// `previous`.
pub fn hub_id_change(previous: Option<&str>, current: &str) -> Option<String> {
    match previous {
        Some(old) if !old.is_empty() && old != current => Some(format!(
            "hubId is immutable: changed from '{old}' to '{current}'; still using hub '{old}' (restore spec.hubId or recreate the form)"
        )),
        _ => None,
    }
}

/// Validates a form with the built-in `ignoreFields` check ([`BasicJsonPath`]).
///
/// `hub` is None when the referenced hub does not exist; unknown-variable warnings then are skipped
/// (the hub's mappings are unknown and `HubNotFound` already explains the problem).
pub fn validate_form(spec: &LynqFormSpec, hub: Option<&HubFacts>, templates: &dyn TemplateChecker) -> FormValidation {
    validate_form_with(spec, hub, templates, &BasicJsonPath)
}

/// Validates a form, checking `ignoreFields` entries with `paths`.
pub fn validate_form_with(
    spec: &LynqFormSpec,
    hub: Option<&HubFacts>,
    templates: &dyn TemplateChecker,
    paths: &dyn PathChecker,
) -> FormValidation {
    let mut errors = check_hub(&spec.hub_id, hub);
    let resources = named_resources(&spec.resources);
    errors.extend(check_duplicate_ids(&resources));
    errors.extend(check_empty_ids(&resources));
    errors.extend(check_dependencies(&resources));
    let mut warnings = Vec::new();
    for r in &resources {
        let (template_errors, used) = check_templates(r.resource, templates);
        errors.extend(template_errors);
        if let Some(hub) = hub {
            warnings.extend(unknown_variables(&r.resource.id, &used, hub));
        }
    }
    for r in &resources {
        errors.extend(check_ignore_fields(r.resource, paths));
    }
    FormValidation { valid: errors.is_empty(), errors, warnings }
}

/// A resource with the list it is in and its index there (for messages about resources without id).
struct Named<'a> {
    list: &'static str,
    index: usize,
    resource: &'a TResource,
}

fn named_resources(lists: &ResourceLists) -> Vec<Named<'_>> {
    let fields = [
        &lists.service_accounts,
        &lists.deployments,
        &lists.stateful_sets,
        &lists.daemon_sets,
        &lists.services,
        &lists.ingresses,
        &lists.config_maps,
        &lists.secrets,
        &lists.persistent_volume_claims,
        &lists.jobs,
        &lists.cron_jobs,
        &lists.pod_disruption_budgets,
        &lists.network_policies,
        &lists.horizontal_pod_autoscalers,
        &lists.namespaces,
        &lists.manifests,
    ];
    RESOURCE_LISTS
        .into_iter()
        .zip(fields)
        .flat_map(|(list, items)| {
            items.iter().flatten().enumerate().map(move |(index, resource)| Named { list, index, resource })
        })
        .collect()
}

fn check_hub(hub_id: &str, hub: Option<&HubFacts>) -> Vec<Finding> {
    if hub_id.is_empty() {
        vec![Finding::new(FindingKind::HubIdRequired, None, "hubId is required".to_owned())]
    } else if hub.is_none() {
        vec![Finding::new(FindingKind::HubNotFound, None, format!("hub '{hub_id}' not found"))]
    } else {
        Vec::new()
    }
}

/// Lynq's duplicate check: ids seen more than once, each listed once, in order of first repetition.
fn check_duplicate_ids(resources: &[Named<'_>]) -> Option<Finding> {
    let mut seen = BTreeSet::new();
    let mut duplicates: Vec<&str> = Vec::new();
    for id in resources.iter().map(|r| r.resource.id.as_str()).filter(|id| !id.is_empty()) {
        if !seen.insert(id) && !duplicates.contains(&id) {
            duplicates.push(id);
        }
    }
    (!duplicates.is_empty()).then(|| {
        Finding::new(
            FindingKind::DuplicateIds,
            None,
            format!("duplicate resource IDs found: [{}]", duplicates.join(" ")),
        )
    })
}

fn check_empty_ids(resources: &[Named<'_>]) -> Vec<Finding> {
    resources
        .iter()
        .filter(|r| r.resource.id.is_empty())
        .map(|r| {
            Finding::new(
                FindingKind::EmptyId,
                None,
                format!("resource must have a non-empty ID ({}[{}])", r.list, r.index),
            )
        })
        .collect()
}

fn check_dependencies(resources: &[Named<'_>]) -> Vec<Finding> {
    let ids: BTreeSet<&str> = resources.iter().map(|r| r.resource.id.as_str()).filter(|id| !id.is_empty()).collect();
    let mut findings = Vec::new();
    // Duplicated ids are already an error; their dependencies are merged so no cycle hides behind one.
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for r in resources {
        let id = r.resource.id.as_str();
        if !edges.contains_key(id) {
            order.push(id);
        }
        let targets = edges.entry(id).or_default();
        for dep in r.resource.dependencies() {
            if ids.contains(dep.as_str()) {
                targets.push(dep);
            } else {
                findings.push(Finding::new(
                    FindingKind::MissingDependency,
                    Some(id),
                    format!("resource '{id}' depends on non-existent resource '{dep}'"),
                ));
            }
        }
    }
    findings.extend(find_cycles(&order, &edges));
    findings
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    OnPath,
    Done,
}

/// Every cycle closed by a back edge of a depth-first search in resource order.
fn find_cycles<'a>(order: &[&'a str], edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Finding> {
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    let mut path = Vec::new();
    let mut findings = Vec::new();
    for &start in order {
        if !marks.contains_key(start) {
            visit(start, edges, &mut marks, &mut path, &mut findings);
        }
    }
    findings
}

fn visit<'a>(
    id: &'a str,
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    marks: &mut BTreeMap<&'a str, Mark>,
    path: &mut Vec<&'a str>,
    findings: &mut Vec<Finding>,
) {
    marks.insert(id, Mark::OnPath);
    path.push(id);
    for &dep in edges.get(id).into_iter().flatten() {
        match marks.get(dep) {
            None => visit(dep, edges, marks, path, findings),
            Some(Mark::OnPath) => findings.push(cycle_finding(path, dep)),
            Some(Mark::Done) => {}
        }
    }
    path.pop();
    marks.insert(id, Mark::Done);
}

/// The cycle from `dep` (on the current path) to the path's end and back to `dep`.
fn cycle_finding(path: &[&str], dep: &str) -> Finding {
    let from = path.iter().position(|&p| p == dep).unwrap_or_default();
    let cycle: Vec<&str> = path.iter().skip(from).copied().chain(std::iter::once(dep)).collect();
    Finding::new(
        FindingKind::DependencyCycle,
        Some(dep),
        format!("circular dependency detected: {}", cycle.join(" -> ")),
    )
}

/// Where in a resource a template string is.
enum Field {
    Name,
    Label(String),
    Annotation(String),
    TargetNamespace,
    Spec(String),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Name => f.write_str("NameTemplate"),
            Field::Label(key) => write!(f, "LabelsTemplate[{key}]"),
            Field::Annotation(key) => write!(f, "AnnotationsTemplate[{key}]"),
            Field::TargetNamespace => f.write_str("TargetNamespace"),
            Field::Spec(path) => f.write_str(path),
        }
    }
}

impl Field {
    fn error(&self, id: &str, problem: &str) -> Finding {
        let message = match self {
            Field::Spec(path) => {
                format!("invalid template at {path} in resource '{id}': {problem}")
            }
            other => format!("invalid {other} in resource '{id}': {problem}"),
        };
        Finding::new(FindingKind::InvalidTemplate, Some(id), message)
    }
}

/// Variables referenced by a resource's templates, with the fields referencing each.
type Uses = BTreeMap<String, Vec<String>>;

/// Parses every template string of a resource; returns the parse errors and the variables used.
fn check_templates(resource: &TResource, templates: &dyn TemplateChecker) -> (Vec<Finding>, Uses) {
    let mut errors = Vec::new();
    let mut uses = Uses::new();
    for (field, source) in template_strings(resource) {
        if !has_template_syntax(source) {
            continue;
        }
        match templates.check(source) {
            Ok(vars) => {
                for var in vars {
                    uses.entry(var).or_default().push(field.to_string());
                }
            }
            Err(problem) => errors.push(field.error(&resource.id, &problem)),
        }
    }
    (errors, uses)
}

/// Strings without template delimiters are used verbatim (both syntaxes), so they need no parse.
fn has_template_syntax(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

fn template_strings(resource: &TResource) -> Vec<(Field, &str)> {
    let mut out = Vec::new();
    if let Some(name) = resource.name_template.as_deref().filter(|n| !n.is_empty()) {
        out.push((Field::Name, name));
    }
    for (key, value) in resource.labels_template.iter().flatten() {
        out.push((Field::Label(key.clone()), value.as_str()));
    }
    for (key, value) in resource.annotations_template.iter().flatten() {
        out.push((Field::Annotation(key.clone()), value.as_str()));
    }
    if let Some(ns) = resource.target_namespace.as_deref().filter(|n| !n.is_empty()) {
        out.push((Field::TargetNamespace, ns));
    }
    collect_spec_strings(&resource.spec, "spec".to_owned(), &mut out);
    out
}

/// Every string value of the manifest with its path; map keys are never rendered, so not collected.
fn collect_spec_strings<'a>(value: &'a serde_json::Value, path: String, out: &mut Vec<(Field, &'a str)>) {
    match value {
        serde_json::Value::String(s) => out.push((Field::Spec(path), s.as_str())),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_spec_strings(item, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                collect_spec_strings(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

/// One warning per variable of `uses` that the hub does not provide.
fn unknown_variables(id: &str, uses: &Uses, hub: &HubFacts) -> Vec<Finding> {
    uses.iter()
        .filter_map(|(var, fields)| {
            let fields = fields.join(", ");
            let message = if HOST_VARIABLES.contains(&var.as_str()) {
                if hub.has_host_or_url {
                    return None;
                }
                format!(
                    "resource '{id}' uses deprecated variable '{var}' (in {fields}) but the hub maps no \
                     valueMappings.hostOrUrl; map the column in extraValueMappings and use toHost() instead"
                )
            } else if BUILTIN_VARIABLES.contains(&var.as_str()) || hub.extra_variables.contains(var) {
                return None;
            } else {
                format!(
                    "resource '{id}' references variable '{var}' (in {fields}) which is neither built in nor \
                     an extraValueMappings key of the hub; it is undefined when rendered unless guarded by default or if"
                )
            };
            Some(Finding::new(FindingKind::UnknownVariable, Some(id), message))
        })
        .collect()
}

fn check_ignore_fields(resource: &TResource, paths: &dyn PathChecker) -> Vec<Finding> {
    let id = resource.id.as_str();
    resource
        .ignore_fields
        .iter()
        .flatten()
        .filter_map(|path| {
            paths.check(path).err().map(|problem| {
                Finding::new(
                    FindingKind::InvalidIgnoreField,
                    Some(id),
                    format!("invalid ignoreFields in resource '{id}': invalid JSONPath {path:?}: {problem}"),
                )
            })
        })
        .collect()
}

fn join_messages(findings: &[&Finding]) -> String {
    findings.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ")
}

/// Lynq's `%v` of a message list, separated by `; ` rather than a bare space for readability.
fn message_list(findings: &[Finding]) -> String {
    let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
    format!("[{}]", messages.join("; "))
}

fn truncate_message(mut message: String) -> String {
    const ELLIPSIS: &str = "…";
    if message.len() <= MAX_CONDITION_MESSAGE {
        return message;
    }
    let mut end = MAX_CONDITION_MESSAGE - ELLIPSIS.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(ELLIPSIS);
    message
}

/// A JSONPath syntax check close to ojg's grammar (Lynq's parser).
mod jsonpath {
    /// Ok when `path` is a well-formed path, else the problem and its 1-based column.
    pub(super) fn check(path: &str) -> Result<(), String> {
        if path.trim().is_empty() {
            return Err("empty path".to_owned());
        }
        let chars: Vec<char> = path.chars().collect();
        let mut i = match chars.first() {
            Some('$' | '@') => 1,
            Some('[') => 0,
            Some('.') => return Err("path starts with '.'; write $.name or name".to_owned()),
            _ => name(&chars, 0)?,
        };
        while let Some(&c) = chars.get(i) {
            i = match c {
                '.' => dot_segment(&chars, i)?,
                '[' => bracket(&chars, i)?,
                other => return Err(format!("unexpected {other:?} at column {}", i + 1)),
            };
        }
        Ok(())
    }

    /// `.name`, `.*`, `..name`, `..*`, `..[…]`; `i` is at the first dot.
    fn dot_segment(chars: &[char], i: usize) -> Result<usize, String> {
        let descent = chars.get(i + 1) == Some(&'.');
        let at = if descent { i + 2 } else { i + 1 };
        match chars.get(at) {
            Some('*') => Ok(at + 1),
            Some('[') if descent => bracket(chars, at),
            Some('.' | '[' | ']') | None => Err(format!("missing name after '.' at column {}", at)),
            Some(_) => name(chars, at),
        }
    }

    /// A member name: up to the next `.` or `[`; no `]` or whitespace.
    fn name(chars: &[char], start: usize) -> Result<usize, String> {
        let mut i = start;
        while let Some(&c) = chars.get(i) {
            match c {
                '.' | '[' => break,
                ']' => return Err(format!("unexpected ']' at column {}", i + 1)),
                c if c.is_whitespace() => {
                    return Err(format!("whitespace in name at column {}", i + 1));
                }
                _ => i += 1,
            }
        }
        if i == start {
            return Err(format!("missing name at column {}", start + 1));
        }
        Ok(i)
    }

    /// `[…]` starting at `i`; returns the index after the closing bracket.
    fn bracket(chars: &[char], i: usize) -> Result<usize, String> {
        let close = closing_bracket(chars, i)?;
        let body: String = chars.get(i + 1..close).unwrap_or_default().iter().collect();
        bracket_body(body.trim()).map_err(|problem| format!("{problem} in brackets at column {}", i + 1))?;
        Ok(close + 1)
    }

    /// Index of the `]` closing the `[` at `open`, skipping quoted strings and parentheses.
    fn closing_bracket(chars: &[char], open: usize) -> Result<usize, String> {
        let mut quote: Option<char> = None;
        let mut depth = 0usize;
        let mut i = open + 1;
        while let Some(&c) = chars.get(i) {
            match (quote, c) {
                (Some(_), '\\') => i += 1,
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '(') => depth += 1,
                (None, ')') => depth = depth.saturating_sub(1),
                (None, ']') if depth == 0 => return Ok(i),
                (None, _) => {}
            }
            i += 1;
        }
        Err(match quote {
            Some(q) => format!("unterminated {q} string after column {}", open + 1),
            None => format!("unclosed '[' at column {}", open + 1),
        })
    }

    fn bracket_body(body: &str) -> Result<(), String> {
        if body.is_empty() {
            return Err("empty selector".to_owned());
        }
        if body == "*" {
            return Ok(());
        }
        if let Some(filter) = body.strip_prefix('?') {
            return filter_body(filter.trim());
        }
        split_list(body).into_iter().try_for_each(list_item)
    }

    fn filter_body(filter: &str) -> Result<(), String> {
        let inner = filter.strip_prefix('(').and_then(|f| f.strip_suffix(')'));
        match inner {
            Some(expr) if !expr.trim().is_empty() => Ok(()),
            Some(_) => Err("empty filter".to_owned()),
            None => Err("filter must be ?(expression)".to_owned()),
        }
    }

    /// Splits on commas outside quotes.
    fn split_list(body: &str) -> Vec<&str> {
        let mut items = Vec::new();
        let mut quote: Option<char> = None;
        let mut start = 0;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match (quote, c) {
                (Some(_), _) if escaped => escaped = false,
                (Some(_), '\\') => escaped = true,
                (Some(q), c) if c == q => quote = None,
                (None, '\'' | '"') => quote = Some(c),
                (None, ',') => {
                    items.push(body.get(start..i).unwrap_or_default().trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(body.get(start..).unwrap_or_default().trim());
        items
    }

    /// A quoted key, an integer index or a `start:end:step` slice.
    fn list_item(item: &str) -> Result<(), String> {
        if item.is_empty() {
            return Err("empty list item".to_owned());
        }
        let quoted = ['\'', '"'].iter().any(|&q| item.len() >= 2 && item.starts_with(q) && item.ends_with(q));
        if quoted {
            return Ok(());
        }
        if item.contains(':') {
            let parts: Vec<&str> = item.split(':').collect();
            if parts.len() > 3 {
                return Err(format!("bad slice {item:?}"));
            }
            return parts.into_iter().filter(|p| !p.trim().is_empty()).try_for_each(integer);
        }
        integer(item)
    }

    fn integer(text: &str) -> Result<(), String> {
        text.trim().parse::<i64>().map(|_| ()).map_err(|_| format!("{text:?} is not an index, slice or quoted key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses `{{ … }}` actions and reports the root of every `.name` reference, like a tiny Go engine.
    struct FakeGo;

    impl TemplateChecker for FakeGo {
        fn check(&self, source: &str) -> Result<BTreeSet<String>, String> {
            let mut vars = BTreeSet::new();
            let mut offset = 0;
            while let Some(open) = source[offset..].find("{{") {
                let start = offset + open;
                let body_start = start + 2;
                let close = source[body_start..]
                    .find("}}")
                    .ok_or_else(|| format!("unclosed action at column {}", start + 1))?;
                let action = &source[body_start..body_start + close];
                if action.trim().is_empty() {
                    return Err(format!("missing value for command at column {}", start + 1));
                }
                let tokens = action.split(|c: char| c.is_whitespace() || matches!(c, '|' | '(' | ')'));
                for root in tokens.filter_map(|t| t.strip_prefix('.')).filter_map(|t| t.split('.').next()) {
                    if !root.is_empty() {
                        vars.insert(root.to_owned());
                    }
                }
                offset = body_start + close + 2;
            }
            Ok(vars)
        }
    }

    /// Fails on every string it is asked about.
    struct Refuses;

    impl TemplateChecker for Refuses {
        fn check(&self, source: &str) -> Result<BTreeSet<String>, String> {
            Err(format!("asked about {source:?}"))
        }
    }

    fn hub(extras: &[&str]) -> HubFacts {
        HubFacts { extra_variables: extras.iter().map(|s| (*s).to_owned()).collect(), has_host_or_url: false }
    }

    fn form(yaml: &str) -> LynqFormSpec {
        serde_yaml_ng::from_str(yaml).expect("test form parses")
    }

    fn resource(id: &str, deps: &[&str]) -> TResource {
        TResource {
            id: id.to_owned(),
            spec: json!({"apiVersion": "v1", "kind": "ConfigMap"}),
            depend_ids: (!deps.is_empty()).then(|| deps.iter().map(|d| (*d).to_owned()).collect()),
            ..TResource::default()
        }
    }

    fn spec_with(resources: Vec<TResource>) -> LynqFormSpec {
        LynqFormSpec {
            hub_id: "h".to_owned(),
            resources: ResourceLists { config_maps: Some(resources), ..ResourceLists::default() },
            ..LynqFormSpec::default()
        }
    }

    fn messages(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.message.as_str()).collect()
    }

    fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
        findings.iter().map(|f| f.kind).collect()
    }

    fn time(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("valid timestamp"))
    }

    /// The web-app form of the seed article (lynq-how-it-works.txt), verbatim but for the elided Service body.
    const SEED_WEB_APP: &str = r#"
hubId: my-saas-hub
deployments:
  - id: app
    nameTemplate: "{{ .uid }}-app"
    labelsTemplate:
      app: "{{ .uid }}"
      plan: "{{ .planId | default \"basic\" }}"
    spec:
      apiVersion: apps/v1
      kind: Deployment
      spec:
        replicas: 2
        template:
          spec:
            containers:
              - name: app
                image: "{{ .deployImage | default \"nginx:latest\" }}"
services:
  - id: svc
    nameTemplate: "{{ .uid }}-svc"
    dependIds: ["app"]
    spec:
      apiVersion: v1
      kind: Service
"#;

    #[test]
    fn seed_web_app_form_is_valid_with_the_seed_hub() {
        let seed_hub = hub(&["planId", "region"]);
        let v = validate_form(&form(SEED_WEB_APP), Some(&seed_hub), &FakeGo);
        assert!(v.valid, "{:?}", v.errors);
        assert!(v.errors.is_empty());
        // deployImage is mapped by nobody: reported, guarded by default, so only a warning.
        assert_eq!(kinds(&v.warnings), [FindingKind::UnknownVariable]);
        assert_eq!(v.warnings[0].resource_id.as_deref(), Some("app"));
        assert!(v.warnings[0].message.contains("'deployImage' (in spec.spec.template.spec.containers[0].image)"));
        assert_eq!(v.valid_condition().reason, "ValidationPassed");
    }

    #[test]
    fn plan_id_default_is_allowed_with_or_without_plan_id_mapped() {
        let yaml = r#"
hubId: h
configMaps:
  - id: cm
    nameTemplate: '{{ .uid }}-{{ .planId | default "basic" }}'
    labelsTemplate: {plan: '{{ .planId | default "basic" }}'}
    annotationsTemplate: {plan: '{{ .planId }}'}
    spec: {apiVersion: v1, kind: ConfigMap}
"#;
        let mapped = validate_form(&form(yaml), Some(&hub(&["planId"])), &FakeGo);
        assert!(mapped.valid);
        assert!(mapped.warnings.is_empty(), "{:?}", mapped.warnings);

        let unmapped = validate_form(&form(yaml), Some(&hub(&["region"])), &FakeGo);
        assert!(unmapped.valid, "a warning must not block the form: {:?}", unmapped.errors);
        assert_eq!(
            messages(&unmapped.warnings),
            ["resource 'cm' references variable 'planId' (in NameTemplate, LabelsTemplate[plan], \
             AnnotationsTemplate[plan]) which is neither built in nor an extraValueMappings key of the hub; \
             it is undefined when rendered unless guarded by default or if"]
        );
        let condition = unmapped.valid_condition();
        assert!(condition.status);
        assert!(condition.message.starts_with("Template validation passed with warnings: [resource 'cm'"));
    }

    #[test]
    fn hub_checks() {
        let cases: [(&str, Option<HubFacts>, Vec<&str>); 4] = [
            ("h", Some(hub(&[])), vec![]),
            ("h", None, vec!["hub 'h' not found"]),
            ("", None, vec!["hubId is required"]),
            ("", Some(hub(&[])), vec!["hubId is required"]),
        ];
        for (hub_id, facts, want) in cases {
            let spec = LynqFormSpec { hub_id: hub_id.to_owned(), ..LynqFormSpec::default() };
            let v = validate_form(&spec, facts.as_ref(), &FakeGo);
            assert_eq!(messages(&v.errors), want, "hubId {hub_id:?}");
            assert_eq!(v.valid, want.is_empty());
        }
        let missing = validate_form(&spec_with(vec![]), None, &FakeGo);
        assert_eq!(kinds(&missing.errors), [FindingKind::HubNotFound]);
    }

    #[test]
    fn duplicate_ids_across_all_lists() {
        let yaml = r#"
hubId: h
serviceAccounts: [{id: a, spec: {}}, {id: "", spec: {}}]
deployments: [{id: b, spec: {}}, {id: "", spec: {}}]
services: [{id: a, spec: {}}]
secrets: [{id: b, spec: {}}]
manifests: [{id: a, spec: {}}, {id: c, spec: {}}]
"#;
        let v = validate_form(&form(yaml), Some(&hub(&[])), &FakeGo);
        let dupes: Vec<&Finding> = v.errors.iter().filter(|f| f.kind == FindingKind::DuplicateIds).collect();
        assert_eq!(dupes.len(), 1);
        // Each id once, in order of first repetition; empty ids are left to the empty-id check.
        assert_eq!(dupes[0].message, "duplicate resource IDs found: [a b]");
        assert_eq!(dupes[0].resource_id, None);
        assert!(!v.valid);
    }

    #[test]
    fn empty_ids_name_their_position() {
        let yaml = r#"
hubId: h
serviceAccounts: [{id: a, spec: {}}, {id: "", spec: {}}]
manifests: [{id: "", spec: {}}]
"#;
        let v = validate_form(&form(yaml), Some(&hub(&[])), &FakeGo);
        assert_eq!(
            messages(&v.errors),
            [
                "resource must have a non-empty ID (serviceAccounts[1])",
                "resource must have a non-empty ID (manifests[0])",
            ]
        );
        assert_eq!(kinds(&v.errors), [FindingKind::EmptyId, FindingKind::EmptyId]);
    }

    #[test]
    fn dependency_checks() {
        let cases: Vec<(&str, Vec<TResource>, Vec<&str>)> = vec![
            ("chain", vec![resource("a", &[]), resource("b", &["a"]), resource("c", &["b", "a"])], vec![]),
            (
                "diamond",
                vec![resource("a", &[]), resource("b", &["a"]), resource("c", &["a"]), resource("d", &["b", "c"])],
                vec![],
            ),
            (
                "missing",
                vec![resource("a", &["x"]), resource("b", &["a", "y"])],
                vec![
                    "resource 'a' depends on non-existent resource 'x'",
                    "resource 'b' depends on non-existent resource 'y'",
                ],
            ),
            ("empty dependency", vec![resource("a", &[""])], vec!["resource 'a' depends on non-existent resource ''"]),
            ("self", vec![resource("a", &["a"])], vec!["circular dependency detected: a -> a"]),
            (
                "two",
                vec![resource("a", &["b"]), resource("b", &["a"])],
                vec!["circular dependency detected: a -> b -> a"],
            ),
            (
                "three behind a tail",
                vec![resource("t", &["a"]), resource("a", &["b"]), resource("b", &["c"]), resource("c", &["a"])],
                vec!["circular dependency detected: a -> b -> c -> a"],
            ),
            (
                "two separate cycles",
                vec![resource("a", &["a"]), resource("b", &["c"]), resource("c", &["b"])],
                vec!["circular dependency detected: a -> a", "circular dependency detected: b -> c -> b"],
            ),
            (
                "missing before cycle",
                vec![resource("a", &["b", "z"]), resource("b", &["a"])],
                vec!["resource 'a' depends on non-existent resource 'z'", "circular dependency detected: a -> b -> a"],
            ),
        ];
        for (name, resources, want) in cases {
            let v = validate_form(&spec_with(resources), Some(&hub(&[])), &FakeGo);
            assert_eq!(messages(&v.errors), want, "case {name}");
            assert_eq!(v.valid, want.is_empty(), "case {name}");
        }
    }

    #[test]
    fn cycle_through_a_duplicated_id_is_found() {
        let v = validate_form(
            &spec_with(vec![resource("a", &[]), resource("b", &["a"]), resource("a", &["b"])]),
            Some(&hub(&[])),
            &FakeGo,
        );
        assert_eq!(
            messages(&v.errors),
            ["duplicate resource IDs found: [a]", "circular dependency detected: a -> b -> a",]
        );
        assert_eq!(v.errors[1].resource_id.as_deref(), Some("a"));
    }

    #[test]
    fn template_errors_name_field_and_resource() {
        let cases: [(&str, serde_json::Value, &str); 5] = [
            (
                "name",
                json!({"nameTemplate": "{{ .uid"}),
                "invalid NameTemplate in resource 'r': unclosed action at column 1",
            ),
            (
                "label",
                json!({"labelsTemplate": {"app": "x-{{ }}"}}),
                "invalid LabelsTemplate[app] in resource 'r': missing value for command at column 3",
            ),
            (
                "annotation",
                json!({"annotationsTemplate": {"note": "{{ .uid"}}),
                "invalid AnnotationsTemplate[note] in resource 'r': unclosed action at column 1",
            ),
            (
                "targetNamespace",
                json!({"targetNamespace": "{{ .uid"}),
                "invalid TargetNamespace in resource 'r': unclosed action at column 1",
            ),
            (
                "spec body",
                json!({"spec": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": ["ok", "{{ .uid"]}}}),
                "invalid template at spec.data.k[1] in resource 'r': unclosed action at column 1",
            ),
        ];
        for (name, fields, want) in cases {
            let mut value = json!({"id": "r", "spec": {"apiVersion": "v1", "kind": "ConfigMap"}});
            if let (Some(obj), Some(extra)) = (value.as_object_mut(), fields.as_object()) {
                obj.extend(extra.clone());
            }
            let r: TResource = serde_json::from_value(value).expect("test resource parses");
            let v = validate_form(&spec_with(vec![r]), Some(&hub(&[])), &FakeGo);
            assert_eq!(messages(&v.errors), [want], "case {name}");
            assert_eq!(kinds(&v.errors), [FindingKind::InvalidTemplate], "case {name}");
            assert_eq!(v.errors[0].resource_id.as_deref(), Some("r"));
        }
    }

    #[test]
    fn plain_strings_and_map_keys_are_not_parsed() {
        let r: TResource = serde_json::from_value(json!({
            "id": "r",
            "nameTemplate": "fixed-name",
            "labelsTemplate": {"{{ key }}": "plain"},
            "spec": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"{{ .x": "value"}, "n": 3, "b": true}
        }))
        .expect("test resource parses");
        let v = validate_form(&spec_with(vec![r]), Some(&hub(&[])), &Refuses);
        assert!(v.valid, "{:?}", v.errors);
    }

    #[test]
    fn unknown_variable_warnings() {
        let with_host = HubFacts { has_host_or_url: true, ..hub(&["region"]) };
        let cases: [(&str, HubFacts, Vec<&str>); 6] = [
            ("{{ .uid }}-{{ .activate }}-{{ .hubId }}-{{ .templateRef }}", hub(&[]), vec![]),
            ("{{ .region }}", hub(&["region"]), vec![]),
            ("{{ .region }}", hub(&[]), vec!["region"]),
            ("{{ .host }}-{{ .hostOrUrl }}", with_host.clone(), vec![]),
            ("{{ .host }}-{{ .hostOrUrl }}", hub(&[]), vec!["host", "hostOrUrl"]),
            ("{{ .a.b }}-{{ .c | upper }}-{{ .region }}", with_host, vec!["a", "c"]),
        ];
        for (template, facts, want) in cases {
            let mut r = resource("r", &[]);
            r.name_template = Some(template.to_owned());
            let v = validate_form(&spec_with(vec![r]), Some(&facts), &FakeGo);
            assert!(v.valid, "{template}: {:?}", v.errors);
            let got: Vec<String> =
                v.warnings.iter().map(|w| w.message.split('\'').nth(3).unwrap_or_default().to_owned()).collect();
            assert_eq!(got, want, "{template}");
            assert!(v.warnings.iter().all(|w| w.kind == FindingKind::UnknownVariable));
        }
    }

    #[test]
    fn deprecated_host_variable_warning_text() {
        let mut r = resource("r", &[]);
        r.target_namespace = Some("{{ .host }}".to_owned());
        let v = validate_form(&spec_with(vec![r]), Some(&hub(&[])), &FakeGo);
        assert_eq!(
            messages(&v.warnings),
            ["resource 'r' uses deprecated variable 'host' (in TargetNamespace) but the hub maps no \
             valueMappings.hostOrUrl; map the column in extraValueMappings and use toHost() instead"]
        );
    }

    #[test]
    fn no_variable_warnings_without_a_hub() {
        let mut r = resource("r", &[]);
        r.name_template = Some("{{ .unknown }}".to_owned());
        let v = validate_form(&spec_with(vec![r]), None, &FakeGo);
        assert_eq!(kinds(&v.errors), [FindingKind::HubNotFound]);
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn basic_jsonpath_syntax() {
        let valid = [
            "$.spec.replicas",
            "spec.replicas",
            "$.spec.template.spec.containers[0].image",
            "$.spec.containers[*].image",
            "$.metadata.annotations['app.kubernetes.io/name']",
            "$.metadata.labels[\"a\",\"b\"]",
            "$..image",
            "$.spec.*",
            "$.items[1:3]",
            "$.items[-1]",
            "$.items[::2]",
            "$.spec.containers[?(@.name == 'app')].image",
            "$.data['a]b']",
            "[0].x",
            "$",
        ];
        for path in valid {
            assert_eq!(BasicJsonPath.check(path), Ok(()), "{path}");
        }
        let invalid = [
            ("", "empty path"),
            ("   ", "empty path"),
            ("$.", "missing name after '.' at column 2"),
            ("$.spec..", "missing name after '.' at column 8"),
            (".spec", "path starts with '.'; write $.name or name"),
            ("$.spec[", "unclosed '[' at column 7"),
            ("$.spec[]", "empty selector in brackets at column 7"),
            ("$.spec[abc]", "\"abc\" is not an index, slice or quoted key in brackets at column 7"),
            ("$.spec['abc]", "unterminated ' string after column 7"),
            ("$.spec[1:2:3:4]", "bad slice \"1:2:3:4\" in brackets at column 7"),
            ("$.spec[?(@.a]", "unclosed '[' at column 7"),
            ("$.spec[?@.a]", "filter must be ?(expression) in brackets at column 7"),
            ("$.spec[0]x", "unexpected 'x' at column 10"),
            ("$spec", "unexpected 's' at column 2"),
            ("$.sp ec", "whitespace in name at column 5"),
            ("spec]", "unexpected ']' at column 5"),
        ];
        for (path, want) in invalid {
            assert_eq!(BasicJsonPath.check(path), Err(want.to_owned()), "{path:?}");
        }
    }

    #[test]
    fn ignore_fields_errors_and_custom_checker() {
        let mut r = resource("r", &[]);
        r.ignore_fields = Some(vec!["$.spec.replicas".to_owned(), "$.spec[".to_owned()]);
        let spec = spec_with(vec![r]);
        let v = validate_form(&spec, Some(&hub(&[])), &FakeGo);
        assert_eq!(
            messages(&v.errors),
            ["invalid ignoreFields in resource 'r': invalid JSONPath \"$.spec[\": unclosed '[' at column 7"]
        );
        assert_eq!(kinds(&v.errors), [FindingKind::InvalidIgnoreField]);

        let only_dollar = |p: &str| {
            if p.starts_with("$.") { Ok(()) } else { Err("must start with $.".to_owned()) }
        };
        let v = validate_form_with(&spec, Some(&hub(&[])), &FakeGo, &only_dollar);
        assert!(v.valid, "the plugged-in checker decides: {:?}", v.errors);
    }

    #[test]
    fn errors_follow_lynqs_check_order() {
        let yaml = r#"
hubId: h
deployments:
  - id: a
    dependIds: [missing]
    ignoreFields: ["$["]
    nameTemplate: "{{ .uid"
    spec: {}
  - id: a
    spec: {}
  - id: ""
    spec: {}
"#;
        let v = validate_form(&form(yaml), None, &FakeGo);
        assert_eq!(
            kinds(&v.errors),
            [
                FindingKind::HubNotFound,
                FindingKind::DuplicateIds,
                FindingKind::EmptyId,
                FindingKind::MissingDependency,
                FindingKind::InvalidTemplate,
                FindingKind::InvalidIgnoreField,
            ]
        );
    }

    #[test]
    fn valid_condition_messages() {
        let ok = FormValidation { valid: true, ..FormValidation::default() };
        assert_eq!(
            ok.valid_condition(),
            ValidCondition {
                status: true,
                reason: "ValidationPassed",
                message: "Template validation passed".to_owned(),
            }
        );
        let v = validate_form(&spec_with(vec![resource("a", &["a"]), resource("a", &[])]), None, &FakeGo);
        assert_eq!(
            v.valid_condition(),
            ValidCondition {
                status: false,
                reason: "ValidationFailed",
                message: "Validation errors: [hub 'h' not found; duplicate resource IDs found: [a]; \
                      circular dependency detected: a -> a]"
                    .to_owned(),
            }
        );
    }

    #[test]
    fn long_condition_messages_are_cut_to_the_kubernetes_limit() {
        let resources: Vec<TResource> = (0..2000).map(|i| resource(&format!("résource-{i}"), &["nope"])).collect();
        let condition = validate_form(&spec_with(resources), Some(&hub(&[])), &FakeGo).valid_condition();
        assert!(condition.message.len() <= MAX_CONDITION_MESSAGE);
        assert!(condition.message.len() > MAX_CONDITION_MESSAGE - 8);
        assert!(condition.message.ends_with('…'));
    }

    #[test]
    fn condition_keeps_transition_time_while_status_is_unchanged() {
        let passed = FormValidation { valid: true, ..FormValidation::default() }.valid_condition();
        let first = passed.to_condition(None, Some(1), time(100));
        assert_eq!((first.type_.as_str(), first.status.as_str()), ("Valid", "True"));
        assert_eq!(first.observed_generation, Some(1));
        assert_eq!(first.last_transition_time, time(100));

        let again = passed.to_condition(Some(&first), Some(2), time(200));
        assert_eq!(again.last_transition_time, time(100));
        assert_eq!(again.observed_generation, Some(2));

        let mut failed = FormValidation { valid: true, ..FormValidation::default() };
        failed.add_error(FindingKind::HubIdChanged, None, "changed".to_owned());
        let flipped = failed.valid_condition().to_condition(Some(&again), Some(3), time(300));
        assert_eq!((flipped.status.as_str(), flipped.reason.as_str()), ("False", "ValidationFailed"));
        assert_eq!(flipped.message, "Validation errors: [changed]");
        assert_eq!(flipped.last_transition_time, time(300));
    }

    #[test]
    fn finding_events_one_per_lynq_reason() {
        let v = validate_form(
            &spec_with(vec![resource("a", &["x"]), resource("a", &[]), resource("b", &["b"])]),
            None,
            &FakeGo,
        );
        let events = finding_events(&v, "h", "ns");
        let got: Vec<(&str, &str)> = events.iter().map(|e| (e.reason, e.note.as_str())).collect();
        assert_eq!(
            got,
            [
                ("HubNotFound", "Referenced LynqHub 'h' not found in namespace 'ns'"),
                ("DuplicateResourceIDs", "duplicate resource IDs found: [a]"),
                (
                    "DependencyValidationFailed",
                    "Dependency graph validation failed: resource 'a' depends on non-existent resource 'x'; \
                 circular dependency detected: b -> b",
                ),
            ]
        );
        assert!(events.iter().all(|e| e.type_ == EventType::Warning));

        let mut r = resource("r", &[]);
        r.name_template = Some("{{".to_owned());
        let template_only = validate_form(&spec_with(vec![r]), Some(&hub(&[])), &FakeGo);
        assert!(!template_only.valid);
        assert!(finding_events(&template_only, "h", "ns").is_empty());
    }

    #[test]
    fn transition_events_only_on_changes() {
        let valid = FormValidation { valid: true, ..FormValidation::default() };
        let mut invalid = FormValidation::default();
        invalid.add_error(FindingKind::HubIdRequired, None, "hubId is required".to_owned());
        let cases = [
            (None, &valid, Some((EventType::Normal, "ValidationPassed", "Template validation passed successfully"))),
            (
                Some(false),
                &valid,
                Some((EventType::Normal, "ValidationPassed", "Template validation passed successfully")),
            ),
            (Some(true), &valid, None),
            (
                Some(true),
                &invalid,
                Some((EventType::Warning, "ValidationFailed", "Template validation failed: [hubId is required]")),
            ),
            (
                None,
                &invalid,
                Some((EventType::Warning, "ValidationFailed", "Template validation failed: [hubId is required]")),
            ),
            (Some(false), &invalid, None),
        ];
        for (previous, now, want) in cases {
            let got = transition_events(previous, now);
            let got = got.as_ref().map(|e| (e.type_, e.reason, e.note.as_str()));
            assert_eq!(got, want, "previous {previous:?}, now valid {}", now.valid);
        }
    }

    #[test]
    fn hub_id_changes() {
        let cases = [
            (None, "a", None),
            (Some(""), "a", None),
            (Some("a"), "a", None),
            (
                Some("a"),
                "b",
                Some(
                    "hubId is immutable: changed from 'a' to 'b'; still using hub 'a' (restore spec.hubId or recreate the form)",
                ),
            ),
            (
                Some("a"),
                "",
                Some(
                    "hubId is immutable: changed from 'a' to ''; still using hub 'a' (restore spec.hubId or recreate the form)",
                ),
            ),
        ];
        for (previous, current, want) in cases {
            assert_eq!(hub_id_change(previous, current).as_deref(), want, "{previous:?} -> {current:?}");
        }
    }

    #[test]
    fn real_engine_accepts_the_seed_form_and_guarded_extras() {
        let engine = Engine::new();
        let go = EngineChecker { engine: &engine, syntax: Syntax::Go };
        let v = validate_form(&form(SEED_WEB_APP), Some(&hub(&["planId", "region"])), &go);
        assert!(v.valid, "{:?}", v.errors);
        let warned: Vec<Option<&str>> = v.warnings.iter().map(|w| w.resource_id.as_deref()).collect();
        assert_eq!(warned, [Some("app")]);
        assert!(v.warnings[0].message.contains("'deployImage'"));

        let v = validate_form(&form(SEED_WEB_APP), Some(&hub(&[])), &go);
        assert!(v.valid, "{:?}", v.errors);
        assert_eq!(v.warnings.len(), 2, "planId and deployImage: {:?}", v.warnings);
    }

    #[test]
    fn real_engine_reports_syntax_errors_with_position() {
        let engine = Engine::new();
        let mut r = resource("r", &[]);
        r.name_template = Some("{{ .uid }}-{{ if }}".to_owned());
        let v =
            validate_form(&spec_with(vec![r]), Some(&hub(&[])), &EngineChecker { engine: &engine, syntax: Syntax::Go });
        assert_eq!(kinds(&v.errors), [FindingKind::InvalidTemplate]);
        assert!(
            v.errors[0].message.starts_with("invalid NameTemplate in resource 'r': template syntax error at 1:"),
            "{}",
            v.errors[0].message
        );

        let mut r = resource("r", &[]);
        r.name_template = Some("{{ uid }}-{{ plan | default('basic') }}".to_owned());
        let v = validate_form(
            &spec_with(vec![r]),
            Some(&hub(&[])),
            &EngineChecker { engine: &engine, syntax: Syntax::Jinja },
        );
        assert!(v.valid, "{:?}", v.errors);
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].message.contains("'plan'"));
    }
}
