//! Search replicas on a real Kafka broker: a relay, a `text` worker and two index workers (two
//! search nodes, each its own consumer group and index directory) make uploads searchable on
//! both. A snapshot of the first node (its sealed files and its group's positions) starts a
//! third node that answers the same queries with the same hits and totals, having read no
//! document from the store (the audit log says so), and then follows the bus from the recorded
//! positions. An altered snapshot is refused with an integrity error, and neither the index
//! directories nor the snapshot objects hold a word of the reports.
//!
//! Needs `DOCSTORE_TEST_KAFKA` and `DOCSTORE_TEST_PG_URL` (scripts/services.sh); skipped without
//! them unless `DOCSTORE_REQUIRE_SERVICES` is set.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, WorkerProc, env};
use docstore::audit::AuditRecord;
use docstore::{DocStore, ExamId, Identity, PatientId, PutRequest};
use docstore_bus::{EventBus, Position, open_bus};
use docstore_search::snapshot;
use docstore_search::{SearchError, SearchIndex, SearchQuery};
use docstore_tools::synthetic::Generator;

const CLINIC: &str = "Clínica Réplica";
const WORKER: &str = "service:index-worker";

fn index_worker(env: &Env, node: &str, dir: &Path) -> WorkerProc {
    let dir = dir.display().to_string();
    let group = format!("docstore-index-{node}");
    WorkerProc::start(
        &env.root,
        &format!("index-{node}"),
        &[
            "--stage", "index", "--group", &group, "--index", &dir, "--clinic", CLINIC,
        ],
        &env.bus_url,
        &env.store_env,
    )
}

async fn upload(store: &DocStore, reports: &mut Generator) -> (String, Vec<String>) {
    let r = reports.report();
    let req = PutRequest::new(
        PatientId::new(&r.patient_id).unwrap(),
        ExamId::new(&r.exam_id).unwrap(),
    );
    let v = store
        .put(&Identity::new("test:reception"), req, &r.pdf[..])
        .await
        .unwrap();
    (v.document_id.to_string(), r.exams)
}

/// (document, version) of every hit, and the total, for `query` on the index in `dir`.
async fn answer(store: &DocStore, dir: &Path, query: &str) -> Option<(BTreeSet<(String, u64)>, usize)> {
    let index = SearchIndex::open_read_only(dir, store.keys().as_ref())
        .await
        .ok()?;
    index.refresh().ok()?;
    let mut q = SearchQuery::new(query);
    q.limit = 200;
    let found = index.search(&q).unwrap();
    let hits = found
        .hits
        .into_iter()
        .map(|h| (h.version.document_id.clone(), h.version.version))
        .collect();
    Some((hits, found.total))
}

