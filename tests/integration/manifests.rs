//! The install manifests (`manifests/`): `manifests/default` builds with kustomize and applies to the
//! real apiserver (server-side dry run); its RBAC is enough for the operator to do its whole job when
//! it runs as the `lynq-controller` ServiceAccount, and nothing in it is forbidden; the alert rules pass
//! `promtool check rules` and `promtool test rules` and keep Lynq's rules unchanged; the dashboard has
//! Lynq's panels; every metric the rules and panels query exists in lynq's code.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use futures::{FutureExt, future::Shared};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authorization::v1::SelfSubjectAccessReview,
        core::v1::{ConfigMap, Pod, Secret, Service},
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use lynq::api::{LynqForm, LynqHub, LynqNode};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::support;

/// How long the operator may take to reach an expected state.
const WAIT: Duration = Duration::from_secs(60);

fn repo_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `kubectl kustomize DIR`, panicking with kustomize's message when it fails.
fn kustomize(dir: &str) -> String {
    let out = Command::new("kubectl").arg("kustomize").arg(repo_path(dir)).output().expect("kubectl is installed");
    assert!(out.status.success(), "kubectl kustomize {dir} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// The documents of a YAML stream (empty ones skipped).
fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn read_yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn kind_name(doc: &Value) -> (String, String) {
    (doc["kind"].as_str().unwrap_or_default().to_string(), doc["metadata"]["name"].as_str().unwrap_or_default().into())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("{kind} {name} is not in the output"))
}

/// Writes `docs` as one YAML stream to a temporary file (kept until the returned handle drops).
fn yaml_file(docs: &[&Value]) -> tempfile::NamedTempFile {
    let text: String = docs.iter().map(|d| format!("---\n{}", serde_yaml_ng::to_string(d).expect("YAML"))).collect();
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().expect("temp file");
    std::fs::write(file.path(), text).expect("write temp file");
    file
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Runs a program from scripts/setup.sh's packages, returning stdout+stderr, panicking on failure.
fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup.sh installs it)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

#[test]
fn manifests_default_builds_with_a_hardened_deployment() {
    let docs = yaml_docs(&kustomize("manifests/default"));
    let names: BTreeSet<(String, String)> = docs.iter().map(kind_name).collect();
    for (kind, name) in [
        ("Namespace", "lynq-system"),
        ("CustomResourceDefinition", "lynqhubs.operator.lynq.sh"),
        ("CustomResourceDefinition", "lynqforms.operator.lynq.sh"),
        ("CustomResourceDefinition", "lynqnodes.operator.lynq.sh"),
        ("ServiceAccount", "lynq-controller"),
        ("ClusterRole", "lynq-manager-role"),
        ("ClusterRoleBinding", "lynq-manager-rolebinding"),
        ("Role", "lynq-leader-election-role"),
        ("RoleBinding", "lynq-leader-election-rolebinding"),
        ("Deployment", "lynq-controller-manager"),
        ("Service", "lynq-controller-manager-metrics-service"),
    ] {
        assert!(names.contains(&(kind.into(), name.into())), "{kind} {name} missing from {names:?}");
    }
    let cluster_scoped = ["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"];
    for doc in docs.iter().filter(|d| !cluster_scoped.contains(&d["kind"].as_str().unwrap_or_default())) {
        assert_eq!(doc["metadata"]["namespace"], "lynq-system", "{:?} is not in lynq-system", kind_name(doc));
    }

    let deployment = find(&docs, "Deployment", "lynq-controller-manager");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "lynq-controller");
    assert_eq!(pod["terminationGracePeriodSeconds"], 15);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].clone())
    };
    assert_eq!(port("probes"), Some(json!(8081)));
    assert_eq!(port("metrics"), Some(json!(8080)));
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "probes");
    assert_eq!(container["resources"]["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
    assert_eq!(container["resources"]["limits"], json!({"cpu": "1", "memory": "512Mi"}));
    let service = find(&docs, "Service", "lynq-controller-manager-metrics-service");
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/port"], "8080");
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);

    // The container's arguments and environment are accepted by this build's `lynq run` (clap parses
    // everything before `--help`, so an unknown flag or a bad value fails here).
    let args: Vec<String> =
        container["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("string arg").into()).collect();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    for flag in ["--leader-elect", "--shutdown-grace-period=10s"] {
        assert!(args.iter().any(|a| a == flag), "{args:?} lacks {flag}");
    }
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert!(
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v == &json!({"name": "LYNQ_LOG_FORMAT", "value": "json"})),
        "LYNQ_LOG_FORMAT=json is not set"
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_lynq"));
    command.args(&args).arg("--help");
    for var in container["env"].as_array().into_iter().flatten() {
        command.env(var["name"].as_str().expect("env name"), var["value"].as_str().expect("env value"));
    }
    let out = command.output().expect("run lynq");
    assert!(out.status.success(), "lynq {args:?} is rejected: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn manifests_other_kustomizations_build() {
    let samples = yaml_docs(&kustomize("manifests/samples"));
    let kinds: Vec<_> = samples.iter().map(kind_name).collect();
    assert!(kinds.contains(&("LynqHub".into(), "pg-saas-hub".into())), "{kinds:?}");
    let overlay = yaml_docs(&kustomize("manifests/overlays/extra-kinds"));
    let binding = find(&overlay, "ClusterRoleBinding", "lynq-extra-kinds-rolebinding");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "lynq-controller", "namespace": "lynq-system"})
    );
    assert_eq!(overlay.len(), yaml_docs(&kustomize("manifests/default")).len() + 2);
    let monitoring = yaml_docs(&kustomize("manifests/prometheus"));
    find(&monitoring, "ServiceMonitor", "lynq-controller-manager-metrics-monitor");
    find(&monitoring, "PrometheusRule", "lynq-alerts");
    let grafana = yaml_docs(&kustomize("manifests/grafana"));
    let dashboard = &find(&grafana, "ConfigMap", "lynq-grafana-dashboard")["data"]["lynq-dashboard.json"];
    let parsed: Value = serde_json::from_str(dashboard.as_str().expect("dashboard text")).expect("dashboard JSON");
    assert_eq!(parsed["uid"], "lynq-operator");
}

