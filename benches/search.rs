//! Search at scale, our sealed index next to the same index as plain tantivy files (the cost of
//! sealing: size and latency ratios) and to PostgreSQL full-text search (`portuguese`
//! configuration) on the same synthetic lab reports: bulk indexing throughput (documents/s) and query latency (criterion
//! mean, plus p50/p99 over a fixed query mix, printed and written to
//! `$CARGO_TARGET_DIR/criterion/search-latency-<N>.json`).
//!
//! `DOCSTORE_SEARCH_DOCS` — comma-separated corpus sizes (default `100000`; `100000,1000000` for
//! the full comparison). `DOCSTORE_TEST_PG_URL` — a PostgreSQL to compare with (skipped without).
//! Each query returns the top 10 by relevance with the total count, as the `docstore search` API
//! does (ours also builds highlighted snippets; PostgreSQL builds `ts_headline` for its 10 rows).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use docstore::Timestamp;
use docstore_search::{IndexedVersion, SearchIndex, SearchQuery};
use docstore_tools::synthetic::Generator;

/// The query mix: single terms (common and rare), accents typed or not, plurals, phrases, AND.
const QUERIES: &[&str] = &[
    "hemoglobina",
    "creatinina",
    "tireoidiana",
    "triglicerideos",
    "glicoses",
    "\"colesterol total\"",
    "\"hemoglobina glicada\"",
    "ureia creatinina",
    "bilirrubina fosfatase",
    "leucócitos hemácias",
    "anisocitose",
    "\"filtração glomerular\"",
    "magalhães",
    "quimioluminescência",
    "cetonas nitrito",
];

