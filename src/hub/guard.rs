//! The deletion guard: a wrong grant, a dropped or rewritten view, a row-level-security policy or a
//! stray TRUNCATE must not tear down every tenant. Lynq deletes every node when a read returns an
//! empty table; lynq holds such batches until they are confirmed.
//!
//! The guard sees every batch of node deletions the hub's plan asks for, with the batch's origin
//! ([`BatchKind`]), and answers which names may be deleted now. Creates and updates never pass
//! through it and always proceed.
//!
//! **When a batch is mass.** With `N` existing nodes of the hub and `d` deletions in the batch:
//! - *Threshold*: `d > min_nodes` (5) and `d > max_percent` (50 %) of `N`;
//! - *EmptyRead*: otherwise, `d ≥ 1` and the batch is a full read that returned no row at all, or a
//!   TRUNCATE. (A full read whose rows are merely all inactive is judged by the threshold alone.)
//!
//! Single-row deletions by transactions are judged by the threshold only, so deleting or
//! deactivating a row of a small hub deletes its node at once, as in Lynq.
//!
//! **What is held.** A mass batch deletes nothing and becomes *the hold* (its names, reason, start
//! time). While a hold exists, every later batch is split: the names already held stay held, the
//! others are judged on their own (a transaction's new names by the rules above, a Forms batch's new
//! names — a LynqForm deleted by a user — always pass). A mass set of new names joins the hold and
//! restarts its clock. Names no longer asked for leave the hold and are never deleted; a hold left
//! with no name ends (*Cancelled*).
//!
//! **How it ends.** Only a full read (snapshot, periodic resync, poll) can end a hold with deletions:
//! - the read no longer asks for a mass deletion: the hold ends (*Cancelled*) and the read's own
//!   small set of deletions proceeds;
//! - the read asks for a subset of the held names, at least `confirm_after` (the hub's
//!   syncInterval) after the hold started, and either the batch is only *EmptyRead* or the hub has
//!   the annotation `lynq.sh/allow-mass-deletion: "true"`: the deletions proceed (*Confirmed*);
//! - it asks for names outside the hold: the hold is replaced by the new set and its clock restarts.
//!
//! So an emptied small table (≤ 5 nodes) is deleted one sync interval late, and a large mass deletion
//! needs both a second read and an explicit annotation. The hold lives in memory: after a restart the
//! first full read holds again and the clock starts over, which only ever delays deletions.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};

/// Hub annotation that allows a confirmed *Threshold* hold to proceed.
pub const ALLOW_MASS_DELETION_ANNOTATION: &str = "lynq.sh/allow-mass-deletion";
/// Condition reason (and event reason) while a hold exists.
pub const HELD_REASON: &str = "MassDeletionHeld";

/// Where a batch of deletions comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    /// A full read of the table: snapshot, periodic resync or poll.
    FullRead,
    /// One committed transaction.
    Transaction,
    /// One committed transaction containing a TRUNCATE.
    Truncate,
    /// The hub's forms changed (no new data from the table).
    Forms,
}

impl BatchKind {
    /// Stable label for messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullRead => "full read",
            Self::Transaction => "transaction",
            Self::Truncate => "truncate",
            Self::Forms => "forms change",
        }
    }
}

/// Thresholds of the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Batches of at most this many deletions are never *Threshold*-mass.
    pub min_nodes: usize,
    /// Batches deleting at most this percentage of the existing nodes are never *Threshold*-mass.
    pub max_percent: usize,
    /// How long a hold must last before a full read can confirm it (the hub's syncInterval).
    pub confirm_after: Duration,
}

impl GuardConfig {
    /// Defaults (5 nodes, 50 %) with the hub's sync interval as confirmation delay.
    pub fn new(confirm_after: Duration) -> Self {
        Self { min_nodes: 5, max_percent: 50, confirm_after }
    }
}