/// Waits (bounded) until the index in `dir` holds every one of `docs`.
async fn wait_indexed(store: &DocStore, dir: &Path, docs: &[String]) {
    let start = Instant::now();
    loop {
        if let Some((hits, _)) = answer(store, dir, "").await {
            let ids: BTreeSet<&str> = hits.iter().map(|(d, _)| d.as_str()).collect();
            if docs.iter().all(|d| ids.contains(d.as_str())) {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{} not all indexed in {}",
            docs.len(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) until `group` has committed `events` messages in all.
async fn wait_committed(bus: &dyn EventBus, group: &str, events: u64) -> Vec<Position> {
    let topics: Vec<String> = docstore::outbox::INDEX_TOPICS
        .iter()
        .map(|t| t.to_string())
        .collect();
    let start = Instant::now();
    loop {
        let positions = bus.committed(group, &topics).await.unwrap();
        if positions.iter().map(|p| p.offset).sum::<u64>() >= events {
            return positions;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{group}: {positions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn audit_trail(root: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(root.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restored_from_a_snapshot_answers_like_the_others_without_reindexing() {
    let Some(env) = env().await else { return };
    let store = env.store.clone();
    let bus = open_bus(&env.bus_url).unwrap();
    let _relay = common::relay(&store, &env.bus_url);
    let _text = WorkerProc::start(
        &env.root,
        "text",
        &["--stage", "text", "--required", "text"],
        &env.bus_url,
        &env.store_env,
    );
    let (a, b, c) = (
        env.root.join("index-a"),
        env.root.join("index-b"),
        env.root.join("index-c"),
    );
    let _node_a = index_worker(&env, "a", &a);
    let _node_b = index_worker(&env, "b", &b);

    let mut reports = Generator::new(20, CLINIC, 4);
    let mut docs = Vec::new();
    let mut words = BTreeSet::new();
    for _ in 0..6 {
        let (doc, exams) = upload(&store, &mut reports).await;
        docs.push(doc);
        words.extend(
            exams
                .iter()
                .filter_map(|t| t.split_whitespace().next())
                .map(str::to_lowercase),
        );
    }
    wait_indexed(&store, &a, &docs).await;
    wait_indexed(&store, &b, &docs).await;
    let mut queries: Vec<String> = words.iter().take(6).cloned().collect();
    queries.push(String::new());
    queries.push(format!("clinic:\"{CLINIC}\""));
    for q in &queries {
        assert_eq!(
            answer(&store, &a, q).await,
            answer(&store, &b, q).await,
            "query {q:?}"
        );
    }

    // The snapshot of node A, with its group's positions: all six file.processed acknowledged.
    let positions = wait_committed(bus.as_ref(), "docstore-index-a", docs.len() as u64).await;
    let taken = snapshot::take(
        &a,
        store.blobs().as_ref(),
        store.keys().as_ref(),
        positions.clone(),
    )
    .await
    .unwrap();
    assert_eq!(taken.entries, docs.len() as u64);

    // An altered snapshot is refused, and nothing is left where it was to go.
    let objects = env.root.join("objects");
    let snapshot_dir = objects.join(snapshot::SNAPSHOT_PREFIX).join(&taken.id);
    let victim = docstore_testkit::files_under(&snapshot_dir.join("files"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let original = std::fs::read(&victim).unwrap();
    let mut altered = original.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x40;
    std::fs::write(&victim, &altered).unwrap();
    let refused = snapshot::restore(&c, store.blobs().as_ref(), store.keys().as_ref(), None).await;
    assert!(matches!(refused, Err(SearchError::Integrity(_))), "{refused:?}");
    assert!(!c.exists());
    std::fs::write(&victim, &original).unwrap();

    // Node C: restored, its group seeded at the snapshot's positions, then started.
    let restored = snapshot::restore(&c, store.blobs().as_ref(), store.keys().as_ref(), None)
        .await
        .unwrap();
    assert_eq!(restored.positions, positions);
    bus.seed("docstore-index-c", &restored.positions).await.unwrap();
    let mark = audit_trail(&env.root).len();
    let _node_c = index_worker(&env, "c", &c);
    for q in &queries {
        let on_a = answer(&store, &a, q).await;
        assert_eq!(answer(&store, &c, q).await, on_a, "query {q:?}");
    }

    // C follows the bus from there: a new upload reaches all three nodes.
    let (late, _) = upload(&store, &mut reports).await;
    for dir in [&a, &b, &c] {
        wait_indexed(&store, dir, std::slice::from_ref(&late)).await;
    }
    wait_committed(bus.as_ref(), "docstore-index-c", docs.len() as u64 + 1).await;
    // Since C started, the index workers read the new document and nothing else: C read none of
    // the six it restored.
    let read_since: BTreeSet<String> = audit_trail(&env.root)[mark..]
        .iter()
        .filter(|r| r.actor == WORKER)
        .filter_map(|r| r.document.clone())
        .collect();
    assert_eq!(read_since, BTreeSet::from([late.clone()]));

    // No word of the reports in any index file or snapshot object.
    let needles: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| w.len() >= 6)
        .collect();
    assert!(!needles.is_empty());
    let mut scanned = 0;
    for dir in [&a, &b, &c, &snapshot_dir] {
        for file in docstore_testkit::files_under(dir) {
            let bytes = std::fs::read(&file).unwrap();
            let lower = String::from_utf8_lossy(&bytes).to_lowercase();
            for w in &needles {
                assert!(!lower.contains(w), "{w:?} in {}", file.display());
            }
            scanned += 1;
        }
    }
    assert!(scanned > 10, "{scanned} files scanned");
}
