//! A hub's source configuration: which database, which columns, which mode, which interval — built
//! from the LynqHub spec and its password Secret.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::{
    api::{ChangeCaptureMode, LynqHub, SecretKeyRef, SourceType},
    source::{
        capture::Database,
        mysql::{MysqlConfig, MysqlSource, MysqlTls, derive_server_id, split_table},
        postgres::{PostgresConfig, PostgresSource, SslMode, derive_publication_name, derive_slot_name},
    },
};

/// Lynq's default sync interval.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Why a hub's source cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The spec names a source type without its connection block.
    #[error("LynqHub {hub}: spec.source.{block} is required when spec.source.type is {block}")]
    MissingBlock { hub: String, block: &'static str },
    /// The password Secret or its key is missing.
    #[error("LynqHub {hub}: password Secret {secret}: {problem}")]
    Password { hub: String, secret: String, problem: String },
    /// The source itself rejected the configuration.
    #[error("LynqHub {hub}: {message}")]
    Source { hub: String, message: String },
}

/// Parses Lynq's syncInterval (`^[0-9]+(s|m|h)$`); None when it does not match.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// The effective interval: `spec.source.syncInterval`, else the seed's `spec.syncInterval`, else 30s
/// (also when unparsable, as Lynq). Zero is taken as 30s too: a zero period would spin.
pub fn sync_interval(hub: &LynqHub) -> Duration {
    hub.spec
        .source
        .sync_interval
        .as_deref()
        .or(hub.spec.sync_interval.as_deref())
        .and_then(parse_interval)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_SYNC_INTERVAL)
}

/// The requested change-capture mode.
pub fn capture_mode(hub: &LynqHub) -> ChangeCaptureMode {
    hub.spec.source.change_capture.unwrap_or_default()
}

/// The columns a hub reads, deduplicated, in a stable order (uid, activate, hostOrUrl, extras).
pub fn mapped_columns(hub: &LynqHub) -> Vec<String> {
    let m = &hub.spec.value_mappings;
    let mut columns = vec![m.uid.clone(), m.activate.clone()];
    columns.extend(m.host_or_url.clone());
    columns.extend(hub.spec.extra_value_mappings.iter().flatten().map(|(_, column)| column.clone()));
    let mut seen = std::collections::HashSet::new();
    columns.retain(|c| seen.insert(c.clone()));
    columns
}

/// Reads the password from the hub's Secret (empty when no passwordRef is set).
pub async fn read_password(
    client: &Client,
    hub: &LynqHub,
    secret: Option<&SecretKeyRef>,
) -> Result<String, ConfigError> {
    let Some(secret) = secret else { return Ok(String::new()) };
    let ns = hub.namespace().unwrap_or_default();
    let fail =
        |problem: String| ConfigError::Password { hub: hub_key(hub), secret: format!("{ns}/{}", secret.name), problem };
    let found =
        Api::<Secret>::namespaced(client.clone(), &ns).get_opt(&secret.name).await.map_err(|e| fail(e.to_string()))?;
    let found = found.ok_or_else(|| fail("not found".into()))?;
    // Unlike Lynq, a missing key is an error: an empty password would only produce a confusing login failure.
    let bytes = found
        .data
        .as_ref()
        .and_then(|d| d.get(&secret.key))
        .map(|b| b.0.clone())
        .or_else(|| found.string_data.as_ref().and_then(|d| d.get(&secret.key)).map(|s| s.clone().into_bytes()))
        .ok_or_else(|| fail(format!("has no key {:?}", secret.key)))?;
    String::from_utf8(bytes).map_err(|_| fail(format!("key {:?} is not UTF-8", secret.key)))
}

/// namespace/name of a hub.
pub fn hub_key(hub: &LynqHub) -> String {
    format!("{}/{}", hub.namespace().unwrap_or_default(), hub.name_any())
}

