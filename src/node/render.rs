//! Rendering one TResource of a node into a complete Kubernetes object (Lynq §2.4 "Rendering details",
//! with Appendix C quirk 3 fixed: the manifest's own labels and annotations are kept and merged, the
//! templates win).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{
    api::{DeletionPolicy, TResource, TemplateSyntax},
    apply::{ANN_DELETION_POLICY, annotations_mut, labels_mut},
    template::{Engine, Syntax, TemplateError},
};

/// A resource rendered and ready to be keyed and applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedResource {
    /// Resource id in the form.
    pub id: String,
    /// apiVersion of the object.
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// metadata.name.
    pub name: String,
    /// Rendered target namespace (the node's when not set); dropped later for cluster-scoped kinds.
    pub namespace: String,
    /// The complete object.
    pub object: Value,
}

/// Why a resource could not be rendered; always names the resource id.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed to compile or render.
    #[error("resource '{id}': {source}")]
    Template { id: String, source: TemplateError },
    /// The manifest lacks a required field.
    #[error("resource '{id}': the manifest has no {field}")]
    MissingField { id: String, field: &'static str },
    /// The rendered name or namespace is not a valid Kubernetes name.
    #[error("resource '{id}': {what} {value:?} is not a valid Kubernetes name: {reason}")]
    InvalidName { id: String, what: &'static str, value: String, reason: String },
}

/// The engine's syntax for a form's templateSyntax.
pub fn syntax_of(syntax: Option<TemplateSyntax>) -> Syntax {
    match syntax.unwrap_or_default() {
        TemplateSyntax::Go => Syntax::Go,
        TemplateSyntax::Jinja => Syntax::Jinja,
    }
}

/// Renders `resource` for a node in `node_namespace` with `vars`.
pub fn render_resource(
    engine: &Engine,
    syntax: Syntax,
    resource: &TResource,
    node_namespace: &str,
    vars: &BTreeMap<String, String>,
) -> Result<RenderedResource, RenderError> {
    let id = resource.id.clone();
    let mut obj = resource.spec.clone();
    if !obj.is_object() {
        return Err(RenderError::MissingField { id, field: "body (spec must be an object)" });
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    apply_metadata_templates(&mut obj, resource, node_namespace);
    let rendered = engine
        .render_object(&obj, &kind, syntax, vars)
        .map_err(|source| RenderError::Template { id: id.clone(), source })?;
    let field = |pointer: &str| rendered.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let (api_version, kind, name, namespace) =
        (field("/apiVersion"), field("/kind"), field("/metadata/name"), field("/metadata/namespace"));
    if api_version.is_empty() {
        return Err(RenderError::MissingField { id, field: "apiVersion" });
    }
    if kind.is_empty() {
        return Err(RenderError::MissingField { id, field: "kind" });
    }
    if name.is_empty() {
        return Err(RenderError::MissingField { id, field: "name (set nameTemplate or metadata.name)" });
    }
    validate_subdomain(&name).map_err(|reason| RenderError::InvalidName {
        id: id.clone(),
        what: "name",
        value: name.clone(),
        reason,
    })?;
    validate_label(&namespace).map_err(|reason| RenderError::InvalidName {
        id: id.clone(),
        what: "namespace",
        value: namespace.clone(),
        reason,
    })?;
    Ok(RenderedResource { id, api_version, kind, name, namespace, object: rendered })
}

/// Puts nameTemplate, targetNamespace, labelsTemplate, annotationsTemplate and the deletion-policy
/// annotation into the (still unrendered) object's metadata.
fn apply_metadata_templates(obj: &mut Value, resource: &TResource, node_namespace: &str) {
    let name = resource.name_template.clone().filter(|n| !n.is_empty());
    let namespace =
        resource.target_namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| node_namespace.to_string());
    for (k, v) in resource.labels_template.iter().flatten() {
        labels_mut(obj).insert(k.clone(), Value::String(v.clone()));
    }
    if labels_mut(obj).is_empty() {
        remove_metadata_key(obj, "labels");
    }
    let annotations = annotations_mut(obj);
    for (k, v) in resource.annotations_template.iter().flatten() {
        annotations.insert(k.clone(), Value::String(v.clone()));
    }
    let policy = match resource.deletion_policy() {
        DeletionPolicy::Delete => "Delete",
        DeletionPolicy::Retain => "Retain",
    };
    annotations.insert(ANN_DELETION_POLICY.into(), Value::String(policy.into()));
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        if let Some(name) = name {
            meta.insert("name".into(), Value::String(name));
        }
        meta.insert("namespace".into(), Value::String(namespace));
    }
}

fn remove_metadata_key(obj: &mut Value, key: &str) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.remove(key);
    }
}

/// RFC 1123 subdomain: what most kinds accept as a name.
pub fn validate_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("longer than 253 characters ({})", name.len()));
    }
    name.split('.').try_for_each(|part| validate_label_chars(part, name))
}

/// RFC 1123 label: namespaces (and node names' parts) must be one.
pub fn validate_label(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("longer than 63 characters ({})", name.len()));
    }
    validate_label_chars(name, name)
}

fn validate_label_chars(part: &str, whole: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if part.is_empty() || !part.chars().all(ok_char) || !alnum(part.chars().next()) || !alnum(part.chars().last()) {
        return Err(format!(
            "{whole:?} must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Variables for rendering a form offline (`lynq render`): the given values, plus the defaults a
/// node would have (activate "true", hostOrUrl = uid, hubId from the form, templateRef = form name).
pub fn offline_variables(form_name: &str, hub_id: &str, values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let uid = values.get("uid").cloned().unwrap_or_default();
    let host_or_url = values.get("hostOrUrl").cloned().unwrap_or_else(|| uid.clone());
    vars.insert("host".to_string(), crate::template::to_host(&host_or_url));
    vars.insert("hostOrUrl".to_string(), host_or_url);
    vars.insert("activate".to_string(), "true".to_string());
    vars.extend(values.clone());
    vars.insert("hubId".to_string(), hub_id.to_string());
    vars.insert("templateRef".to_string(), form_name.to_string());
    vars
}

/// Why a whole form could not be rendered offline.
#[derive(Debug, thiserror::Error)]
pub enum FormRenderError {
    /// The dependency graph is invalid.
    #[error("form {form}: {source}")]
    Graph { form: String, source: crate::graph::GraphError },
    /// A resource failed to render.
    #[error("form {form}: {source}")]
    Resource { form: String, source: RenderError },
}

/// Renders every resource of a form in apply (topological) order, as the node controller would in
/// `namespace` — the debugging view of a form, without a cluster.
pub fn render_form(
    engine: &Engine,
    form_name: &str,
    spec: &crate::api::LynqFormSpec,
    namespace: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<RenderedResource>, FormRenderError> {
    let resources: Vec<&TResource> = spec.resources.all().collect();
    let edges: Vec<(String, Vec<String>)> =
        resources.iter().map(|r| (r.id.clone(), r.dependencies().to_vec())).collect();
    let graph = crate::graph::ResourceGraph::new(&edges)
        .map_err(|source| FormRenderError::Graph { form: form_name.into(), source })?;
    let syntax = syntax_of(spec.template_syntax);
    graph
        .order()
        .iter()
        .filter_map(|id| resources.iter().find(|r| &r.id == id))
        .map(|r| {
            render_resource(engine, syntax, r, namespace, vars)
                .map_err(|source| FormRenderError::Resource { form: form_name.into(), source })
        })
        .collect()
}
