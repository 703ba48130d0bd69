//! From the hub's view of the table to LynqNode writes and hub status: the desired set (forms ×
//! active rows), the diff against the nodes that exist, the deletion guard, maxSkew throttling,
//! hub-side rendering of names/labels/annotations (as Lynq), and Lynq's events.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder},
        reflector::{self, Store},
        watcher,
    },
};
use tokio::task::JoinHandle;

pub use super::guard::BatchKind;
use super::{
    config::{self, hub_key},
    desired::{self, DesiredNode, ExistingNode, FormRef, Mapping, TableState},
    form::effective_hub_id,
    guard::{ALLOW_MASS_DELETION_ANNOTATION, Batch, DeletionGuard, GuardConfig, Hold},
    rollout::{self, Gate, RolloutSettings},
    runner::{self, CaptureState},
    writer::{HubWriter, NodeWrite, WriteError},
};
use crate::{
    api::{LynqForm, LynqHub, LynqHubStatus, LynqNode, ResourceLists},
    node::render::syntax_of,
    source::{Row, RowChange, SnapshotReason},
    template::Engine,
};

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A write to the API failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Minimum time between two status writes caused only by checkpoint moves.
/// How many LynqNode writes (or deletions) of one batch are in flight at once.
const WRITE_CONCURRENCY: usize = 16;
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The hub's state and its writes.
pub struct HubSync {
    client: Client,
    engine: Engine,
    recorder: Recorder,
    hub: LynqHub,
    writer: HubWriter,
    mapping: Mapping,
    table: TableState,
    /// Whether the table was read once: before that, every row would look deleted.
    table_loaded: bool,
    guard: DeletionGuard,
    nodes: Store<LynqNode>,
    forms: Store<LynqForm>,
    watchers: Vec<JoinHandle<()>>,
    reported_skips: HashSet<String>,
    last_status: Option<LynqHubStatus>,
    last_status_write: Option<Instant>,
    /// A status held back by the rate limit; the runner's flush tick writes it.
    pending_status: Option<LynqHubStatus>,
    /// The last `RolloutThrottled` message per form (a message is published once, not every pass).
    throttle_notes: BTreeMap<String, String>,
    /// Some creates or updates waited for a maxSkew slot: re-planned every tick until none waits
    /// (slots free as nodes turn Ready, their safety margin ends or their deadline passes).
    rollout_waiting: bool,
    /// Source commit time of the transaction being applied, stamped on the nodes it writes.
    commit_time: Option<chrono::DateTime<Utc>>,
}

impl Drop for HubSync {
    fn drop(&mut self) {
        self.watchers.iter().for_each(JoinHandle::abort);
    }
}

/// Where a hub condition goes in the status: Ready first, as Lynq writes it, then lynq's own.
fn condition_rank(type_: &str) -> (u8, String) {
    let rank = match type_ {
        "Ready" => 0,
        runner::CAPTURE_CONDITION => 1,
        "DeletionGuard" => 2,
        _ => 3,
    };
    (rank, type_.to_string())
}

/// A cache of `api`, each version passed through `trim` first (to drop what the hub never reads).
fn reflect<K>(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let versions = watcher(api, config).modify(trim);
        let stream = reflector::reflector(writer, versions).default_backoff().touched_objects();
        stream.for_each(|_| async {}).await;
    });
    (store, task)
}

/// What the hub reads of a node is its identity, annotations and readiness (see
/// [`ExistingNode::from_node`]); the rendered resources and the applied-object lists are most of a
/// node's size and stay only in the node controller's cache.
pub(super) fn trim_node(node: &mut LynqNode) {
    node.managed_fields_mut().clear();
    node.spec.resources = Default::default();
    if let Some(status) = node.status.as_mut() {
        status.applied_resource_refs = None;
        status.applied_resources = None;
        status.skipped_resource_ids = None;
    }
}

/// managedFields are never read from the form cache and are about as large as the spec.
fn trim_form(form: &mut LynqForm) {
    form.managed_fields_mut().clear();
}

