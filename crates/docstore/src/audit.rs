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
    /// Appends a record, returning once it is durable.
    async fn record(&self, record: AuditRecord) -> Result<()>;
    /// Appends a record, returning once it is queued in order: a later [`AuditSink::record`] that
    /// returns `Ok` has made it durable too, and one that fails may have lost it. Sinks without a
    /// queue make it durable here. Used by the library inside [`deferred`] only.
    async fn record_queued(&self, record: AuditRecord) -> Result<()> {
        self.record(record).await
    }
    /// Reads records back, oldest first, optionally for one document, at most `limit` (newest).
    async fn read(&self, document: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>>;
}

tokio::task_local! {
    static DEFERRED: ();
}

/// Runs `work` with the library's own audit records queued rather than waited for, one by one
/// ([`AuditSink::record_queued`]). Whoever runs it must then write a record with
/// [`AuditSink::record`] on the same sink, and succeed, before acknowledging anything `work`
/// did: that one record's durability covers the queued ones (one file, written in order), and
/// its failure fails the whole. The HTTP service runs each request so, ending with the request's
/// record, which turns a download's three or four fsync waits into one.
pub async fn deferred<F: std::future::Future>(work: F) -> F::Output {
    DEFERRED.scope((), work).await
}

/// Whether the current task runs inside [`deferred`].
pub(crate) fn is_deferred() -> bool {
    DEFERRED.try_with(|()| ()).is_ok()
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

/// A record waiting for the writer, and who to tell once it is durable.
struct Pending {
    record: AuditRecord,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

/// Records queued beyond this make callers wait (bounded memory under a stalled disk).
const QUEUE: usize = 4096;
/// Most records one write and one fsync cover.
const BATCH: usize = 512;
/// Shortest time between two fsyncs (PostgreSQL's `commit_delay`, made adaptive). On a fast disk
/// an fsync ends before the next request's record arrives, so without it every request paid its
/// own (one per request at 2,700 requests/s, a sixth of a core in the kernel). A record arriving
/// after a quiet spell is written at once; under load, records wait at most this long for the
/// others of their interval. At 1 ms a 1 MB download load still synced about once per request
/// (a tenth of the server's CPU in fdatasync and the disk's doorbell); 4 ms cut the CPU per
/// download by about 12 % (2 ms and 8 ms did less), for at most 4 ms more wait on a busy server.
const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(4);

/// Append-only, hash-chained JSON-lines audit file, made durable like the metadata: a record is
/// acknowledged only after an `fsync` that covers it. One writer thread owns the file and the
/// chain; it takes every record queued while it was busy, writes them with one `write` and makes
/// them durable with one `fsync` (group commit), so concurrent requests share both and no async
/// worker ever blocks on the disk.
#[derive(Debug)]
pub struct JsonlAudit {
    path: PathBuf,
    queue: tokio::sync::mpsc::Sender<Pending>,
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

/// Bytes of queued records ([`AuditSink::record_queued`]) held before they are written anyway.
const HOLD: usize = 256 * 1024;

/// The writer thread: batches, chains, writes, syncs, answers. Records nobody waits for (queued
/// inside [`deferred`]) are chained and held until a record somebody waits for arrives, then
/// written and synced with it: one write and one fsync for a whole request. After a failed write
/// or sync the file's tail is unknown, so every later record fails too (the operations they audit
/// are refused) until the process reopens the file.
fn write_loop(mut file: std::fs::File, last: String, mut queue: tokio::sync::mpsc::Receiver<Pending>) {
    let mut broken: Option<String> = None;
    // Lines chained after the file's last line but not written yet, and the hash of the last of
    // them (after a write, the file's last line).
    let (mut held, mut held_chain) = (Vec::<u8>::new(), last);
    let mut last_sync: Option<std::time::Instant> = None;
    loop {
        let first = queue.blocking_recv();
        let closing = first.is_none();
        if let Some(at) = last_sync
            && !closing
        {
            // Busy: let this millisecond's other records join the batch.
            let since = at.elapsed();
            if since < COMMIT_INTERVAL {
                std::thread::sleep(COMMIT_INTERVAL - since);
            }
        }
        let mut batch: Vec<Pending> = first.into_iter().collect();
        while !closing && batch.len() < BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if broken.is_none() {
            for p in &batch {
                let mut line = serde_json::to_vec(&ChainedLine {
                    record: &p.record,
                    prev: &held_chain,
                })
                .unwrap_or_default();
                held_chain = line_hash(&line);
                line.push(b'\n');
                held.extend_from_slice(&line);
            }
            let awaited = batch.iter().any(|p| !p.done.is_closed());
            if (awaited || closing || held.len() >= HOLD) && !held.is_empty() {
                // One write of whole lines on an O_APPEND file, then one fsync for all of them.
                if let Err(e) = file.write_all(&held).and_then(|()| file.sync_data()) {
                    broken = Some(format!("audit file write failed: {e}"));
                }
                held.clear();
                last_sync = Some(std::time::Instant::now());
            }
        }
        let result = broken.as_ref().map_or(Ok(()), |why| Err(why.clone()));
        for p in batch {
            let _ = p.done.send(result.clone().map_err(std::io::Error::other));
        }
        if closing {
            return;
        }
    }
}

impl JsonlAudit {
    /// Opens (creating with mode 0600) the audit file, continuing its chain, and starts its
    /// writer thread (which ends when the sink is dropped, after the records queued).
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
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("docstore-audit".into())
            .spawn(move || write_loop(file, last, rx))
            .map_err(io)?;
        Ok(JsonlAudit {
            path: path.to_owned(),
            queue,
        })
    }
}

impl JsonlAudit {
    /// Hands a record to the writer thread; a full queue (the disk stalls) makes the caller wait,
    /// never grow memory.
    async fn enqueue(&self, pending: Pending) -> Result<()> {
        self.queue.send(pending).await.map_err(|_| {
            Error::io(
                self.path.display().to_string(),
                std::io::Error::other("audit writer stopped"),
            )
        })
    }
}

#[async_trait]
impl AuditSink for JsonlAudit {
    async fn record(&self, record: AuditRecord) -> Result<()> {
        let io = |e| Error::io(self.path.display().to_string(), e);
        let (done, durable) = tokio::sync::oneshot::channel();
        self.enqueue(Pending { record, done }).await?;
        durable
            .await
            .map_err(|_| io(std::io::Error::other("audit writer stopped")))?
            .map_err(io)
    }

    async fn record_queued(&self, record: AuditRecord) -> Result<()> {
        // Nobody waits for this answer: the writer answers every record of a batch alike, so the
        // record that is waited for learns of a failed write.
        let (done, _) = tokio::sync::oneshot::channel();
        self.enqueue(Pending { record, done }).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> AuditRecord {
        AuditRecord {
            at: Timestamp(i as i64),
            actor: format!("t{}", i % 8),
            action: "get".into(),
            document: Some(format!("d{i}")),
            version: None,
            outcome: "ok".into(),
            detail: None,
        }
    }

    /// Concurrent writers share batches, and the chain still holds line by line, across a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_form_one_chain_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        for round in 0..2 {
            let sink = std::sync::Arc::new(JsonlAudit::open(&path).unwrap());
            let tasks: Vec<_> = (0..400)
                .map(|i| {
                    let sink = sink.clone();
                    tokio::spawn(async move { sink.record(rec(round * 1000 + i)).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        }
        let report = verify_chain(&path).unwrap();
        assert_eq!(report.lines, 800);
        assert_eq!(report.first_break, None);
        let sink = JsonlAudit::open(&path).unwrap();
        assert_eq!(sink.read(Some("d1399"), 10).await.unwrap().len(), 1);
    }

    /// Records queued inside `deferred` are written, in order and chained, ahead of the record
    /// that is waited for after it, so its durability covers them.
    #[tokio::test]
    async fn queued_records_precede_the_awaited_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonlAudit::open(&path).unwrap();
        assert!(!is_deferred());
        deferred(async {
            assert!(is_deferred());
            sink.record_queued(rec(1)).await.unwrap();
            sink.record_queued(rec(2)).await.unwrap();
        })
        .await;
        sink.record(rec(3)).await.unwrap();
        // Read back at once: the awaited record's answer came after all three were synced.
        let docs: Vec<_> = sink
            .read(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.document.unwrap())
            .collect();
        assert_eq!(docs, ["d1", "d2", "d3"]);
        assert_eq!(verify_chain(&path).unwrap().first_break, None);
    }
}