/// Makes sure namespace lynq-system exists, so that the namespaced objects can be dry-run into it.
fn ensure_operator_namespace(docs: &[Value]) {
    let namespace = find(docs, "Namespace", "lynq-system");
    let file = yaml_file(&[namespace]);
    support::kubectl(&["apply", "--server-side", "--field-manager=lynq-manifests-test", "-f", path_str(file.path())]);
}

#[tokio::test]
async fn manifests_apply_with_server_side_dry_run() {
    let client = support::client().await;
    let docs = yaml_docs(&kustomize("manifests/default"));
    // A dry run creates nothing, so objects in the (not yet created) namespace would be rejected.
    ensure_operator_namespace(&docs);
    for dir in ["manifests/default", "manifests/overlays/extra-kinds"] {
        let file = yaml_file(&yaml_docs(&kustomize(dir)).iter().collect::<Vec<_>>());
        let out = support::kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "--field-manager=lynq-manifests-test",
            "-f",
            path_str(file.path()),
        ]);
        assert!(out.contains("deployment.apps/lynq-controller-manager serverside-applied (server dry run)"), "{out}");
    }
    // The samples validate against the CRDs (installed for real).
    crate::crds::install_crds(&client).await;
    let ns = support::namespace(&client, "samples").await;
    let out = support::kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        &ns,
        "-k",
        path_str(&repo_path("manifests/samples")),
    ]);
    assert_eq!(out.matches("(server dry run)").count(), 3, "{out}");
}