fn sizes() -> Vec<usize> {
    // `cargo test --all-targets` runs benches once without `--bench`: a small corpus checks the
    // code path without the minutes a real run takes.
    if !std::env::args().any(|a| a == "--bench") {
        return vec![1_000];
    }
    std::env::var("DOCSTORE_SEARCH_DOCS")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// The `i`-th synthetic document set of size `n`, streamed (1M reports do not fit comfortably in
/// memory at once).
fn for_each_doc(n: usize, mut f: impl FnMut(IndexedVersion)) {
    let mut g = Generator::new(42, "Clínica São Lucas", (n / 4).max(10));
    for i in 0..n {
        let (patient_id, exam_id, text) = g.report_text();
        f(IndexedVersion {
            document_id: format!("doc-{i:08}"),
            version: 1,
            patient_id,
            exam_id,
            kind: "report".into(),
            clinic: "Clínica São Lucas".into(),
            created_at: Timestamp(1_764_000_000_000 + i as i64 * 60_000),
            text,
        });
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

fn report(name: &str, n: usize, index_secs: f64, p50: f64, p99: f64) {
    eprintln!(
        "{name} @ {n}: indexed {:.0} docs/s; query p50 {p50:.2} ms, p99 {p99:.2} ms",
        n as f64 / index_secs
    );
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = std::path::Path::new(&dir)
        .join("criterion")
        .join(format!("search-latency-{name}-{n}.json"));
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    let _ = std::fs::write(
        path,
        serde_json::json!({"engine": name, "docs": n, "index_docs_per_s": n as f64 / index_secs,
                           "p50_ms": p50, "p99_ms": p99})
        .to_string(),
    );
}

/// This process's resident memory now (VmRSS), MiB: what serving the index holds, heap and
/// mapped file pages alike.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Our index at `n` documents: sealed (as `docstore` keeps it), or plain tantivy files for the
/// comparison the scale-out issue asks for (size and latency ratios in the same run).
fn tantivy_bench(c: &mut Criterion, n: usize, sealed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let index = if sealed {
        // Sealed under a local keyring, as `docstore` seals it under the store's key provider.
        let ring = docstore::keys::keyring::Keyring::create(&dir.path().join("keyring")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(SearchIndex::open(&path, &ring)).unwrap()
    } else {
        SearchIndex::open_plaintext_for_comparison(&path).unwrap()
    };
    let name = if sealed { "tantivy-sealed" } else { "tantivy-plain" };
    let start = Instant::now();
    for_each_doc(n, |v| {
        let id = v.document_id.clone();
        index.replace_document(&id, &[v]).unwrap();
    });
    index.commit().unwrap();
    let index_secs = start.elapsed().as_secs_f64();
    // Serving starts once the merges the commits started are done (they would share the cores
    // with the queries timed below), and after one untimed pass of the mix.
    let index = index.finish_writing().unwrap();
    eprintln!("{name} @ {n}: index {} bytes after merges", dir_bytes(&path));
    for q in QUERIES {
        index.search(&SearchQuery::new(*q)).unwrap();
    }
    let mut lat = Vec::new();
    for _ in 0..20 {
        for q in QUERIES {
            let t = Instant::now();
            index.search(&SearchQuery::new(*q)).unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (p50, p99) = percentiles(lat);
    eprintln!(
        "{name} @ {n}: resident memory after the timed queries {} MiB",
        rss_mib()
    );
    report(name, n, index_secs, p50, p99);
    let mut g = c.benchmark_group("search_query");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    g.bench_function(BenchmarkId::new(name, n), |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            index
                .search(&SearchQuery::new(QUERIES[i % QUERIES.len()]))
                .unwrap()
        })
    });
    g.finish();
}

fn pg_bench(c: &mut Criterion, n: usize, url: &str) {
    use sqlx::Connection;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut conn = rt.block_on(sqlx::PgConnection::connect(url)).unwrap();
    let table = format!("fts_bench_{n}");
    rt.block_on(async {
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, patient text, kind text, created bigint, body text, \
             tsv tsvector GENERATED ALWAYS AS (to_tsvector('portuguese', body)) STORED)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    });
    let start = Instant::now();
    let mut batch = Vec::new();
    let flush = |conn: &mut sqlx::PgConnection, batch: &mut Vec<IndexedVersion>| {
        if batch.is_empty() {
            return;
        }
        let (ids, patients, bodies): (Vec<String>, Vec<String>, Vec<String>) = batch.drain(..).fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut a, mut b, mut c), mut v| {
                a.push(std::mem::take(&mut v.document_id));
                b.push(std::mem::take(&mut v.patient_id));
                c.push(std::mem::take(&mut v.text));
                (a, b, c)
            },
        );
        rt.block_on(
            sqlx::query(&format!(
                "INSERT INTO {table} (id, patient, kind, created, body) \
                 SELECT id, p, 'report', 0, b FROM unnest($1::text[], $2::text[], $3::text[]) AS t(id, p, b)"
            ))
            .bind(ids)
            .bind(patients)
            .bind(bodies)
            .execute(conn),
        )
        .unwrap();
    };
    for_each_doc(n, |v| {
        batch.push(v);
        if batch.len() == 2000 {
            flush(&mut conn, &mut batch);
        }
    });
    flush(&mut conn, &mut batch);
    rt.block_on(async {
        sqlx::query(&format!("CREATE INDEX ON {table} USING gin (tsv)"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let index_secs = start.elapsed().as_secs_f64();
    let sql = format!(
        "SELECT id, total, ts_headline('portuguese', body, q) FROM ( \
           SELECT id, body, q, ts_rank(tsv, q) AS r, count(*) OVER () AS total \
           FROM {table}, websearch_to_tsquery('portuguese', $1) q WHERE tsv @@ q \
           ORDER BY r DESC LIMIT 10) t ORDER BY r DESC"
    );
    let mut run = |q: &str| {
        rt.block_on(sqlx::query(&sql).bind(q).fetch_all(&mut conn))
            .unwrap();
    };
    // One untimed pass of the mix, as for tantivy.
    for q in QUERIES {
        run(q);
    }
    let mut lat = Vec::new();
    for _ in 0..3 {
        for q in QUERIES {
            let t = Instant::now();
            run(q);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (p50, p99) = percentiles(lat);
    report("postgres", n, index_secs, p50, p99);
    let mut g = c.benchmark_group("search_query");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function(BenchmarkId::new("postgres", n), |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            run(QUERIES[i % QUERIES.len()])
        })
    });
    g.finish();
    rt.block_on(sqlx::query(&format!("DROP TABLE {table}")).execute(&mut conn))
        .unwrap();
}

fn bench(c: &mut Criterion) {
    for n in sizes() {
        tantivy_bench(c, n, true);
        tantivy_bench(c, n, false);
        if let Ok(url) = std::env::var("DOCSTORE_TEST_PG_URL") {
            pg_bench(c, n, &url);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
