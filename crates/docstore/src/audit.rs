//! The audit trail: who did what to which document, when, and how it ended.
//!
//! Records carry ids, actions and error classes only, never content or keys. The embedded sink is
//! an append-only JSON-lines file that a deployment can tail and ship elsewhere; each line carries
//! the SHA-256 of the one before it (`prev`), so an edited, removed or reordered line is found by
//! [`verify_chain`] (`docstore audit verify`), and each record is fsynced before the operation
//! it audits is acknowledged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Timestamp;

/// One audited operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the operation finished.
    pub at: Timestamp,
    /// Caller identity.
    pub actor: String,
    /// Operation (`put`, `get`, `get_range`, `versions`, `delete`, `restore`, `purge`, `hold`,
    /// `list_patient`, `list_exam`, `key_generate`, `key_unwrap`, `gc`).
    pub action: String,
    /// Document id, when the operation names one.
    pub document: Option<String>,
    /// Version, when the operation names one.
    pub version: Option<u64>,
    /// `ok`, or the error class (see [`Error::class`]).
    pub outcome: String,
    /// Extra non-sensitive detail (range, patient id of a listing, counts).
    pub detail: Option<String>,
}

/// Where audit records go. Writing must not fail silently: an operation whose audit record cannot be
/// written fails.
#[async_trait]
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Appends a record.
    async fn record(&self, record: AuditRecord) -> Result<()>;
    /// Reads records back, oldest first, optionally for one document, at most `limit` (newest).
    async fn read(&self, document: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>>;
}

/// The `prev` of the first record of a chain.
pub const CHAIN_START: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A record as a line of the audit file: the record's fields plus `prev`, the hex SHA-256 of the
/// previous line's bytes (without its newline). Editing, deleting, inserting or reordering lines
/// breaks the chain at the next line ([`verify_chain`]).
#[derive(Serialize)]
struct ChainedLine<'a> {
    #[serde(flatten)]
    record: &'a AuditRecord,
    prev: &'a str,
}

#[derive(Debug)]
struct Chain {
    file: std::fs::File,
    /// Hex SHA-256 of the last complete line.
    last: String,
    /// Lines written since open.
    written: u64,
}

#[derive(Debug)]
struct Synced {
    /// A handle on the same file, for `fsync` outside the write lock.
    file: std::fs::File,
    /// Lines known durable.
    upto: u64,
}

/// Append-only, hash-chained JSON-lines audit file, made durable like the metadata: a record is
/// acknowledged only after an `fsync` that covers it. Concurrent writers share fsyncs (group
/// commit): whoever syncs makes every line written before it durable.
#[derive(Debug)]
pub struct JsonlAudit {
    path: PathBuf,
    chain: std::sync::Arc<Mutex<Chain>>,
    synced: std::sync::Arc<Mutex<Synced>>,
}

fn line_hash(line: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(line))
}

/// The hash of the last complete line of `path` (its last 1 MiB is read), or [`CHAIN_START`].
fn last_line_hash(file: &mut std::fs::File) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    let from = len.saturating_sub(1024 * 1024);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    // A torn last write (no newline) is not part of the chain; `verify_chain` reports it.
    let complete = match tail.iter().rposition(|b| *b == b'\n') {
        Some(end) => &tail[..end],
        None => return Ok(CHAIN_START.to_owned()),
    };
    let start = complete.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if start == 0 && from > 0 {
        return Err(std::io::Error::other("audit line longer than 1 MiB"));
    }
    Ok(line_hash(&complete[start..]))
}

impl JsonlAudit {
    /// Opens (creating with mode 0600) the audit file, continuing its chain.
    pub fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e| Error::io(path.display().to_string(), e);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let last = last_line_hash(&mut file).map_err(io)?;
        let sync_handle = file.try_clone().map_err(io)?;
        Ok(JsonlAudit {
            path: path.to_owned(),
            chain: std::sync::Arc::new(Mutex::new(Chain {
                file,
                last,
                written: 0,
            })),
            synced: std::sync::Arc::new(Mutex::new(Synced {
                file: sync_handle,
                upto: 0,
            })),
        })
    }
}

