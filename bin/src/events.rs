//! `docstore relay`, `docstore dlq …` and the local stage commands: the pipeline side of the CLI.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use docstore::{DocStore, Error};
use docstore_pipeline::bus::{BusError, Delivery, EventBus, open_bus};
use docstore_pipeline::relay::{OutboxRelay, RelayError};
use docstore_pipeline::runtime::{dlq_headers, replay_dead_letters, shutdown_signal};
use serde_json::json;

/// Where the events go.
#[derive(Args, Debug, Clone)]
pub(crate) struct BusArgs {
    /// Event bus: `kafka://host:port[,…][?partitions=N&prefix=P]` or `memory://`.
    #[arg(long, env = "DOCSTORE_BUS")]
    bus: String,
}

/// `docstore relay`.
#[derive(Args, Debug)]
pub(crate) struct RelayArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// One pass over the pending entries, then exit (default: run until SIGTERM/SIGINT).
    #[arg(long)]
    once: bool,
    /// Entries per pass.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

/// `docstore dlq …`.
#[derive(Subcommand, Debug)]
pub(crate) enum DlqCommand {
    /// List the dead letters of a topic.
    List(DlqArgs),
    /// Show one dead letter (headers and event) by `partition:offset`.
    Show {
        #[command(flatten)]
        args: DlqArgs,
        /// `partition:offset`, as `dlq list` prints it.
        id: String,
    },
    /// Send dead letters back to their original topic (each once).
    Replay {
        #[command(flatten)]
        args: DlqArgs,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

/// Options shared by the `dlq` subcommands.
#[derive(Args, Debug)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Dead-letter topic.
    #[arg(long, default_value = "file.uploaded.dlq")]
    topic: String,
    /// How long to wait for more messages before concluding the topic is read.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

fn bus_err(e: BusError) -> Error {
    match e {
        BusError::Config(m) => Error::InvalidInput(m),
        other => Error::Unavailable {
            backend: "bus".into(),
            detail: other.to_string(),
        },
    }
}

fn bus(args: &BusArgs) -> Result<Arc<dyn EventBus>, Error> {
    open_bus(&args.bus).map_err(bus_err)
}

pub(crate) async fn relay(store: &DocStore, a: RelayArgs, json_out: bool) -> Result<(), Error> {
    let relay = OutboxRelay::new(store.metadata().clone(), bus(&a.bus)?, a.batch);
    if a.once {
        let mut total = 0;
        loop {
            let n = relay.run_once().await.map_err(|e| match e {
                RelayError::Store(e) => e,
                RelayError::Bus(e) => bus_err(e),
                other => Error::Metadata(other.to_string()),
            })?;
            total += n;
            if n < a.batch {
                break;
            }
        }
        crate::emit(json_out, &json!({"published": total}), |_| {
            say!("published {total} events")
        });
        return Ok(());
    }
    eprintln!("relaying the outbox to {}; stop with Ctrl-C", a.bus.bus);
    relay.run(Duration::from_millis(200), shutdown_signal()).await;
    Ok(())
}

/// Reads the whole topic as a throwaway group that never commits (so nothing is consumed).
async fn read_all(args: &DlqArgs) -> Result<Vec<Delivery>, Error> {
    let bus = bus(&args.bus)?;
    let group = format!("docstore-dlq-inspect-{}", uuid::Uuid::new_v4().simple());
    let mut sub = bus
        .subscribe(&group, std::slice::from_ref(&args.topic))
        .await
        .map_err(bus_err)?;
    let mut all = Vec::new();
    // Bounded: at most a million letters are listed.
    while all.len() < 1_000_000 {
        let batch = sub.poll(500, args.wait).await.map_err(bus_err)?;
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
    }
    all.sort_by_key(|d| (d.partition, d.offset));
    Ok(all)
}

fn header<'a>(d: &'a Delivery, k: &str) -> &'a str {
    d.message
        .headers
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn letter_json(d: &Delivery, with_event: bool) -> serde_json::Value {
    let mut v = json!({
        "id": format!("{}:{}", d.partition, d.offset),
        "key": d.message.key,
        "kind": header(d, dlq_headers::KIND),
        "attempts": header(d, dlq_headers::ATTEMPTS),
        "stage": header(d, dlq_headers::STAGE),
        "error": header(d, dlq_headers::ERROR),
        "original_topic": header(d, dlq_headers::ORIGINAL_TOPIC),
    });
    if with_event {
        v["headers"] = json!(
            d.message
                .headers
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()
        );
        // Events carry ids and digests, never content; a malformed one is shown as text.
        v["event"] = serde_json::from_slice(&d.message.payload)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&d.message.payload)));
    }
    v
}

