//! The dependency DAG of a node's resources (`id` / `dependIds`).
//!
//! Unlike Lynq, the order is deterministic (level by level, ties in declaration order) and the
//! graph exposes direct dependencies and dependents so that independent resources can be applied
//! concurrently.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    fmt,
    hash::Hash,
};

use petgraph::{
    algo::{tarjan_scc, toposort},
    graph::{DiGraph, NodeIndex},
};

/// A `dependIds` entry that names no resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingDependency {
    /// The resource that declares the dependency.
    pub id: String,
    /// The id it depends on, which does not exist.
    pub dependency: String,
}

impl fmt::Display for MissingDependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resource '{}' depends on non-existent resource '{}'", self.id, self.dependency)
    }
}

/// Why a set of resources does not form a valid dependency graph.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A resource has an empty id (`position` counts from 1 in declaration order).
    #[error("resource #{position} must have a non-empty id")]
    EmptyId { position: usize },
    /// Ids used more than once, each listed once in declaration order.
    #[error("duplicate resource ids: {}", quoted(ids))]
    DuplicateIds { ids: Vec<String> },
    /// `dependIds` entries naming no resource.
    #[error("{}", join(missing))]
    UnknownDependencies { missing: Vec<MissingDependency> },
    /// Dependency cycles; each lists the ids along the cycle, first id repeated at the end
    /// (`a -> b -> a`: a depends on b, which depends on a).
    #[error("circular dependency detected: {}", cycles.iter().map(|c| c.join(" -> ")).collect::<Vec<_>>().join("; "))]
    Cycles { cycles: Vec<Vec<String>> },
}

impl GraphError {
    /// True for a dependency cycle (including a resource depending on itself).
    pub fn is_cycle(&self) -> bool {
        matches!(self, Self::Cycles { .. })
    }
}

fn quoted(ids: &[String]) -> String {
    ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ")
}