#[async_trait]
impl AuditSink for JsonlAudit {
    async fn record(&self, record: AuditRecord) -> Result<()> {
        let (chain, synced, path) = (self.chain.clone(), self.synced.clone(), self.path.clone());
        // The write and the fsync block: keep them off the async workers.
        let done = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let seq = {
                let mut c = chain.lock().unwrap_or_else(|p| p.into_inner());
                let mut line = serde_json::to_vec(&ChainedLine {
                    record: &record,
                    prev: &c.last,
                })
                .expect("serializable");
                let hash = line_hash(&line);
                line.push(b'\n');
                // One write of a whole line on an O_APPEND file: lines never interleave.
                c.file.write_all(&line)?;
                c.last = hash;
                c.written += 1;
                c.written
            };
            let mut s = synced.lock().unwrap_or_else(|p| p.into_inner());
            if s.upto >= seq {
                return Ok(());
            }
            let upto = chain.lock().unwrap_or_else(|p| p.into_inner()).written;
            s.file.sync_data()?;
            s.upto = upto;
            Ok(())
        })
        .await
        .map_err(|e| Error::io(path.display().to_string(), std::io::Error::other(e.to_string())))?;
        done.map_err(|e| Error::io(self.path.display().to_string(), e))
    }

    async fn read(&self, document: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>> {
        let text =
            std::fs::read_to_string(&self.path).map_err(|e| Error::io(self.path.display().to_string(), e))?;
        let mut out: Vec<AuditRecord> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
            .filter(|r| document.is_none() || r.document.as_deref() == document)
            .collect();
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        Ok(out)
    }
}

/// Where an audit chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// 1-based line number of the first line that does not follow its predecessor.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// What [`verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Lines read.
    pub lines: usize,
    /// The first break, if any.
    pub first_break: Option<ChainBreak>,
}

/// Checks an audit file's hash chain from its first line. A changed line breaks the chain at
/// the line after it; a removed, inserted or reordered line breaks it where it happened. A
/// rewrite of the whole file from some line to the end is not detectable from the file alone:
/// anchor the last hash elsewhere (a log shipper, a WORM bucket) for that.
pub fn verify_chain(path: &Path) -> Result<ChainReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut prev = CHAIN_START.to_owned();
    let mut lines = 0;
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        lines += 1;
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => {
                return Ok(ChainReport {
                    lines,
                    first_break: Some(ChainBreak {
                        line: lines,
                        reason: "torn: the last line has no end (an interrupted write)".into(),
                    }),
                });
            }
        };
        let stated = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("prev").and_then(|p| p.as_str()).map(str::to_owned));
        let broken = match stated {
            None => Some("not a chained audit record".to_owned()),
            Some(p) if p != prev => Some(if lines == 1 {
                "the first line does not start the chain (lines before it were removed)".to_owned()
            } else {
                format!(
                    "does not follow line {}: that line was changed, or lines were removed, inserted or reordered here",
                    lines - 1
                )
            }),
            Some(_) => None,
        };
        if let Some(reason) = broken {
            return Ok(ChainReport {
                lines,
                first_break: Some(ChainBreak { line: lines, reason }),
            });
        }
        prev = line_hash(line);
        rest = next;
    }
    Ok(ChainReport {
        lines,
        first_break: None,
    })
}

/// In-memory audit sink for tests and embedding.
#[derive(Debug, Default)]
pub struct MemoryAudit(Mutex<Vec<AuditRecord>>);

#[async_trait]
impl AuditSink for MemoryAudit {
    async fn record(&self, record: AuditRecord) -> Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        Ok(())
    }

    async fn read(&self, document: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<AuditRecord> = all
            .iter()
            .filter(|r| document.is_none() || r.document.as_deref() == document)
            .cloned()
            .collect();
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        Ok(out)
    }
}