pub(crate) async fn dlq(cmd: DlqCommand, json_out: bool) -> Result<(), Error> {
    match cmd {
        DlqCommand::List(args) => {
            let all = read_all(&args).await?;
            let rows: Vec<_> = all.iter().map(|d| letter_json(d, false)).collect();
            crate::emit(json_out, &rows, |rows| {
                say!("{} dead letters in {}", rows.len(), args.topic);
                for r in rows {
                    say!(
                        "{:<10} {:<36} {:<9} attempts={:<2} stage={:<10} {}",
                        r["id"].as_str().unwrap_or(""),
                        r["key"].as_str().unwrap_or(""),
                        r["kind"].as_str().unwrap_or(""),
                        r["attempts"].as_str().unwrap_or(""),
                        r["stage"].as_str().unwrap_or(""),
                        r["error"].as_str().unwrap_or(""),
                    );
                }
            });
            Ok(())
        }
        DlqCommand::Show { args, id } => {
            let all = read_all(&args).await?;
            let found = all
                .iter()
                .find(|d| format!("{}:{}", d.partition, d.offset) == id)
                .ok_or_else(|| Error::InvalidInput(format!("no dead letter {id} in {}", args.topic)))?;
            let v = letter_json(found, true);
            crate::emit(json_out, &v, |v| {
                say!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            });
            Ok(())
        }
        DlqCommand::Replay { args, max } => {
            let bus = bus(&args.bus)?;
            let n = replay_dead_letters(bus.as_ref(), &args.topic, max, args.wait)
                .await
                .map_err(bus_err)?;
            crate::emit(json_out, &json!({"replayed": n}), |_| {
                say!("replayed {n} dead letters from {}", args.topic)
            });
            Ok(())
        }
    }
}

/// Reads a local input file for a stage command, refusing files above `max` bytes.
fn read_limited(file: &std::path::Path, max: usize) -> Result<Vec<u8>, Error> {
    let io = |e| Error::io(file.display().to_string(), e);
    let meta = std::fs::metadata(file).map_err(io)?;
    if meta.len() > max as u64 {
        return Err(Error::InvalidInput(format!(
            "{}: {} bytes is above the limit",
            file.display(),
            meta.len()
        )));
    }
    std::fs::read(file).map_err(io)
}

/// `docstore thumbnail FILE`: the thumbnail stage on a local file.
pub(crate) async fn thumbnail(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    json_out: bool,
) -> Result<(), Error> {
    use docstore_pipeline::stages::thumbnail::{
        ThumbnailError, ThumbnailLimits, thumbnail_image, thumbnail_pdf,
    };
    let limits = ThumbnailLimits::default();
    let bytes = read_limited(file, limits.max_input)?;
    let thumb = tokio::task::spawn_blocking(move || {
        if bytes.starts_with(b"%PDF-") {
            thumbnail_pdf(&bytes, &limits)
        } else {
            thumbnail_image(&bytes, &limits)
        }
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("thumbnail task failed: {e}")))?
    .map_err(|e: ThumbnailError| Error::InvalidInput(format!("{}: {e}", file.display())))?;
    let out = output
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| file.with_extension("thumb.png"));
    std::fs::write(&out, &thumb.png).map_err(|e| Error::io(out.display().to_string(), e))?;
    let v = json!({"output": out, "width": thumb.width, "height": thumb.height,
                   "source_width": thumb.source_width, "source_height": thumb.source_height});
    crate::emit(json_out, &v, |_| {
        say!(
            "{} ({}×{} from {}×{})",
            out.display(),
            thumb.width,
            thumb.height,
            thumb.source_width,
            thumb.source_height
        )
    });
    Ok(())
}