fn join(missing: &[MissingDependency]) -> String {
    missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A validated dependency DAG over resource ids.
#[derive(Clone, Debug)]
pub struct ResourceGraph {
    /// Ids in declaration order; a resource's position here is its index everywhere below.
    ids: Vec<String>,
    index: HashMap<String, usize>,
    /// Direct dependencies, duplicates removed, in `dependIds` order.
    dependencies: Vec<Vec<String>>,
    /// Direct dependents, in declaration order.
    dependents: Vec<Vec<String>>,
    /// Longest dependency path from a root (roots are level 0).
    levels: Vec<usize>,
    /// Topological order: by level, ties by declaration order.
    order: Vec<String>,
}

impl ResourceGraph {
    /// Builds and validates the graph from `(id, dependIds)` pairs in declaration order.
    pub fn new(resources: &[(String, Vec<String>)]) -> Result<Self, GraphError> {
        let ids: Vec<String> = resources.iter().map(|(id, _)| id.clone()).collect();
        let index = index_ids(&ids)?;
        let dependencies: Vec<Vec<String>> = resources.iter().map(|(_, deps)| dedup(deps)).collect();
        check_dependencies_exist(&ids, &dependencies, &index)?;
        let edges = edge_indices(&dependencies, &index);
        let graph = build_petgraph(ids.len(), &edges);
        check_acyclic(&graph, &ids, &edges)?;
        let levels = longest_path_levels(&graph, &edges);
        let dependents = dependents_of(&ids, &edges);
        let mut by_level: Vec<usize> = (0..ids.len()).collect();
        by_level.sort_by_key(|&i| (levels.get(i).copied().unwrap_or_default(), i));
        let order = by_level.iter().filter_map(|&i| ids.get(i).cloned()).collect();
        Ok(Self { ids, index, dependencies, dependents, levels, order })
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no resources.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// True when `id` is a resource of the graph.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// All ids in declaration order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// A topological order (dependencies first): level by level, ties in declaration order.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The topological order reversed (dependents first), for deletion.
    pub fn reverse_order(&self) -> impl Iterator<Item = &str> {
        self.order.iter().rev().map(String::as_str)
    }

    /// Depth of `id`: 0 without dependencies, else 1 + the deepest dependency.
    pub fn level(&self, id: &str) -> Option<usize> {
        self.index.get(id).and_then(|&i| self.levels.get(i).copied())
    }

    /// Ids grouped by level (index = level), each group in declaration order.
    pub fn levels(&self) -> Vec<Vec<&str>> {
        let mut groups: Vec<Vec<&str>> = Vec::new();
        for id in &self.order {
            let level = self.level(id).unwrap_or_default();
            if groups.len() <= level {
                groups.resize_with(level + 1, Vec::new);
            }
            if let Some(group) = groups.get_mut(level) {
                group.push(id);
            }
        }
        groups
    }

    /// Direct dependencies of `id` (empty for an unknown id).
    pub fn dependencies(&self, id: &str) -> &[String] {
        self.index.get(id).and_then(|&i| self.dependencies.get(i)).map_or(&[], Vec::as_slice)
    }

    /// Direct dependents of `id` in declaration order (empty for an unknown id).
    pub fn dependents(&self, id: &str) -> &[String] {
        self.index.get(id).and_then(|&i| self.dependents.get(i)).map_or(&[], Vec::as_slice)
    }

    /// Resources without dependencies, in declaration order.
    pub fn roots(&self) -> Vec<&str> {
        self.ids.iter().filter(|id| self.dependencies(id).is_empty()).map(String::as_str).collect()
    }

    /// Resources not in `finished` whose dependencies all are, in topological order.
    pub fn runnable<S: Borrow<str> + Hash + Eq>(&self, finished: &HashSet<S>) -> Vec<&str> {
        self.order
            .iter()
            .filter(|id| !finished.contains(id.as_str()) && self.all_finished(id, finished))
            .map(String::as_str)
            .collect()
    }

    /// Dependents of `just_finished` that became runnable now that it is in `finished`.
    pub fn newly_runnable<S: Borrow<str> + Hash + Eq>(&self, just_finished: &str, finished: &HashSet<S>) -> Vec<&str> {
        self.dependents(just_finished)
            .iter()
            .filter(|id| !finished.contains(id.as_str()) && self.all_finished(id, finished))
            .map(String::as_str)
            .collect()
    }

    fn all_finished<S: Borrow<str> + Hash + Eq>(&self, id: &str, finished: &HashSet<S>) -> bool {
        self.dependencies(id).iter().all(|d| finished.contains(d.as_str()))
    }
}

/// Maps ids to declaration positions, rejecting empty and duplicate ids.
fn index_ids(ids: &[String]) -> Result<HashMap<String, usize>, GraphError> {
    if let Some(position) = ids.iter().position(String::is_empty) {
        return Err(GraphError::EmptyId { position: position + 1 });
    }
    let mut index = HashMap::with_capacity(ids.len());
    let mut duplicates: Vec<String> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if index.insert(id.clone(), i).is_some() && !duplicates.contains(id) {
            duplicates.push(id.clone());
        }
    }
    if duplicates.is_empty() { Ok(index) } else { Err(GraphError::DuplicateIds { ids: duplicates }) }
}

/// `deps` without repeated entries, first occurrence kept.
fn dedup(deps: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    deps.iter().filter(|d| seen.insert(d.as_str())).cloned().collect()
}

fn check_dependencies_exist(
    ids: &[String],
    dependencies: &[Vec<String>],
    index: &HashMap<String, usize>,
) -> Result<(), GraphError> {
    let missing: Vec<MissingDependency> = ids
        .iter()
        .zip(dependencies)
        .flat_map(|(id, deps)| {
            deps.iter()
                .filter(|d| !index.contains_key(d.as_str()))
                .map(|d| MissingDependency { id: id.clone(), dependency: d.clone() })
        })
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(GraphError::UnknownDependencies { missing }) }
}

/// For each resource, the positions of its dependencies (all known at this point).
fn edge_indices(dependencies: &[Vec<String>], index: &HashMap<String, usize>) -> Vec<Vec<usize>> {
    dependencies.iter().map(|deps| deps.iter().filter_map(|d| index.get(d).copied()).collect()).collect()
}

/// Node `i` is resource `i`; an edge runs from a dependency to its dependent.
fn build_petgraph(count: usize, edges: &[Vec<usize>]) -> DiGraph<(), ()> {
    let mut graph = DiGraph::with_capacity(count, edges.iter().map(Vec::len).sum());
    for _ in 0..count {
        graph.add_node(());
    }
    for (dependent, deps) in edges.iter().enumerate() {
        for &dep in deps {
            graph.add_edge(NodeIndex::new(dep), NodeIndex::new(dependent), ());
        }
    }
    graph
}

fn check_acyclic(graph: &DiGraph<(), ()>, ids: &[String], edges: &[Vec<usize>]) -> Result<(), GraphError> {
    let mut cycles: Vec<Vec<usize>> = tarjan_scc(graph)
        .into_iter()
        .map(|scc| scc.into_iter().map(NodeIndex::index).collect::<Vec<_>>())
        .filter(|scc| is_cyclic_component(scc, edges))
        .map(|scc| cycle_within(&scc, edges))
        .collect();
    if cycles.is_empty() {
        return Ok(());
    }
    cycles.sort();
    let named = cycles.iter().map(|c| c.iter().filter_map(|&i| ids.get(i).cloned()).collect()).collect();
    Err(GraphError::Cycles { cycles: named })
}