impl HubSync {
    /// State for `hub`, with caches of its nodes and its namespace's forms.
    pub fn new(client: Client, engine: Engine, recorder: Recorder, hub: LynqHub) -> Self {
        let ns = hub.namespace().unwrap_or_default();
        let selector = format!("{}={}", desired::LABEL_HUB, hub.name_any());
        let (nodes, node_task) = reflect(
            Api::<LynqNode>::namespaced(client.clone(), &ns),
            watcher::Config::default().labels(&selector),
            trim_node,
        );
        let (forms, form_task) =
            reflect(Api::<LynqForm>::namespaced(client.clone(), &ns), watcher::Config::default(), trim_form);
        Self {
            writer: HubWriter::new(client.clone(), hub.clone()),
            mapping: Mapping::from_spec(&hub.spec),
            table: TableState::new(&Mapping::from_spec(&hub.spec)),
            table_loaded: false,
            guard: DeletionGuard::new(GuardConfig::new(config::sync_interval(&hub))),
            nodes,
            forms,
            watchers: vec![node_task, form_task],
            reported_skips: HashSet::new(),
            last_status: hub.status.clone(),
            last_status_write: None,
            pending_status: None,
            throttle_notes: BTreeMap::new(),
            rollout_waiting: false,
            commit_time: None,
            client,
            engine,
            recorder,
            hub,
        }
    }

    /// Takes the latest hub object (its spec is unchanged, or the runner would have been
    /// restarted): annotations such as `lynq.sh/allow-mass-deletion` and the generation.
    pub fn set_hub(&mut self, hub: LynqHub) {
        self.hub = hub;
    }

    /// Replaces the view of the table with a full read.
    pub fn replace_table(&mut self, rows: Vec<Row>) {
        self.table.replace_all(rows);
        self.table_loaded = true;
    }

    /// Takes a read made after the position a resumed stream replays from as the view's base.
    pub fn replace_table_as_replay_base(&mut self, rows: Vec<Row>) {
        self.table.replace_all_as_replay_base(rows);
        self.table_loaded = true;
    }

    /// Whether the view holds a read of the table (a snapshot, a poll or a replay base).
    pub fn table_loaded(&self) -> bool {
        self.table_loaded
    }

    /// Sets the source commit time of the transaction the next `apply` writes (None outside one).
    pub fn set_commit_time(&mut self, commit_time: Option<chrono::DateTime<Utc>>) {
        self.commit_time = commit_time;
    }

    /// Applies one committed transaction to the view of the table.
    pub fn apply_changes(&mut self, changes: &[RowChange]) {
        self.table.apply(changes);
    }

    /// How many rows a fresh read of the table disagrees on (0 while the stream is exact).
    pub fn divergences(&self, rows: &[Row]) -> usize {
        self.divergence_kinds(rows).total()
    }

    /// The rows a fresh read of the table disagrees on, by kind (missing, unexpected, stale).
    pub fn divergence_kinds(&self, rows: &[Row]) -> crate::metrics::hub::Divergences {
        let fresh = TableState::from_rows(&self.mapping, rows.to_vec());
        let uids = self.table.divergent_uids(&fresh, &self.mapping);
        let held = |state: &TableState, uid: &str| !state.rows_with_uid(uid).is_empty();
        crate::metrics::hub::Divergences::classify(
            uids.iter().map(String::as_str),
            |u| held(&self.table, u),
            |u| held(&fresh, u),
        )
    }

    fn hub_forms(&self) -> Vec<Arc<LynqForm>> {
        let name = self.hub.name_any();
        self.forms.state().into_iter().filter(|f| effective_hub_id(f) == name).collect()
    }

    fn form_refs(&self) -> Vec<FormRef> {
        self.hub_forms()
            .iter()
            .map(|f| FormRef { name: f.name_any(), generation: f.metadata.generation.unwrap_or_default() })
            .collect()
    }