/// Lynq's alert rules (name, expression, for, severity), which must stay exactly as Lynq ships them.
const LYNQ_ALERTS: &[(&str, &str, &str, &str)] = &[
    ("LynqNodeDegraded", "max by (lynqnode, namespace, reason) (lynqnode_degraded_status) > 0", "5m", "critical"),
    ("LynqNodeResourcesFailed", "lynqnode_resources_failed > 0", "5m", "critical"),
    ("LynqNodeNotReady", "lynqnode_condition_status{type=\"Ready\"} == 0", "15m", "critical"),
    ("LynqNodeStatusUnknown", "lynqnode_condition_status{type=\"Ready\"} == 2", "10m", "critical"),
    ("HubManyNodesFailure", "hub_failed > 5 or (hub_failed / hub_desired > 0.5 and hub_desired > 0)", "5m", "critical"),
    (
        "LynqNodeResourcesMismatch",
        "(lynqnode_resources_ready != lynqnode_resources_desired) and (lynqnode_resources_desired > 0) and (lynqnode_resources_failed == 0)",
        "15m",
        "warning",
    ),
    ("LynqNodeResourcesConflicted", "lynqnode_resources_conflicted > 0", "10m", "warning"),
    ("LynqNodeHighConflictRate", "rate(lynqnode_conflicts_total[5m]) > 0.1", "10m", "warning"),
    ("HubNodesFailure", "hub_failed > 0 and hub_failed <= 5", "10m", "warning"),
    (
        "HubDesiredCountMismatch",
        "(hub_ready != hub_desired) and (hub_desired > 0) and (hub_failed == 0)",
        "20m",
        "warning",
    ),
    (
        "LynqNodeReconciliationErrors",
        "sum(rate(lynqnode_reconcile_duration_seconds_count{result=\"error\"}[5m])) / sum(rate(lynqnode_reconcile_duration_seconds_count[5m])) > 0.1",
        "10m",
        "warning",
    ),
    (
        "LynqNodeReconciliationSlow",
        "histogram_quantile(0.95, sum by (le) (rate(lynqnode_reconcile_duration_seconds_bucket{result=\"success\"}[5m]))) > 30",
        "15m",
        "warning",
    ),
    (
        "HighApplyFailureRate",
        "sum by (kind) (rate(apply_attempts_total{result=\"error\"}[5m])) / sum by (kind) (rate(apply_attempts_total[5m])) > 0.2",
        "10m",
        "warning",
    ),
    ("LynqNodeNewConflictsDetected", "increase(lynqnode_conflicts_total[5m]) > 0", "2m", "info"),
];

const RULES_FILE: &str = "manifests/prometheus/lynq-alerts.rules.yaml";

fn alert_rules() -> Vec<Value> {
    let rules = read_yaml(RULES_FILE);
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn manifests_alert_rules_pass_promtool_and_keep_lynqs_rules() {
    let plain = read_yaml(RULES_FILE);
    let operator = read_yaml("manifests/prometheus/prometheus_rule.yaml");
    assert_eq!(operator["spec"]["groups"], plain["groups"], "prometheus_rule.yaml and {RULES_FILE} differ");
    assert_eq!(operator["metadata"]["name"], "lynq-alerts");

    let out = run_tool("promtool", &["check", "rules", path_str(&repo_path(RULES_FILE))]);
    assert!(out.contains("SUCCESS"), "{out}");
    run_tool("promtool", &["test", "rules", path_str(&repo_path("manifests/prometheus/tests/lynq-alerts.test.yaml"))]);

    let rules = alert_rules();
    for (name, expr, for_, severity) in LYNQ_ALERTS {
        let rule = rules.iter().find(|r| r["alert"] == *name).unwrap_or_else(|| panic!("alert {name} is missing"));
        assert_eq!(rule["expr"], *expr, "{name}");
        assert_eq!(rule["for"], *for_, "{name}");
        assert_eq!(rule["labels"], json!({"severity": severity, "component": "lynq"}), "{name}");
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("https://lynq.sh/alert-runbooks#{}", name.to_lowercase())
        );
    }
    for name in ["LynqHubLagHigh", "LynqHubStreamDown", "LynqHubResyncDivergence", "LynqHubSlotRetainedWalHigh"] {
        assert!(rules.iter().any(|r| r["alert"] == name), "alert {name} is missing");
    }
}

/// Lynq's 17 dashboard panels, in Lynq's order.
const LYNQ_PANELS: &[&str] = &[
    "Total Desired Nodes",
    "Total Ready Nodes",
    "Total Failed Nodes",
    "Total Conflicted Resources",
    "Reconciliation Duration (Percentiles)",
    "Reconciliation Rate",
    "Error Rate",
    "LynqNode Ready Status",
    "Degraded Nodes",
    "Resource Counts by Node",
    "Resource Counts (Total)",
    "Conflicted Resources by Node",
    "Conflicted Resources (Total)",
    "Hub Health",
    "Apply Rate by Kind",
    "Conflicts Rate by Node",
    "Work Queue Depth",
];

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path("manifests/grafana/lynq-dashboard.json")).expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    let nested = panels.iter().flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default());
    panels
        .iter()
        .cloned()
        .chain(nested)
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_string())))
        })
        .collect()
}

