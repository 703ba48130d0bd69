//! LynqHub: where the rows live and which columns matter.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// Desired state of a LynqHub.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "operator.lynq.sh",
    version = "v1",
    kind = "LynqHub",
    plural = "lynqhubs",
    namespaced,
    status = "LynqHubStatus",
    printcolumn = r#"{"name":"Templates","type":"integer","jsonPath":".status.referencingTemplates"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".status.changeCapture.mode"}"#,
    printcolumn = r#"{"name":"Conditions","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LynqHubSpec {
    /// The database table (or view) the rows come from.
    pub source: DataSource,
    /// Alias of `source.syncInterval` (where the original Lynq article puts it); `source.syncInterval` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub sync_interval: Option<String>,
    /// Which columns hold the row's identity and activation flag.
    pub value_mappings: ValueMappings,
    /// Template variable name to column name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_value_mappings: Option<BTreeMap<String, String>>,
}

/// Kind of database.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    /// MySQL or MariaDB.
    #[default]
    Mysql,
    /// PostgreSQL.
    Postgresql,
}

/// How row changes are picked up.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ChangeCaptureMode {
    /// Stream when the server allows it, otherwise poll (default).
    #[default]
    Auto,
    /// Stream, and fail visibly when streaming is impossible.
    Stream,
    /// Poll the table every syncInterval, as Lynq.
    Poll,
}

/// Where the rows live.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    /// Database kind.
    #[serde(rename = "type")]
    pub type_: SourceType,
    /// Full-resync period while streaming; polling period while polling (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub sync_interval: Option<String>,
    /// Streaming or polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Auto"))]
    pub change_capture: Option<ChangeCaptureMode>,
    /// MySQL/MariaDB connection, when type is mysql.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MySqlSource>,
    /// PostgreSQL connection, when type is postgresql.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgreSqlSource>,
}

fn default_mysql_port() -> i32 {
    3306
}

fn default_pg_port() -> i32 {
    5432
}

fn default_schema() -> String {
    "public".into()
}

/// MySQL/MariaDB connection.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MySqlSource {
    /// Hostname or IP.
    pub host: String,
    /// Port (default 3306).
    #[serde(default = "default_mysql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Database user.
    pub username: String,
    /// Secret key holding the password, in the hub's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<SecretKeyRef>,
    /// Database name.
    pub database: String,
    /// Table or view name.
    pub table: String,
    /// TLS for the connection; absent means plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MySqlTls>,
    /// Replication server id of this hub's binlog stream; derived stably from the hub when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 4294967295u32))]
    pub server_id: Option<i64>,
}

/// TLS settings of a MySQL connection.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MySqlTls {
    /// Secret key holding a PEM CA bundle to verify the server with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<SecretKeyRef>,
    /// Accept any server certificate (testing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// TLS mode of a PostgreSQL connection.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (default).
    #[default]
    Prefer,
    /// TLS without certificate verification.
    Require,
    /// TLS with certificate and host name verification.
    VerifyFull,
}

/// PostgreSQL connection.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgreSqlSource {
    /// Hostname or IP.
    pub host: String,
    /// Port (default 5432).
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Database name.
    pub database: String,
    /// Schema of the table (default public).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Database role.
    pub username: String,
    /// Secret key holding the password, in the hub's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<SecretKeyRef>,
    /// TLS mode (default prefer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "prefer"))]
    pub ssl_mode: Option<SslMode>,
    /// Replication slot name; derived from the hub's namespace and name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9_]{1,63}$"))]
    pub slot_name: Option<String>,
    /// Publication name; derived from the hub's namespace and name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub publication_name: Option<String>,
}

/// Columns with a fixed meaning.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValueMappings {
    /// Column holding the row's unique id.
    pub uid: String,
    /// Deprecated (Lynq v1.1.11): column holding a host or URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_or_url: Option<String>,
    /// Column whose value decides whether the row is provisioned.
    pub activate: String,
}

/// Observed state of a LynqHub.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LynqHubStatus {
    /// Generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// LynqForms in this namespace referencing the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referencing_templates: Option<i32>,
    /// Forms × active rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<i32>,
    /// Nodes with Ready=True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<i32>,
    /// Nodes whose Ready condition is not True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    /// Rows skipped because they cannot become a node (invalid uid, duplicate, name collision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_rows: Option<i32>,
    /// Conditions (Ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Change-data-capture state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_capture: Option<ChangeCaptureStatus>,
}

/// Mode a hub is running in.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum CaptureModeInUse {
    /// Tailing the binlog / replication stream.
    Streaming,
    /// Reading the table every syncInterval.
    Polling,
}

/// Change-data-capture state of a hub.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeCaptureStatus {
    /// Mode in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CaptureModeInUse>,
    /// Position of the last fully applied transaction (the resume checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<StreamPosition>,
    /// Time of the last applied change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<String>,
    /// Seconds between the source commit and its application, for the last change (0 when caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Human-readable reason for the mode (for example why Auto fell back to polling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A stream position.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamPosition {
    /// MySQL binlog file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_file: Option<String>,
    /// MySQL binlog byte offset after the last applied transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_position: Option<i64>,
    /// GTID (set) of the last applied transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<String>,
    /// PostgreSQL LSN (X/X) confirmed to the slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
}