/// `docstore extract FILE [--ocr]`: the text stage on a local PDF (or, with OCR, an image).
pub(crate) async fn extract(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    ocr: bool,
    json_out: bool,
) -> Result<(), Error> {
    use docstore_pipeline::stages::extract::{ExtractLimits, extract_pdf_text};
    let limits = ExtractLimits::default();
    let bytes = read_limited(file, limits.max_input)?;
    let name = file.display().to_string();
    let text = tokio::task::spawn_blocking(move || -> Result<_, String> {
        if ocr {
            return extract_with_ocr(&bytes, &limits);
        }
        extract_pdf_text(&bytes, &limits).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("extract task failed: {e}")))?
    .map_err(|e| Error::InvalidInput(format!("{name}: {e}")))?;
    let joined = text.joined();
    match output {
        Some(out) => std::fs::write(out, &joined).map_err(|e| Error::io(out.display().to_string(), e))?,
        None if !json_out => print!("{joined}"),
        None => {}
    }
    if json_out {
        let v = json!({"pages": text.page_count, "chars": text.chars(), "ocr_pages": text.ocr_pages,
                       "alternative_pages": text.alternative_pages,
                       "text": if output.is_none() { Some(&joined) } else { None }});
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(())
}

#[cfg(feature = "ocr")]
fn extract_with_ocr(
    bytes: &[u8],
    limits: &docstore_pipeline::stages::extract::ExtractLimits,
) -> Result<docstore_pipeline::stages::extract::ExtractedText, String> {
    use docstore_pipeline::stages::ocr;
    let settings = ocr::OcrSettings {
        languages: std::env::var("DOCSTORE_OCR_LANGUAGES").unwrap_or_else(|_| "por+eng".into()),
        ..ocr::OcrSettings::default()
    };
    if !bytes.starts_with(b"%PDF-") {
        return ocr::ocr_image(bytes, &settings).map_err(|e| e.to_string());
    }
    let mut text =
        docstore_pipeline::stages::extract::extract_pdf_text(bytes, limits).map_err(|e| e.to_string())?;
    ocr::fill_scanned_pages(bytes, &mut text, &settings).map_err(|e| e.to_string())?;
    Ok(text)
}

#[cfg(not(feature = "ocr"))]
fn extract_with_ocr(
    _: &[u8],
    _: &docstore_pipeline::stages::extract::ExtractLimits,
) -> Result<docstore_pipeline::stages::extract::ExtractedText, String> {
    Err("--ocr: this docstore was built without the `ocr` feature".into())
}

/// `docstore stamp FILE`: the stamp stage on a local PDF.
pub(crate) async fn stamp(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    info: docstore_pipeline::stages::stamp::StampInfo,
    json_out: bool,
) -> Result<(), Error> {
    use docstore_pipeline::stages::stamp::{StampLimits, stamp_pdf};
    let limits = StampLimits::default();
    let bytes = read_limited(file, limits.max_input)?;
    let stamped = tokio::task::spawn_blocking(move || stamp_pdf(&bytes, &info, &limits))
        .await
        .map_err(|e| Error::InvalidInput(format!("stamp task failed: {e}")))?
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", file.display())))?;
    let out = output
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| file.with_extension("stamped.pdf"));
    std::fs::write(&out, &stamped).map_err(|e| Error::io(out.display().to_string(), e))?;
    let v = json!({"output": out, "bytes": stamped.len()});
    crate::emit(json_out, &v, |_| {
        say!("{} ({} bytes)", out.display(), stamped.len())
    });
    Ok(())
}