/// One batch of deletions to judge.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Where it comes from.
    pub kind: BatchKind,
    /// Existing nodes of the hub.
    pub existing: usize,
    /// Names the plan wants to delete.
    pub deletions: &'a [String],
    /// For a full read: the read returned no row at all.
    pub table_empty: bool,
    /// The hub carries `lynq.sh/allow-mass-deletion: "true"`.
    pub allow_annotation: bool,
    /// Current time.
    pub now: DateTime<Utc>,
}

/// Why a hold exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HoldReason {
    /// A full read returned no row (or a TRUNCATE emptied the table) while nodes exist.
    EmptyRead,
    /// More than max(min_nodes, max_percent) of the nodes would go at once.
    Threshold,
}

/// Deletions being held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Why.
    pub reason: HoldReason,
    /// The held node names.
    pub names: BTreeSet<String>,
    /// Existing nodes when the hold was last judged.
    pub existing: usize,
    /// The kind of batch that started it.
    pub kind: BatchKind,
    /// When it (last) started; confirmation counts from here.
    pub since: DateTime<Utc>,
}

impl Hold {
    /// Number of held deletions.
    pub fn held(&self) -> usize {
        self.names.len()
    }

    /// Human-readable explanation for the hub's condition and events.
    pub fn message(&self, confirm_after: Duration) -> String {
        let secs = confirm_after.as_secs();
        match self.reason {
            HoldReason::EmptyRead => format!(
                "the table is empty: deleting {} of {} LynqNodes ({}) is held; it proceeds if a full read at least \
                 {secs}s later still asks for it",
                self.held(),
                self.existing,
                self.kind.as_str()
            ),
            HoldReason::Threshold => format!(
                "one {} would delete {} of {} LynqNodes: held; it proceeds only if a full read at least {secs}s later \
                 asks for the same deletions and the hub is annotated {ALLOW_MASS_DELETION_ANNOTATION}: \"true\"",
                self.kind.as_str(),
                self.held(),
                self.existing
            ),
        }
    }
}

/// How a batch changed the hold, for events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A hold began.
    Started,
    /// The held set was replaced or grew; its clock restarted.
    Replaced,
    /// The hold ended without deleting (the deletions are no longer asked for).
    Cancelled,
    /// The hold was confirmed: its deletions proceed.
    Confirmed,
}

impl Transition {
    /// Event reason on the hub.
    pub fn event_reason(self) -> &'static str {
        match self {
            Self::Started | Self::Replaced => HELD_REASON,
            Self::Cancelled => "MassDeletionCancelled",
            Self::Confirmed => "MassDeletionConfirmed",
        }
    }
}

/// The guard's answer for one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardDecision {
    /// Names to delete now.
    pub delete: Vec<String>,
    /// The hold in force after this batch, if any.
    pub hold: Option<Hold>,
    /// What happened to the hold, if anything.
    pub transition: Option<Transition>,
}

/// The deletion guard of one hub.
#[derive(Clone, Debug)]
pub struct DeletionGuard {
    config: GuardConfig,
    hold: Option<Hold>,
}

impl DeletionGuard {
    /// A guard with no hold.
    pub fn new(config: GuardConfig) -> Self {
        Self { config, hold: None }
    }

    /// The thresholds in use.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// The current hold, if any.
    pub fn hold(&self) -> Option<&Hold> {
        self.hold.as_ref()
    }

    /// Judges one batch and updates the hold (see the module documentation for the rules).
    pub fn evaluate(&mut self, batch: &Batch<'_>) -> GuardDecision {
        let wanted: BTreeSet<String> = batch.deletions.iter().cloned().collect();
        let shrunk = self.shrink_hold(&wanted);
        let mut decision = match batch.kind {
            BatchKind::FullRead => self.full_read(batch, wanted),
            BatchKind::Transaction | BatchKind::Truncate | BatchKind::Forms => self.incremental(batch, wanted),
        };
        if decision.transition.is_none() && shrunk && self.hold.is_none() {
            decision.transition = Some(Transition::Cancelled);
        }
        decision.hold = self.hold.clone();
        decision
    }