/// The metric names a PromQL expression reads: identifiers that are not functions, keywords, label
/// names (inside `{}` or `by (...)`-style lists), durations or strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let strip = |re: &str, text: &str| regex::Regex::new(re).expect("regex").replace_all(text, " ").into_owned();
    let mut text = strip(r#""(?:[^"\\]|\\.)*""#, expr);
    text = strip(r"\{[^}]*\}", &text);
    text = strip(r"\[[^\]]*\]", &text);
    text = strip(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", &text);
    let keywords =
        ["and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset", "group_left", "group_right"];
    regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?")
        .expect("regex")
        .captures_iter(&text)
        .filter(|c| c.get(1).is_none())
        .map(|c| c[0].trim().to_string())
        .filter(|name| !keywords.contains(&name.as_str()) && !name.chars().all(|ch| ch.is_ascii_digit() || ch == 'e'))
        .collect()
}

/// Every `"..."` string literal in lynq's sources (where metric names are registered).
fn source_strings() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>, literal: &regex::Regex) {
        for entry in std::fs::read_dir(dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out, literal);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.extend(literal.captures_iter(&text).map(|c| c[1].to_string()));
            }
        }
    }
    let literal = regex::Regex::new(r#""([a-z_:][a-z0-9_:]*)""#).expect("regex");
    let mut out = BTreeSet::new();
    walk(&repo_path("src"), &mut out, &literal);
    out
}

/// The name a histogram or summary series belongs to.
fn family(series: &str) -> &str {
    ["_bucket", "_count", "_sum"].iter().find_map(|s| series.strip_suffix(s)).unwrap_or(series)
}

#[test]
fn manifests_dashboard_has_lynqs_panels_and_valid_queries() {
    let dashboard = dashboard();
    assert_eq!(dashboard["title"], "Lynq Operator");
    assert_eq!(dashboard["uid"], "lynq-operator");
    assert_eq!(dashboard["refresh"], "30s");
    assert_eq!(dashboard["templating"]["list"][0]["name"], "datasource");
    let titles: Vec<&str> =
        dashboard["panels"].as_array().expect("panels").iter().filter_map(|p| p["title"].as_str()).collect();
    assert_eq!(&titles[..LYNQ_PANELS.len()], LYNQ_PANELS);
    for extra in ["Hub Lag", "Provisioning Latency (commit to node Ready)"] {
        assert!(titles.contains(&extra), "panel {extra} is missing");
    }
    // Each query is valid PromQL: promtool checks them as recording rules.
    let exprs = dashboard_exprs(&dashboard);
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("lynq_dashboard_query_{i}"), "expr": expr}))
        .collect();
    let file = yaml_file(&[&json!({"groups": [{"name": "dashboard", "rules": rules}]})]);
    run_tool("promtool", &["check", "rules", path_str(file.path())]);
}

/// The metric families lynq exports: Lynq's (lynq-behavior.md §5.1, including controller-runtime's
/// `workqueue_depth`) and lynq's change-data-capture and provisioning families (cdc.md §6).
const EXPORTED_METRICS: &[&str] = &[
    "lynqnode_reconcile_duration_seconds",
    "lynqnode_resources_ready",
    "lynqnode_resources_desired",
    "lynqnode_resources_failed",
    "lynqnode_resources_conflicted",
    "lynqnode_conflicts_total",
    "lynqnode_condition_status",
    "lynqnode_degraded_status",
    "hub_desired",
    "hub_ready",
    "hub_failed",
    "apply_attempts_total",
    "lynqform_rollout_updating_nodes",
    "lynqform_rollout_phase",
    "lynqform_rollout_progress",
    "workqueue_depth",
    "lynq_hub_change_lag_seconds",
    "lynq_hub_lag_seconds",
    "lynq_hub_apply_duration_seconds",
    "lynq_hub_source_behind_bytes",
    "lynq_hub_slot_retained_wal_bytes",
    "lynq_hub_stream_connected",
    "lynq_hub_change_capture_mode",
    "lynq_hub_last_event_timestamp_seconds",
    "lynq_hub_changes_total",
    "lynq_hub_transactions_total",
    "lynq_hub_stream_reconnects_total",
    "lynq_hub_snapshots_total",
    "lynq_hub_resyncs_total",
    "lynq_hub_resync_divergences_total",
    "lynq_hub_deletion_guard_holds_total",
    "lynq_hub_deletion_guard_active",
    "lynq_node_apply_latency_seconds",
    "lynq_node_ready_latency_seconds",
];

