//! [`MetadataStore`] on PostgreSQL through `sqlx`.
//!
//! A commit inserts the document row if missing, then locks it (`SELECT … FOR UPDATE`): concurrent
//! writers to one document queue on that row lock and each sees the latest version when its turn
//! comes. The version, the document update and the outbox row commit in one transaction.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

use super::rows::{
    RowAccess, check_owner, document_from_row, found, impl_row_access, kept_release, next_version,
    outbox_from_row, release_from_row, renditions, row_err, version_from_row,
};
use super::{HoldChange, MetadataStore};
use crate::error::{Error, Result};
use crate::model::{
    DocumentRecord, ExamRelease, JoinOutcome, NewVersion, OutboxEntry, Rendition, StageResult, Timestamp,
    VersionRecord,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const VERSION_COLUMNS: &str = "document_id, version, version_id, patient_id, exam_id, kind, media_type, size, sha256, created_at, created_by, blob_key, key_block, state, renditions::text AS renditions";
const DOCUMENT_COLUMNS: &str = "document_id, patient_id, exam_id, kind, latest_version, created_at, deleted_at, deleted_by, legal_hold, retain_until";

/// PostgreSQL metadata store.
#[derive(Debug, Clone)]
pub struct PostgresMetadata {
    pool: PgPool,
}

impl_row_access!(PgRow, |row, col| sqlx::Row::try_get(row, col).map_err(row_err));

fn map_err(e: sqlx::Error) -> Error {
    Error::Metadata(e.into())
}

impl PostgresMetadata {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(map_err)?;
        MIGRATOR.run(&pool).await.map_err(|e| Error::Metadata(e.into()))?;
        Ok(PostgresMetadata { pool })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }

    /// Records an outbox entry inside `tx` (the write it announces).
    async fn outbox_insert(
        tx: &mut Transaction<'static, Postgres>,
        event_type: &str,
        key: &str,
        (event_id, payload): (String, String),
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, key, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event_id)
        .bind(event_type)
        .bind(key)
        .bind(payload)
        .bind(at.0)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn document_in<'e>(on: impl sqlx::PgExecutor<'e>, id: &str, lock: bool) -> Result<DocumentRecord> {
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(on)
            .await
            .map_err(map_err)?;
        found(row, document_from_row, id, None)
    }

    async fn documents_where(&self, column: &str, value: &str) -> Result<Vec<DocumentRecord>> {
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE {column} = $1 ORDER BY created_at, document_id"
        );
        let rows = sqlx::query(&sql)
            .bind(value)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(document_from_row).collect()
    }
}