/// The source for a hub, with the password already read.
pub fn database(hub: &LynqHub, password: String) -> Result<Database, ConfigError> {
    let ns = hub.namespace().unwrap_or_default();
    let name = hub.name_any();
    let columns = mapped_columns(hub);
    match hub.spec.source.type_ {
        SourceType::Mysql => {
            let m = hub
                .spec
                .source
                .mysql
                .as_ref()
                .ok_or(ConfigError::MissingBlock { hub: hub_key(hub), block: "mysql" })?;
            let (database, table) = split_table(&m.database, &m.table);
            let server_id =
                m.server_id.and_then(|id| u32::try_from(id).ok()).unwrap_or_else(|| derive_server_id(&ns, &name));
            let tls = m
                .tls
                .as_ref()
                .map(|t| MysqlTls { ca_cert_pem: None, skip_verify: t.insecure_skip_verify.unwrap_or(false) });
            Ok(Database::Mysql(MysqlSource::new(MysqlConfig {
                host: m.host.clone(),
                port: u16::try_from(m.port).unwrap_or(3306),
                username: m.username.clone(),
                password,
                database,
                table,
                columns,
                server_id,
                tls,
                heartbeat: Duration::from_secs(1),
            })))
        }
        SourceType::Postgresql => {
            let p = hub
                .spec
                .source
                .postgresql
                .as_ref()
                .ok_or(ConfigError::MissingBlock { hub: hub_key(hub), block: "postgresql" })?;
            let config = PostgresConfig {
                host: p.host.clone(),
                port: u16::try_from(p.port).unwrap_or(5432),
                database: p.database.clone(),
                schema: p.schema.clone(),
                table: p.table.clone(),
                username: p.username.clone(),
                password,
                ssl_mode: match p.ssl_mode.unwrap_or_default() {
                    crate::api::SslMode::Disable => SslMode::Disable,
                    crate::api::SslMode::Prefer => SslMode::Prefer,
                    crate::api::SslMode::Require => SslMode::Require,
                    crate::api::SslMode::VerifyFull => SslMode::VerifyFull,
                },
                slot_name: p.slot_name.clone().unwrap_or_else(|| derive_slot_name(&ns, &name)),
                publication_name: p.publication_name.clone().unwrap_or_else(|| derive_publication_name(&ns, &name)),
                columns,
                uid_column: hub.spec.value_mappings.uid.clone(),
                ..PostgresConfig::default()
            };
            let source = PostgresSource::new(config)
                .map_err(|e| ConfigError::Source { hub: hub_key(hub), message: e.to_string() })?;
            Ok(Database::Postgres(Box::new(source)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_lynqs_pattern() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_interval("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_interval("1m30s"), None);
        assert_eq!(parse_interval("100ms"), None);
        assert_eq!(parse_interval(""), None);
        assert_eq!(parse_interval("s"), None);
    }

    fn hub(source_interval: Option<&str>, spec_interval: Option<&str>) -> LynqHub {
        let mut spec = crate::api::LynqHubSpec::default();
        spec.source.sync_interval = source_interval.map(str::to_owned);
        spec.sync_interval = spec_interval.map(str::to_owned);
        LynqHub::new("h", spec)
    }

    #[test]
    fn source_interval_wins_over_the_seed_alias() {
        assert_eq!(sync_interval(&hub(Some("10s"), Some("1m"))), Duration::from_secs(10));
        assert_eq!(sync_interval(&hub(None, Some("1m"))), Duration::from_secs(60));
        assert_eq!(sync_interval(&hub(None, None)), DEFAULT_SYNC_INTERVAL);
        assert_eq!(sync_interval(&hub(Some("0s"), None)), DEFAULT_SYNC_INTERVAL);
    }

    #[test]
    fn columns_are_deduplicated_in_a_stable_order() {
        let mut h = hub(None, None);
        h.spec.value_mappings.uid = "id".into();
        h.spec.value_mappings.activate = "on".into();
        h.spec.extra_value_mappings =
            Some([("plan".to_string(), "plan_col".to_string()), ("again".to_string(), "id".to_string())].into());
        assert_eq!(mapped_columns(&h), vec!["id", "on", "plan_col"]);
    }
}