#[test]
fn manifests_dashboard_and_rules_query_only_metrics_lynq_exports() {
    let known = source_strings();
    let mut queries: Vec<(String, String)> = dashboard_exprs(&dashboard());
    queries.extend(alert_rules().iter().map(|r| {
        (
            format!("alert {}", r["alert"].as_str().unwrap_or_default()),
            r["expr"].as_str().unwrap_or_default().to_string(),
        )
    }));
    let mut missing = BTreeSet::new();
    for (what, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: no metric found in {expr}");
        for name in names {
            // Both documented as exported and registered somewhere in src/ (not only planned).
            if !EXPORTED_METRICS.contains(&family(&name)) || !known.contains(family(&name)) {
                missing.insert(format!("{} ({what})", family(&name)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics queried but not exported by lynq (documented and registered in src/): {missing:#?}"
    );
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let names = metric_names(
        r#"sum by (kind) (rate(apply_attempts_total{result="error"}[5m])) / on (namespace, hub) hub_desired > 0.5 or vector(0)"#,
    );
    assert_eq!(names, BTreeSet::from(["apply_attempts_total".to_string(), "hub_desired".to_string()]));
    let names = metric_names("time() - max by (hub) (lynq_hub_last_event_timestamp_seconds) > 1e9");
    assert_eq!(names, BTreeSet::from(["lynq_hub_last_event_timestamp_seconds".to_string()]));
    assert_eq!(family("lynq_node_ready_latency_seconds_bucket"), "lynq_node_ready_latency_seconds");
}

/// A client authenticated as `system:serviceaccount:lynq-system:lynq-controller` (a static token the
/// test apiserver knows), against the same apiserver as the admin kubeconfig.
async fn operator_client() -> Client {
    let env = support::env();
    let token = env
        .tokens
        .iter()
        .find(|(user, _)| user == lynq::localenv::OPERATOR_SA_USER)
        .map(|(_, token)| token.clone())
        .expect("the environment issues a token for the operator's ServiceAccount");
    let path = env.kubeconfig.clone().expect("environment has a control plane");
    lynq::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .expect("load kubeconfig");
    config.auth_info.token = Some(token.into());
    Client::try_from(config).expect("client")
}

/// Applies the CRDs, the namespace and the RBAC objects of `manifests/default` for real (not the
/// Deployment: without a kubelet it would never run) and waits until the CRDs are established.
async fn install_crds_and_rbac(admin: &Client) {
    let docs = yaml_docs(&kustomize("manifests/default"));
    let wanted = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let selected: Vec<&Value> =
        docs.iter().filter(|d| wanted.contains(&d["kind"].as_str().unwrap_or_default())).collect();
    let file = yaml_file(&selected);
    support::kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=lynq-manifests-test",
        "-f",
        path_str(file.path()),
    ]);
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for doc in selected.iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
        let name = doc["metadata"]["name"].as_str().expect("CRD name").to_string();
        support::eventually(&format!("CRD {name} established"), WAIT, || {
            let (crds, name) = (crds.clone(), name.clone());
            async move {
                let crd = crds.get(&name).await.ok()?;
                crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
            }
        })
        .await;
    }
}

/// Waits until the apiserver grants the ServiceAccount what its freshly applied ClusterRole says: the
/// RBAC authorizer learns of new roles and bindings through its own watches, a moment after the apply.
/// Asks as the ServiceAccount itself (every authenticated user may create SelfSubjectAccessReviews).
async fn wait_until_authorized(operator: &Client) {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(operator.clone());
    for (group, resource, verb) in [
        ("operator.lynq.sh", "lynqhubs", "watch"),
        ("operator.lynq.sh", "lynqnodes", "create"),
        ("operator.lynq.sh", "lynqnodes", "patch"),
        ("operator.lynq.sh", "lynqnodes/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("apps", "deployments", "create"),
        ("", "services", "create"),
    ] {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {"resourceAttributes": {
            "group": group, "resource": resource, "subresource": subresource, "verb": verb
        }}}))
        .expect("review");
        support::eventually(&format!("the ServiceAccount may {verb} {group}/{resource}"), WAIT, || {
            let (reviews, review) = (reviews.clone(), review.clone());
            async move {
                let answer = reviews.create(&PostParams::default(), &review).await.expect("access review");
                answer.status.is_some_and(|s| s.allowed).then_some(())
            }
        })
        .await;
    }
}