    /// Drops held names that are no longer wanted; true when that ended the hold.
    fn shrink_hold(&mut self, wanted: &BTreeSet<String>) -> bool {
        let Some(hold) = self.hold.as_mut() else { return false };
        hold.names.retain(|n| wanted.contains(n));
        if hold.names.is_empty() {
            self.hold = None;
            return true;
        }
        false
    }

    fn full_read(&mut self, batch: &Batch<'_>, wanted: BTreeSet<String>) -> GuardDecision {
        let Some(reason) = self.classify(wanted.len(), batch.existing, batch.table_empty) else {
            let transition = self.hold.take().map(|_| Transition::Cancelled);
            return GuardDecision { delete: wanted.into_iter().collect(), hold: None, transition };
        };
        let Some(hold) = self.hold.as_mut().filter(|h| wanted.is_subset(&h.names)) else {
            let transition = if self.hold.is_some() { Transition::Replaced } else { Transition::Started };
            self.start(batch, reason, wanted);
            return GuardDecision { transition: Some(transition), ..Default::default() };
        };
        hold.reason = reason;
        hold.existing = batch.existing;
        let aged =
            batch.now.signed_duration_since(hold.since).to_std().is_ok_and(|age| age >= self.config.confirm_after);
        if aged && (reason == HoldReason::EmptyRead || batch.allow_annotation) {
            self.hold = None;
            return GuardDecision {
                delete: wanted.into_iter().collect(),
                hold: None,
                transition: Some(Transition::Confirmed),
            };
        }
        GuardDecision::default()
    }

    fn incremental(&mut self, batch: &Batch<'_>, wanted: BTreeSet<String>) -> GuardDecision {
        let held = self.hold.as_ref().map(|h| &h.names);
        let fresh: BTreeSet<String> = wanted.into_iter().filter(|n| held.is_none_or(|h| !h.contains(n))).collect();
        let truncate = batch.kind == BatchKind::Truncate;
        let reason = match batch.kind {
            BatchKind::Forms => None,
            _ => self.classify(fresh.len(), batch.existing, truncate),
        };
        let Some(reason) = reason else {
            return GuardDecision { delete: fresh.into_iter().collect(), ..Default::default() };
        };
        let transition = match self.hold.take() {
            Some(mut hold) => {
                hold.names.extend(fresh);
                self.start(batch, reason.max(hold.reason), hold.names);
                Transition::Replaced
            }
            None => {
                self.start(batch, reason, fresh);
                Transition::Started
            }
        };
        GuardDecision { transition: Some(transition), ..Default::default() }
    }

    fn start(&mut self, batch: &Batch<'_>, reason: HoldReason, names: BTreeSet<String>) {
        self.hold = Some(Hold { reason, names, existing: batch.existing, kind: batch.kind, since: batch.now });
    }

    /// Whether `count` deletions out of `existing` nodes are mass, and why.
    fn classify(&self, count: usize, existing: usize, empty: bool) -> Option<HoldReason> {
        if count == 0 {
            return None;
        }
        let over_share = count.saturating_mul(100) > existing.saturating_mul(self.config.max_percent);
        if count > self.config.min_nodes && over_share {
            return Some(HoldReason::Threshold);
        }
        (empty && existing > 0).then_some(HoldReason::EmptyRead)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const CONFIRM: Duration = Duration::from_secs(30);

    /// One batch and what the guard must answer.
    struct Step {
        at: i64,
        kind: BatchKind,
        existing: usize,
        deletions: std::ops::Range<usize>,
        empty: bool,
        annotation: bool,
        deleted: usize,
        held: usize,
        transition: Option<Transition>,
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("n{i:03}")).collect()
    }

    fn step(at: i64, kind: BatchKind, existing: usize, deletions: std::ops::Range<usize>) -> Step {
        Step { at, kind, existing, deletions, empty: false, annotation: false, deleted: 0, held: 0, transition: None }
    }

    impl Step {
        fn empty(mut self) -> Self {
            self.empty = true;
            self
        }
        fn annotated(mut self) -> Self {
            self.annotation = true;
            self
        }
        fn deletes(mut self, n: usize) -> Self {
            self.deleted = n;
            self
        }
        fn holds(mut self, n: usize) -> Self {
            self.held = n;
            self
        }
        fn then(mut self, t: Transition) -> Self {
            self.transition = Some(t);
            self
        }
    }

