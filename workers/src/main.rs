//! `docstore-worker`: runs one processing stage from the event bus through the worker runtime.
//!
//! ```text
//! docstore-worker --stage verify --bus kafka://127.0.0.1:9092 --required verify
//! ```
//!
//! The store is chosen like the CLI's (`--config` TOML, `DOCSTORE_BLOBS`/`METADATA`/`KEYS`/`AUDIT`).
//! Each stage is its own consumer group (`docstore-<stage>` by default), reading `file.uploaded`.
//! Logs are JSON lines on stderr (`RUST_LOG` filters; default `info`), with the event's trace id.
//! `/metrics`, `/healthz` and `/readyz` are served on `--metrics-addr`.
//! SIGTERM or SIGINT: stop polling, finish the work in flight (bounded by `--shutdown-grace`),
//! commit, leave the group, exit 0. A bus failure restarts the consumer after a backoff.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use docstore::config::StoreConfig;
use docstore_bus::open_bus;
use docstore_pipeline::observe;
use docstore_pipeline::runtime::{RuntimeConfig, Stage, Worker, shutdown_signal};

#[derive(Parser, Debug)]
#[command(name = "docstore-worker", version, about = "Runs a docstore processing stage")]
struct Args {
    /// Stage to run.
    #[arg(long, env = "DOCSTORE_STAGE", value_parser = ["verify", "thumbnail", "text", "stamp", "index"])]
    stage: String,
    /// Event bus: `kafka://host:port[,…][?partitions=N&prefix=P&session_timeout_ms=T]`.
    #[arg(long, env = "DOCSTORE_BUS")]
    bus: String,
    /// Every stage `file.processed` waits for (comma-separated); default: this stage alone.
    #[arg(long, env = "DOCSTORE_STAGES", value_delimiter = ',')]
    required: Vec<String>,
    /// Consumer group (default `docstore-<stage>`).
    #[arg(long, env = "DOCSTORE_GROUP")]
    group: Option<String>,
    /// Data directory of an embedded store.
    #[arg(long, env = "DOCSTORE_DATA_DIR", default_value = "docstore-data")]
    data_dir: PathBuf,
    /// TOML file choosing the store's backends (see README: Configuration).
    #[arg(long, env = "DOCSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the metrics and health endpoints (port 0: any free port; the log says which).
    #[arg(long, env = "DOCSTORE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// Search index directory of the `index` stage (one writer per index: one index worker per
    /// directory).
    #[arg(long, env = "DOCSTORE_INDEX", default_value = "docstore-index")]
    index: PathBuf,
    /// Clinic name printed by the stamp stage and recorded by the index stage.
    #[arg(long, env = "DOCSTORE_CLINIC", default_value = "Clínica")]
    clinic: String,
    /// Partitions handled at once.
    #[arg(long, env = "DOCSTORE_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Text stage: recognise pages without a text layer and images with Tesseract (needs the
    /// `ocr` build feature and Debian's tesseract-ocr-por and tesseract-ocr-eng).
    #[arg(long, env = "DOCSTORE_OCR")]
    ocr: bool,
    /// Tesseract languages for `--ocr`.
    #[arg(long, env = "DOCSTORE_OCR_LANGUAGES", default_value = "por+eng")]
    ocr_languages: String,
    /// How long shutdown waits for the work in flight.
    #[arg(long, env = "DOCSTORE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

/// The text stage as configured: with OCR when asked for (and built in), checked at start-up so a
/// missing language pack stops the worker here rather than dead-lettering every scan.
#[cfg(feature = "text")]
fn extractor(args: &Args) -> Result<docstore_stages::Extractor, String> {
    use docstore_stages::Extractor;
    if !args.ocr {
        return Ok(Extractor::default());
    }
    #[cfg(feature = "ocr")]
    {
        use docstore_stages::ocr;
        ocr::check(&args.ocr_languages).map_err(|e| e.to_string())?;
        Ok(Extractor {
            ocr: Some(ocr::OcrSettings {
                languages: args.ocr_languages.clone(),
                ..ocr::OcrSettings::default()
            }),
            ..Extractor::default()
        })
    }
    #[cfg(not(feature = "ocr"))]
    Err("--ocr: this docstore-worker was built without the `ocr` feature".into())
}

/// A stage this binary was built without: each stage is a cargo feature, so a `verify` worker
/// links none of the parsers.
fn not_built(stage: &str) -> String {
    format!("stage {stage:?}: this docstore-worker was built without the `{stage}` feature")
}

/// The index stage: follows file.processed (text ready) and file.deleted; it is not part of
/// the join that produces file.processed.
#[cfg(feature = "index")]
async fn index_stage(args: &Args, store: Arc<docstore::DocStore>) -> Result<Arc<dyn Stage>, String> {
    let index = docstore_search::SearchIndex::open(&args.index, store.keys().as_ref())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(docstore_stages::index::Indexer::new(
        store,
        Arc::new(index),
        args.clinic.clone(),
    )))
}