/// A strongly connected component is a cycle when it has several members or a self-loop.
fn is_cyclic_component(scc: &[usize], edges: &[Vec<usize>]) -> bool {
    match scc {
        [single] => edges.get(*single).is_some_and(|deps| deps.contains(single)),
        _ => scc.len() > 1,
    }
}

/// One concrete cycle inside a cyclic component, following `depends on` edges from its earliest
/// declared member; the first element is repeated at the end.
fn cycle_within(scc: &[usize], edges: &[Vec<usize>]) -> Vec<usize> {
    let members: HashSet<usize> = scc.iter().copied().collect();
    let mut path: Vec<usize> = Vec::new();
    let mut current = scc.iter().copied().min().unwrap_or_default();
    loop {
        if let Some(start) = path.iter().position(|&p| p == current) {
            let mut cycle = path.split_off(start);
            cycle.push(current);
            return rotate_to_smallest(cycle);
        }
        path.push(current);
        // Every member of a cyclic component has a dependency inside it.
        match edges.get(current).and_then(|deps| deps.iter().copied().find(|d| members.contains(d))) {
            Some(next) => current = next,
            None => return path,
        }
    }
}

/// Starts the (closed) cycle at its earliest declared member, for stable messages.
fn rotate_to_smallest(mut cycle: Vec<usize>) -> Vec<usize> {
    cycle.pop();
    if let Some(pos) = cycle.iter().enumerate().min_by_key(|(_, i)| **i).map(|(pos, _)| pos) {
        cycle.rotate_left(pos);
    }
    if let Some(&first) = cycle.first() {
        cycle.push(first);
    }
    cycle
}

fn longest_path_levels(graph: &DiGraph<(), ()>, edges: &[Vec<usize>]) -> Vec<usize> {
    let mut levels = vec![0; edges.len()];
    // The graph was checked to be acyclic just before, so toposort cannot fail.
    let sorted = toposort(graph, None).unwrap_or_default();
    for node in sorted {
        let i = node.index();
        let level = edges
            .get(i)
            .into_iter()
            .flatten()
            .map(|&d| levels.get(d).copied().unwrap_or_default() + 1)
            .max()
            .unwrap_or(0);
        if let Some(slot) = levels.get_mut(i) {
            *slot = level;
        }
    }
    levels
}

