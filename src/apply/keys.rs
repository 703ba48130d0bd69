//! Lynq's applied-resource keys `Kind/namespace/name@id` (`status.appliedResources`) and the
//! apiVersions of the built-in kinds, needed to act on keys Lynq wrote (which carry no apiVersion).

use std::fmt;

/// A parsed `Kind/namespace/name@id` key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    /// Object kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace as written in the key; may be empty (see [`key_namespace`]).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// TResource id.
    pub id: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}@{}", self.kind, self.namespace, self.name, self.id)
    }
}

/// Why a key could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource key '{key}': {problem} (expected Kind/namespace/name@id)")]
pub struct KeyError {
    /// The key as given.
    pub key: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Formats Lynq's key `Kind/namespace/name@id`.
pub fn format_key(kind: &str, namespace: &str, name: &str, id: &str) -> String {
    format!("{kind}/{namespace}/{name}@{id}")
}

/// The namespace Lynq puts into a key: the target namespace when set, else the node's namespace —
/// for every kind, cluster-scoped ones such as `Namespace` included (Lynq writes
/// `Namespace/<node namespace>/<name>@<id>`). Writing the same lets Lynq and lynq read each other's
/// `appliedResources` without seeing every cluster-scoped object as an orphan.
pub fn key_namespace<'a>(target_namespace: Option<&'a str>, node_namespace: &'a str) -> &'a str {
    target_namespace.filter(|ns| !ns.is_empty()).unwrap_or(node_namespace)
}

/// Parses `Kind/namespace/name@id`; the namespace may be empty, the other parts may not. The id is
/// everything after the first `@` (kinds, namespaces and names cannot contain one).
pub fn parse_key(key: &str) -> Result<ResourceKey, KeyError> {
    let fail = |problem| KeyError { key: key.to_string(), problem };
    let (object, id) = key.split_once('@').ok_or_else(|| fail("missing '@'"))?;
    if id.is_empty() {
        return Err(fail("empty id"));
    }
    let mut parts = object.split('/');
    let (Some(kind), Some(namespace), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fail("need exactly three '/'-separated parts before '@'"));
    };
    if kind.is_empty() {
        return Err(fail("empty kind"));
    }
    if name.is_empty() {
        return Err(fail("empty name"));
    }
    Ok(ResourceKey { kind: kind.into(), namespace: namespace.into(), name: name.into(), id: id.into() })
}

/// apiVersion of the 15 built-in kinds a LynqForm has a list for; None for anything else (CRs and
/// other `manifests` kinds, whose apiVersion a legacy key cannot tell).
pub fn api_version_for_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Namespace" | "ServiceAccount" | "Service" | "ConfigMap" | "Secret" | "PersistentVolumeClaim" => "v1",
        "Deployment" | "StatefulSet" | "DaemonSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "Ingress" | "NetworkPolicy" => "networking.k8s.io/v1",
        "PodDisruptionBudget" => "policy/v1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, namespace: &str, name: &str, id: &str) -> ResourceKey {
        ResourceKey { kind: kind.into(), namespace: namespace.into(), name: name.into(), id: id.into() }
    }

    #[test]
    fn format_matches_lynq() {
        assert_eq!(
            format_key("Deployment", "default", "test-deployment", "app-deploy"),
            "Deployment/default/test-deployment@app-deploy"
        );
        assert_eq!(format_key("Namespace", "", "my-namespace", "ns-1"), "Namespace//my-namespace@ns-1");
        assert_eq!(key("Service", "prod", "svc", "s").to_string(), "Service/prod/svc@s");
    }

    #[test]
    fn parse_valid_keys() {
        let cases = [
            (
                "Deployment/default/test-deployment@app-deploy",
                key("Deployment", "default", "test-deployment", "app-deploy"),
            ),
            ("Namespace//my-namespace@ns-1", key("Namespace", "", "my-namespace", "ns-1")),
            ("Namespace/tenants/acme@ns", key("Namespace", "tenants", "acme", "ns")),
            ("Deployment/{{ .uid }}-ns/web@web", key("Deployment", "{{ .uid }}-ns", "web", "web")),
            ("ConfigMap/a/b@id@with-at", key("ConfigMap", "a", "b", "id@with-at")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_key(text), Ok(want.clone()), "{text}");
            assert_eq!(want.to_string(), text, "round trip");
        }
    }

    #[test]
    fn parse_rejects_malformed_keys() {
        let cases = [
            ("", "missing '@'"),
            ("Deployment/default/test-deployment", "missing '@'"),
            ("Deployment-default-test-deployment@id", "need exactly three '/'-separated parts before '@'"),
            ("Deployment/default@id", "need exactly three '/'-separated parts before '@'"),
            ("a/b/c/d@id", "need exactly three '/'-separated parts before '@'"),
            ("/default/name@id", "empty kind"),
            ("Deployment/default/@id", "empty name"),
            ("Deployment/default/name@", "empty id"),
        ];
        for (text, problem) in cases {
            let err = parse_key(text).err();
            assert_eq!(err.as_ref().map(|e| e.problem), Some(problem), "{text}");
        }
        let message = parse_key("nope").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("invalid resource key 'nope': missing '@' (expected Kind/namespace/name@id)")
        );
    }

    #[test]
    fn key_namespace_follows_lynq() {
        assert_eq!(key_namespace(None, "tenants"), "tenants");
        assert_eq!(key_namespace(Some(""), "tenants"), "tenants");
        assert_eq!(key_namespace(Some("acme-ns"), "tenants"), "acme-ns");
    }

    #[test]
    fn api_versions_of_all_builtin_kinds() {
        let cases = [
            ("ServiceAccount", "v1"),
            ("Deployment", "apps/v1"),
            ("StatefulSet", "apps/v1"),
            ("DaemonSet", "apps/v1"),
            ("Service", "v1"),
            ("Ingress", "networking.k8s.io/v1"),
            ("ConfigMap", "v1"),
            ("Secret", "v1"),
            ("PersistentVolumeClaim", "v1"),
            ("Job", "batch/v1"),
            ("CronJob", "batch/v1"),
            ("PodDisruptionBudget", "policy/v1"),
            ("NetworkPolicy", "networking.k8s.io/v1"),
            ("HorizontalPodAutoscaler", "autoscaling/v2"),
            ("Namespace", "v1"),
        ];
        for (kind, version) in cases {
            assert_eq!(api_version_for_kind(kind), Some(version), "{kind}");
        }
        assert_eq!(api_version_for_kind("Certificate"), None);
        assert_eq!(api_version_for_kind("deployment"), None, "kinds are case-sensitive");
    }
}
