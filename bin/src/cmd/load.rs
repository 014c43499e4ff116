//! `docstore load`: a day of exams through the whole pipeline on the configured backends, with
//! progress bars; prints the figures and writes them as JSON (see `docstore_tools::load`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use docstore::{DocStore, Error};
use docstore_bus::{EventBus, open_bus};
use docstore_search::SearchIndex;
use docstore_tools::load::{LoadError, LoadPlan, LoadProgress, LoadReport};
use indicatif::MultiProgress;

/// `docstore load`.
#[derive(Args, Debug)]
pub(crate) struct LoadArgs {
    /// Exams in the day (each a report plus its images).
    #[arg(long, default_value_t = 1000)]
    exams: usize,
    /// Images per exam.
    #[arg(long, default_value_t = 1)]
    images_per_exam: usize,
    /// Image size, WIDTHxHEIGHT px (4032x3024: 12 megapixels).
    #[arg(long, default_value = "4032x3024", value_parser = parse_size)]
    image_size: (u32, u32),
    /// Distinct images generated and reused across exams.
    #[arg(long, default_value_t = 8)]
    distinct_images: usize,
    /// Exams per report, MIN-MAX (two fit a page: 3-6 gives two- to three-page reports).
    #[arg(long, default_value = "3-6", value_parser = parse_range)]
    exams_per_report: (usize, usize),
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 8)]
    upload_concurrency: usize,
    /// Pace the uploads at this many exams per second (e.g. 20, to read time to searchable at
    /// a steady rate); without it they go as fast as --upload-concurrency allows.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Event bus: `memory://` (in this process) or `kafka://host:port[?partitions=N&prefix=P]`;
    /// every stage runs in this process either way, each in its own consumer group.
    #[arg(long, env = "DOCSTORE_BUS", default_value = "memory://")]
    bus: String,
    /// Where the JSON report goes (default: DATA_DIR/load-report.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the generated documents to this folder (before the timed run), e.g. for
    /// scripts/peers.sh's shell pipeline of qpdf, vipsthumbnail, pdftoppm, pdftotext and age.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Index directory (default: DATA_DIR/index).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Seed (the same seed generates the same documents).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Clinic name on stamps and in the index.
    #[arg(long, default_value = "Clínica São Lucas")]
    clinic: String,
    /// Longest the run may take.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WIDTHxHEIGHT")?;
    let n = |v: &str| v.parse::<u32>().ok().filter(|n| (1..=20_000).contains(n));
    match (n(w), n(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err("width and height must be 1 to 20000".into()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("expected exams per second, a number above 0".into()),
    }
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    match (a.parse::<usize>(), b.parse::<usize>()) {
        (Ok(a), Ok(b)) if a >= 1 && b >= a => Ok((a, b)),
        _ => Err("expected MIN-MAX with 1 ≤ MIN ≤ MAX".into()),
    }
}

fn load_err(e: LoadError) -> Error {
    match e {
        LoadError::Store(e) => e,
        other => Error::unavailable_from("pipeline", other.to_string(), other),
    }
}

pub(crate) async fn load(
    store: DocStore,
    data_dir: &std::path::Path,
    a: LoadArgs,
    json_out: bool,
) -> Result<(), Error> {
    let bus: Arc<dyn EventBus> = open_bus(&a.bus).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let index_dir = a.index.clone().unwrap_or_else(|| data_dir.join("index"));
    let index = SearchIndex::open(&index_dir, store.keys().as_ref())
        .await
        .map_err(crate::cmd::demo::index_err)?;
    let plan = LoadPlan {
        exams: a.exams,
        images_per_exam: a.images_per_exam,
        image_size: a.image_size,
        distinct_images: a.distinct_images,
        exams_per_report: a.exams_per_report.0..=a.exams_per_report.1,
        upload_concurrency: a.upload_concurrency,
        rate: a.rate,
        seed: a.seed,
        clinic: a.clinic.clone(),
        timeout: a.timeout,
        export: a.export.clone(),
        ..LoadPlan::default()
    };
    let quiet = json_out || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bars = MultiProgress::new();
    // Added to the group only when shown: a bar added to it would draw even if hidden.
    let bar = |what: &str| {
        let b = crate::cmd::demo::bar(0, what, quiet);
        if quiet { b } else { bars.add(b) }
    };
    let (generated, uploaded, searchable) =
        (bar("generated"), bar("uploaded (encrypted)"), bar("searchable"));
    let report = docstore_tools::load::run(Arc::new(store), Arc::new(index), bus, &plan, |p| match p {
        LoadProgress::Generated(n, total) => {
            generated.set_length(total as u64);
            generated.set_position(n as u64);
        }
        LoadProgress::Running {
            uploaded: u,
            searchable: s,
            total,
            ..
        } => {
            for b in [&uploaded, &searchable] {
                b.set_length(total as u64);
            }
            uploaded.set_position(u as u64);
            searchable.set_position(s as u64);
        }
    })
    .await
    .map_err(load_err)?;
    for b in [&generated, &uploaded, &searchable] {
        b.finish_and_clear();
    }
    let mut report = report;
    report.index_bytes = std::fs::read_dir(&index_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let out = a.out.clone().unwrap_or_else(|| data_dir.join("load-report.json"));
    let value = serde_json::json!({
        "plan": {
            "exams": a.exams, "images_per_exam": a.images_per_exam,
            "image_size": format!("{}x{}", a.image_size.0, a.image_size.1),
            "exams_per_report": format!("{}-{}", a.exams_per_report.0, a.exams_per_report.1),
            "bus": bus_kind(&a.bus), "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "rate": a.rate,
        },
        "report": report,
    });
    let text = serde_json::to_string_pretty(&value).expect("serializable");
    std::fs::write(&out, format!("{text}\n")).map_err(|e| Error::io(out.display().to_string(), e))?;
    if json_out {
        say!("{text}");
    } else {
        print_report(&report, &out);
    }
    if report.failed_documents > 0 || !report.errors.is_empty() {
        return Err(Error::unavailable(
            "pipeline",
            format!("{} errors (see {})", report.errors.len(), out.display()),
        ));
    }
    Ok(())
}

/// The bus kind only: a Kafka URL names hosts, which do not belong in a shared report.
fn bus_kind(url: &str) -> &str {
    url.split_once("://").map_or(url, |(s, _)| s)
}

fn print_report(r: &LoadReport, out: &std::path::Path) {
    say!(
        "{} exams ({} reports, {} images, {:.1} MB) in {:.1} s: {:.1} exams/s; uploads took {:.1} s",
        r.exams,
        r.reports,
        r.images,
        r.bytes as f64 / 1e6,
        r.wall_seconds,
        r.exams_per_second,
        r.upload_seconds
    );
    let t = &r.time_to_searchable_ms;
    say!(
        "upload → searchable: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        t.p50,
        t.p95,
        t.p99,
        t.max
    );
    for (name, s) in &r.stages {
        let l = &s.latency_ms;
        say!(
            "  {name:<10} {:>6} done, {} dead-lettered, {} retried; p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
            s.processed,
            s.dead_lettered,
            s.retried,
            l.p50,
            l.p95,
            l.p99
        );
    }
    say!(
        "CPU {:.1} s ({:.2} cores busy), peak RSS {} MiB; generating took {:.1} s (not counted)",
        r.cpu_seconds,
        r.cores_busy,
        r.peak_rss_mib,
        r.generate_seconds
    );
    let q = &r.search_ms;
    say!(
        "search afterwards ({} queries x 10): p50 {:.2} ms, p99 {:.2} ms; index {:.1} MB",
        docstore_tools::load::SEARCH_MIX.len(),
        q.p50,
        q.p99,
        r.index_bytes as f64 / 1e6
    );
    for e in r.errors.iter().take(10) {
        say!("error: {e}");
    }
    say!("report: {}", out.display());
}