    fn run(name: &str, steps: &[Step]) {
        let mut guard = DeletionGuard::new(GuardConfig::new(CONFIRM));
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
        for (i, s) in steps.iter().enumerate() {
            let deletions = names(s.deletions.clone());
            let d = guard.evaluate(&Batch {
                kind: s.kind,
                existing: s.existing,
                deletions: &deletions,
                table_empty: s.empty,
                allow_annotation: s.annotation,
                now: t0 + chrono::TimeDelta::seconds(s.at),
            });
            let ctx = format!("{name}, step {i}: {d:?}");
            assert_eq!(d.delete.len(), s.deleted, "{ctx}");
            assert!(d.delete.iter().all(|n| deletions.contains(n)), "{ctx}");
            assert_eq!(d.hold.as_ref().map_or(0, Hold::held), s.held, "{ctx}");
            assert_eq!(d.transition, s.transition, "{ctx}");
            assert_eq!(guard.hold(), d.hold.as_ref(), "{ctx}");
        }
    }

    use BatchKind::{Forms, FullRead, Transaction, Truncate};
    use Transition::{Cancelled, Confirmed, Replaced, Started};

    #[test]
    fn small_batches_pass() {
        run("one row deleted from a one-node hub", &[step(0, Transaction, 1, 0..1).deletes(1)]);
        run("five of six by transaction", &[step(0, Transaction, 6, 0..5).deletes(5)]);
        run("six of twelve is exactly 50%", &[step(0, Transaction, 12, 0..6).deletes(6)]);
        run("all rows inactive in a full read of a small hub", &[step(0, FullRead, 3, 0..3).deletes(3)]);
        run("nothing to delete", &[step(0, FullRead, 0, 0..0).empty(), step(1, Truncate, 0, 0..0)]);
        run("a deleted form always passes", &[step(0, Forms, 100, 0..100).deletes(100)]);
    }

    #[test]
    fn empty_read_of_a_small_hub_is_confirmed_by_a_later_read() {
        run(
            "poll of an emptied table",
            &[
                step(0, FullRead, 1, 0..1).empty().holds(1).then(Started),
                step(10, FullRead, 1, 0..1).empty().holds(1),
                step(30, FullRead, 1, 0..1).empty().deletes(1).then(Confirmed),
            ],
        );
        run(
            "truncate, confirmed by the next resync",
            &[
                step(0, Truncate, 4, 0..4).holds(4).then(Started),
                step(29, FullRead, 4, 0..4).empty().holds(4),
                step(59, FullRead, 4, 0..4).empty().deletes(4).then(Confirmed),
            ],
        );
    }

    #[test]
    fn mass_deletion_needs_a_later_read_and_the_annotation() {
        run(
            "empty read of a big hub",
            &[
                step(0, FullRead, 100, 0..100).empty().holds(100).then(Started),
                step(40, FullRead, 100, 0..100).empty().holds(100),
                step(41, FullRead, 100, 0..100).empty().annotated().deletes(100).then(Confirmed),
            ],
        );
        run(
            "annotation alone does not shortcut the wait",
            &[
                step(0, FullRead, 10, 0..10).annotated().holds(10).then(Started),
                step(5, FullRead, 10, 0..10).annotated().holds(10),
                step(35, FullRead, 10, 0..10).annotated().deletes(10).then(Confirmed),
            ],
        );
        run(
            "transactions never confirm",
            &[
                step(0, Transaction, 20, 0..11).holds(11).then(Started),
                step(100, Transaction, 20, 0..11).annotated().holds(11),
                step(101, FullRead, 20, 0..11).annotated().deletes(11).then(Confirmed),
            ],
        );
    }

