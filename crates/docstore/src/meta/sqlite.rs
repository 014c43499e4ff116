//! [`MetadataStore`] on SQLite through `sqlx`: the embedded default.
//!
//! WAL journal, `synchronous=FULL` (a committed version survives power loss), one writer at a time
//! by SQLite's design; every commit starts with a write so concurrent writers queue on the busy
//! timeout instead of failing on a read-to-write lock upgrade. Within one process the
//! transactions also queue, first come first served, on a gate of their own ([`WriteGate`]):
//! SQLite's busy handler polls with sleeps that grow to 100 ms, so under load the lock sat free
//! while its waiters slept, and a statement waited up to a second behind seven others.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::HoldChange;
use super::rows::{JsonRow, document_from_row, found, impl_row_access, row_err};
use super::sql::{Statements, impl_sql};
use crate::error::{Error, Result};
use crate::model::{DocumentRecord, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite metadata store.
#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    pool: SqlitePool,
    path: String,
    gate: WriteGate,
}

/// The process's queue for SQLite's write lock: a transaction holds it from `BEGIN` to its
/// commit or rollback (its drop), and the next in line starts the moment it is released. Other
/// processes on the same file still wait on the busy timeout.
#[derive(Debug, Clone, Default)]
struct WriteGate(std::sync::Arc<tokio::sync::Mutex<()>>);

/// A transaction that holds the [`WriteGate`] while it lives.
struct GatedTx {
    tx: Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl GatedTx {
    async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        // The turn is released after the commit returns, when `self` is dropped.
        self.tx.commit().await
    }
}

impl std::ops::Deref for GatedTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for GatedTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
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
            gate: WriteGate::default(),
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
        Ok(SqliteMetadata {
            pool,
            path,
            gate: WriteGate::default(),
        })
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> Error + '_ {
        |e| map_err(e, &self.path)
    }

    /// Waits for the process's turn at the write lock, then begins.
    async fn begin(&self) -> Result<GatedTx> {
        let turn = self.gate.0.clone().lock_owned().await;
        let tx = self.pool.begin().await.map_err(self.err())?;
        Ok(GatedTx { tx, _turn: turn })
    }

    /// A transaction for the shared flows of [`super::sql`].
    async fn tx(&self) -> Result<SqliteTx<'_>> {
        Ok(SqliteTx {
            tx: self.begin().await?,
            path: &self.path,
        })
    }

    /// A document row, outside the shared flows (the plain read, the hold change).
    async fn document_in<'e>(&self, on: impl sqlx::SqliteExecutor<'e>, id: &str) -> Result<DocumentRecord> {
        let row = sqlx::query(&STATEMENTS.select_document)
            .bind(id)
            .fetch_optional(on)
            .await
            .map_err(self.err())?;
        found(row, document_from_row, id, None)
    }
}

/// One SQLite transaction. Every flow's first statement is a write, so the transaction holds
/// SQLite's write lock from its start and its reads and writes are one step (see module docs).
struct SqliteTx<'a> {
    tx: GatedTx,
    path: &'a str,
}

impl<'a> SqliteTx<'a> {
    fn err(&self) -> impl Fn(sqlx::Error) -> Error + use<'a> {
        let path = self.path;
        move |e| map_err(e, path)
    }
}

/// SQLite's statements. The locks are taken by writing first: `lock_document` and
/// `lock_version` are writes that change nothing.
static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements {
    insert_document: "INSERT INTO documents (document_id, patient_id, exam_id, kind, created_at) \
                      VALUES (?, ?, ?, ?, ?) ON CONFLICT (document_id) DO NOTHING"
        .into(),
    select_document: format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id = ?"),
    select_document_locked: format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id = ?"),
    lock_document: Some("UPDATE documents SET document_id = document_id WHERE document_id = ?".into()),
    insert_version: format!(
        "INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]')"
    ),
    advance_latest: "UPDATE documents SET latest_version = ? WHERE document_id = ? AND latest_version = ?"
        .into(),
    write_tombstone: format!(
        "UPDATE documents SET deleted_at = ?, deleted_by = ? WHERE document_id = ? RETURNING {DOCUMENT_COLUMNS}"
    ),
    blob_keys: "SELECT blob_key, renditions FROM versions WHERE document_id = ?".into(),
    delete_versions: "DELETE FROM versions WHERE document_id = ?".into(),
    delete_document: "DELETE FROM documents WHERE document_id = ?".into(),
    swap_key_block:
        "UPDATE versions SET key_block = ? WHERE document_id = ? AND version = ? AND key_block = ?".into(),
    renditions_if_key_block:
        "SELECT renditions FROM versions WHERE document_id = ? AND version = ? AND key_block = ?".into(),
    write_shred: "UPDATE versions SET key_block = ?, renditions = ? WHERE document_id = ? AND version = ?"
        .into(),
    lock_version: Some("UPDATE versions SET state = state WHERE document_id = ? AND version = ?".into()),
    select_version_stages_locked: format!(
        "SELECT {VERSION_COLUMNS}, stages FROM versions WHERE document_id = ? AND version = ?"
    ),
    write_stages:
        "UPDATE versions SET stages = ?, renditions = ?, state = ? WHERE document_id = ? AND version = ?"
            .into(),
    insert_outbox:
        "INSERT INTO outbox (event_id, event_type, key, payload, created_at) VALUES (?, ?, ?, ?, ?)".into(),
    select_version: format!("SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = ? AND version = ?"),
    select_latest_version: format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = ? ORDER BY version DESC LIMIT 1"
    ),
    select_versions: format!("SELECT {VERSION_COLUMNS} FROM versions WHERE document_id = ? ORDER BY version"),
    list_documents: format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id > ? ORDER BY document_id LIMIT ?"
    ),
    outbox_pending: "SELECT seq, event_id, event_type, key, payload, created_at FROM outbox \
                     WHERE sent_at IS NULL ORDER BY seq LIMIT ?"
        .into(),
    replace_renditions:
        "UPDATE versions SET renditions = ? WHERE document_id = ? AND version = ? AND renditions = ?".into(),
    insert_release: "INSERT INTO exam_releases (exam_id, patient_id, released_at, released_by) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (exam_id) DO NOTHING"
        .into(),
    select_release:
        "SELECT exam_id, patient_id, released_at, released_by FROM exam_releases WHERE exam_id = ?".into(),
});

impl_sql!(SqliteTx<'_>, SqliteMetadata, STATEMENTS);

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

/// What SqliteMetadata does its own way; the rest of [`MetadataStore`] is [`impl_sql!`]'s.
impl SqliteMetadata {
    async fn read_document(&self, document_id: &str) -> Result<DocumentRecord> {
        // One statement reads one consistent snapshot: no transaction (BEGIN and ROLLBACK are two
        // more trips to the connection's thread on the hottest read).
        self.document_in(&self.pool, document_id).await
    }

    async fn write_hold(&self, document_id: &str, change: HoldChange) -> Result<DocumentRecord> {
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

    async fn find_referenced(&self, keys: &[String]) -> Result<HashSet<String>> {
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

    async fn mark_sent(&self, event_ids: &[String]) -> Result<()> {
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
}
