//! [`MetadataStore`] on SQLite through `sqlx`: the embedded default.
//!
//! WAL journal, `synchronous=FULL` (a committed version survives power loss), one writer at a time
//! by SQLite's design; every commit starts with a write so concurrent writers queue on the busy
//! timeout instead of failing on a read-to-write lock upgrade.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::rows::{
    JsonRow, RowAccess, check_owner, document_from_row, found, impl_row_access, kept_release, next_version,
    outbox_from_row, release_from_row, row_err, version_from_row,
};
use super::{HoldChange, MetadataStore};
use crate::error::{Error, Result};
use crate::model::{
    DocumentRecord, ExamRelease, JoinOutcome, NewVersion, OutboxEntry, Rendition, StageResult, Timestamp,
    VersionRecord,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite metadata store.
#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    pool: SqlitePool,
    path: String,
}

const VERSION_COLUMNS: &str = "document_id, version, version_id, patient_id, exam_id, kind, media_type, size, sha256, created_at, created_by, blob_key, key_block, state, renditions";
const DOCUMENT_COLUMNS: &str = "document_id, patient_id, exam_id, kind, latest_version, created_at, deleted_at, deleted_by, legal_hold, retain_until";

impl SqliteMetadata {
    /// The documents whose `column` is `value`, oldest first, fetched as one JSON array: sqlx's
    /// SQLite driver hands each row across from its worker thread (a channel send and a wakeup
    /// per row), which made a 50-document list cost 50 thread hops.
    async fn documents_where(&self, column: &'static str, value: &str) -> Result<Vec<DocumentRecord>> {
        let sql = format!(
            "SELECT json_group_array(json_array({DOCUMENT_COLUMNS}) ORDER BY created_at, document_id) \
             FROM documents WHERE {column} = ?"
        );
        let (json,): (String,) = sqlx::query_as(&sql)
            .bind(value)
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())?;
        let rows: Vec<Vec<serde_json::Value>> =
            serde_json::from_str(&json).map_err(|e| Error::Metadata(e.into()))?;
        let columns: Vec<&str> = DOCUMENT_COLUMNS.split(", ").collect();
        rows.into_iter()
            .map(|values| {
                document_from_row(&JsonRow {
                    columns: &columns,
                    values,
                })
            })
            .collect()
    }

    /// Opens the database at `path`, creating it when `create` is set, and applies migrations.
    pub async fn open(path: &Path, create: bool) -> Result<Self> {
        let display = path.display().to_string();
        if !create && !path.exists() {
            return Err(Error::NotInitialized {
                path: path.parent().unwrap_or(path).to_owned(),
            });
        }
        if create {
            // Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files it makes
            // next the database file's mode, so none of the three is ever readable by others
            // (a chmod after opening left both at the umask's 0644).
            crate::create_owner_only(path).map_err(|e| Error::io(display.clone(), e))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let store = Self::connect(opts, display).await?;
        // Patient and exam ids live here: owner-only, like the keyring (WAL files follow the
        // database file's mode).
        if create {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(path.display().to_string(), e))?;
        }
        Ok(store)
    }

    /// An in-memory database (tests, examples).
    pub async fn in_memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| Error::Metadata(e.into()))?
            .foreign_keys(true);
        // One connection: each in-memory connection would otherwise be its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|e| map_err(e, ":memory:"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| migrate_err(e, ":memory:"))?;
        Ok(SqliteMetadata {
            pool,
            path: ":memory:".into(),
        })
    }

    async fn connect(opts: SqliteConnectOptions, path: String) -> Result<Self> {
        // No ping before each acquire: a local file's connection cannot go stale, and the ping
        // doubled the trips to the connection's thread on every statement.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(|e| map_err(e, &path))?;
        MIGRATOR.run(&pool).await.map_err(|e| migrate_err(e, &path))?;
        Ok(SqliteMetadata { pool, path })
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> Error + '_ {
        |e| map_err(e, &self.path)
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin().await.map_err(self.err())
    }

    /// Records an outbox entry inside `tx` (the write it announces).
    async fn outbox_insert(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        event_type: &str,
        key: &str,
        (event_id, payload): (String, String),
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, key, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(event_id)
        .bind(event_type)
        .bind(key)
        .bind(payload)
        .bind(at.0)
        .execute(&mut **tx)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn document_in<'e>(&self, on: impl sqlx::SqliteExecutor<'e>, id: &str) -> Result<DocumentRecord> {
        let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(on)
            .await
            .map_err(self.err())?;
        found(row, document_from_row, id, None)
    }
}