    /// Brings the hub's nodes in line with the table and the forms, then publishes status.
    pub async fn apply(&mut self, kind: BatchKind, state: &Arc<Mutex<CaptureState>>) -> Result<(), SyncError> {
        if !self.table_loaded {
            // A forms change can arrive while the first snapshot or poll is still on its way: the
            // empty view would delete every node. The first read applies the latest forms anyway.
            tracing::debug!(hub = %hub_key(&self.hub), ?kind, "not applying before the first read of the table");
            return Ok(());
        }
        // The caches must have listed once, or every node would look missing.
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.forms.wait_until_ready().await;
        let forms = self.hub_forms();
        let desired = desired::desired_nodes(&self.table, &self.mapping, &self.form_refs(), &self.hub.name_any());
        // Node Ready already requires its workloads to be ready (generation observed, all replicas
        // updated and available); Lynq's extra live re-check of each workload is not repeated here.
        let existing: Vec<ExistingNode> = self.nodes.state().iter().map(|n| ExistingNode::from_node(n, true)).collect();
        let plan = desired::diff(&desired, &existing);
        tracing::debug!(
            hub = %hub_key(&self.hub),
            ?kind,
            rows = self.table.len(),
            existing = existing.len(),
            create = plan.create.len(),
            update = plan.update.len(),
            delete = plan.delete.len(),
            skipped = plan.skipped.len(),
            "applying the desired set"
        );
        self.report_skips(&plan.skipped).await;

        let now = Utc::now();
        let throttled = self.write_admitted(&plan, &forms, &existing, now).await?;
        self.note_throttles(throttled).await;

        let allow = self.hub.annotations().get(ALLOW_MASS_DELETION_ANNOTATION).is_some_and(|v| v == "true");
        let batch = Batch {
            kind,
            existing: existing.len(),
            deletions: &plan.delete,
            table_empty: kind == BatchKind::FullRead && self.table.is_empty(),
            allow_annotation: allow,
            now,
        };
        let decision = self.guard.evaluate(&batch);
        let hold_started = matches!(decision.transition, Some(super::guard::Transition::Started));
        crate::metrics::hub::deletion_guard(&self.hub, decision.hold.is_some(), hold_started);
        if let Some(transition) = decision.transition {
            let note = decision.hold.as_ref().map_or_else(
                || format!("Deletion guard: {}", transition.event_reason()),
                |h| h.message(self.guard.config().confirm_after),
            );
            self.event(EventType::Warning, transition.event_reason(), note).await;
        }
        let deletions: Vec<_> = decision.delete.iter().map(|name| self.delete_node(name)).collect();
        bounded(deletions).await?;
        let desired_count = forms.len().saturating_mul(desired.active_rows);
        let status = self.status(desired_count, plan.skipped.len(), decision.hold.as_ref(), &existing, state);
        // A changed condition is written at once; new counts alone wait for the rate limit (every
        // node turning Ready triggers a batch, and a bulk load would otherwise write the hub's status
        // several times a second).
        let urgent = self.last_status.as_ref().map(|s| &s.conditions) != Some(&status.conditions);
        self.write_status(status, urgent).await
    }

    /// Creates and updates nodes, at most maxSkew of each form updating at once.
    async fn write_admitted(
        &self,
        plan: &desired::Plan,
        forms: &[Arc<LynqForm>],
        existing: &[ExistingNode],
        now: chrono::DateTime<Utc>,
    ) -> Result<BTreeMap<String, String>, SyncError> {
        let mut gates: BTreeMap<String, Gate> = BTreeMap::new();
        for form in forms {
            let settings = RolloutSettings::from_config(form.spec.rollout.as_ref());
            let generation = form.metadata.generation.unwrap_or_default();
            let occupancy =
                rollout::form_occupancy(existing, &form.name_any(), generation, now, Some(settings.progress_deadline));
            gates.insert(form.name_any(), Gate::new(&form.name_any(), settings.max_skew, occupancy.updating));
        }
        let mut admitted = Vec::new();
        for node in plan.create.iter().chain(plan.update.iter().map(|(n, _)| n)) {
            let (Some(form), Some(gate)) =
                (forms.iter().find(|f| f.name_any() == node.form), gates.get_mut(&node.form))
            else {
                continue;
            };
            if gate.admit() {
                admitted.push((node, form));
            }
        }
        // Each write is independent (server-side apply of one node), so a large transaction is written
        // with bounded concurrency instead of one round trip after another.
        let writes: Vec<_> = admitted.into_iter().map(|(node, form)| self.write_node(node, form, now)).collect();
        bounded(writes).await?;
        Ok(gates.iter().filter_map(|(form, gate)| gate.throttled_message().map(|m| (form.clone(), m))).collect())
    }

    /// Lynq's `RolloutThrottled` event for each form whose throttling changed since the last pass.
    async fn note_throttles(&mut self, throttled: BTreeMap<String, String>) {
        self.rollout_waiting = !throttled.is_empty();
        for (form, message) in &throttled {
            if self.throttle_notes.get(form) != Some(message) {
                self.event(EventType::Normal, "RolloutThrottled", message.clone()).await;
            }
        }
        self.throttle_notes = throttled;
    }

