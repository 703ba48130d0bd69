//! Template engine: one minijinja engine, two syntaxes (Lynq's Go `text/template` syntax, translated
//! once per template, and plain Jinja), the Lynq/Sprig function library, typed-value markers and
//! recursive rendering of Kubernetes objects.

mod functions;
mod go_syntax;
mod gofmt;
mod typed;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use lru::LruCache;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

pub use functions::{supported_functions, to_host};

use typed::Resolved;

/// Template variables (all values are strings, as Lynq's).
pub type Variables = BTreeMap<String, String>;

/// Which template language a string is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    /// Go `text/template` syntax with Sprig functions (Lynq's syntax).
    #[default]
    Go,
    /// Jinja syntax (minijinja).
    Jinja,
}

/// A line:column position in a template (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Errors of compiling or rendering a template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not parse.
    #[error("template syntax error at {position}: {message}")]
    Syntax {
        /// Where the error is.
        position: Position,
        /// What is wrong.
        message: String,
    },
    /// A Go template construct lynq does not support.
    #[error("unsupported template construct {construct} at {position}")]
    Unsupported {
        /// The construct, e.g. `{{define}}`.
        construct: String,
        /// Where it is.
        position: Position,
    },
    /// Rendering failed (missing variable, function error, …).
    #[error("template render error: {message}")]
    Render {
        /// What failed, naming the variable or function.
        message: String,
    },
    /// The template calls a function that is not allowed.
    #[error("function \"{function}\" is not allowed in templates: {}", functions::forbidden_reason(function).unwrap_or("forbidden"))]
    Forbidden {
        /// The function name.
        function: String,
    },
}

impl TemplateError {
    /// Prefixes a render error with the JSON path of the value being rendered.
    fn at_path(self, path: &str) -> Self {
        match self {
            TemplateError::Render { message } => TemplateError::Render { message: format!("at {path}: {message}") },
            TemplateError::Syntax { position, message } => {
                TemplateError::Syntax { position, message: format!("{message} (at {path})") }
            }
            other => other,
        }
    }
}

/// Default number of compiled templates kept (least recently used ones are evicted).
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

const GO_PREFIX: &str = "go:";
const JINJA_PREFIX: &str = "jinja:";

/// A compiled template: its name in the environment and the variables it refers to.
#[derive(Debug)]
struct Compiled {
    name: String,
    /// The minijinja source, kept to recompile if the template is evicted mid-render.
    jinja: Arc<str>,
    syntax: Syntax,
    root_vars: BTreeSet<String>,
}

struct Inner {
    env: RwLock<Environment<'static>>,
    cache: Mutex<LruCache<(Syntax, String), Arc<Compiled>>>,
    next_id: AtomicU64,
    compilations: AtomicU64,
}