fn map_err(e: sqlx::Error, path: &str) -> Error {
    if let sqlx::Error::Database(db) = &e {
        // SQLITE_CORRUPT (11) and SQLITE_NOTADB (26), with or without extended bits.
        if let Some(code) = db.code().and_then(|c| c.parse::<i32>().ok())
            && matches!(code & 0xff, 11 | 26)
        {
            return Error::MetadataCorrupt {
                path: path.to_owned(),
                detail: db.message().to_owned(),
            };
        }
        // SQLITE_BUSY (5) / SQLITE_LOCKED (6): another process held the lock past the busy
        // timeout; nothing was written and a retry may succeed.
        if let Some(code) = db.code().and_then(|c| c.parse::<i32>().ok())
            && matches!(code & 0xff, 5 | 6)
        {
            let detail = db.message().to_owned();
            return Error::unavailable_from("sqlite", detail, e);
        }
    }
    if matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) {
        return Error::unavailable_from("sqlite", e.to_string(), e);
    }
    Error::Metadata(e.into())
}

fn migrate_err(e: sqlx::migrate::MigrateError, path: &str) -> Error {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => map_err(inner, path),
        other => Error::Metadata(other.into()),
    }
}

impl_row_access!(SqliteRow, |row, col| Ok(sqlx::Row::try_get::<i64, _>(row, col)
    .map_err(row_err)?
    != 0));

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn commit_version(&self, new: NewVersion, expected_latest: Option<u64>) -> Result<VersionRecord> {
        let mut tx = self.begin().await?;
        // A write first: takes SQLite's write lock for the whole transaction (see module docs).
        sqlx::query(
            "INSERT INTO documents (document_id, patient_id, exam_id, kind, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (document_id) DO NOTHING",
        )
        .bind(&new.document_id)
        .bind(&new.patient_id)
        .bind(&new.exam_id)
        .bind(new.kind.as_str())
        .bind(new.created_at.0)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        let doc = self.document_in(&mut *tx, &new.document_id).await?;
        check_owner(&doc, &new)?;
        doc.ensure_live()?;
        if let Some(expected) = expected_latest
            && expected != doc.latest_version
        {
            return Err(Error::Conflict {
                document: new.document_id,
                expected,
                actual: doc.latest_version,
            });
        }
        let record = next_version(new, doc.latest_version);
        let sql = format!(
            "INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(&sql)
            .bind(&record.document_id)
            .bind(record.version as i64)
            .bind(&record.version_id)
            .bind(&record.patient_id)
            .bind(&record.exam_id)
            .bind(record.kind.as_str())
            .bind(&record.media_type)
            .bind(record.size as i64)
            .bind(&record.sha256)
            .bind(record.created_at.0)
            .bind(&record.created_by)
            .bind(&record.blob_key)
            .bind(&record.key_block)
            .bind(record.state.as_str())
            .bind("[]")
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        let updated = sqlx::query(
            "UPDATE documents SET latest_version = ? WHERE document_id = ? AND latest_version = ?",
        )
        .bind(record.version as i64)
        .bind(&record.document_id)
        .bind(doc.latest_version as i64)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        if updated.rows_affected() != 1 {
            return Err(Error::bad_record("concurrent version commit detected"));
        }
        let event = crate::outbox::file_uploaded(&record);
        self.outbox_insert(
            &mut tx,
            crate::outbox::FILE_UPLOADED,
            &record.document_id,
            event,
            record.created_at,
        )
        .await?;
        tx.commit().await.map_err(self.err())?;
        Ok(record)
    }

    async fn document(&self, document_id: &str) -> Result<DocumentRecord> {
        // One statement reads one consistent snapshot: no transaction (BEGIN and ROLLBACK are two
        // more trips to the connection's thread on the hottest read).
        self.document_in(&self.pool, document_id).await
    }

    async fn version(&self, document_id: &str, version: Option<u64>) -> Result<VersionRecord> {
        let row = match version {
            Some(v) => {
                let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = ? AND version = ?");
                sqlx::query(&sql)
                    .bind(document_id)
                    .bind(v as i64)
                    .fetch_optional(&self.pool)
                    .await
            }
            None => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = ? ORDER BY version DESC LIMIT 1"
                );
                sqlx::query(&sql).bind(document_id).fetch_optional(&self.pool).await
            }
        }
        .map_err(self.err())?;
        found(row, version_from_row, document_id, version)
    }

    async fn versions(&self, document_id: &str) -> Result<Vec<VersionRecord>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = ? ORDER BY version");
        let rows = sqlx::query(&sql)
            .bind(document_id)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err())?;
        rows.iter().map(version_from_row).collect()
    }

    async fn set_tombstone(
        &self,
        document_id: &str,
        tombstone: Option<(Timestamp, String)>,
    ) -> Result<DocumentRecord> {
        let mut tx = self.begin().await?;
        let (at, by) = tombstone
            .map(|(t, b)| (Some(t.0), Some(b)))
            .unwrap_or((None, None));
        let res = sqlx::query("UPDATE documents SET deleted_at = ?, deleted_by = ? WHERE document_id = ?")
            .bind(at)
            .bind(by)
            .bind(document_id)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound {
                document: document_id.to_owned(),
                version: None,
            });
        }
        let doc = self.document_in(&mut *tx, document_id).await?;
        let reason = if doc.deleted_at.is_some() {
            "deleted"
        } else {
            "restored"
        };
        let event = crate::outbox::file_deleted(document_id, None, reason);
        self.outbox_insert(
            &mut tx,
            crate::outbox::FILE_DELETED,
            document_id,
            event,
            Timestamp::now(),
        )
        .await?;
        tx.commit().await.map_err(self.err())?;
        Ok(doc)
    }

    async fn set_hold(&self, document_id: &str, change: HoldChange) -> Result<DocumentRecord> {
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "UPDATE documents SET legal_hold = COALESCE(?, legal_hold), \
             retain_until = CASE WHEN ? THEN ? ELSE retain_until END WHERE document_id = ?",
        )
        .bind(change.legal_hold.map(i64::from))
        .bind(change.retain_until.is_some())
        .bind(change.retain_until.flatten().map(|t| t.0))
        .bind(document_id)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound {
                document: document_id.to_owned(),
                version: None,
            });
        }
        let doc = self.document_in(&mut *tx, document_id).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(doc)
    }

    async fn purge(&self, document_id: &str, now: Timestamp) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        // Take the write lock before reading the hold flags, so the check and the delete are atomic.
        sqlx::query("UPDATE documents SET latest_version = latest_version WHERE document_id = ?")
            .bind(document_id)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        let doc = self.document_in(&mut *tx, document_id).await?;
        if let Some(reason) = doc.purge_refusal(now) {
            return Err(Error::Refused {
                document: document_id.to_owned(),
                reason,
            });
        }
        let rows = sqlx::query("SELECT blob_key, renditions FROM versions WHERE document_id = ?")
            .bind(document_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(self.err())?;
        let mut keys = Vec::new();
        for r in &rows {
            keys.push(r.text("blob_key")?);
            keys.extend(super::rows::renditions(r)?.into_iter().map(|r| r.blob_key));
        }
        for table in ["versions", "documents"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE document_id = ?"))
                .bind(document_id)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
        }
        let event = crate::outbox::file_deleted(document_id, None, "purged");
        self.outbox_insert(&mut tx, crate::outbox::FILE_DELETED, document_id, event, now)
            .await?;
        tx.commit().await.map_err(self.err())?;
        Ok(keys)
    }

    async fn documents_by_patient(&self, patient_id: &str) -> Result<Vec<DocumentRecord>> {
        self.documents_where("patient_id", patient_id).await
    }

    async fn documents_by_exam(&self, exam_id: &str) -> Result<Vec<DocumentRecord>> {
        self.documents_where("exam_id", exam_id).await
    }

    async fn replace_key_block(
        &self,
        document_id: &str,
        version: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<()> {
        let changed = || Error::Refused {
            document: document_id.to_owned(),
            reason: format!("v{version}: key block changed concurrently or version missing"),
        };
        let mut tx = self.begin().await?;
        if !new.is_empty() {
            let res = sqlx::query(
                "UPDATE versions SET key_block = ? WHERE document_id = ? AND version = ? AND key_block = ?",
            )
            .bind(new)
            .bind(document_id)
            .bind(version as i64)
            .bind(expected)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
            if res.rows_affected() != 1 {
                return Err(changed());
            }
            tx.commit().await.map_err(self.err())?;
            return Ok(());
        }
        // A shred. A write first takes the write lock, so the hold check, the read of the
        // renditions and the update are one step.
        sqlx::query("UPDATE documents SET document_id = document_id WHERE document_id = ?")
            .bind(document_id)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        let now = Timestamp::now();
        if let Some(reason) = self.document_in(&mut *tx, document_id).await?.shred_refusal(now) {
            return Err(Error::Refused {
                document: document_id.to_owned(),
                reason,
            });
        }
        let row = sqlx::query(
            "SELECT renditions FROM versions WHERE document_id = ? AND version = ? AND key_block = ?",
        )
        .bind(document_id)
        .bind(version as i64)
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.err())?
        .ok_or_else(changed)?;
        let cleared = super::join::shredded(&super::rows::renditions(&row)?);
        sqlx::query(
            "UPDATE versions SET key_block = ?, renditions = ? WHERE document_id = ? AND version = ?",
        )
        .bind(new)
        .bind(super::join::renditions_json(&cleared)?)
        .bind(document_id)
        .bind(version as i64)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        let event = crate::outbox::file_deleted(document_id, Some(version), "shredded");
        self.outbox_insert(&mut tx, crate::outbox::FILE_DELETED, document_id, event, now)
            .await?;
        tx.commit().await.map_err(self.err())?;
        Ok(())
    }

    async fn replace_renditions(
        &self,
        document_id: &str,
        version: u64,
        expected: &[Rendition],
        new: &[Rendition],
    ) -> Result<()> {
        let res = sqlx::query(
            "UPDATE versions SET renditions = ? WHERE document_id = ? AND version = ? AND renditions = ?",
        )
        .bind(super::join::renditions_json(new)?)
        .bind(document_id)
        .bind(version as i64)
        .bind(super::join::renditions_json(expected)?)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        if res.rows_affected() != 1 {
            return Err(super::join::renditions_changed(document_id, version));
        }
        Ok(())
    }

    async fn list_documents(&self, after: Option<&str>, limit: usize) -> Result<Vec<DocumentRecord>> {
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id > ? ORDER BY document_id LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or(""))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err())?;
        rows.iter().map(document_from_row).collect()
    }

    async fn referenced_blobs(&self, keys: &[String]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for key in keys {
            let hit = sqlx::query(
                "SELECT 1 FROM versions WHERE blob_key = ?1 \
                 OR EXISTS (SELECT 1 FROM json_each(versions.renditions) WHERE json_extract(value, '$.blob_key') = ?1) LIMIT 1",
            )
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
            if hit.is_some() {
                found.insert(key.clone());
            }
        }
        Ok(found)
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT seq, event_id, event_type, key, payload, created_at FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_mark_sent(&self, event_ids: &[String]) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = Timestamp::now().0;
        for id in event_ids {
            sqlx::query("UPDATE outbox SET sent_at = ? WHERE event_id = ? AND sent_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
        }
        tx.commit().await.map_err(self.err())
    }

    async fn record_stage(
        &self,
        document_id: &str,
        version: u64,
        result: StageResult,
        required: &[String],
    ) -> Result<JoinOutcome> {
        let mut tx = self.begin().await?;
        // A write first: takes the write lock, so the read below and the update are one step.
        sqlx::query("UPDATE versions SET state = state WHERE document_id = ? AND version = ?")
            .bind(document_id)
            .bind(version as i64)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        let sql =
            format!("SELECT {VERSION_COLUMNS}, stages FROM versions WHERE document_id = ? AND version = ?");
        let row = sqlx::query(&sql)
            .bind(document_id)
            .bind(version as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.err())?;
        let Some(row) = row else {
            return Err(Error::NotFound {
                document: document_id.to_owned(),
                version: Some(version),
            });
        };
        let record = version_from_row(&row)?;
        super::join::refuse_if_deleted(&self.document_in(&mut *tx, document_id).await?)?;
        let merged = super::join::merge(&record, &row.text("stages")?, result, required)?;
        let renditions = super::join::renditions_json(&merged.renditions)?;
        sqlx::query(
            "UPDATE versions SET stages = ?, renditions = ?, state = ? WHERE document_id = ? AND version = ?",
        )
        .bind(&merged.stages_json)
        .bind(renditions)
        .bind(merged.state.as_str())
        .bind(document_id)
        .bind(version as i64)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        if let Some(event) = merged.event {
            self.outbox_insert(
                &mut tx,
                crate::outbox::FILE_PROCESSED,
                document_id,
                event,
                Timestamp::now(),
            )
            .await?;
        }
        tx.commit().await.map_err(self.err())?;
        Ok(merged.outcome)
    }

    async fn record_release(&self, release: &ExamRelease) -> Result<ExamRelease> {
        sqlx::query(
            "INSERT INTO exam_releases (exam_id, patient_id, released_at, released_by) \
             VALUES (?, ?, ?, ?) ON CONFLICT (exam_id) DO NOTHING",
        )
        .bind(&release.exam_id)
        .bind(&release.patient_id)
        .bind(release.released_at.0)
        .bind(&release.released_by)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        kept_release(self.exam_release(&release.exam_id).await?, release)
    }

    async fn exam_release(&self, exam_id: &str) -> Result<Option<ExamRelease>> {
        let row = sqlx::query(
            "SELECT exam_id, patient_id, released_at, released_by FROM exam_releases WHERE exam_id = ?",
        )
        .bind(exam_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        row.as_ref().map(release_from_row).transpose()
    }
}
