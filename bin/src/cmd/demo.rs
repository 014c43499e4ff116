//! `docstore demo`: the whole job on the embedded default, no servers. Generates synthetic
//! Portuguese lab reports and exam images, uploads them (versioned, envelope-encrypted), runs
//! every stage and the index through the in-process bus, then searches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use docstore::{DocStore, Error, ExamId, Identity, Kind, PatientId, PutRequest};
use docstore_search::{SearchIndex, SearchQuery};
use docstore_tools::local::{LocalConfig, LocalPipeline};
use docstore_tools::synthetic::Generator;
use indicatif::{ProgressBar, ProgressStyle};

/// `docstore demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Lab reports to generate.
    #[arg(long, default_value_t = 60)]
    reports: usize,
    /// Exam images to generate.
    #[arg(long, default_value_t = 12)]
    images: usize,
    /// Seed (the same seed generates the same documents).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Clinic name on stamps and in the index.
    #[arg(long, default_value = "Clínica São Lucas")]
    clinic: String,
    /// Longest the processing may take before the demo gives up.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// A progress bar in the CLI's one style (hidden when `quiet`).
pub(crate) fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    let b = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    b.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}  {{elapsed}}"))
            .expect("template"),
    );
    b
}

/// The CLI error of a search index failure.
pub(crate) fn index_err(e: docstore_search::SearchError) -> Error {
    Error::unavailable_from("index", e.to_string(), e)
}

pub(crate) async fn demo(
    store: DocStore,
    data_dir: &std::path::Path,
    a: DemoArgs,
    json_out: bool,
) -> Result<(), Error> {
    let started = Instant::now();
    let store = Arc::new(store);
    let quiet = json_out || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let who = Identity::new("demo:reception");
    let index = Arc::new(
        SearchIndex::open(&data_dir.join("index"), store.keys().as_ref())
            .await
            .map_err(index_err)?,
    );
    let before = index.len();

    // 1. Generate and upload.
    let mut generator = Generator::new(a.seed, a.clinic.clone(), (a.reports / 3).max(5));
    let total = a.reports + a.images;
    let up = bar(total as u64, "uploaded (encrypted)", quiet);
    let mut bytes = 0u64;
    for i in 0..total {
        let (patient, exam, kind, media_type, body) = if i < a.reports {
            let r = generator.report();
            (r.patient_id, r.exam_id, Kind::Report, "application/pdf", r.pdf)
        } else {
            let (p, e, jpeg) = generator.image(1600, 1200);
            (p, e, Kind::Image, "image/jpeg", jpeg)
        };
        bytes += body.len() as u64;
        let req = PutRequest::new(PatientId::new(patient)?, ExamId::new(exam)?)
            .kind(kind)
            .media_type(media_type);
        store.put(&who, req, &body[..]).await?;
        up.inc(1);
    }
    up.finish_and_clear();
    let uploaded_in = started.elapsed();

    // 2. Every stage and the index, through the in-process bus, until all is searchable.
    let processing = Instant::now();
    let pipeline = LocalPipeline::start(
        store.clone(),
        index.clone(),
        LocalConfig {
            clinic: a.clinic.clone(),
            ..LocalConfig::default()
        },
    );
    let done = bar(
        total as u64,
        "processed and indexed (stamp, thumbnail, text, index)",
        quiet,
    );
    let target = before + total as u64;
    loop {
        let n = index.len().saturating_sub(before);
        done.set_position(n);
        if index.len() >= target {
            break;
        }
        let failed: u64 = pipeline
            .metrics()
            .iter()
            .map(|(_, m)| m.dead_lettered.get())
            .sum();
        if failed > 0 || processing.elapsed() > a.timeout {
            pipeline.stop().await;
            return Err(Error::unavailable(
                "pipeline",
                format!("{n} of {total} processed; {failed} dead-lettered (see `docstore audit`)"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.finish_and_clear();
    pipeline.stop().await;
    let processed_in = processing.elapsed();

    // 3. Searches, as staff would run them (each audited).
    let staff = Identity::new("demo:staff");
    let mut queries = vec![
        ("hemoglobina", SearchQuery::new("hemoglobina")),
        ("glicoses (plural: stemmed)", SearchQuery::new("glicoses")),
        ("\"colesterol total\"", SearchQuery::new("\"colesterol total\"")),
        ("creatinina ureia", SearchQuery::new("creatinina ureia")),
        ("tireoidiana (no accent typed)", SearchQuery::new("tireoidiana")),
    ];
    let mut fuzzy = SearchQuery::new("hemoglobinna");
    fuzzy.fuzzy = true;
    queries.push(("hemoglobinna --fuzzy", fuzzy));
    let mut results = Vec::new();
    for (label, mut q) in queries {
        q.limit = 3;
        let r = docstore_search::search(&store, &index, &staff, q)
            .await
            .map_err(index_err)?;
        results.push((label, r));
    }

    if json_out {
        let v = serde_json::json!({
            "documents": total,
            "reports": a.reports,
            "images": a.images,
            "bytes": bytes,
            "upload_seconds": uploaded_in.as_secs_f64(),
            "processing_seconds": processed_in.as_secs_f64(),
            "total_seconds": started.elapsed().as_secs_f64(),
            "searches": results.iter().map(|(label, r)| serde_json::json!({"query": label, "results": r})).collect::<Vec<_>>(),
        });
        say!("{}", serde_json::to_string_pretty(&v).expect("serializable"));
        return Ok(());
    }
    say!(
        "{total} documents ({} reports, {} images, {:.1} MB) uploaded encrypted in {:.1}s; stamped, thumbnailed, text-extracted and indexed in {:.1}s",
        a.reports,
        a.images,
        bytes as f64 / 1e6,
        uploaded_in.as_secs_f64(),
        processed_in.as_secs_f64()
    );
    say!("store and index: {}\n", data_dir.display());
    let (bold, plain) = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("[", "]")
    };
    for (label, r) in &results {
        let kinds: Vec<String> = r.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        say!("search {label}: {} hits ({})", r.total, kinds.join(", "));
        for h in &r.hits {
            let v = &h.version;
            say!(
                "  {} v{}  patient {}  exam {}",
                v.document_id,
                v.version,
                v.patient_id,
                v.exam_id
            );
            if let Some(s) = &h.snippet {
                say!("    …{}…", s.marked(bold, plain).trim());
            }
        }
        say!();
    }
    say!(
        "try: docstore --data-dir {} search 'hemoglobina glicada'",
        data_dir.display()
    );
    Ok(())
}
