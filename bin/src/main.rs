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

mod demo;
mod events;
mod load;
mod process;
mod search;
mod serve;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use docstore::config::StoreConfig;
use docstore::meta::HoldChange;
use docstore::{DocStore, DocumentRecord, Error, Identity, Kind, PutRequest, Timestamp, VersionRecord};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Bodies larger than this get a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 8 * 1024 * 1024;

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
    Put(PutArgs),
    /// Write a version's content to a file or stdout.
    Get(GetArgs),
    /// List the versions of a document.
    Versions {
        /// Document id.
        document: String,
    },
    /// List the documents of a patient or an exam.
    List(ListArgs),
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
    Hold(HoldArgs),
    /// Show the audit trail (`docstore audit verify` checks its hash chain).
    Audit {
        #[command(subcommand)]
        check: Option<AuditCheck>,
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
    Rewrap(RewrapArgs),
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
    Demo(demo::DemoArgs),
    /// Push a day of exams (default 1,000: a 2–3 page report and a 12-megapixel image each)
    /// through the whole pipeline on the configured backends and measure it: exams/s, stage
    /// latencies, time to searchable, CPU, peak memory, errors (printed and written as JSON).
    Load(load::LoadArgs),
    /// Stamp, thumbnail, extract and index what was put on this store, in this process (the
    /// in-process bus): exits when nothing is left, or keeps following with --follow.
    Process(process::ProcessArgs),
    /// Search the staff full-text index (every search is audited).
    Search(search::SearchArgs),
    /// Rebuild the search index from the store, with a progress bar.
    Reindex(search::ReindexArgs),
    /// Publish the outbox (file.uploaded, file.processed) to the event bus.
    Relay(events::RelayArgs),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(events::DlqCommand),
    /// Serve the REST API (and, on the embedded default, run the pipeline in this process).
    Serve(serve::ServeArgs),
    /// Print a bearer token from the embedded local issuer (not for production).
    Token(serve::TokenArgs),
    /// Remove blobs that no record references and that are older than the grace period.
    Gc {
        /// Grace period (e.g. 24h, 30m, 0s).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

#[derive(Subcommand)]
enum AuditCheck {
    /// Check the audit file's hash chain: reports the first edited, removed or reordered line.
    Verify {
        /// Audit file (default: the configured one).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct PutArgs {
    /// File to store, or - for stdin.
    file: PathBuf,
    /// Patient id.
    #[arg(long)]
    patient: String,
    /// Exam id.
    #[arg(long)]
    exam: String,
    /// Document kind: report, image, attachment.
    #[arg(long, default_value = "report")]
    kind: Kind,
    /// Existing document to add a version to (default: a new document).
    #[arg(long)]
    document: Option<String>,
    /// Media type (default: guessed from the content and the file name).
    #[arg(long)]
    media_type: Option<String>,
    /// Only commit if the latest version is N (0: the document must be new).
    #[arg(long)]
    expected_version: Option<u64>,
}

#[derive(Args)]
struct GetArgs {
    /// Document id.
    document: String,
    /// Version number (default: latest).
    #[arg(long)]
    version: Option<u64>,
    /// Byte range START-END (end exclusive), decrypting only the frames it needs.
    #[arg(long, value_parser = parse_range)]
    range: Option<(u64, u64)>,
    /// Output file (default: stdout). Written to a temporary name and renamed only when every
    /// byte has authenticated, so a failed read leaves no file.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct RewrapArgs {
    /// Target key: `kms://alias/name` or `keyring:///abs/path.json` (created if missing).
    #[arg(long)]
    to: String,
    /// Only these documents (default: every document).
    #[arg(long = "document")]
    documents: Vec<String>,
    /// Resume after this document id (printed by an interrupted run).
    #[arg(long)]
    after: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ListArgs {
    /// Patient id.
    #[arg(long)]
    patient: Option<String>,
    /// Exam id.
    #[arg(long)]
    exam: Option<String>,
}

#[derive(Args)]
struct HoldArgs {
    /// Document id.
    document: String,
    /// Set the legal hold.
    #[arg(long, conflicts_with = "off")]
    on: bool,
    /// Clear the legal hold.
    #[arg(long)]
    off: bool,
    /// Keep until this date (2030-12-31 or RFC 3339).
    #[arg(long, conflicts_with = "clear_retention")]
    retain_until: Option<String>,
    /// Clear the retention date.
    #[arg(long)]
    clear_retention: bool,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or("expected START-END")?;
    let a: u64 = a.trim().parse().map_err(|_| "bad START")?;
    let b: u64 = b.trim().parse().map_err(|_| "bad END")?;
    if b <= a {
        return Err("END must be greater than START".into());
    }
    Ok((a, b))
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

fn guess_media_type(path: &Path, head: &[u8]) -> String {
    if head.starts_with(b"%PDF-") {
        return "application/pdf".into();
    }
    // Every image format the stages decode, sniffed by the decoder crate's own magic table, so
    // that what is stored as an image is what the stages read as one.
    if let Some(format) = docstore_pipeline::stages::thumbnail::image_format(head) {
        return format.to_mime_type().into();
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("txt") => "text/plain",
        Some("json") => "application/json",
        Some("dcm") => "application/dicom",
        _ => "application/octet-stream",
    }
    .into()
}

fn progress(len: u64, label: &str) -> ProgressBar {
    if len < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    bar.set_message(label.to_owned());
    bar
}

fn print_version(v: &VersionRecord) {
    say!(
        "{}  v{}  {}  {} bytes  sha256:{}  {}  by {}",
        v.document_id,
        v.version,
        v.media_type,
        v.size,
        v.sha256,
        v.created_at.to_rfc3339(),
        v.created_by
    );
}

fn print_document(d: &DocumentRecord) {
    let mut flags = Vec::new();
    if let Some(t) = d.deleted_at {
        flags.push(format!("deleted {}", t.to_rfc3339()));
    }
    if d.legal_hold {
        flags.push("legal hold".into());
    }
    if let Some(t) = d.retain_until {
        flags.push(format!("retained until {}", t.to_rfc3339()));
    }
    say!(
        "{}  patient {}  exam {}  {}  latest v{}{}",
        d.document_id,
        d.patient_id,
        d.exam_id,
        d.kind.as_str(),
        d.latest_version,
        if flags.is_empty() {
            String::new()
        } else {
            format!("  [{}]", flags.join(", "))
        }
    );
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
    let dir = &cli.data_dir;
    let config = StoreConfig::resolve(dir, cli.config.as_deref())?;
    let local = config.is_local(dir);
    if let Command::Init = cli.command {
        if local {
            DocStore::init_local(dir).await?;
        } else {
            config.open(true).await?;
        }
        emit(cli.json, &json!({"initialized": dir}), |_| {
            say!("initialised {}", dir.display());
            eprintln!("note: the local keyring is for development only; use AWS KMS in production");
        });
        return Ok(());
    }
    if let Command::Provision = cli.command {
        return provision(&config, cli.json).await;
    }
    if let Command::Audit {
        check: Some(AuditCheck::Verify { file }),
        ..
    } = &cli.command
    {
        let path = match file {
            Some(f) => f.clone(),
            None => PathBuf::from(config.audit.strip_prefix("file://").ok_or_else(|| {
                Error::InvalidInput("the configured audit sink is not a file: give --file".into())
            })?),
        };
        let report = docstore::audit::verify_chain(&path)?;
        emit(cli.json, &report, |r| match &r.first_break {
            None => say!("audit chain intact: {} records", r.lines),
            Some(b) => say!("audit chain broken at line {}: {}", b.line, b.reason),
        });
        return match report.first_break {
            None => Ok(()),
            Some(b) => Err(Error::Refused {
                document: path.display().to_string(),
                reason: format!("audit chain broken at line {}", b.line),
            }),
        };
    }
    if let Command::Token(a) = cli.command {
        return serve::token(dir, a);
    }
    if let Command::Dlq(cmd) = cli.command {
        return events::dlq(cmd, cli.json).await;
    }
    if let Command::Thumbnail { file, output } = &cli.command {
        return events::thumbnail(file, output.as_deref(), cli.json).await;
    }
    if let Command::Stamp {
        file,
        output,
        clinic,
        exam,
        patient,
        text,
    } = &cli.command
    {
        let info = docstore_pipeline::stages::stamp::StampInfo {
            clinic: clinic.clone(),
            exam_id: exam.clone(),
            patient_id: patient.clone(),
            // A file stamped by hand is released as it is stamped.
            time: docstore_pipeline::stages::release_time(Timestamp::now()),
            released: true,
            text: text.clone(),
        };
        return events::stamp(file, output.as_deref(), info, cli.json).await;
    }
    if let Command::Extract { file, output, ocr } = &cli.command {
        return events::extract(file, output.as_deref(), *ocr, cli.json).await;
    }
    if matches!(
        cli.command,
        Command::Demo(_) | Command::Load(_) | Command::Serve(_)
    ) {
        // The demo and the load start from nothing: they create the embedded store on first use.
        let store = match (local, DocStore::open_local(dir).await) {
            (true, Ok(s)) => s,
            (true, Err(Error::NotInitialized { .. })) => DocStore::init_local(dir).await?,
            (true, Err(e)) => return Err(e),
            (false, _) => config.open(false).await?,
        };
        return match cli.command {
            Command::Demo(a) => demo::demo(store, dir, a, cli.json).await,
            Command::Load(a) => load::load(store, dir, a, cli.json).await,
            Command::Serve(a) => serve::serve(store, dir, a).await,
            _ => unreachable!("matched above"),
        };
    }
    let store = if local {
        DocStore::open_local(dir).await?
    } else {
        config.open(false).await?
    };
    match cli.command {
        Command::Init
        | Command::Demo(_)
        | Command::Load(_)
        | Command::Provision
        | Command::Serve(_)
        | Command::Token(_)
        | Command::Dlq(_)
        | Command::Thumbnail { .. }
        | Command::Extract { .. }
        | Command::Stamp { .. } => {
            unreachable!("handled above")
        }
        Command::Relay(a) => events::relay(&store, a, cli.json).await?,
        Command::Process(a) => process::process(store, dir, a, cli.json).await?,
        Command::Search(a) => search::search(&store, &who, &cli.data_dir, a, cli.json).await?,
        Command::Reindex(a) => search::reindex(&store, &who, &cli.data_dir, a, cli.json).await?,
        Command::Rewrap(a) => {
            let mut target_cfg = config.clone();
            target_cfg.keys = a.to.clone();
            let target = target_cfg.key_provider(true)?;
            let report = store
                .rewrap(&who, target, &a.documents, a.after.as_deref())
                .await?;
            emit(cli.json, &report, |r| {
                say!(
                    "rewrapped {} versions and {} renditions, {} versions already under the target key, {} shredded left alone",
                    r.rewrapped,
                    r.renditions_rewrapped,
                    r.already,
                    r.shredded
                )
            });
        }
        Command::Shred {
            document,
            version,
            yes,
        } => {
            if !yes {
                return Err(Error::InvalidInput(
                    "shredding cannot be undone: repeat with --yes".into(),
                ));
            }
            let v = store.shred(&who, &document, version).await?;
            emit(cli.json, &v, |v| {
                say!(
                    "shredded {} v{}: its content can never be read again",
                    v.document_id,
                    v.version
                )
            });
        }
        Command::Put(a) => put(&store, &who, a, cli.json).await?,
        Command::Get(a) => get(&store, &who, a).await?,
        Command::Versions { document } => {
            let versions = store.versions(&who, &document).await?;
            emit(cli.json, &versions, |vs| vs.iter().for_each(print_version));
        }
        Command::List(a) => {
            let docs = match (a.patient, a.exam) {
                (Some(p), _) => store.documents_of_patient(&who, &p).await?,
                (None, Some(e)) => store.documents_of_exam(&who, &e).await?,
                (None, None) => unreachable!("clap requires one"),
            };
            emit(cli.json, &docs, |ds| ds.iter().for_each(print_document));
        }
        Command::Delete { document } => emit(cli.json, &store.delete(&who, &document).await?, print_document),
        Command::Restore { document } => {
            emit(cli.json, &store.restore(&who, &document).await?, print_document)
        }
        Command::Purge { document } => {
            let blobs = store.purge(&who, &document).await?;
            emit(cli.json, &json!({"purged": document, "blobs": blobs}), |_| {
                say!("purged {document} ({blobs} blobs)")
            });
        }
        Command::Hold(a) => {
            let retain_until = match (a.retain_until, a.clear_retention) {
                (Some(d), _) => Some(Some(Timestamp::parse(&d)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let legal_hold = if a.on {
                Some(true)
            } else if a.off {
                Some(false)
            } else {
                None
            };
            if legal_hold.is_none() && retain_until.is_none() {
                return Err(Error::InvalidInput(
                    "nothing to change: give --on, --off, --retain-until or --clear-retention".into(),
                ));
            }
            let doc = store
                .set_hold(
                    &who,
                    &a.document,
                    HoldChange {
                        legal_hold,
                        retain_until,
                    },
                )
                .await?;
            emit(cli.json, &doc, print_document);
        }
        Command::Audit { document, limit, .. } => {
            let records = store.audit_log(&who, document.as_deref(), limit).await?;
            emit(cli.json, &records, |rs| {
                for r in rs {
                    say!(
                        "{}  {:<14} {:<12} {}{}  {}",
                        r.at.to_rfc3339(),
                        r.action,
                        r.outcome,
                        r.document.as_deref().unwrap_or("-"),
                        r.version.map(|v| format!(" v{v}")).unwrap_or_default(),
                        r.actor
                    );
                }
            });
        }
        Command::Gc { grace } => {
            let report = store.gc(&who, grace).await?;
            emit(cli.json, &report, |r| {
                say!(
                    "scanned {} blobs, removed {} orphans, kept {} young orphans",
                    r.scanned,
                    r.removed,
                    r.young_orphans
                )
            });
        }
    }
    Ok(())
}

async fn provision(config: &StoreConfig, json_out: bool) -> Result<(), Error> {
    let mut created = Vec::new();
    if let Some(table) = config.metadata.strip_prefix("dynamodb://") {
        let client = docstore::aws::AwsSettings::from_env().dynamodb_client();
        docstore::meta::dynamodb::DynamoMetadata::create_table(&client, table).await?;
        created.push(format!("dynamodb table {table}"));
    }
    emit(json_out, &created, |c| {
        if c.is_empty() {
            say!("nothing to provision (S3 buckets and KMS keys are created by your infrastructure code)");
        }
        for item in c {
            say!("created {item}");
        }
    });
    Ok(())
}

async fn put(store: &DocStore, who: &Identity, a: PutArgs, json_out: bool) -> Result<(), Error> {
    let io = |e| Error::Io {
        path: a.file.display().to_string(),
        source: e,
    };
    let stdin = a.file.as_os_str() == "-";
    let (len, head) = if stdin {
        (0, Vec::new())
    } else {
        let mut head = vec![0u8; 16];
        let mut f = std::fs::File::open(&a.file).map_err(io)?;
        let n = std::io::Read::read(&mut f, &mut head).map_err(io)?;
        head.truncate(n);
        (f.metadata().map_err(io)?.len(), head)
    };
    let media_type = a
        .media_type
        .clone()
        .unwrap_or_else(|| guess_media_type(&a.file, &head));
    let req = PutRequest {
        document_id: a.document.clone(),
        patient_id: a.patient.clone(),
        exam_id: a.exam.clone(),
        kind: a.kind,
        media_type,
        expected_version: a.expected_version,
    };
    let bar = progress(len, "put");
    let record = if stdin {
        store.put(who, req, tokio::io::stdin()).await?
    } else {
        let f = tokio::fs::File::open(&a.file).await.map_err(io)?;
        // Each read of a tokio file is a blocking-pool hop: read 2 MiB at a time, not a frame.
        let f = tokio::io::BufReader::with_capacity(IO_BUF, f);
        store.put(who, req, bar.wrap_async_read(f)).await?
    };
    bar.finish_and_clear();
    emit(json_out, &record, print_version);
    Ok(())
}

async fn get(store: &DocStore, who: &Identity, a: GetArgs) -> Result<(), Error> {
    let out_err = |path: &Path| {
        let p = path.display().to_string();
        move |e| Error::Io { path: p, source: e }
    };
    if let Some((start, end)) = a.range {
        let bytes = store.get_range(who, &a.document, a.version, start..end).await?;
        return match &a.output {
            Some(path) => write_atomically(path, &bytes).await,
            None => tokio::io::stdout()
                .write_all(&bytes)
                .await
                .map_err(out_err(Path::new("stdout"))),
        };
    }
    let doc = store.get(who, &a.document, a.version).await?;
    let bar = progress(doc.record.size, "get");
    let mut stream = doc.into_stream();
    match &a.output {
        Some(path) => {
            let tmp = temp_name(path);
            let result = async {
                let f = create_private(&tmp).await.map_err(out_err(&tmp))?;
                // Each write of a tokio file is a blocking-pool hop: frames (64 KiB) are batched.
                let mut f = tokio::io::BufWriter::with_capacity(IO_BUF, f);
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    bar.inc(chunk.len() as u64);
                    f.write_all(&chunk).await.map_err(out_err(&tmp))?;
                }
                f.flush().await.map_err(out_err(&tmp))?;
                f.get_ref().sync_all().await.map_err(out_err(&tmp))?;
                tokio::fs::rename(&tmp, path).await.map_err(out_err(path))
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            result?;
        }
        None => {
            let mut out = tokio::io::BufWriter::with_capacity(IO_BUF, tokio::io::stdout());
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?)
                    .await
                    .map_err(out_err(Path::new("stdout")))?;
            }
            out.flush().await.map_err(out_err(Path::new("stdout")))?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// File reads and writes of `put` and `get` are batched to this size: tokio hands a file at most
/// 2 MiB per blocking read or write.
const IO_BUF: usize = 2 << 20;

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple()))
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_name(path);
    let io = |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let result = async {
        let mut f = create_private(&tmp).await?;
        f.write_all(bytes).await?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map_err(io)
}

/// A new file only its owner may read (decrypted content must not pass through a file others can
/// open); an existing file of that name is an error, never overwritten or followed.
async fn create_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
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
        if let Err(e) = docstore_pipeline::stages::ocr::ensure_single_omp_thread() {
            eprintln!("error: cannot re-execute with OMP_THREAD_LIMIT=1: {e}");
            return ExitCode::FAILURE;
        }
    }
    let json_out = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
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