    #[test]
    fn holds_are_cancelled_when_the_read_recovers() {
        run(
            "the view is fixed",
            &[
                step(0, FullRead, 50, 0..50).empty().holds(50).then(Started),
                step(30, FullRead, 50, 0..0).then(Cancelled),
                step(60, FullRead, 50, 0..0),
            ],
        );
        run(
            "fixed, with a few legitimate deletions meanwhile",
            &[
                step(0, FullRead, 50, 0..50).empty().holds(50).then(Started),
                step(30, FullRead, 50, 0..3).deletes(3).then(Cancelled),
            ],
        );
        run(
            "rows come back by transaction",
            &[step(0, FullRead, 8, 0..8).empty().holds(8).then(Started), step(5, Transaction, 8, 0..0).then(Cancelled)],
        );
    }

    #[test]
    fn held_names_stay_held_while_other_batches_pass() {
        run(
            "a transaction during a hold deletes only its own small set",
            &[
                step(0, FullRead, 30, 0..20).holds(20).then(Started),
                step(1, Transaction, 30, 0..21).deletes(1).holds(20),
                // n020 is listed again only because it still exists; the held names stay held.
                step(2, Forms, 30, 0..25).deletes(5).holds(20),
                step(40, FullRead, 30, 0..20).annotated().deletes(20).then(Confirmed),
            ],
        );
        run(
            "held names no longer wanted leave the hold and are never deleted",
            &[
                step(0, FullRead, 30, 0..20).holds(20).then(Started),
                step(10, Transaction, 30, 4..20).holds(16),
                step(31, FullRead, 30, 4..20).annotated().deletes(16).then(Confirmed),
            ],
        );
    }

    #[test]
    fn a_changing_mass_set_restarts_the_clock() {
        run(
            "new names in a later read",
            &[
                step(0, FullRead, 30, 0..20).holds(20).then(Started),
                step(30, FullRead, 30, 0..25).annotated().holds(25).then(Replaced),
                step(59, FullRead, 30, 0..25).annotated().holds(25),
                step(60, FullRead, 30, 0..25).annotated().deletes(25).then(Confirmed),
            ],
        );
        run(
            "a truncate joins the hold, a small transaction does not",
            &[
                step(0, FullRead, 60, 0..31).holds(31).then(Started),
                step(10, Transaction, 60, 0..35).deletes(4).holds(31),
                step(20, Truncate, 60, 0..60).holds(60).then(Replaced),
                step(40, FullRead, 60, 0..60).empty().annotated().holds(60),
                step(50, FullRead, 60, 0..60).empty().annotated().deletes(60).then(Confirmed),
            ],
        );
    }

    #[test]
    fn threshold_is_max_of_count_and_share() {
        let guard = DeletionGuard::new(GuardConfig::new(CONFIRM));
        let cases = [
            (5, 5, false, None),
            (6, 100, false, None),
            (6, 11, false, Some(HoldReason::Threshold)),
            (6, 12, false, None),
            (51, 100, false, Some(HoldReason::Threshold)),
            (1, 1, true, Some(HoldReason::EmptyRead)),
            (7, 7, true, Some(HoldReason::Threshold)),
            (0, 7, true, None),
        ];
        for (count, existing, empty, want) in cases {
            assert_eq!(guard.classify(count, existing, empty), want, "{count} of {existing}, empty {empty}");
        }
    }

    #[test]
    fn hold_messages_name_the_way_out() {
        let mut guard = DeletionGuard::new(GuardConfig::new(CONFIRM));
        let deletions = names(0..10);
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
        let batch = Batch {
            kind: FullRead,
            existing: 10,
            deletions: &deletions,
            table_empty: true,
            allow_annotation: false,
            now,
        };
        let hold = guard.evaluate(&batch).hold.unwrap_or_else(|| panic!("no hold"));
        let message = hold.message(CONFIRM);
        assert!(message.contains("10 of 10") && message.contains("30s"), "{message}");
        assert!(message.contains("lynq.sh/allow-mass-deletion: \"true\""), "{message}");
        assert_eq!(Started.event_reason(), HELD_REASON);
        assert_eq!(Confirmed.event_reason(), "MassDeletionConfirmed");
    }
}