    async fn delete_node(&self, name: &str) -> Result<(), SyncError> {
        self.event(EventType::Normal, "NodeDeleting", format!("Deleting LynqNode {name}: row no longer active")).await;
        if let Err(e) = self.writer.delete_node(name).await {
            self.event(EventType::Warning, "NodeDeletionFailed", e.to_string()).await;
            return Err(e.into());
        }
        self.event(EventType::Normal, "NodeDeleted", format!("Deleted LynqNode {name}")).await;
        Ok(())
    }

    async fn write_node(
        &self,
        node: &DesiredNode,
        form: &LynqForm,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), SyncError> {
        let mut annotations = desired::node_annotations(node, &self.hub.name_any(), now);
        if let Some(t) = self.commit_time {
            annotations.insert(
                crate::metrics::node::ANN_SOURCE_COMMIT_TIME.into(),
                crate::metrics::node::format_commit_time(t),
            );
        }
        let labels = desired::node_labels(node, &self.hub.name_any());
        let vars = node_variables(node, &self.hub.name_any());
        let resources = match self.prerender(form, &vars) {
            Ok(r) => r,
            Err(message) => {
                let note = format!("Failed to render template for node {}: {message}", node.name);
                self.event(EventType::Warning, "TemplateRenderFailed", note).await;
                return Ok(());
            }
        };
        let write =
            NodeWrite { name: node.name.clone(), uid: node.uid.clone(), form: node.form.clone(), labels, annotations };
        self.writer.apply_node(&write, form.spec.template_syntax, &resources).await?;
        Ok(())
    }

    /// Renders nameTemplate, labelsTemplate and annotationsTemplate into the node's copy of the
    /// resources, as Lynq's hub does (the node renders the bodies).
    fn prerender(&self, form: &LynqForm, vars: &BTreeMap<String, String>) -> Result<ResourceLists, String> {
        let syntax = syntax_of(form.spec.template_syntax);
        let render = |s: &str| self.engine.render_str(s, syntax, vars).map_err(|e| e.to_string());
        let mut resources = form.spec.resources.clone();
        let mut failure = None;
        resources.for_each_mut(|r| {
            let mut one = || -> Result<(), String> {
                if let Some(name) = &r.name_template {
                    r.name_template = Some(render(name).map_err(|e| format!("resource '{}' nameTemplate: {e}", r.id))?);
                }
                for map in [&mut r.labels_template, &mut r.annotations_template].into_iter().flatten() {
                    for (k, v) in map.iter_mut() {
                        *v = render(v).map_err(|e| format!("resource '{}' template for {k}: {e}", r.id))?;
                    }
                }
                Ok(())
            };
            if let Err(e) = one() {
                failure.get_or_insert(e);
            }
        });
        failure.map_or(Ok(resources), Err)
    }

    async fn report_skips(&mut self, skipped: &[desired::SkippedRow]) {
        for row in skipped {
            let key = format!("{}/{}", row.uid, row.reason.as_str());
            if self.reported_skips.insert(key) {
                self.event(EventType::Warning, "RowSkipped", row.to_string()).await;
            }
        }
    }

    fn status(
        &self,
        desired: usize,
        skipped: usize,
        hold: Option<&Hold>,
        existing: &[ExistingNode],
        state: &Arc<Mutex<CaptureState>>,
    ) -> LynqHubStatus {
        let counts = desired::hub_counts(existing);
        let (ready, failed) = (counts.ready, counts.failed);
        let capture = state.lock().map(|s| s.to_status()).unwrap_or_default();
        let mut conditions = vec![condition_for(
            self.last_status.as_ref(),
            "Ready",
            true,
            "DatabaseConnected",
            "Successfully connected to database and queried node data",
        )];
        conditions.extend(self.capture_condition(state));
        let (held, reason) = match hold {
            None => (false, "No mass deletion pending".to_string()),
            Some(h) => (true, h.message(self.guard.config().confirm_after)),
        };
        conditions.push(condition_for(
            self.last_status.as_ref(),
            "DeletionGuard",
            held,
            if held { "MassDeletionHeld" } else { "Clear" },
            &reason,
        ));
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        LynqHubStatus {
            observed_generation: self.hub.metadata.generation,
            referencing_templates: Some(count(self.hub_forms().len())),
            desired: Some(count(desired)),
            ready: Some(count(ready)),
            failed: Some(count(failed)),
            skipped_rows: Some(count(skipped)),
            conditions: Some(conditions),
            change_capture: Some(capture),
        }
    }