/// The operator's controllers running in this process as the ServiceAccount, until dropped.
struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    fn start(client: Client, ns: &str) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shared<_> = stopped.map(|_| ()).shared();
        let task = tokio::spawn(lynq::server::run_controllers(client, Some(ns.to_string()), shutdown));
        Self { stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task).await.expect("controllers stop in time").expect("controllers task");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The MariaDB table `nodes` of a fresh database, and the hub's connection facts (port, user, password).
async fn mariadb_table() -> (String, u16, String, String, mysql_async::Conn) {
    let (database, url) = support::mysql_database("rbac").await;
    let parsed = mysql_async::Opts::from_url(&url).expect("MariaDB URL");
    let (port, user, password) = (
        parsed.tcp_port(),
        parsed.user().unwrap_or_default().to_string(),
        parsed.pass().unwrap_or_default().to_string(),
    );
    let mut conn = mysql_async::Conn::from_url(url.as_str()).await.expect("connect to MariaDB");
    conn.query_drop("CREATE TABLE nodes (node_id VARCHAR(64) PRIMARY KEY, is_active TINYINT(1))").await.expect("table");
    (database, port, user, password, conn)
}

/// The form: ConfigMap, then a Deployment that depends on it, then a Service that waits for the
/// Deployment to be ready.
fn web_form() -> Value {
    json!({
        "apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm", "metadata": {"name": "web"},
        "spec": {
            "hubId": "hub",
            "configMaps": [{"id": "cfg", "nameTemplate": "{{ .uid }}-cfg",
                "spec": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"tenant": "{{ .uid }}"}}}],
            "deployments": [{"id": "app", "nameTemplate": "{{ .uid }}-app", "dependIds": ["cfg"],
                "spec": {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "{{ .uid }}"}},
                    "template": {"metadata": {"labels": {"app": "{{ .uid }}"}},
                                 "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}}],
            "services": [{"id": "svc", "nameTemplate": "{{ .uid }}-svc", "dependIds": ["app"],
                "spec": {"apiVersion": "v1", "kind": "Service", "spec": {
                    "selector": {"app": "{{ .uid }}"}, "ports": [{"port": 80, "targetPort": 80}]}}}]
        }
    })
}

/// Plays the missing kubelet and deployment controller: reports the Deployment's one replica ready.
async fn mark_deployment_ready(admin: &Client, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let deployment = api.get(name).await.expect("deployment exists");
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
        ]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("deployment status");
}

fn condition_status(conditions: &Value, type_: &str) -> Option<String> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_).and_then(|c| c["status"].as_str()).map(str::to_owned)
}

/// Panics when `what` mentions a refused API call.
fn assert_not_forbidden(what: &str, value: &Value) {
    let text = value.to_string().to_lowercase();
    assert!(!text.contains("forbidden"), "{what} reports a refused call: {value}");
}

async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("get").is_some()
}

