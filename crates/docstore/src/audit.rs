//! The audit trail: who did what to which document, when, and how it ended.
//!
//! Records carry ids, actions and error classes only, never content or keys. The embedded sink is
//! an append-only JSON-lines file that a deployment can tail and ship elsewhere.

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

/// Append-only JSON-lines audit file.
#[derive(Debug)]
pub struct JsonlAudit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl JsonlAudit {
    /// Opens (creating with mode 0600) the audit file.
    pub fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(JsonlAudit {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }
}

#[async_trait]
impl AuditSink for JsonlAudit {
    async fn record(&self, record: AuditRecord) -> Result<()> {
        let mut line = serde_json::to_vec(&record).expect("serializable");
        line.push(b'\n');
        // One write of a whole line on an O_APPEND file: concurrent writers never interleave lines.
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
            .map_err(|e| Error::io(self.path.display().to_string(), e))
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