    async fn write_status(&mut self, mut status: LynqHubStatus, force: bool) -> Result<(), SyncError> {
        // One order whoever built the status: the same conditions in another order are not a change
        // (the two builders once alternated orders and rewrote the status every second while idle).
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.sort_by_key(|c| condition_rank(&c.type_));
        }
        if self.last_status.as_ref() == Some(&status) {
            self.pending_status = None;
            return Ok(());
        }
        if !force && self.last_status_write.is_some_and(|t| t.elapsed() < STATUS_INTERVAL) {
            self.pending_status = Some(status);
            return Ok(());
        }
        self.writer.write_status(&status).await?;
        self.last_status = Some(status);
        self.pending_status = None;
        self.last_status_write = Some(Instant::now());
        Ok(())
    }

    /// The newest status, written or still held back by the rate limit.
    fn latest_status(&self) -> Option<LynqHubStatus> {
        self.pending_status.clone().or_else(|| self.last_status.clone())
    }

    /// Every status interval: a rollout waiting for slots is planned again, then what the rate
    /// limit held back (status and checkpoint) is written.
    pub async fn tick(&mut self, state: &Arc<Mutex<CaptureState>>) -> Result<(), SyncError> {
        if self.rollout_waiting {
            self.apply(BatchKind::Forms, state).await?;
        }
        self.persist_checkpoint(state, false).await;
        Ok(())
    }

    /// The checkpoint moved: persist it (rate-limited).
    pub async fn checkpoint_moved(&mut self, state: &Arc<Mutex<CaptureState>>) {
        self.persist_checkpoint(state, false).await;
    }

    /// The runner stops: persist the last checkpoint now, past the rate limit.
    pub async fn flush_checkpoint(&mut self, state: &Arc<Mutex<CaptureState>>) {
        self.persist_checkpoint(state, true).await;
    }

    async fn persist_checkpoint(&mut self, state: &Arc<Mutex<CaptureState>>, force: bool) {
        let Some(mut status) = self.latest_status() else { return };
        status.change_capture = state.lock().ok().map(|s| s.to_status());
        let mut conditions: Vec<Condition> = status.conditions.take().unwrap_or_default();
        conditions.retain(|c| c.type_ != runner::CAPTURE_CONDITION);
        conditions.extend(self.capture_condition(state));
        status.conditions = Some(conditions);
        if let Err(e) = self.write_status(status, force).await {
            tracing::warn!(hub = %hub_key(&self.hub), error = %e, "persisting the checkpoint failed");
        }
    }

    /// The `ChangeCapture` condition: how the running capture started (resumed, snapshot and why, polling).
    fn capture_condition(&self, state: &Arc<Mutex<CaptureState>>) -> Option<Condition> {
        let (status, reason, message) = state.lock().ok().and_then(|s| runner::capture_condition(&s))?;
        Some(condition_for(self.last_status.as_ref(), runner::CAPTURE_CONDITION, status, reason, &message))
    }

    /// The source (re)connected: Ready=True again at once, even when a resumed stream has no
    /// change to apply yet.
    pub async fn connected(&mut self, state: &Arc<Mutex<CaptureState>>) {
        let Some(mut status) = self.latest_status() else { return };
        status.change_capture = state.lock().ok().map(|s| s.to_status());
        let ready = condition_for(
            self.last_status.as_ref(),
            "Ready",
            true,
            "DatabaseConnected",
            "Successfully connected to database and queried node data",
        );
        let mut conditions: Vec<Condition> = status.conditions.take().unwrap_or_default();
        conditions.retain(|c| c.type_ != "Ready" && c.type_ != runner::CAPTURE_CONDITION);
        conditions.insert(0, ready);
        conditions.extend(self.capture_condition(state));
        status.conditions = Some(conditions);
        if let Err(e) = self.write_status(status, true).await {
            tracing::warn!(hub = %hub_key(&self.hub), error = %e, "writing hub status failed");
        }
    }

    /// A snapshot was taken; a non-initial one is worth telling the user about.
    pub async fn note_snapshot(&self, reason: SnapshotReason) {
        if reason != SnapshotReason::Initial {
            let note = format!("Took a new consistent snapshot of the table (reason: {})", reason.as_str());
            self.event(EventType::Warning, "SnapshotTaken", note).await;
        }
    }

    /// lynq created the PostgreSQL publication the stream reads.
    pub async fn note_publication_created(&self, note: &str) {
        self.event(EventType::Normal, "PublicationCreated", format!("PostgreSQL: {note}")).await;
    }

    /// The source failed: Ready=False (DatabaseConnectionFailed) and a DatabaseQueryFailed event.
    /// Nodes are never touched on a database error.
    pub async fn report_source_error(&mut self, message: &str) {
        self.event(EventType::Warning, "DatabaseQueryFailed", message.to_string()).await;
        let mut status = self.latest_status().unwrap_or_default();
        let ready = condition_for(self.last_status.as_ref(), "Ready", false, "DatabaseConnectionFailed", message);
        let mut conditions: Vec<Condition> =
            status.conditions.take().unwrap_or_default().into_iter().filter(|c| c.type_ != "Ready").collect();
        conditions.insert(0, ready);
        status.conditions = Some(conditions);
        if let Err(e) = self.write_status(status, true).await {
            tracing::warn!(hub = %hub_key(&self.hub), error = %e, "writing hub status failed");
        }
    }

    /// A configuration problem found before any runner could start (Secret, missing block).
    pub async fn report_config_error(client: &Client, recorder: &Recorder, hub: &LynqHub, message: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: "DatabaseQueryFailed".into(),
            note: Some(message.into()),
            action: "Configure".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &hub.object_ref(&())).await {
            tracing::warn!(hub = %hub_key(hub), error = %e, "publishing an event failed");
        }
        let previous = hub.status.as_ref();
        let mut status = previous.cloned().unwrap_or_default();
        status.conditions = Some(vec![condition_for(previous, "Ready", false, "DatabaseConnectionFailed", message)]);
        if let Err(e) = HubWriter::new(client.clone(), hub.clone()).write_status(&status).await {
            tracing::warn!(hub = %hub_key(hub), error = %e, "writing hub status failed");
        }
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &self.hub.object_ref(&())).await {
            tracing::warn!(hub = %hub_key(&self.hub), error = %e, "publishing an event failed");
        }
    }

    /// The client (for callers that need extra reads).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Runs `writes` with at most [`WRITE_CONCURRENCY`] in flight; every write runs, the first error is returned.
