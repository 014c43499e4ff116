//! [`MetadataStore`] on PostgreSQL through `sqlx`.
//!
//! A commit inserts the document row if missing, then locks it (`SELECT … FOR UPDATE`): concurrent
//! writers to one document queue on that row lock and each sees the latest version when its turn
//! comes. The version, the document update and the outbox row commit in one transaction.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

use super::HoldChange;
use super::rows::{RowAccess, document_from_row, found, impl_row_access, row_err};
use super::sql::{Statements, impl_sql};
use crate::error::{Error, Result};
use crate::model::{DocumentRecord, Timestamp};

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

    /// A transaction for the shared flows of [`super::sql`].
    async fn tx(&self) -> Result<PgTx> {
        Ok(PgTx {
            tx: self.pool.begin().await.map_err(map_err)?,
        })
    }

    fn err(&self) -> fn(sqlx::Error) -> Error {
        map_err
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

/// What PostgresMetadata does its own way; the rest of [`MetadataStore`] is [`impl_sql!`]'s.
impl PostgresMetadata {
    async fn read_document(&self, document_id: &str) -> Result<DocumentRecord> {
        // One statement reads one snapshot: no transaction, so one round trip instead of three.
        let row = sqlx::query(&STATEMENTS.select_document)
            .bind(document_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        found(row, document_from_row, document_id, None)
    }

    async fn write_hold(&self, document_id: &str, change: HoldChange) -> Result<DocumentRecord> {
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

    async fn find_referenced(&self, keys: &[String]) -> Result<HashSet<String>> {
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

    async fn mark_sent(&self, event_ids: &[String]) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_at = $1 WHERE event_id = ANY($2) AND sent_at IS NULL")
            .bind(Timestamp::now().0)
            .bind(event_ids)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// One PostgreSQL transaction: rows read "locked" are read `FOR UPDATE`, so concurrent writers
/// to one document queue on its row.
struct PgTx {
    tx: Transaction<'static, Postgres>,
}

impl PgTx {
    fn err(&self) -> fn(sqlx::Error) -> Error {
        map_err
    }
}

/// The version columns as written (the read list casts `renditions` to text).
const VERSION_COLUMNS_WRITTEN: &str = "document_id, version, version_id, patient_id, exam_id, kind, media_type, size, sha256, created_at, created_by, blob_key, key_block, state, renditions";

/// PostgreSQL's statements: locks are `FOR UPDATE`, JSON columns are `jsonb` (cast on the way in
/// and out).
static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements {
    insert_document: "INSERT INTO documents (document_id, patient_id, exam_id, kind, created_at) \
                      VALUES ($1, $2, $3, $4, $5) ON CONFLICT (document_id) DO NOTHING"
        .into(),
    select_document: format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id = $1"),
    select_document_locked: format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id = $1 FOR UPDATE"
    ),
    lock_document: None,
    insert_version: format!(
        "INSERT INTO versions ({VERSION_COLUMNS_WRITTEN}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, '[]')"
    ),
    advance_latest: "UPDATE documents SET latest_version = $1 WHERE document_id = $2 AND latest_version = $3"
        .into(),
    write_tombstone: format!(
        "UPDATE documents SET deleted_at = $1, deleted_by = $2 WHERE document_id = $3 RETURNING {DOCUMENT_COLUMNS}"
    ),
    blob_keys: "SELECT blob_key, renditions::text AS renditions FROM versions WHERE document_id = $1".into(),
    delete_versions: "DELETE FROM versions WHERE document_id = $1".into(),
    delete_document: "DELETE FROM documents WHERE document_id = $1".into(),
    swap_key_block:
        "UPDATE versions SET key_block = $1 WHERE document_id = $2 AND version = $3 AND key_block = $4".into(),
    renditions_if_key_block: "SELECT renditions::text AS renditions FROM versions \
                              WHERE document_id = $1 AND version = $2 AND key_block = $3 FOR UPDATE"
        .into(),
    write_shred:
        "UPDATE versions SET key_block = $1, renditions = $2::jsonb WHERE document_id = $3 AND version = $4"
            .into(),
    lock_version: None,
    select_version_stages_locked: format!(
        "SELECT {VERSION_COLUMNS}, stages::text AS stages FROM versions \
         WHERE document_id = $1 AND version = $2 FOR UPDATE"
    ),
    write_stages: "UPDATE versions SET stages = $1::jsonb, renditions = $2::jsonb, state = $3 \
                   WHERE document_id = $4 AND version = $5"
        .into(),
    insert_outbox:
        "INSERT INTO outbox (event_id, event_type, key, payload, created_at) VALUES ($1, $2, $3, $4, $5)"
            .into(),
    select_version: format!("SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = $1 AND version = $2"),
    select_latest_version: format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = $1 ORDER BY version DESC LIMIT 1"
    ),
    select_versions: format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = $1 ORDER BY version"
    ),
    list_documents: format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id > $1 ORDER BY document_id LIMIT $2"
    ),
    outbox_pending: "SELECT seq, event_id, event_type, key, payload, created_at FROM outbox \
                     WHERE sent_at IS NULL ORDER BY seq LIMIT $1"
        .into(),
    replace_renditions: "UPDATE versions SET renditions = $1::jsonb \
                         WHERE document_id = $2 AND version = $3 AND renditions = $4::jsonb"
        .into(),
    insert_release: "INSERT INTO exam_releases (exam_id, patient_id, released_at, released_by) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (exam_id) DO NOTHING"
        .into(),
    select_release:
        "SELECT exam_id, patient_id, released_at, released_by FROM exam_releases WHERE exam_id = $1".into(),
});

impl_sql!(PgTx, PostgresMetadata, STATEMENTS);
