//! Template variables of a LynqNode, rebuilt from the annotations the hub wrote (Lynq §2.4 step 1).

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::LynqNode;

/// Annotation: deprecated hostOrUrl value of the row.
pub const ANN_HOST_OR_URL: &str = "lynq.sh/hostOrUrl";
/// Annotation: raw activate value of the row.
pub const ANN_ACTIVATE: &str = "lynq.sh/activate";
/// Annotation: JSON object of the extraValueMappings values.
pub const ANN_EXTRA: &str = "lynq.sh/extra";
/// Annotation: name of the hub.
pub const ANN_HUB_ID: &str = "lynq.sh/hubId";

/// The node's variables could not be built.
#[derive(Debug, thiserror::Error)]
#[error("LynqNode {node}: annotation {ANN_EXTRA} is not a JSON object of strings: {message}")]
pub struct VariablesError {
    /// namespace/name of the node.
    pub node: String,
    /// What is wrong with the annotation.
    pub message: String,
}

/// Builds `uid`, `hostOrUrl`, `host`, `activate`, the extra variables, `hubId` and `templateRef`.
///
/// As in Lynq, extras may shadow `uid`/`activate`/`hostOrUrl`/`host`, but not `hubId`/`templateRef`.
pub fn node_variables(node: &LynqNode) -> Result<BTreeMap<String, String>, VariablesError> {
    let annotations = node.annotations();
    let get = |key: &str| annotations.get(key).filter(|v| !v.is_empty()).cloned();
    let mut vars = BTreeMap::new();
    vars.insert("uid".to_string(), node.spec.uid.clone());
    let host_or_url = get(ANN_HOST_OR_URL).unwrap_or_else(|| node.spec.uid.clone());
    vars.insert("host".to_string(), crate::template::to_host(&host_or_url));
    vars.insert("hostOrUrl".to_string(), host_or_url);
    vars.insert("activate".to_string(), get(ANN_ACTIVATE).unwrap_or_else(|| "true".into()));
    if let Some(extra) = annotations.get(ANN_EXTRA).filter(|v| !v.trim().is_empty()) {
        let parsed: BTreeMap<String, String> = serde_json::from_str(extra).map_err(|e| VariablesError {
            node: format!("{}/{}", node.namespace().unwrap_or_default(), node.name_any()),
            message: e.to_string(),
        })?;
        vars.extend(parsed);
    }
    vars.insert("hubId".to_string(), annotations.get(ANN_HUB_ID).cloned().unwrap_or_default());
    vars.insert("templateRef".to_string(), node.spec.template_ref.clone());
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LynqNodeSpec;

    fn node(annotations: &[(&str, &str)]) -> LynqNode {
        let mut n = LynqNode::new(
            "acme-web",
            LynqNodeSpec { uid: "acme".into(), template_ref: "web".into(), ..Default::default() },
        );
        n.metadata.namespace = Some("default".into());
        n.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        n
    }

    #[test]
    fn defaults_follow_lynq() {
        let vars = node_variables(&node(&[(ANN_HUB_ID, "hub")])).expect("vars");
        assert_eq!(vars["uid"], "acme");
        assert_eq!(vars["hostOrUrl"], "acme");
        assert_eq!(vars["host"], "acme");
        assert_eq!(vars["activate"], "true");
        assert_eq!(vars["hubId"], "hub");
        assert_eq!(vars["templateRef"], "web");
    }

    #[test]
    fn extras_shadow_row_values_but_not_hub_and_form() {
        let vars = node_variables(&node(&[
            (ANN_ACTIVATE, "1"),
            (ANN_HOST_OR_URL, "https://acme.example.com:8443/x"),
            (ANN_EXTRA, r#"{"planId":"pro","uid":"shadow","hubId":"nope"}"#),
            (ANN_HUB_ID, "hub"),
        ]))
        .expect("vars");
        assert_eq!(vars["planId"], "pro");
        assert_eq!(vars["uid"], "shadow");
        assert_eq!(vars["hubId"], "hub");
        assert_eq!(vars["activate"], "1");
        assert_eq!(vars["host"], "acme.example.com");
    }

    #[test]
    fn bad_extra_json_names_the_node() {
        let err = node_variables(&node(&[(ANN_EXTRA, "{not json")])).expect_err("invalid");
        assert!(err.to_string().contains("default/acme-web"), "{err}");
    }
}