#[cfg(not(feature = "index"))]
async fn index_stage(_: &Args, _: Arc<docstore::DocStore>) -> Result<Arc<dyn Stage>, String> {
    Err(not_built("index"))
}

/// One of the stages joined into file.processed.
// A binary built with none of these stages has only the refusal arm left.
#[allow(unreachable_code)]
fn joined_stage(
    args: &Args,
    store: Arc<docstore::DocStore>,
    required: Vec<String>,
) -> Result<Arc<dyn Stage>, String> {
    Ok(match args.stage.as_str() {
        #[cfg(feature = "verify")]
        "verify" => Arc::new(docstore_pipeline::join::Joined::new(
            docstore_pipeline::join::Verify,
            store,
            required,
        )),
        #[cfg(feature = "thumbnail")]
        "thumbnail" => Arc::new(docstore_pipeline::join::Joined::new(
            docstore_stages::Thumbnailer::default(),
            store,
            required,
        )),
        #[cfg(feature = "text")]
        "text" => Arc::new(docstore_pipeline::join::Joined::new(
            extractor(args)?,
            store,
            required,
        )),
        #[cfg(feature = "stamp")]
        "stamp" => Arc::new(docstore_pipeline::join::Joined::new(
            docstore_stages::Stamper::new(args.clinic.clone()),
            store,
            required,
        )),
        other => {
            let _ = (store, required);
            return Err(not_built(other));
        }
    })
}

async fn run(args: Args) -> Result<(), String> {
    let config = StoreConfig::resolve(&args.data_dir, args.config.as_deref()).map_err(|e| e.to_string())?;
    let store = Arc::new(config.open(false).await.map_err(|e| e.to_string())?);
    let (stage, topics): (Arc<dyn Stage>, Vec<&str>) = if args.stage == "index" {
        (
            index_stage(&args, store).await?,
            docstore::outbox::INDEX_TOPICS.to_vec(),
        )
    } else {
        let required = if args.required.is_empty() {
            vec![args.stage.clone()]
        } else {
            args.required.clone()
        };
        if !required.contains(&args.stage) {
            return Err(format!(
                "--required does not list this worker's stage {:?}",
                args.stage
            ));
        }
        (
            joined_stage(&args, store, required)?,
            vec![docstore::outbox::FILE_UPLOADED],
        )
    };
    let bus = open_bus(&args.bus).map_err(|e| e.to_string())?;
    let mut rc = RuntimeConfig::new(
        args.group
            .clone()
            .unwrap_or_else(|| format!("docstore-{}", args.stage)),
        &topics,
    );
    rc.concurrency = args.concurrency.max(1);
    rc.shutdown_grace = args.shutdown_grace;
    let worker = Worker::new(bus, stage, rc);
    let (addr, _server) = observe::serve(args.metrics_addr, &args.stage, worker.metrics())
        .await
        .map_err(|e| format!("metrics endpoint on {}: {e}", args.metrics_addr))?;
    tracing::info!(stage = %args.stage, metrics = %addr, "worker started");

    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    worker.run_until_cancelled(&stop).await;
    tracing::info!(stage = %args.stage, "worker stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(docstore_pipeline::observe::log_filter("info"))
        .with_writer(std::io::stderr)
        .init();
    docstore_pipeline::observe::install_redacting_panic_hook();
    let args = Args::parse();
    #[cfg(feature = "ocr")]
    if args.ocr {
        // Tesseract's OpenMP runtime reads OMP_THREAD_LIMIT at process start: re-execute with it.
        if let Err(e) = docstore_stages::ocr::ensure_single_omp_thread() {
            tracing::error!(error = %e, "cannot re-execute with OMP_THREAD_LIMIT=1");
            return ExitCode::FAILURE;
        }
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            ExitCode::FAILURE
        }
    }
}