async fn bounded<F: Future<Output = Result<(), SyncError>>>(writes: Vec<F>) -> Result<(), SyncError> {
    let results: Vec<Result<(), SyncError>> =
        futures::stream::iter(writes).buffer_unordered(WRITE_CONCURRENCY).collect().await;
    results.into_iter().collect()
}

/// Template variables of a desired node, as the node controller will rebuild them.
fn node_variables(node: &DesiredNode, hub: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("uid".to_string(), node.uid.clone());
    vars.insert("activate".to_string(), node.values.activate.clone());
    let host_or_url =
        Some(node.values.host_or_url.clone()).filter(|h| !h.is_empty()).unwrap_or_else(|| node.uid.clone());
    vars.insert("host".to_string(), crate::template::to_host(&host_or_url));
    vars.insert("hostOrUrl".to_string(), host_or_url);
    vars.extend(node.values.extra.clone());
    vars.insert("hubId".to_string(), hub.to_string());
    vars.insert("templateRef".to_string(), node.form.clone());
    vars
}

/// A condition keeping its lastTransitionTime while status, reason and message are unchanged.
fn condition_for(
    previous: Option<&LynqHubStatus>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let old = previous.and_then(|p| p.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == type_));
    let unchanged = old.is_some_and(|c| c.status == status && c.reason == reason && c.message == message);
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: old
            .filter(|_| unchanged)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_have_one_order_whoever_built_them() {
        let mut types = vec!["DeletionGuard", "Custom", runner::CAPTURE_CONDITION, "Ready"];
        types.sort_by_key(|t| condition_rank(t));
        assert_eq!(types, ["Ready", runner::CAPTURE_CONDITION, "DeletionGuard", "Custom"]);
    }
}
