//! `docstore`: the command line over the docstore library. Argument parsing and output formatting
//! live here; every operation is a library call.

/// `println!` that ends the command quietly when the reader has gone (`docstore audit | head -1`):
/// what the command did is already committed, and nobody is left to tell.
macro_rules! say {
    () => {
        $crate::say_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use docstore::config::StoreConfig;
use docstore::{Error, Identity, Timestamp};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "docstore",
    version,
    about = "Versioned, envelope-encrypted exam documents"
)]
struct Cli {
    /// Data directory of the embedded store.
    #[arg(
        long,
        global = true,
        env = "DOCSTORE_DATA_DIR",
        default_value = "docstore-data"
    )]
    data_dir: PathBuf,
    /// Identity recorded in the audit log (default: cli:$USER).
    #[arg(long = "as", global = true, env = "DOCSTORE_ACTOR")]
    actor: Option<String>,
    /// TOML file choosing backends (see README: Configuration); `DOCSTORE_BLOBS`,
    /// `DOCSTORE_METADATA`, `DOCSTORE_KEYS` and `DOCSTORE_AUDIT` override it.
    #[arg(long, global = true, env = "DOCSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new data directory (SQLite metadata, local keyring, object folder, audit log).
    Init,
    /// Store a file (or - for stdin) as the next version of a document.
    Put(cmd::put::PutArgs),
    /// Write a version's content to a file or stdout.
    Get(cmd::get::GetArgs),
    /// List the versions of a document.
    Versions {
        /// Document id.
        document: String,
    },
    /// List the documents of a patient or an exam.
    List(cmd::list::ListArgs),
    /// Soft-delete a document (reads fail until restored).
    Delete {
        /// Document id.
        document: String,
    },
    /// Undo a soft delete.
    Restore {
        /// Document id.
        document: String,
    },
    /// Permanently remove a deleted document (refused under legal hold or retention).
    Purge {
        /// Document id.
        document: String,
    },
    /// Set or clear legal hold and retention.
    Hold(cmd::hold::HoldArgs),
    /// Show the audit trail (`docstore audit verify` checks its hash chain).
    Audit {
        #[command(subcommand)]
        check: Option<cmd::audit::AuditCheck>,
        /// Only records for this document.
        #[arg(long)]
        document: Option<String>,
        /// Newest N records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Create remote resources the configuration names (the DynamoDB table).
    Provision,
    /// Move versions to another master key without touching content (resumable).
    Rewrap(cmd::rewrap::RewrapArgs),
    /// Crypto-shred one version: destroy its wrapped key, so it can never be read again.
    Shred {
        /// Document id.
        document: String,
        /// Version to shred.
        #[arg(long)]
        version: u64,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Make a ~256 px PNG thumbnail of a local image or PDF (page 1) — the thumbnail stage, no store.
    Thumbnail {
        /// Image (JPEG, PNG, TIFF, WebP, GIF) or PDF file.
        file: PathBuf,
        /// Output PNG (default: FILE.thumb.png).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Stamp every page of a local PDF with a release stamp — the stamp stage, no store.
    Stamp {
        /// PDF file.
        file: PathBuf,
        /// Output PDF (default: FILE.stamped.pdf).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Clinic name.
        #[arg(long, env = "DOCSTORE_CLINIC", default_value = "Clínica")]
        clinic: String,
        /// Exam id printed on the stamp.
        #[arg(long, default_value = "-")]
        exam: String,
        /// Patient id printed on the stamp.
        #[arg(long, default_value = "-")]
        patient: String,
        /// The stamp's last line.
        #[arg(long, default_value = "Documento liberado eletronicamente")]
        text: String,
    },
    /// Extract the text of a local PDF, pages separated by form feeds — the text stage, no store.
    Extract {
        /// PDF file (or, with --ocr, an image).
        file: PathBuf,
        /// Output text file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Recognise pages without a text layer, and images, with Tesseract (built with the `ocr`
        /// feature; languages from DOCSTORE_OCR_LANGUAGES, default por+eng).
        #[arg(long)]
        ocr: bool,
    },
    /// Run the whole job on the embedded default: generate synthetic lab reports and exam images,
    /// upload them, stamp/thumbnail/extract/index them through the in-process bus, then search.
    Demo(cmd::demo::DemoArgs),
    /// Push a day of exams (default 1,000: a 2–3 page report and a 12-megapixel image each)
    /// through the whole pipeline on the configured backends and measure it: exams/s, stage
    /// latencies, time to searchable, CPU, peak memory, errors (printed and written as JSON).
    Load(cmd::load::LoadArgs),
    /// Stamp, thumbnail, extract and index what was put on this store, in this process (the
    /// in-process bus): exits when nothing is left, or keeps following with --follow.
    Process(cmd::process::ProcessArgs),
    /// Search the staff full-text index (every search is audited).
    Search(cmd::search::SearchArgs),
    /// Rebuild the search index from the store, with a progress bar.
    Reindex(cmd::reindex::ReindexArgs),
    /// Snapshots of the search index: take, restore (a new search node), status.
    #[command(subcommand)]
    Index(cmd::index::IndexCommand),
    /// Publish the outbox (file.uploaded, file.processed) to the event bus.
    Relay(cmd::relay::RelayArgs),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(cmd::dlq::DlqCommand),
    /// Serve the REST API (and, on the embedded default, run the pipeline in this process).
    Serve(cmd::serve::ServeArgs),
    /// Print a bearer token from the embedded local issuer (not for production).
    Token(cmd::token::TokenArgs),
    /// Remove blobs that no record references and that are older than the grace period.
    Gc {
        /// Grace period (e.g. 24h, 30m, 0s).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

/// Exit code per error class, so scripts can branch without parsing messages.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::NotFound { .. } => 3,
        Error::Conflict { .. } => 4,
        Error::Integrity { .. } => 5,
        Error::Refused { .. } | Error::Deleted { .. } => 6,
        Error::InvalidInput(_) => 7,
        Error::Key(_) | Error::KeyringPermissions { .. } => 8,
        Error::MetadataCorrupt { .. } | Error::NotInitialized { .. } => 9,
        Error::Shredded { .. } => 6,
        Error::KeyUnavailable { .. } => 8,
        Error::Unavailable { .. } => 10,
        _ => 1,
    }
}

fn emit<T: serde::Serialize>(json_out: bool, value: &T, human: impl FnOnce(&T)) {
    if json_out {
        say!("{}", serde_json::to_string_pretty(value).expect("serializable"));
    } else {
        human(value);
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let who = Identity::new(cli.actor.clone().unwrap_or_else(|| {
        format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        )
    }));
    let config = StoreConfig::resolve(&cli.data_dir, cli.config.as_deref())?;
    let ctx = cmd::Ctx {
        who,
        local: config.is_local(&cli.data_dir),
        config,
        dir: cli.data_dir,
        json: cli.json,
    };
    let (dir, json) = (&ctx.dir, ctx.json);
    match cli.command {
        Command::Init => cmd::init::run(&ctx).await,
        Command::Provision => cmd::provision::run(&ctx).await,
        Command::Put(a) => cmd::put::run(&ctx, a).await,
        Command::Get(a) => cmd::get::run(&ctx, a).await,
        Command::Versions { document } => cmd::versions::run(&ctx, document).await,
        Command::List(a) => cmd::list::run(&ctx, a).await,
        Command::Delete { document } => cmd::delete::run(&ctx, document).await,
        Command::Restore { document } => cmd::restore::run(&ctx, document).await,
        Command::Purge { document } => cmd::purge::run(&ctx, document).await,
        Command::Hold(a) => cmd::hold::run(&ctx, a).await,
        Command::Audit {
            check: Some(cmd::audit::AuditCheck::Verify { file }),
            ..
        } => cmd::audit::verify(&ctx, file),
        Command::Audit {
            check: None,
            document,
            limit,
        } => cmd::audit::show(&ctx, document, limit).await,
        Command::Rewrap(a) => cmd::rewrap::run(&ctx, a).await,
        Command::Shred {
            document,
            version,
            yes,
        } => cmd::shred::run(&ctx, document, version, yes).await,
        Command::Gc { grace } => cmd::gc::run(&ctx, grace).await,
        Command::Thumbnail { file, output } => cmd::thumbnail::run(&file, output.as_deref(), json).await,
        Command::Stamp {
            file,
            output,
            clinic,
            exam,
            patient,
            text,
        } => {
            let info = docstore_stages::stamp::StampInfo {
                clinic,
                exam_id: exam,
                patient_id: patient,
                // A file stamped by hand is released as it is stamped.
                time: docstore_stages::release_time(Timestamp::now()),
                released: true,
                text,
            };
            cmd::stamp::run(&file, output.as_deref(), info, json).await
        }
        Command::Extract { file, output, ocr } => {
            cmd::extract::run(&file, output.as_deref(), ocr, json).await
        }
        Command::Demo(a) => cmd::demo::demo(ctx.store_or_init().await?, dir, a, json).await,
        Command::Load(a) => cmd::load::load(ctx.store_or_init().await?, dir, a, json).await,
        Command::Serve(a) => cmd::serve::serve(ctx.store_or_init().await?, dir, a).await,
        Command::Token(a) => cmd::token::run(dir, a),
        Command::Process(a) => cmd::process::process(ctx.store().await?, dir, a, json).await,
        Command::Search(a) => cmd::search::search(&ctx.store().await?, &ctx.who, dir, a, json).await,
        Command::Reindex(a) => cmd::reindex::run(&ctx.store().await?, &ctx.who, dir, a, json).await,
        Command::Index(c) => cmd::index::run(&ctx.store().await?, dir, c, json).await,
        Command::Relay(a) => cmd::relay::run(&ctx.store().await?, a, json).await,
        Command::Dlq(c) => cmd::dlq::run(c, json).await,
    }
}

/// One line to standard output; see [`say!`]. A closed pipe exits 0, any other write failure
/// exits 1 with a one-line error instead of a panic.
fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// A reader of standard output that went away (`docstore get d | head -c 10`).
fn is_closed_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// mimalloc instead of glibc's allocator: a request allocates and frees many small buffers from
/// several threads (runtime, SQLite worker, audit writer), and glibc's consolidation and bin
/// unlinking were 9 % of a metadata list's CPU (see `docs/benchmarks/`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc settings for `serve`: freed pages go back to the kernel with `MADV_FREE` after 1 s
/// idle, instead of being unmapped after 10 ms. With the defaults a 1 MB download's buffers came
/// back as fresh zeroed pages (page faults and `clear_page`), and the unmapping itself sat in
/// the tail: at 64 connections, 1,240 downloads/s with p99 172 ms against 1,345 and 73 ms
/// (`docs/benchmarks/http-2026-12-07.md`). mimalloc reads them only at process start.
const SERVE_ALLOCATOR: &[(&str, &str)] = &[
    ("MIMALLOC_PURGE_DECOMMITS", "0"),
    ("MIMALLOC_PURGE_DELAY", "1000"),
];

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The pipeline the demo and the load run in this process logs like the workers: JSON lines on
    // stderr, ids and error classes only (`RUST_LOG` filters; default warnings and errors).
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(docstore_pipeline::observe::log_filter("warn"))
        .with_writer(std::io::stderr)
        .init();
    docstore_pipeline::observe::install_redacting_panic_hook();
    #[cfg(feature = "ocr")]
    if matches!(cli.command, Command::Extract { ocr: true, .. }) {
        // Tesseract's OpenMP runtime reads OMP_THREAD_LIMIT at process start: re-execute with it.
        if let Err(e) = docstore_stages::ocr::ensure_single_omp_thread() {
            eprintln!("error: cannot re-execute with OMP_THREAD_LIMIT=1: {e}");
            return ExitCode::FAILURE;
        }
    }
    if matches!(cli.command, Command::Serve(_))
        && let Err(e) = docstore_pipeline::process::reexec_with_defaults(SERVE_ALLOCATOR)
    {
        eprintln!("error: cannot re-execute with the allocator's settings: {e}");
        return ExitCode::FAILURE;
    }
    let json_out = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if matches!(e, Error::NotInitialized { .. }) {
                eprintln!("hint: run `docstore init` first");
            }
            if json_out {
                say!(
                    "{}",
                    json!({"error": {"class": e.class(), "message": e.to_string()}})
                );
            }
            ExitCode::from(exit_code(&e))
        }
    }
}