fn dependents_of(ids: &[String], edges: &[Vec<usize>]) -> Vec<Vec<String>> {
    let mut dependents: Vec<Vec<String>> = vec![Vec::new(); ids.len()];
    for (dependent, deps) in edges.iter().enumerate() {
        for &dep in deps {
            if let (Some(list), Some(id)) = (dependents.get_mut(dep), ids.get(dependent)) {
                list.push(id.clone());
            }
        }
    }
    dependents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(spec: &[(&str, &[&str])]) -> Result<ResourceGraph, GraphError> {
        let resources: Vec<(String, Vec<String>)> =
            spec.iter().map(|(id, deps)| (id.to_string(), deps.iter().map(|d| d.to_string()).collect())).collect();
        ResourceGraph::new(&resources)
    }

    fn ok(spec: &[(&str, &[&str])]) -> ResourceGraph {
        match graph(spec) {
            Ok(g) => g,
            Err(e) => panic!("expected a valid graph, got: {e}"),
        }
    }

    fn err(spec: &[(&str, &[&str])]) -> GraphError {
        match graph(spec) {
            Ok(g) => panic!("expected an error, got order {:?}", g.order()),
            Err(e) => e,
        }
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_graph() {
        let g = ok(&[]);
        assert!(g.is_empty());
        assert!(g.order().is_empty());
        assert!(g.levels().is_empty());
        assert!(g.roots().is_empty());
        assert!(g.runnable(&set(&[])).is_empty());
    }

    #[test]
    fn chain() {
        let g = ok(&[("c", &["b"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(g.order(), ["a", "b", "c"]);
        assert_eq!(g.reverse_order().collect::<Vec<_>>(), ["c", "b", "a"]);
        assert_eq!(g.levels(), vec![vec!["a"], vec!["b"], vec!["c"]]);
        assert_eq!(g.level("c"), Some(2));
        assert_eq!(g.roots(), ["a"]);
        assert_eq!(g.dependencies("c"), ["b"]);
        assert_eq!(g.dependents("a"), ["b"]);
    }

    #[test]
    fn fan_in() {
        let g = ok(&[("app", &["cm", "secret", "sa"]), ("cm", &[]), ("secret", &[]), ("sa", &[])]);
        assert_eq!(g.order(), ["cm", "secret", "sa", "app"]);
        assert_eq!(g.roots(), ["cm", "secret", "sa"]);
        assert_eq!(g.newly_runnable("cm", &set(&["cm"])), Vec::<&str>::new());
        assert_eq!(g.newly_runnable("sa", &set(&["cm", "secret", "sa"])), ["app"]);
    }

    #[test]
    fn diamond_uses_longest_path() {
        // d depends on b and c; c depends on b; b and c depend on a.
        let g = ok(&[("d", &["b", "c"]), ("c", &["a", "b"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(g.order(), ["a", "b", "c", "d"]);
        assert_eq!(g.levels(), vec![vec!["a"], vec!["b"], vec!["c"], vec!["d"]]);
        assert_eq!(g.dependents("b"), ["d", "c"], "declaration order");
        assert_eq!(g.runnable(&set(&["a"])), ["b"]);
        assert_eq!(g.runnable(&set(&["a", "b"])), ["c"]);
        assert_eq!(g.newly_runnable("c", &set(&["a", "b", "c"])), ["d"]);
    }

    #[test]
    fn independent_resources_share_level_zero() {
        let g = ok(&[("x", &[]), ("y", &[]), ("z", &[])]);
        assert_eq!(g.levels(), vec![vec!["x", "y", "z"]]);
        assert_eq!(g.runnable(&set(&[])), ["x", "y", "z"]);
        assert_eq!(g.runnable(&set(&["y"])), ["x", "z"]);
    }

    #[test]
    fn ties_follow_declaration_order_deterministically() {
        let spec: &[(&str, &[&str])] =
            &[("z", &[]), ("m", &["z"]), ("a", &[]), ("k", &["a"]), ("b", &["z", "a"]), ("q", &[])];
        let first = ok(spec);
        assert_eq!(first.order(), ["z", "a", "q", "m", "k", "b"]);
        for _ in 0..20 {
            assert_eq!(ok(spec).order(), first.order());
        }
    }

    #[test]
    fn repeated_dependency_is_counted_once() {
        let g = ok(&[("a", &[]), ("b", &["a", "a"])]);
        assert_eq!(g.dependencies("b"), ["a"]);
        assert_eq!(g.dependents("a"), ["b"]);
    }

    #[test]
    fn unknown_id_queries_are_empty() {
        let g = ok(&[("a", &[])]);
        assert!(g.dependencies("nope").is_empty());
        assert!(g.dependents("nope").is_empty());
        assert_eq!(g.level("nope"), None);
        assert!(!g.contains("nope"));
    }

    #[test]
    fn runnable_accepts_borrowed_ids() {
        let g = ok(&[("a", &[]), ("b", &["a"])]);
        let finished: HashSet<&str> = ["a"].into_iter().collect();
        assert_eq!(g.runnable(&finished), ["b"]);
    }

    #[test]
    fn empty_id_is_rejected() {
        assert_eq!(err(&[("a", &[]), ("", &[])]), GraphError::EmptyId { position: 2 });
        assert_eq!(err(&[("", &[])]).to_string(), "resource #1 must have a non-empty id");
    }

    #[test]
    fn duplicates_are_all_listed() {
        let e = err(&[("a", &[]), ("b", &[]), ("a", &[]), ("b", &[]), ("a", &[]), ("c", &[])]);
        assert_eq!(e, GraphError::DuplicateIds { ids: vec!["a".into(), "b".into()] });
        assert_eq!(e.to_string(), "duplicate resource ids: 'a', 'b'");
    }

    #[test]
    fn unknown_dependency_names_both_ids() {
        let e = err(&[("a", &[]), ("b", &["x"]), ("c", &["a", "y"])]);
        assert_eq!(
            e.to_string(),
            "resource 'b' depends on non-existent resource 'x'; resource 'c' depends on non-existent resource 'y'"
        );
        assert!(!e.is_cycle());
    }

    #[test]
    fn direct_cycle() {
        let e = err(&[("a", &["b"]), ("b", &["a"])]);
        assert!(e.is_cycle());
        assert_eq!(e.to_string(), "circular dependency detected: a -> b -> a");
    }

    #[test]
    fn indirect_cycle_names_every_member() {
        let e = err(&[("root", &[]), ("a", &["c", "root"]), ("b", &["a"]), ("c", &["b"])]);
        assert_eq!(e, GraphError::Cycles { cycles: vec![vec!["a".into(), "c".into(), "b".into(), "a".into()]] });
    }

    #[test]
    fn self_loop() {
        let e = err(&[("a", &[]), ("b", &["b"])]);
        assert_eq!(e.to_string(), "circular dependency detected: b -> b");
    }

    #[test]
    fn several_cycles_are_all_reported() {
        let e = err(&[("a", &["b"]), ("b", &["a"]), ("c", &["c"])]);
        assert_eq!(e.to_string(), "circular dependency detected: a -> b -> a; c -> c");
    }
}