#[tokio::test]
async fn manifests_rbac_lets_the_operator_do_its_whole_job() {
    let admin = support::client().await;
    install_crds_and_rbac(&admin).await;
    let operator = operator_client().await;
    wait_until_authorized(&operator).await;
    // The client really is the ServiceAccount: it may not read what its role does not grant.
    match Api::<Pod>::all(operator.clone()).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the ServiceAccount may list pods: {other:?}"),
    }
    // Leader election: the Role lets it take (and renew, and release) a Lease in lynq-system.
    let lease = format!("manifests-{}", support::unique_suffix());
    let mut elector = lynq::server::leader::Elector::new(
        operator.clone(),
        "lynq-system",
        &lease,
        "manifests-test".into(),
        Default::default(),
    );
    for _ in 0..2 {
        let attempt = elector.attempt().await.expect("lease attempt as the ServiceAccount");
        assert!(matches!(attempt, lynq::server::leader::Attempt::Leader(_)), "{attempt:?}");
    }
    assert!(elector.release().await.expect("release the lease"), "the lease was not released");

    let ns = support::namespace(&admin, "rbac").await;
    let (database, port, user, password, mut db) = mariadb_table().await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": password}});
    secrets.create(&PostParams::default(), &serde_json::from_value(secret).expect("secret")).await.expect("secret");
    let hubs: Api<LynqHub> = Api::namespaced(admin.clone(), &ns);
    let hub = json!({
        "apiVersion": "operator.lynq.sh/v1", "kind": "LynqHub", "metadata": {"name": "hub"},
        "spec": {
            "source": {"type": "mysql", "syncInterval": "30s", "mysql": {
                "host": "127.0.0.1", "port": port, "database": database, "table": "nodes", "username": user,
                "passwordRef": {"name": "db", "key": "password"}}},
            "valueMappings": {"uid": "node_id", "activate": "is_active"}
        }
    });
    hubs.create(&PostParams::default(), &serde_json::from_value(hub).expect("hub")).await.expect("create hub");
    let forms: Api<LynqForm> = Api::namespaced(admin.clone(), &ns);
    forms.create(&PostParams::default(), &serde_json::from_value(web_form()).expect("form")).await.expect("form");
    let running = Operator::start(operator.clone(), &ns);

    db.query_drop("INSERT INTO nodes VALUES ('acme', 1)").await.expect("insert row");
    let nodes: Api<LynqNode> = Api::namespaced(admin.clone(), &ns);
    let (config_maps, deployments, services): (Api<ConfigMap>, Api<Deployment>, Api<Service>) =
        (Api::namespaced(admin.clone(), &ns), Api::namespaced(admin.clone(), &ns), Api::namespaced(admin.clone(), &ns));
    support::eventually("the row's node, ConfigMap and Deployment", WAIT, || async {
        let hub = hubs.get("hub").await.expect("get hub");
        assert_not_forbidden("LynqHub hub", &serde_json::to_value(&hub.status).expect("status"));
        (exists(&nodes, "acme-web").await
            && exists(&config_maps, "acme-cfg").await
            && exists(&deployments, "acme-app").await)
            .then_some(())
    })
    .await;
    mark_deployment_ready(&admin, &ns, "acme-app").await;
    let node = support::eventually("the node Ready with its Service", WAIT, || async {
        let node = nodes.get_opt("acme-web").await.expect("get node")?;
        let status = serde_json::to_value(&node.status).expect("status");
        assert_not_forbidden("LynqNode acme-web", &status);
        let ready = condition_status(&status["conditions"], "Ready").as_deref() == Some("True");
        (ready && exists(&services, "acme-svc").await).then_some(status)
    })
    .await;
    assert_eq!(node["readyResources"], 3, "{node}");
    let hub_status = support::eventually("the hub's status counts the ready node", WAIT, || async {
        let hub = hubs.get("hub").await.expect("get hub");
        let status = serde_json::to_value(&hub.status).expect("status");
        assert_not_forbidden("LynqHub hub", &status);
        (status["desired"] == 1 && status["ready"] == 1).then_some(status)
    })
    .await;
    let finalizers = hubs.get("hub").await.expect("get hub").finalizers().to_vec();
    assert!(!finalizers.is_empty(), "the operator did not add its finalizer to the hub");
    assert_eq!(hub_status["changeCapture"]["mode"], "Streaming", "{hub_status}");
    let form_status = serde_json::to_value(forms.get("web").await.expect("get form").status).expect("status");
    assert_not_forbidden("LynqForm web", &form_status);
    assert_eq!(condition_status(&form_status["conditions"], "Valid").as_deref(), Some("True"), "{form_status}");

    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let written = support::eventually("events on the node", WAIT, || async {
        let list = events.list(&ListParams::default()).await.expect("list events").items;
        list.iter().any(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("LynqNode")).then_some(list)
    })
    .await;
    for event in &written {
        assert_not_forbidden(&format!("event {}", event.name_any()), &json!(event.note));
    }

    db.query_drop("DELETE FROM nodes WHERE node_id = 'acme'").await.expect("delete row");
    support::eventually("the node and its resources gone", WAIT, || async {
        let gone = !exists(&nodes, "acme-web").await
            && !exists(&config_maps, "acme-cfg").await
            && !exists(&deployments, "acme-app").await
            && !exists(&services, "acme-svc").await;
        gone.then_some(())
    })
    .await;
    // Deleting the hub goes through its finalizer, which the operator removes.
    hubs.delete("hub", &DeleteParams::default()).await.expect("delete hub");
    support::eventually("the hub gone", WAIT, || async { (!exists(&hubs, "hub").await).then_some(()) }).await;
    running.stop().await;
}
