//! One module per command, as `Command` in `main.rs` names them. Each takes the [`Ctx`] the
//! global options make and returns the library's [`Error`]; `main.rs` parses, dispatches with one
//! `match` and turns the error into a message and an exit code.

pub(crate) mod audit;
pub(crate) mod delete;
pub(crate) mod demo;
pub(crate) mod dlq;
pub(crate) mod extract;
pub(crate) mod gc;
pub(crate) mod get;
pub(crate) mod hold;
pub(crate) mod index;
pub(crate) mod init;
pub(crate) mod list;
pub(crate) mod load;
pub(crate) mod process;
pub(crate) mod provision;
pub(crate) mod purge;
pub(crate) mod put;
pub(crate) mod reindex;
pub(crate) mod relay;
pub(crate) mod restore;
pub(crate) mod rewrap;
pub(crate) mod search;
pub(crate) mod serve;
pub(crate) mod shred;
pub(crate) mod stamp;
pub(crate) mod thumbnail;
pub(crate) mod token;
pub(crate) mod versions;

use std::io::IsTerminal;
use std::path::PathBuf;

use docstore::config::StoreConfig;
use docstore::{DocStore, Error, Identity};
use indicatif::{ProgressBar, ProgressStyle};

/// What the global options decide, for every command.
pub(crate) struct Ctx {
    /// Who the audit log records (`--as`, default `cli:$USER`).
    pub(crate) who: Identity,
    /// The embedded store's data directory (`--data-dir`).
    pub(crate) dir: PathBuf,
    /// The backends (`--config` and the `DOCSTORE_*` overrides).
    pub(crate) config: StoreConfig,
    /// Whether the configuration is the embedded default in `dir`.
    pub(crate) local: bool,
    /// `--json`.
    pub(crate) json: bool,
}

impl Ctx {
    /// The configured store, which must exist.
    pub(crate) async fn store(&self) -> Result<DocStore, Error> {
        if self.local {
            DocStore::open_local(&self.dir).await
        } else {
            self.config.open(false).await
        }
    }

    /// The configured store; on the embedded default it is created on first use (the demo, the
    /// load and the service start from nothing).
    pub(crate) async fn store_or_init(&self) -> Result<DocStore, Error> {
        if !self.local {
            return self.config.open(false).await;
        }
        match DocStore::open_local(&self.dir).await {
            Err(Error::NotInitialized { .. }) => DocStore::init_local(&self.dir).await,
            other => other,
        }
    }
}

/// Bodies larger than this get a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 8 * 1024 * 1024;

/// File reads and writes of `put` and `get` are batched to this size: tokio hands a file at most
/// 2 MiB per blocking read or write.
pub(crate) const IO_BUF: usize = 2 << 20;

/// A byte progress bar on a terminal for bodies of [`PROGRESS_MIN`] or more, else a hidden one.
pub(crate) fn progress(len: u64, label: &str) -> ProgressBar {
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

/// Reads a local input file for a stage command, refusing files above `max` bytes.
pub(crate) fn read_limited(file: &std::path::Path, max: usize) -> Result<Vec<u8>, Error> {
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

/// A document as one line: id, patient, exam, kind, latest version and its flags.
pub(crate) fn print_document(d: &docstore::DocumentRecord) {
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

/// A version as one line: id, number, media type, size, digest, time and author.
pub(crate) fn print_version(v: &docstore::VersionRecord) {
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
