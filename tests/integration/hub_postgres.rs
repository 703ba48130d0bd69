//! Hub scenarios that only PostgreSQL has: TOASTed values, replica identity, the replication slot's
//! life cycle, and a large transaction.

use std::time::Instant;

use serde_json::json;

use crate::hub_support::{HubScenario, Source, condition, extra, has_condition};

async fn slot_exists(s: &mut HubScenario) -> bool {
    let sql = format!("SELECT count(*) FROM pg_replication_slots WHERE database = '{}'", s.database);
    s.db.scalar(&sql).await.as_deref() != Some("0")
}

/// A large text value stored out of line is not resent when an update leaves it alone; the node
/// keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toasted_value_survives_an_update() {
    let mut s = HubScenario::new(Source::Postgres, "hub-toast").await;
    s.sql(
        "CREATE TABLE nodes (node_id VARCHAR(64) PRIMARY KEY, is_active BOOLEAN, plan VARCHAR(32), big TEXT); \
           ALTER TABLE nodes ALTER COLUMN big SET STORAGE EXTERNAL",
    )
    .await;
    let mut hub = HubScenario::hub_object("hub", &s.target("nodes"), "Stream", "1h");
    hub["spec"]["extraValueMappings"] = json!({"planId": "plan", "big": "big"});
    s.create_hub_object(hub).await;
    s.create_form("web", "hub").await;
    s.start_operator();
    // 8 kB of text, stored out of line (EXTERNAL: uncompressed, TOASTed above ~2 kB).
    s.sql("INSERT INTO nodes VALUES ('big', TRUE, 'one', repeat('0123456789abcdef', 512))").await;
    let expected = "0123456789abcdef".repeat(512);
    s.node("big-web", |n| extra(n).get("big") == Some(&json!(expected))).await;
    s.sql("UPDATE nodes SET plan = 'two' WHERE node_id = 'big'").await;
    let node = s.node("big-web", |n| extra(n).get("planId") == Some(&json!("two"))).await;
    assert_eq!(extra(&node).get("big"), Some(&json!(expected)), "the unchanged TOASTed value is kept");
}

/// A uid column outside the replica identity cannot be streamed: Stream says so with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_without_the_uid_is_reported_with_the_fix() {
    let mut s = HubScenario::new(Source::Postgres, "hub-replid").await;
    s.sql("CREATE TABLE nodes (id SERIAL PRIMARY KEY, node_id VARCHAR(64), is_active BOOLEAN, plan VARCHAR(32))").await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "1h").await;
    s.create_form("web", "hub").await;
    s.start_operator();
    let hub = s
        .hub_until("hub", "Ready=False", |h| {
            condition(h, "Ready").is_some_and(|(st, _, m)| st == "False" && m.contains("replica identity"))
        })
        .await;
    let (_, _, message) = condition(&hub, "Ready").expect("Ready");
    eprintln!("[pg] {message}");
    assert!(message.contains("node_id") && message.contains("REPLICA IDENTITY FULL"), "{message}");
    s.sql("ALTER TABLE nodes REPLICA IDENTITY FULL; INSERT INTO nodes (node_id, is_active) VALUES ('fixed', TRUE)")
        .await;
    s.node("fixed-web", |_| true).await;
    s.sql("DELETE FROM nodes WHERE node_id = 'fixed'").await;
    s.node_gone("fixed-web").await;
}

