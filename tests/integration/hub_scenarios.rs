//! The hub scenarios of both sources: every scenario body here runs once against MariaDB (binlog)
//! and once against PostgreSQL (logical replication), through [`both!`].

use std::{collections::BTreeSet, time::Instant};

use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use lynq::api::CaptureModeInUse;
use serde_json::json;

use crate::{
    hub_support::{Db, HubScenario, Source, capture_message, condition, extra, has_condition},
    support,
};

/// One `mysql` and one `postgres` test running the scenario `$name(Source)`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$name(super::Source::Mysql).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Source::Postgres).await
            }
        }
    };
}

both!(crud);
both!(column_types);
both!(invalid_uid_is_skipped);
both!(two_hubs_and_same_named_tables);
both!(handoff_under_concurrent_writes);
both!(restart_resumes_from_checkpoint);
both!(forms_change_during_the_first_snapshot_deletes_nothing);
both!(privileges_decide_the_mode);
both!(poll_and_stream_agree);
both!(deletion_guard_holds_a_mass_delete);
both!(forms_come_go_and_roll_out);
both!(password_rotation_via_the_secret);

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// Insert, NULL, update, deactivate, reactivate, uid change, a multi-row transaction, delete.
async fn crud(source: Source) {
    let mut s = HubScenario::standard(source, "hub-crud", "Stream", "1h").await;
    let t = Instant::now();
    s.sql("INSERT INTO nodes VALUES ('acme', TRUE, 'pro'), ('dormant', FALSE, NULL)").await;
    let node = s.node_after_commit("acme-web", t).await;
    assert_eq!(node.labels().get("lynq.sh/hub").map(String::as_str), Some("hub"));
    assert_eq!(node.labels().get("lynq.sh/uid").map(String::as_str), Some("acme"));
    assert_eq!(node.annotations().get("lynq.sh/extra").map(String::as_str), Some(r#"{"planId":"pro"}"#));
    assert_eq!(node.owner_references().first().map(|o| o.kind.as_str()), Some("LynqHub"));
    s.hub_until("hub", "streaming", |h| {
        h.status.as_ref().and_then(|st| st.change_capture.as_ref()).and_then(|c| c.mode)
            == Some(CaptureModeInUse::Streaming)
    })
    .await;

    let t = Instant::now();
    s.sql("INSERT INTO nodes VALUES ('beta', TRUE, NULL)").await;
    let beta = s.node_after_commit("beta-web", t).await;
    assert_eq!(extra(&beta).get("planId"), Some(&json!("")), "NULL is the empty string");

    let t = Instant::now();
    s.sql("UPDATE nodes SET plan = 'enterprise' WHERE node_id = 'beta'").await;
    s.node("beta-web", |n| extra(n).get("planId") == Some(&json!("enterprise"))).await;
    eprintln!("[{}] commit → LynqNode update: {:?}", source.label(), t.elapsed());

    s.sql("UPDATE nodes SET is_active = FALSE WHERE node_id = 'acme'").await;
    s.node_gone("acme-web").await;
    s.sql("UPDATE nodes SET is_active = TRUE WHERE node_id = 'acme'").await;
    s.node("acme-web", |_| true).await;

    s.sql("UPDATE nodes SET node_id = 'gamma' WHERE node_id = 'beta'").await;
    s.node("gamma-web", |n| extra(n).get("planId") == Some(&json!("enterprise"))).await;
    s.node_gone("beta-web").await;

    let t = Instant::now();
    s.sql(
        "START TRANSACTION; INSERT INTO nodes VALUES ('c1', TRUE, NULL), ('c2', TRUE, 'pro'); \
           DELETE FROM nodes WHERE node_id = 'gamma'; COMMIT",
    )
    .await;
    s.node_after_commit("c2-web", t).await;
    s.sql("DELETE FROM nodes WHERE node_id = 'c1'").await;
    s.nodes_exactly("hub", &names(&["acme-web", "c2-web"])).await;
    assert!(!s.node_log().seen("dormant-web"), "an inactive row never gets a node");
    s.hub_until("hub", "desired 2", |h| h.status.as_ref().and_then(|st| st.desired) == Some(2)).await;
}

/// The DDL, one row's values and the activate column of the typed-columns table.
fn typed_table(source: Source) -> (&'static str, &'static str, Vec<&'static str>) {
    match source {
        Source::Mysql => (
            "CREATE TABLE typed (node_id VARCHAR(64) PRIMARY KEY, on_flag TINYINT(1), off_flag TINYINT(1), \
             amount DECIMAL(10,2), day DATE, at_dt DATETIME(3), at_ts TIMESTAMP NULL, doc JSON, \
             tier ENUM('free','pro','enterprise'), raw VARBINARY(16), note VARCHAR(20) NULL, \
             big BIGINT UNSIGNED, ratio DOUBLE, tags SET('a','b','c'))",
            "1, 0, 1234.50, '2024-02-29', '2024-02-29 13:45:06.125', '2024-02-29 13:45:06', \
             '{\"a\": [1, 2], \"b\": \"x\"}', 'pro', X'61620063', NULL, 18446744073709551615, 0.1, 'a,c'",
            vec![
                "on_flag", "off_flag", "amount", "day", "at_dt", "at_ts", "doc", "tier", "raw", "note", "big", "ratio",
                "tags",
            ],
        ),
        Source::Postgres => (
            "CREATE TYPE tier AS ENUM ('free','pro','enterprise'); \
             CREATE TABLE typed (node_id VARCHAR(64) PRIMARY KEY, on_flag BOOLEAN, off_flag BOOLEAN, \
             amount NUMERIC(10,2), day DATE, at_dt TIMESTAMP(3), at_ts TIMESTAMPTZ, doc JSONB, tier tier, \
             raw BYTEA, note VARCHAR(20), big BIGINT, ratio DOUBLE PRECISION, tags TEXT[])",
            "TRUE, FALSE, 1234.50, '2024-02-29', '2024-02-29 13:45:06.125', '2024-02-29 13:45:06+02', \
             '{\"b\": \"x\", \"a\": [1, 2]}', 'pro', '\\x61620063', NULL, 9223372036854775807, 0.1, '{a,c}'",
            vec![
                "on_flag", "off_flag", "amount", "day", "at_dt", "at_ts", "doc", "tier", "raw", "note", "big", "ratio",
                "tags",
            ],
        ),
    }
}

/// Every column type reaches the node as the text protocol shows it (snapshot and stream alike);
/// booleans of PostgreSQL read as "true"/"false" so that Lynq's truthiness applies.
async fn column_types(source: Source) {
    let mut s = HubScenario::new(source, "hub-types").await;
    let (ddl, values, columns) = typed_table(source);
    s.sql(ddl).await;
    s.sql(&format!("INSERT INTO typed VALUES ('snap', {values})")).await;
    let mut hub = HubScenario::hub_object("hub", &s.target("typed"), "Stream", "1h");
    hub["spec"]["valueMappings"] = json!({"uid": "node_id", "activate": "on_flag"});
    hub["spec"]["extraValueMappings"] = columns.iter().map(|c| (c.to_string(), json!(c))).collect();
    s.create_hub_object(hub).await;
    s.create_form("web", "hub").await;
    s.start_operator();
    s.node("snap-web", |_| true).await;
    let t = Instant::now();
    s.sql(&format!("INSERT INTO typed VALUES ('streamed', {values})")).await;
    s.node_after_commit("streamed-web", t).await;
    // Off: the same row with the activate flag false has no node.
    let off_values = values.replacen("1, 0", "0, 0", 1).replacen("TRUE, FALSE", "FALSE, FALSE", 1);
    s.sql(&format!("INSERT INTO typed VALUES ('off', {off_values})")).await;

    let session = match source {
        Source::Mysql => "SET time_zone = '+00:00'",
        Source::Postgres => {
            "SET TimeZone = 'UTC'; SET DateStyle = ISO; SET extra_float_digits = 1; SET bytea_output = hex"
        }
    };
    s.sql(session).await;
    let shown = s.db.text_rows(&format!("SELECT {} FROM typed WHERE node_id = 'snap'", columns.join(", "))).await;
    let shown = shown.into_iter().next().expect("row");
    for name in ["snap-web", "streamed-web"] {
        let node = s.node(name, |_| true).await;
        let extra = extra(&node);
        for (column, text) in columns.iter().zip(&shown) {
            let expected = match (source, *column, text.as_deref()) {
                (Source::Postgres, _, Some("t")) => "true".to_string(),
                (Source::Postgres, _, Some("f")) => "false".to_string(),
                (_, _, t) => t.unwrap_or_default().to_string(),
            };
            assert_eq!(extra.get(*column), Some(&json!(expected)), "{name}: column {column} ({source:?})");
        }
        eprintln!("[{}] {name}: {extra:?}", source.label());
    }
    s.sql("INSERT INTO typed (node_id) VALUES ('after')").await;
    s.sql(&format!(
        "UPDATE typed SET {} WHERE node_id = 'after'",
        match source {
            Source::Mysql => "on_flag = 1",
            Source::Postgres => "on_flag = TRUE",
        }
    ))
    .await;
    let after = s.node("after-web", |_| true).await;
    assert_eq!(extra(&after).get("note"), Some(&json!("")), "NULL columns are empty strings");
    assert!(!s.node_log().seen("off-web"));
}

/// A row whose uid cannot name a node is skipped with an event and counted; the others go on.
async fn invalid_uid_is_skipped(source: Source) {
    let mut s = HubScenario::standard(source, "hub-baduid", "Stream", "1h").await;
    s.sql("INSERT INTO nodes VALUES ('ok1', TRUE, NULL), ('Not_A_Name!', TRUE, NULL), ('ok2', TRUE, NULL)").await;
    s.node("ok1-web", |_| true).await;
    s.node("ok2-web", |_| true).await;
    s.hub_event("hub", "RowSkipped", "Not_A_Name!").await;
    s.hub_until("hub", "skippedRows 1", |h| h.status.as_ref().and_then(|st| st.skipped_rows) == Some(1)).await;
    s.sql("INSERT INTO nodes VALUES ('ok3', TRUE, NULL)").await;
    s.node("ok3-web", |_| true).await;
    s.sql("DELETE FROM nodes WHERE node_id = 'Not_A_Name!'").await;
    s.hub_until("hub", "skippedRows 0", |h| h.status.as_ref().and_then(|st| st.skipped_rows) == Some(0)).await;
    s.nodes_exactly("hub", &names(&["ok1-web", "ok2-web", "ok3-web"])).await;
}

/// Two hubs stream from one server at once; each sees only its own table although both tables are
/// called `nodes` (different databases on MySQL, different schemas on PostgreSQL).
async fn two_hubs_and_same_named_tables(source: Source) {
    let mut s = HubScenario::new(source, "hub-two").await;
    s.sql(&source.nodes_table("nodes")).await;
    let (mut other, other_target) = match source {
        Source::Mysql => {
            let (database, url) = support::mysql_database("hub-two-b").await;
            let mut db = Db::connect(source, &url).await;
            db.exec(&source.nodes_table("nodes")).await;
            let target = crate::hub_support::Target { database, ..s.target("nodes") };
            (db, target)
        }
        Source::Postgres => {
            s.sql(&format!("CREATE SCHEMA other; {}", source.nodes_table("other.nodes"))).await;
            let target = crate::hub_support::Target { schema: "other".into(), ..s.target("nodes") };
            (Db::connect(source, &s.url).await, target)
        }
    };
    let qualified = if source == Source::Mysql { "nodes" } else { "other.nodes" };
    s.create_hub("a", &s.target("nodes"), "Stream", "1h").await;
    s.create_hub("b", &other_target, "Stream", "1h").await;
    s.create_form("wa", "a").await;
    s.create_form("wb", "b").await;
    s.start_operator();
    s.sql("INSERT INTO nodes VALUES ('x1', TRUE, NULL), ('same', TRUE, 'a')").await;
    other.exec(&format!("INSERT INTO {qualified} VALUES ('y1', TRUE, NULL), ('same', TRUE, 'b')")).await;
    s.nodes_exactly("a", &names(&["x1-wa", "same-wa"])).await;
    s.nodes_exactly("b", &names(&["y1-wb", "same-wb"])).await;
    other.exec(&format!("DELETE FROM {qualified} WHERE node_id = 'same'")).await;
    s.node_gone("same-wb").await;
    s.sql("INSERT INTO nodes VALUES ('x2', TRUE, NULL)").await;
    s.nodes_exactly("a", &names(&["x1-wa", "same-wa", "x2-wa"])).await;
    s.nodes_exactly("b", &names(&["y1-wb"])).await;
}

/// The hub starts while a writer is busy: every committed change ends up applied, and a row that
/// was inserted and deleted before the snapshot never gets a node, not even briefly.
async fn handoff_under_concurrent_writes(source: Source) {
    let mut s = HubScenario::new(source, "hub-handoff").await;
    s.sql(&source.nodes_table("nodes")).await;
    s.create_form("web", "hub").await;
    s.start_operator();
    s.sql("INSERT INTO nodes VALUES ('ghost', TRUE, NULL)").await;
    s.sql("DELETE FROM nodes WHERE node_id = 'ghost'").await;

    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writer_db = Db::connect(source, &s.url).await;
    let counter = progress.clone();
    let writer = tokio::spawn(async move {
        for i in 0..240usize {
            writer_db.exec(&format!("INSERT INTO nodes VALUES ('w{i}', TRUE, 'p{i}')")).await;
            if i % 3 == 2 {
                writer_db.exec(&format!("UPDATE nodes SET plan = 'u{i}' WHERE node_id = 'w{}'", i - 1)).await;
            }
            if i % 5 == 4 {
                writer_db.exec(&format!("DELETE FROM nodes WHERE node_id = 'w{}'", i - 2)).await;
            }
            if i % 7 == 6 {
                writer_db.exec(&format!("UPDATE nodes SET is_active = FALSE WHERE node_id = 'w{}'", i - 3)).await;
            }
            counter.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    support::eventually("the writer to be busy", crate::hub_support::WAIT, || {
        let n = progress.load(std::sync::atomic::Ordering::Relaxed);
        async move { (n >= 30).then_some(()) }
    })
    .await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "1h").await;
    writer.await.expect("writer");
    let t = Instant::now();
    s.sql("INSERT INTO nodes VALUES ('last', TRUE, NULL)").await;
    let rows = s.db.text_rows("SELECT node_id, plan FROM nodes WHERE is_active = TRUE").await;
    let expected: BTreeSet<String> = rows.iter().map(|r| format!("{}-web", r[0].clone().unwrap_or_default())).collect();
    s.nodes_exactly("hub", &expected).await;
    eprintln!(
        "[{}] after the writer: all {} nodes {:?} after the last commit",
        source.label(),
        expected.len(),
        t.elapsed()
    );
    for row in rows.iter().take(40) {
        let (uid, plan) = (row[0].clone().unwrap_or_default(), row[1].clone().unwrap_or_default());
        s.node(&format!("{uid}-web"), |n| extra(n).get("planId") == Some(&json!(plan))).await;
    }
    assert!(!s.node_log().seen("ghost-web"), "a row gone before the snapshot must never get a node");
}

/// The checkpoint in the hub's status lets a restarted operator resume without a snapshot.
async fn restart_resumes_from_checkpoint(source: Source) {
    let mut s = HubScenario::standard(source, "hub-restart", "Stream", "1h").await;
    s.sql("INSERT INTO nodes VALUES ('a1', TRUE, 'one'), ('k1', TRUE, 'kept')").await;
    s.node("a1-web", |_| true).await;
    let kept = s.node("k1-web", |_| true).await.uid();
    s.hub_until("hub", "a persisted checkpoint", |h| {
        h.status.as_ref().and_then(|st| st.change_capture.as_ref()).and_then(|c| c.position.as_ref()).is_some()
    })
    .await;
    s.stop_operator().await;
    s.sql("INSERT INTO nodes VALUES ('b1', TRUE, NULL)").await;
    s.sql("UPDATE nodes SET plan = 'two' WHERE node_id = 'a1'").await;
    s.start_operator();
    s.node("b1-web", |_| true).await;
    s.node("a1-web", |n| extra(n).get("planId") == Some(&json!("two"))).await;
    // A row the replay does not mention keeps its node: not deleted, not recreated.
    let after = s.nodes().get_opt("k1-web").await.expect("get k1-web").map(|n| n.uid());
    assert_eq!(after, Some(kept), "the node of the untouched row k1 survives the restart as it was");
    let hub = s.hub_until("hub", "resumed", |h| has_condition(h, "ChangeCapture", "True", "Resumed")).await;
    eprintln!("[{}] after restart: {:?}", source.label(), condition(&hub, "ChangeCapture"));
    assert!(!s.has_hub_event("hub", "SnapshotTaken").await, "no new snapshot after a resumable restart");
}

/// Forms changes queued while a restarted operator is still reading its first snapshot (here held
/// up by a table lock) are handled once the snapshot is in: nothing is deleted or recreated. Before
/// the fix the runner could take a queued change first and apply it to its still-empty view of
/// the table, deleting every node of the hub.
async fn forms_change_during_the_first_snapshot_deletes_nothing(source: Source) {
    let mut s = HubScenario::standard(source, "hub-early-forms", "Stream", "1h").await;
    s.sql("INSERT INTO nodes VALUES ('e1', TRUE, NULL), ('e2', TRUE, NULL), ('e3', TRUE, NULL)").await;
    let mut before = Vec::new();
    for name in ["e1-web", "e2-web", "e3-web"] {
        before.push(s.node(name, |_| true).await.uid());
    }
    s.stop_operator().await;
    // Without a checkpoint the next start takes a snapshot.
    let cleared = json!({"status": {"changeCapture": {"position": null}}});
    s.hubs().patch_status("hub", &PatchParams::default(), &Patch::Merge(&cleared)).await.expect("clear checkpoint");

    let mut lock = Db::connect(source, &s.url).await;
    lock.exec(match source {
        Source::Mysql => "LOCK TABLES nodes WRITE",
        // The lock takes a transaction id, so the slot's snapshot waits for it as well.
        Source::Postgres => "BEGIN; LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE",
    })
    .await;
    s.start_operator();
    // Only this scenario's database: the server is shared with other tests.
    let waiting = match source {
        Source::Mysql => {
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                          WHERE STATE LIKE 'Waiting for table%' AND DB = DATABASE()"
        }
        Source::Postgres => {
            "SELECT COUNT(*) FROM pg_stat_activity \
                             WHERE wait_event_type = 'Lock' AND datname = current_database()"
        }
    };
    let url = s.url.clone();
    support::eventually("the operator's first read waits for the table lock", crate::hub_support::WAIT, || {
        let probe = Db::connect(source, &url);
        async move { (probe.await.scalar(waiting).await.as_deref() != Some("0")).then_some(()) }
    })
    .await;
    for i in 0..4 {
        let label = json!({"metadata": {"labels": {"touched": i.to_string()}}});
        s.forms().patch("web", &PatchParams::default(), &Patch::Merge(&label)).await.expect("label the form");
    }
    lock.exec(match source {
        Source::Mysql => "UNLOCK TABLES",
        Source::Postgres => "COMMIT",
    })
    .await;

    // A row committed after the snapshot: once its node is there, the snapshot and every change
    // queued before it were applied.
    s.sql("INSERT INTO nodes VALUES ('e4', TRUE, NULL)").await;
    s.node("e4-web", |_| true).await;
    let mut after = Vec::new();
    for name in ["e1-web", "e2-web", "e3-web"] {
        after.push(s.nodes().get(name).await.expect("node kept").uid());
    }
    assert_eq!(after, before, "the nodes of the unchanged rows were recreated");
    assert_eq!(s.node_log().deleted(), BTreeSet::new(), "nodes were deleted");
}

/// A user without replication rights: Auto polls and says why; Stream names what is missing.
async fn privileges_decide_the_mode(source: Source) {
    let mut s = HubScenario::new(source, "hub-privs").await;
    s.sql(&source.nodes_table("nodes")).await;
    let user = format!("ro_{}", support::unique_suffix());
    match source {
        Source::Mysql => {
            s.sql(&format!(
                "CREATE USER '{user}'@'%' IDENTIFIED BY 'ro-pass'; GRANT SELECT ON `{}`.* TO '{user}'@'%'",
                s.database
            ))
            .await
        }
        Source::Postgres => {
            s.sql(&format!("CREATE ROLE {user} LOGIN PASSWORD 'ro-pass'; GRANT SELECT ON nodes TO {user}")).await
        }
    }
    s.put_secret("ro", "ro-pass").await;
    let target = crate::hub_support::Target { username: user.clone(), secret: "ro".into(), ..s.target("nodes") };
    s.start_auto_and_strict(&target, "2s").await;
    let auto = s.hub_in_mode("auto", CaptureModeInUse::Polling).await;
    let message = capture_message(&auto);
    eprintln!("[{}] Auto: {message}", source.label());
    assert!(message.contains("REPLICATION"), "Auto says why it polls: {message}");
    let strict =
        s.hub_until("strict", "not ready", |h| condition(h, "Ready").is_some_and(|(st, _, _)| st == "False")).await;
    let (_, reason, message) = condition(&strict, "Ready").expect("Ready");
    eprintln!("[{}] Stream: {reason}: {message}", source.label());
    match source {
        Source::Mysql => assert!(
            message.contains("REPLICATION SLAVE") && message.contains("BINLOG MONITOR"),
            "Stream names each missing privilege: {message}"
        ),
        Source::Postgres => assert!(message.contains("REPLICATION"), "Stream names the missing attribute: {message}"),
    }
    assert!(!s.node_log().seen("p1-ws"));

    // Fixing the grant is enough: Auto re-checks after every poll and switches to streaming.
    match source {
        Source::Mysql => s.sql(&format!("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'")).await,
        Source::Postgres => {
            let database = s.database.clone();
            s.sql(&format!(
                "ALTER ROLE {user} REPLICATION; ALTER TABLE nodes OWNER TO {user}; \
                 GRANT CREATE ON DATABASE \"{database}\" TO {user}"
            ))
            .await
        }
    }
    s.hub_in_mode("auto", CaptureModeInUse::Streaming).await;
    s.sql("INSERT INTO nodes VALUES ('p2', TRUE, NULL)").await;
    s.node("p2-wa", |_| true).await;
}

/// The same statements give the same nodes whether the hub polls or streams.
async fn poll_and_stream_agree(source: Source) {
    let mut s = HubScenario::new(source, "hub-agree").await;
    s.sql(&source.nodes_table("nodes")).await;
    s.create_hub("polled", &s.target("nodes"), "Poll", "1s").await;
    s.create_hub("streamed", &s.target("nodes"), "Stream", "1h").await;
    s.create_form("p", "polled").await;
    s.create_form("s", "streamed").await;
    s.start_operator();
    for statement in [
        "INSERT INTO nodes VALUES ('a', TRUE, 'x'), ('b', TRUE, NULL), ('c', FALSE, 'y')",
        "UPDATE nodes SET plan = 'z' WHERE node_id = 'a'",
        "UPDATE nodes SET is_active = TRUE WHERE node_id = 'c'",
        "UPDATE nodes SET is_active = FALSE WHERE node_id = 'b'",
        "UPDATE nodes SET node_id = 'd' WHERE node_id = 'a'",
        "START TRANSACTION; INSERT INTO nodes VALUES ('e', TRUE, NULL); DELETE FROM nodes WHERE node_id = 'c'; COMMIT",
        "UPDATE nodes SET plan = NULL WHERE node_id = 'd'",
    ] {
        s.sql(statement).await;
    }
    s.nodes_exactly("polled", &names(&["d-p", "e-p"])).await;
    s.nodes_exactly("streamed", &names(&["d-s", "e-s"])).await;
    for uid in ["d", "e"] {
        let empty_plan = |n: &lynq::api::LynqNode| extra(n).get("planId") == Some(&json!(""));
        let p = s.node(&format!("{uid}-p"), empty_plan).await;
        let st = s.node(&format!("{uid}-s"), empty_plan).await;
        assert_eq!(extra(&p), extra(&st), "uid {uid}");
        assert_eq!(p.annotations().get("lynq.sh/activate"), st.annotations().get("lynq.sh/activate"));
    }
}

/// Deleting most rows at once is held (nodes stay, condition and event say so) until the hub is
/// annotated and a later full read confirms it.
async fn deletion_guard_holds_a_mass_delete(source: Source) {
    let mut s = HubScenario::standard(source, "hub-guard", "Stream", "3s").await;
    let values: Vec<String> = (1..=7).map(|i| format!("('g{i}', TRUE, NULL)")).collect();
    s.sql(&format!("INSERT INTO nodes VALUES {}", values.join(", "))).await;
    let all: BTreeSet<String> = (1..=7).map(|i| format!("g{i}-web")).collect();
    s.nodes_exactly("hub", &all).await;
    s.sql("DELETE FROM nodes").await;
    s.hub_until("hub", "DeletionGuard held", |h| has_condition(h, "DeletionGuard", "True", "MassDeletionHeld")).await;
    s.hub_event("hub", "MassDeletionHeld", "").await;
    assert_eq!(s.node_names("hub").await, all, "held deletions do not happen");
    s.patch_hub("hub", json!({"metadata": {"annotations": {"lynq.sh/allow-mass-deletion": "true"}}})).await;
    s.nodes_exactly("hub", &BTreeSet::new()).await;
    s.hub_until("hub", "DeletionGuard clear", |h| has_condition(h, "DeletionGuard", "False", "Clear")).await;
}

/// A form added later gets its nodes, a changed form re-renders them at most maxSkew at a time,
/// and a removed form takes its nodes along.
async fn forms_come_go_and_roll_out(source: Source) {
    let mut s = HubScenario::standard(source, "hub-forms", "Stream", "1h").await;
    let values: Vec<String> = (1..=4).map(|i| format!("('f{i}', TRUE, 'p{i}')")).collect();
    s.sql(&format!("INSERT INTO nodes VALUES {}", values.join(", "))).await;
    s.create_form("extra", "hub").await;
    let both: BTreeSet<String> = (1..=4).flat_map(|i| [format!("f{i}-web"), format!("f{i}-extra")]).collect();
    s.nodes_exactly("hub", &both).await;

    let patch = json!({"spec": {"rollout": {"maxSkew": 1}, "configMaps": [{"id": "cfg", "nameTemplate": "{{ .uid }}-web",
        "spec": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"plan": "v2-{{ .planId }}"}}}]}});
    s.forms()
        .patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("patch form");
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(s.client.clone(), &s.ns);
    let most_updating = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    support::eventually("every ConfigMap re-rendered", crate::hub_support::WAIT, || {
        let (cms, forms, most) = (cms.clone(), s.forms(), most_updating.clone());
        async move {
            if let Ok(form) = forms.get("web").await {
                let updating = form.status.and_then(|st| st.rollout).and_then(|r| r.updating_nodes).unwrap_or(0);
                most.fetch_max(updating, std::sync::atomic::Ordering::Relaxed);
            }
            let mut done = 0;
            for i in 1..=4 {
                let cm = cms.get_opt(&format!("f{i}-web")).await.ok().flatten()?;
                done += usize::from(cm.data?.get("plan").map(String::as_str) == Some(&format!("v2-p{i}")));
            }
            (done == 4).then_some(())
        }
    })
    .await;
    let most_updating = most_updating.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("[{}] most nodes seen updating at once with maxSkew 1: {most_updating}", source.label());
    assert!(most_updating <= 1, "maxSkew 1 allows one updating node, saw {most_updating}");

    s.forms().delete("extra", &Default::default()).await.expect("delete form");
    let web: BTreeSet<String> = (1..=4).map(|i| format!("f{i}-web")).collect();
    s.nodes_exactly("hub", &web).await;
}

/// A new password in the Secret reconnects the hub with it.
async fn password_rotation_via_the_secret(source: Source) {
    let mut s = HubScenario::new(source, "hub-rotate").await;
    s.sql(&source.nodes_table("nodes")).await;
    let user = format!("rot_{}", support::unique_suffix());
    let (create, rotate, kick) = match source {
        Source::Mysql => (
            format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-one'; GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'"),
            format!("ALTER USER '{user}'@'%' IDENTIFIED BY 'pw-two'"),
            None,
        ),
        Source::Postgres => (
            format!("CREATE ROLE {user} LOGIN SUPERUSER PASSWORD 'pw-one'"),
            format!("ALTER ROLE {user} PASSWORD 'pw-two'"),
            Some(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'")),
        ),
    };
    s.sql(&create).await;
    s.put_secret("rot", "pw-one").await;
    let target = crate::hub_support::Target { username: user.clone(), secret: "rot".into(), ..s.target("nodes") };
    s.create_hub("hub", &target, "Stream", "1h").await;
    s.create_form("web", "hub").await;
    s.start_operator();
    s.sql("INSERT INTO nodes VALUES ('r1', TRUE, NULL)").await;
    s.node("r1-web", |_| true).await;

    s.sql(&rotate).await;
    match kick {
        Some(sql) => s.sql(&sql).await,
        None => {
            let ids =
                s.db.text_rows(&format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'")).await;
            for id in ids.into_iter().filter_map(|r| r.into_iter().next().flatten()) {
                let _ = s.db.try_exec(&format!("KILL {id}")).await;
            }
        }
    }
    s.hub_until("hub", "the old password failing", |h| {
        condition(h, "Ready").is_some_and(|(st, _, m)| {
            st == "False" && (m.to_lowercase().contains("denied") || m.contains("authentication"))
        })
    })
    .await;
    s.put_secret("rot", "pw-two").await;
    s.hub_until("hub", "Ready again", |h| has_condition(h, "Ready", "True", "DatabaseConnected")).await;
    s.sql("INSERT INTO nodes VALUES ('r2', TRUE, NULL)").await;
    s.node("r2-web", |_| true).await;
}

/// The form's rollout under maxSkew does not depend on the source, so this runs on MariaDB only:
/// a node that does not become ready within progressDeadlineSeconds stops holding the only slot,
/// the rollout says `Failed`, and the next node is updated. It waits about a minute (the CRD's
/// minimum deadline is 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_frees_a_stuck_rollout() {
    let s = HubScenario::standard(Source::Mysql, "hub-deadline", "Stream", "1h").await;
    let mut s = s;
    s.sql("INSERT INTO nodes VALUES ('d1', TRUE, NULL), ('d2', TRUE, NULL)").await;
    // There is no kubelet: a Deployment never becomes ready, so an updated node stays busy.
    let slow = |image: &str, rollout: serde_json::Value| {
        json!({"apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm", "metadata": {"name": "slow"},
               "spec": {"hubId": "hub", "rollout": rollout, "deployments": [{"id": "app", "nameTemplate": "{{ .uid }}-app",
                 "spec": {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {
                   "selector": {"matchLabels": {"app": "{{ .uid }}"}},
                   "template": {"metadata": {"labels": {"app": "{{ .uid }}"}},
                                "spec": {"containers": [{"name": "app", "image": image}]}}}}}]}})
    };
    s.create_form_object(slow("nginx:1", json!({}))).await;
    s.node("d1-slow", |_| true).await;
    s.node("d2-slow", |_| true).await;

    let patch = slow("nginx:2", json!({"maxSkew": 1, "progressDeadlineSeconds": 60}));
    let form = s
        .forms()
        .patch("slow", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("change the form");
    let target = form.metadata.generation.expect("generation").to_string();
    let updated = |nodes: &[lynq::api::LynqNode]| {
        nodes
            .iter()
            .filter(|n| n.annotations().get("lynq.sh/template-generation") == Some(&target))
            .map(|n| n.name_any())
            .collect::<BTreeSet<_>>()
    };
    let slow_nodes = || async {
        let lp = kube::api::ListParams::default().labels("lynq.sh/hub=hub");
        let nodes = s.nodes().list(&lp).await.map(|l| l.items).unwrap_or_default();
        nodes.into_iter().filter(|n| n.spec.template_ref == "slow").collect::<Vec<_>>()
    };
    let first = support::eventually("one node updated", crate::hub_support::WAIT, || async {
        let nodes = slow_nodes().await;
        let done = updated(&nodes);
        (done.len() == 1).then_some(done)
    })
    .await;
    eprintln!("first updated node: {first:?}");
    support::eventually("the rollout in progress with one node updating", crate::hub_support::WAIT, || async {
        let rollout = s.forms().get("slow").await.ok()?.status?.rollout?;
        (rollout.phase == Some(lynq::api::RolloutPhase::InProgress) && rollout.updating_nodes == Some(1)).then_some(())
    })
    .await;
    assert_eq!(updated(&slow_nodes().await), first, "maxSkew 1 holds the second node back");

    let deadline_and_margin = std::time::Duration::from_secs(150);
    support::eventually("the rollout marked Failed", deadline_and_margin, || async {
        let form = s.forms().get("slow").await.ok()?;
        let rollout = form.status?.rollout?;
        (rollout.phase == Some(lynq::api::RolloutPhase::Failed) && rollout.failed_nodes >= Some(1)).then_some(())
    })
    .await;
    support::eventually("the second node updated after the deadline", deadline_and_margin, || async {
        (updated(&slow_nodes().await).len() == 2).then_some(())
    })
    .await;
}