/// The template engine; cheap to clone, thread-safe, with a bounded cache of compiled templates.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("compilations", &self.compilations()).finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine with the default cache capacity.
    pub fn new() -> Self {
        Self::with_cache_capacity(DEFAULT_CACHE_CAPACITY)
    }

    /// An engine keeping at most `capacity` compiled templates (at least 1).
    pub fn with_cache_capacity(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Engine {
            inner: Arc::new(Inner {
                env: RwLock::new(build_environment()),
                cache: Mutex::new(LruCache::new(capacity)),
                next_id: AtomicU64::new(0),
                compilations: AtomicU64::new(0),
            }),
        }
    }

    /// Number of template compilations so far (cache misses).
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Renders one template string; typed markers are stripped (names/labels never carry types).
    pub fn render_str(&self, source: &str, syntax: Syntax, vars: &Variables) -> Result<String, TemplateError> {
        self.render_raw(source, syntax, vars).map(|s| typed::strip_markers(&s))
    }

    /// Compiles a template without rendering it.
    pub fn check(&self, source: &str, syntax: Syntax) -> Result<(), TemplateError> {
        if is_plain(source, syntax) {
            return Ok(());
        }
        self.compile(source, syntax).map(|_| ())
    }

    /// All top-level variables a template refers to.
    pub fn referenced_variables(&self, source: &str, syntax: Syntax) -> Result<BTreeSet<String>, TemplateError> {
        if is_plain(source, syntax) {
            return Ok(BTreeSet::new());
        }
        self.compile(source, syntax).map(|c| c.root_vars.clone())
    }

    /// Renders every string of `obj` (map keys untouched) and resolves typed markers: a string
    /// that is exactly one marker becomes a number/bool, except where Kubernetes expects strings
    /// (`apiVersion`, `kind`, annotations, labels, matchLabels, nodeSelector, ConfigMap/Secret
    /// data); everywhere else marker text is stripped.
    pub fn render_object(
        &self,
        obj: &serde_json::Value,
        kind: &str,
        syntax: Syntax,
        vars: &Variables,
    ) -> Result<serde_json::Value, TemplateError> {
        let mut walker = ObjectWalker { engine: self, kind, syntax, vars };
        walker.walk(obj, &mut String::new(), None, None)
    }

    fn render_raw(&self, source: &str, syntax: Syntax, vars: &Variables) -> Result<String, TemplateError> {
        if is_plain(source, syntax) {
            return Ok(source.to_owned());
        }
        let compiled = self.compile(source, syntax)?;
        let env = self.inner.env.read().unwrap_or_else(PoisonError::into_inner);
        let context = match compiled.syntax {
            Syntax::Go => Value::from_iter([(go_syntax::ROOT, Value::from_serialize(vars))]),
            Syntax::Jinja => Value::from_serialize(vars),
        };
        let rendered = match env.get_template(&compiled.name) {
            Ok(template) => template.render(context),
            // Another thread evicted it since `compile`; compile a throwaway copy instead of failing.
            Err(_) => env.template_from_named_str(&compiled.name, &compiled.jinja).and_then(|t| t.render(context)),
        };
        rendered.map_err(|e| render_error(&e, &compiled, vars))
    }

    fn compile(&self, source: &str, syntax: Syntax) -> Result<Arc<Compiled>, TemplateError> {
        let key = (syntax, source.to_owned());
        if let Some(hit) = self.lock_cache().get(&key) {
            return Ok(Arc::clone(hit));
        }
        self.inner.compilations.fetch_add(1, Ordering::Relaxed);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (name, jinja, go_vars) = match syntax {
            Syntax::Go => {
                let translation = go_syntax::translate(source)?;
                (format!("{GO_PREFIX}{id}"), translation.jinja, Some(translation.root_vars))
            }
            Syntax::Jinja => (format!("{JINJA_PREFIX}{id}"), source.to_owned(), None),
        };
        let root_vars = {
            let mut env = self.inner.env.write().unwrap_or_else(PoisonError::into_inner);
            env.add_template_owned(name.clone(), jinja.clone()).map_err(|e| compile_error(&e, source, syntax))?;
            match go_vars {
                Some(vars) => vars,
                None => jinja_variables(&env, &name),
            }
        };
        let compiled = Arc::new(Compiled { name, jinja: jinja.into(), syntax, root_vars });
        let evicted = self.lock_cache().push(key, Arc::clone(&compiled));
        if let Some((_, old)) = evicted.filter(|(_, old)| old.name != compiled.name) {
            self.inner.env.write().unwrap_or_else(PoisonError::into_inner).remove_template(&old.name);
        }
        Ok(compiled)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, LruCache<(Syntax, String), Arc<Compiled>>> {
        // Poisoning only means another thread panicked while holding the lock; the LRU is intact.
        self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Strings that cannot contain template syntax bypass the engine.
fn is_plain(source: &str, syntax: Syntax) -> bool {
    match syntax {
        Syntax::Go => !source.contains("{{"),
        Syntax::Jinja => !(source.contains("{{") || source.contains("{%") || source.contains("{#")),
    }
}

fn build_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(|out, state, value| {
        if state.name().starts_with(GO_PREFIX) {
            out.write_str(&gofmt::format_value(value))?;
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    functions::register(&mut env);
    env
}

/// Undeclared variables of a Jinja template, minus the library's function names.
fn jinja_variables(env: &Environment<'static>, name: &str) -> BTreeSet<String> {
    let Ok(template) = env.get_template(name) else {
        return BTreeSet::new();
    };
    template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !functions::is_supported(v) && functions::forbidden_reason(v).is_none() && !is_jinja_global(v))
        .collect()
}

fn is_jinja_global(name: &str) -> bool {
    matches!(name, "range" | "dict" | "namespace" | "debug" | "loop" | "self")
}

fn compile_error(err: &minijinja::Error, source: &str, syntax: Syntax) -> TemplateError {
    let message = err.detail().unwrap_or("invalid template").to_owned();
    let position = match (syntax, err.range(), err.line()) {
        (Syntax::Jinja, Some(range), _) => go_syntax::position_of(source, range.start),
        (Syntax::Jinja, None, Some(line)) => Position { line, column: 1 },
        // The Go translation should always compile; report the internal failure without a position.
        _ => {
            return TemplateError::Syntax {
                position: Position { line: 1, column: 1 },
                message: format!("internal translation error: {message}"),
            };
        }
    };
    TemplateError::Syntax { position, message }
}

fn render_error(err: &minijinja::Error, compiled: &Compiled, vars: &Variables) -> TemplateError {
    if let Some(function) = forbidden_function(err) {
        return TemplateError::Forbidden { function };
    }
    let detail = error_details(err);
    if err.kind() == ErrorKind::UndefinedError {
        let detail = if detail == "undefined value" { String::new() } else { format!(" ({detail})") };
        let missing: Vec<&str> =
            compiled.root_vars.iter().filter(|v| !vars.contains_key(v.as_str())).map(String::as_str).collect();
        let message = match missing.as_slice() {
            [] => format!("undefined value{detail}"),
            [one] => format!("undefined variable \"{one}\"{detail}"),
            many => format!("undefined variables {}{detail}", many.join(", ")),
        };
        return TemplateError::Render { message };
    }
    TemplateError::Render { message: detail }
}

fn forbidden_function(err: &minijinja::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let detail = e.downcast_ref::<minijinja::Error>().and_then(|m| m.detail()).unwrap_or_default();
        if let Some(name) = detail.strip_prefix(functions::FORBIDDEN_TAG) {
            return Some(name.to_owned());
        }
        current = e.source();
    }
    None
}

/// Kind and detail of an error and its causes, without template names/lines (which refer to the
/// translated source for Go templates).
fn error_details(err: &minijinja::Error) -> String {
    let mut parts = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        match e.downcast_ref::<minijinja::Error>() {
            Some(m) => parts.push(match (m.kind(), m.detail()) {
                (ErrorKind::UnknownFunction | ErrorKind::UnknownFilter | ErrorKind::UnknownTest, Some(d)) => {
                    format!("{}: {d}", m.kind())
                }
                (_, Some(d)) => d.to_owned(),
                (kind, None) => kind.to_string(),
            }),
            None => parts.push(e.to_string()),
        }
        current = e.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Keys under which rendered strings stay strings regardless of typed markers.
const STRING_PARENTS: [&str; 4] = ["annotations", "labels", "matchLabels", "nodeSelector"];
const DATA_PARENTS: [&str; 3] = ["data", "binaryData", "stringData"];

struct ObjectWalker<'a> {
    engine: &'a Engine,
    kind: &'a str,
    syntax: Syntax,
    vars: &'a Variables,
}

impl ObjectWalker<'_> {
    fn walk(
        &mut self,
        value: &serde_json::Value,
        path: &mut String,
        key: Option<&str>,
        parent: Option<&str>,
    ) -> Result<serde_json::Value, TemplateError> {
        match value {
            serde_json::Value::String(s) => self.string(s, path, key, parent),
            serde_json::Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    // Array items use the array's key (and parent) for the typed-marker decision.
                    out.push(self.walk(item, path, key, parent)?);
                    path.truncate(len);
                }
                Ok(serde_json::Value::Array(out))
            }
            serde_json::Value::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    out.insert(k.clone(), self.walk(v, path, Some(k), key)?);
                    path.truncate(len);
                }
                Ok(serde_json::Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn string(
        &mut self,
        s: &str,
        path: &str,
        key: Option<&str>,
        parent: Option<&str>,
    ) -> Result<serde_json::Value, TemplateError> {
        let rendered = self.engine.render_raw(s, self.syntax, self.vars).map_err(|e| e.at_path(path))?;
        if self.keeps_string(key, parent) {
            return Ok(serde_json::Value::String(typed::strip_markers(&rendered)));
        }
        match typed::resolve_whole(&rendered) {
            Resolved::Typed(v) => Ok(v),
            Resolved::NotMarker => Ok(serde_json::Value::String(typed::strip_markers(&rendered))),
            Resolved::Invalid(why) => Err(TemplateError::Render { message: format!("at {path}: {why}") }),
        }
    }

    fn keeps_string(&self, key: Option<&str>, parent: Option<&str>) -> bool {
        let key_is_string = matches!(key, Some("apiVersion" | "kind"));
        let parent_is_string = parent.is_some_and(|p| STRING_PARENTS.contains(&p));
        let is_data = matches!(self.kind, "ConfigMap" | "Secret") && parent.is_some_and(|p| DATA_PARENTS.contains(&p));
        key_is_string || parent_is_string || is_data
    }
}

#[cfg(test)]
mod tests;