/// Deleting a hub drops its replication slot (a forgotten slot keeps WAL forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_hub_drops_its_slot() {
    let mut s = HubScenario::standard(Source::Postgres, "hub-dropslot", "Stream", "1h").await;
    s.sql("INSERT INTO nodes VALUES ('a', TRUE, NULL)").await;
    s.node("a-web", |_| true).await;
    assert!(slot_exists(&mut s).await, "the streaming hub has a slot");
    // lynq made the publication, and says so (status and event).
    let hub = s
        .hub_until("hub", "the publication in the status", |h| {
            crate::hub_support::capture_message(h).contains("created publication")
        })
        .await;
    eprintln!("[pg] {}", crate::hub_support::capture_message(&hub));
    s.hub_event("hub", "PublicationCreated", "created publication").await;
    s.delete_hub("hub").await;
    crate::support::eventually("the slot to be dropped", crate::hub_support::WAIT, || {
        let url = s.url.clone();
        let database = s.database.clone();
        async move {
            let mut db = crate::hub_support::Db::connect(Source::Postgres, &url).await;
            let sql = format!("SELECT count(*) FROM pg_replication_slots WHERE database = '{database}'");
            (db.scalar(&sql).await.as_deref() == Some("0")).then_some(())
        }
    })
    .await;
    s.node_gone("a-web").await;
}

/// A slot dropped by hand while the hub streams: a new slot and a new snapshot, said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_dropped_by_hand_leads_to_a_new_snapshot() {
    let mut s = HubScenario::standard(Source::Postgres, "hub-slotgone", "Stream", "1h").await;
    s.sql("INSERT INTO nodes VALUES ('a', TRUE, NULL)").await;
    s.node("a-web", |_| true).await;
    s.hub_until("hub", "a persisted checkpoint", |h| {
        h.status.as_ref().and_then(|st| st.change_capture.as_ref()).and_then(|c| c.position.as_ref()).is_some()
    })
    .await;
    // The walsender holds the slot: end it and drop the slot before the hub reconnects.
    let database = s.database.clone();
    crate::support::eventually("the slot to be dropped by hand", crate::hub_support::WAIT, || {
        let (url, database) = (s.url.clone(), database.clone());
        async move {
            let mut db = crate::hub_support::Db::connect(Source::Postgres, &url).await;
            let _ = db
                .try_exec(&format!(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '{database}' AND active_pid IS NOT NULL; \
                     SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{database}'"
                ))
                .await;
            let slots = db.scalar(&format!("SELECT count(*) FROM pg_replication_slots WHERE database = '{database}'")).await;
            // Either dropped now, or the hub already made its new one (then the snapshot follows).
            (slots.as_deref() == Some("0")).then_some(())
        }
    })
    .await;
    s.sql("INSERT INTO nodes VALUES ('b', TRUE, NULL)").await;
    s.node("b-web", |_| true).await;
    s.hub_until("hub", "SlotMissing", |h| has_condition(h, "ChangeCapture", "True", "SlotMissing")).await;
    s.hub_event("hub", "SnapshotTaken", "slot_missing").await;
}

/// 2000 rows committed in one transaction all become nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_many_rows() {
    let mut s = HubScenario::new(Source::Postgres, "hub-many").await;
    s.sql(&Source::Postgres.nodes_table("nodes")).await;
    s.create_hub("hub", &s.target("nodes"), "Stream", "1h").await;
    // A form without resources keeps this about the hub, not about 2000 ConfigMaps.
    s.create_form_object(json!({"apiVersion": "operator.lynq.sh/v1", "kind": "LynqForm",
                                "metadata": {"name": "web"}, "spec": {"hubId": "hub"}}))
        .await;
    s.start_operator();
    s.sql("INSERT INTO nodes VALUES ('first', TRUE, NULL)").await;
    s.node("first-web", |_| true).await;
    let t = Instant::now();
    s.sql("INSERT INTO nodes SELECT 'n' || i, TRUE, NULL FROM generate_series(1, 2000) AS i").await;
    s.node("n1-web", |_| true).await;
    eprintln!("[pg] 2000-row commit → first LynqNode: {:?}", t.elapsed());
    let lp = kube::api::ListParams::default().labels("lynq.sh/hub=hub");
    let nodes = s.nodes();
    crate::support::eventually("2001 nodes", std::time::Duration::from_secs(240), || {
        let (nodes, lp) = (nodes.clone(), lp.clone());
        async move { (nodes.list_metadata(&lp).await.ok()?.items.len() == 2001).then_some(()) }
    })
    .await;
    eprintln!("[pg] 2000-row commit → all 2000 LynqNodes: {:?}", t.elapsed());
}