#[async_trait]
impl MetadataStore for PostgresMetadata {
    async fn commit_version(&self, new: NewVersion, expected_latest: Option<u64>) -> Result<VersionRecord> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO documents (document_id, patient_id, exam_id, kind, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (document_id) DO NOTHING",
        )
        .bind(&new.document_id)
        .bind(&new.patient_id)
        .bind(&new.exam_id)
        .bind(new.kind.as_str())
        .bind(new.created_at.0)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let doc = Self::document_in(&mut *tx, &new.document_id, true).await?;
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
            "INSERT INTO versions ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, '[]')",
            VERSION_COLUMNS.replace("renditions::text AS renditions", "renditions")
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
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("UPDATE documents SET latest_version = $1 WHERE document_id = $2")
            .bind(record.version as i64)
            .bind(&record.document_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let event = crate::outbox::file_uploaded(&record);
        Self::outbox_insert(
            &mut tx,
            crate::outbox::FILE_UPLOADED,
            &record.document_id,
            event,
            record.created_at,
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn document(&self, document_id: &str) -> Result<DocumentRecord> {
        // One statement reads one snapshot: no transaction, so one round trip instead of three.
        Self::document_in(&self.pool, document_id, false).await
    }

    async fn version(&self, document_id: &str, version: Option<u64>) -> Result<VersionRecord> {
        let row = match version {
            Some(v) => {
                let sql =
                    format!("SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = $1 AND version = $2");
                sqlx::query(&sql)
                    .bind(document_id)
                    .bind(v as i64)
                    .fetch_optional(&self.pool)
                    .await
            }
            None => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = $1 ORDER BY version DESC LIMIT 1"
                );
                sqlx::query(&sql)
                    .bind(document_id)
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(map_err)?;
        found(row, version_from_row, document_id, version)
    }

    async fn versions(&self, document_id: &str) -> Result<Vec<VersionRecord>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = $1 ORDER BY version");
        let rows = sqlx::query(&sql)
            .bind(document_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn set_tombstone(
        &self,
        document_id: &str,
        tombstone: Option<(Timestamp, String)>,
    ) -> Result<DocumentRecord> {
        let (at, by) = tombstone
            .map(|(t, b)| (Some(t.0), Some(b)))
            .unwrap_or((None, None));
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE documents SET deleted_at = $1, deleted_by = $2 WHERE document_id = $3 RETURNING {DOCUMENT_COLUMNS}"
        ))
        .bind(at)
        .bind(by)
        .bind(document_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let doc = found(row, document_from_row, document_id, None)?;
        let reason = if doc.deleted_at.is_some() {
            "deleted"
        } else {
            "restored"
        };
        let event = crate::outbox::file_deleted(document_id, None, reason);
        Self::outbox_insert(
            &mut tx,
            crate::outbox::FILE_DELETED,
            document_id,
            event,
            Timestamp::now(),
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        Ok(doc)
    }

    async fn set_hold(&self, document_id: &str, change: HoldChange) -> Result<DocumentRecord> {
        let row = sqlx::query(&format!(
            "UPDATE documents SET legal_hold = COALESCE($1, legal_hold), \
             retain_until = CASE WHEN $2 THEN $3 ELSE retain_until END WHERE document_id = $4 \
             RETURNING {DOCUMENT_COLUMNS}"
        ))
        .bind(change.legal_hold)
        .bind(change.retain_until.is_some())
        .bind(change.retain_until.flatten().map(|t| t.0))
        .bind(document_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        found(row, document_from_row, document_id, None)
    }

    async fn purge(&self, document_id: &str, now: Timestamp) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let doc = Self::document_in(&mut *tx, document_id, true).await?;
        if let Some(reason) = doc.purge_refusal(now) {
            return Err(Error::Refused {
                document: document_id.to_owned(),
                reason,
            });
        }
        let rows = sqlx::query(
            "SELECT blob_key, renditions::text AS renditions FROM versions WHERE document_id = $1",
        )
        .bind(document_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut keys = Vec::new();
        for r in &rows {
            keys.push(r.text("blob_key")?);
            keys.extend(renditions(r)?.into_iter().map(|r| r.blob_key));
        }
        for table in ["versions", "documents"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE document_id = $1"))
                .bind(document_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let event = crate::outbox::file_deleted(document_id, None, "purged");
        Self::outbox_insert(&mut tx, crate::outbox::FILE_DELETED, document_id, event, now).await?;
        tx.commit().await.map_err(map_err)?;
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
                "UPDATE versions SET key_block = $1 WHERE document_id = $2 AND version = $3 AND key_block = $4",
            )
            .bind(new)
            .bind(document_id)
            .bind(version as i64)
            .bind(expected)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            if res.rows_affected() != 1 {
                return Err(changed());
            }
            tx.commit().await.map_err(map_err)?;
            return Ok(());
        }
        // A shred: the document row's lock holds off a concurrent hold, so the check, the read
        // of the renditions and the update are one step.
        let now = Timestamp::now();
        if let Some(reason) = Self::document_in(&mut *tx, document_id, true)
            .await?
            .shred_refusal(now)
        {
            return Err(Error::Refused {
                document: document_id.to_owned(),
                reason,
            });
        }
        let row = sqlx::query(
            "SELECT renditions::text AS renditions FROM versions \
             WHERE document_id = $1 AND version = $2 AND key_block = $3 FOR UPDATE",
        )
        .bind(document_id)
        .bind(version as i64)
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or_else(changed)?;
        let cleared = super::join::shredded(&renditions(&row)?);
        sqlx::query(
            "UPDATE versions SET key_block = $1, renditions = $2::jsonb WHERE document_id = $3 AND version = $4",
        )
        .bind(new)
        .bind(super::join::renditions_json(&cleared)?)
        .bind(document_id)
        .bind(version as i64)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let event = crate::outbox::file_deleted(document_id, Some(version), "shredded");
        Self::outbox_insert(&mut tx, crate::outbox::FILE_DELETED, document_id, event, now).await?;
        tx.commit().await.map_err(map_err)?;
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
            "UPDATE versions SET renditions = $1::jsonb \
             WHERE document_id = $2 AND version = $3 AND renditions = $4::jsonb",
        )
        .bind(super::join::renditions_json(new)?)
        .bind(document_id)
        .bind(version as i64)
        .bind(super::join::renditions_json(expected)?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        if res.rows_affected() != 1 {
            return Err(super::join::renditions_changed(document_id, version));
        }
        Ok(())
    }

    async fn list_documents(&self, after: Option<&str>, limit: usize) -> Result<Vec<DocumentRecord>> {
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id > $1 ORDER BY document_id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or(""))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(document_from_row).collect()
    }

    async fn referenced_blobs(&self, keys: &[String]) -> Result<HashSet<String>> {
        let rows = sqlx::query(
            "SELECT k FROM unnest($1::text[]) AS k WHERE EXISTS (SELECT 1 FROM versions v WHERE v.blob_key = k \
             OR v.renditions @> jsonb_build_array(jsonb_build_object('blob_key', k)))",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|r| r.text("k")).collect()
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT seq, event_id, event_type, key, payload, created_at FROM outbox WHERE sent_at IS NULL \
             ORDER BY seq LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_mark_sent(&self, event_ids: &[String]) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_at = $1 WHERE event_id = ANY($2) AND sent_at IS NULL")
            .bind(Timestamp::now().0)
            .bind(event_ids)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn record_stage(
        &self,
        document_id: &str,
        version: u64,
        result: StageResult,
        required: &[String],
    ) -> Result<JoinOutcome> {
        let mut tx = self.begin().await?;
        // The row lock serialises concurrent stage completions of one version.
        let sql = format!(
            "SELECT {VERSION_COLUMNS}, stages::text AS stages FROM versions \
             WHERE document_id = $1 AND version = $2 FOR UPDATE"
        );
        let row = sqlx::query(&sql)
            .bind(document_id)
            .bind(version as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Err(Error::NotFound {
                document: document_id.to_owned(),
                version: Some(version),
            });
        };
        let record = version_from_row(&row)?;
        // Read without a lock: a shred locks the document, then this version row, so locking
        // the document here, after the version row, could deadlock with it.
        super::join::refuse_if_deleted(&Self::document_in(&mut *tx, document_id, false).await?)?;
        let merged = super::join::merge(&record, &row.text("stages")?, result, required)?;
        let renditions = serde_json::to_string(&merged.renditions).map_err(|e| Error::Metadata(e.into()))?;
        sqlx::query(
            "UPDATE versions SET stages = $1::jsonb, renditions = $2::jsonb, state = $3 \
             WHERE document_id = $4 AND version = $5",
        )
        .bind(&merged.stages_json)
        .bind(renditions)
        .bind(merged.state.as_str())
        .bind(document_id)
        .bind(version as i64)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if let Some(event) = merged.event {
            Self::outbox_insert(
                &mut tx,
                crate::outbox::FILE_PROCESSED,
                document_id,
                event,
                Timestamp::now(),
            )
            .await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(merged.outcome)
    }

    async fn record_release(&self, release: &ExamRelease) -> Result<ExamRelease> {
        sqlx::query(
            "INSERT INTO exam_releases (exam_id, patient_id, released_at, released_by) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (exam_id) DO NOTHING",
        )
        .bind(&release.exam_id)
        .bind(&release.patient_id)
        .bind(release.released_at.0)
        .bind(&release.released_by)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        kept_release(self.exam_release(&release.exam_id).await?, release)
    }

    async fn exam_release(&self, exam_id: &str) -> Result<Option<ExamRelease>> {
        let row = sqlx::query(
            "SELECT exam_id, patient_id, released_at, released_by FROM exam_releases WHERE exam_id = $1",
        )
        .bind(exam_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(release_from_row).transpose()
    }
}
