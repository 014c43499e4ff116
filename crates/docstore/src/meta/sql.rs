//! The transactional writes of the SQL backends, written once.
//!
//! Each flow below is one transaction: the order of its reads and writes, and the rules it
//! applies between them ([`super::rules`], [`super::join`]). A backend supplies the statements,
//! in its dialect, by implementing [`SqlTx`] for its transaction (`sqlite.rs`, `postgres.rs`);
//! the locks differ (SQLite takes its one write lock with a first write, PostgreSQL locks rows
//! `FOR UPDATE`), the guarantees do not.
//!
//! The statements' code is written once too: [`impl_sql!`] expands the same binding and row
//! decoding for each backend, over its dialect's [`Statements`]. What stays in a backend's file
//! is what its engine does differently (connection, errors, SQLite's one-value lists, arrays).

use async_trait::async_trait;

use super::join;
use super::rules::{check_expected, check_owner, key_block_changed, next_version, tombstone_reason};
use crate::error::{Error, Result};
use crate::model::{
    DocumentRecord, JoinOutcome, NewVersion, ProcessingState, StageResult, Timestamp, VersionRecord,
};
use crate::outbox;

/// The statements of one open transaction of a SQL backend.
#[async_trait]
pub(crate) trait SqlTx: Send + Sized {
    /// Inserts the document's row unless it exists, and returns the row, locked until commit.
    async fn create_document(&mut self, new: &NewVersion) -> Result<DocumentRecord>;
    /// The document's row, locked until commit.
    async fn lock_document(&mut self, id: &str) -> Result<DocumentRecord>;
    /// The document's row, read without a lock (see [`record_stage`]).
    async fn read_document(&mut self, id: &str) -> Result<DocumentRecord>;
    /// Inserts a version row (no renditions, no stage results).
    async fn insert_version(&mut self, record: &VersionRecord) -> Result<()>;
    /// Moves the document's latest version from `from` to `to`; false if it was not `from`.
    async fn advance_latest(&mut self, id: &str, from: u64, to: u64) -> Result<bool>;
    /// Sets (`Some`) or clears the tombstone; `None` if there is no such document.
    async fn write_tombstone(
        &mut self,
        id: &str,
        tombstone: Option<(i64, String)>,
    ) -> Result<Option<DocumentRecord>>;
    /// Every blob key the document's versions and their renditions hold.
    async fn blob_keys(&mut self, id: &str) -> Result<Vec<String>>;
    /// Deletes the document's versions and its row.
    async fn delete_document(&mut self, id: &str) -> Result<()>;
    /// Replaces the version's key block if it is `expected`; false if it is not.
    async fn swap_key_block(&mut self, id: &str, version: u64, expected: &[u8], new: &[u8]) -> Result<bool>;
    /// The version's renditions (JSON) if its key block is `expected`, locked until commit.
    async fn renditions_if_key_block(
        &mut self,
        id: &str,
        version: u64,
        expected: &[u8],
    ) -> Result<Option<String>>;
    /// Writes a shredded version: its new key block and its renditions (JSON).
    async fn write_shred(&mut self, id: &str, version: u64, key_block: &[u8], renditions: &str)
    -> Result<()>;
    /// The version's row and its stage results (JSON), locked until commit.
    async fn lock_version(&mut self, id: &str, version: u64) -> Result<Option<(VersionRecord, String)>>;
    /// Writes the version's stage results, renditions (both JSON) and state.
    async fn write_stages(
        &mut self,
        id: &str,
        version: u64,
        stages: &str,
        renditions: &str,
        state: ProcessingState,
    ) -> Result<()>;
    /// Records an outbox entry announcing this transaction's write.
    async fn outbox_insert(
        &mut self,
        event_type: &str,
        key: &str,
        event: (String, String),
        at: Timestamp,
    ) -> Result<()>;
    /// Commits.
    async fn commit(self) -> Result<()>;
}

/// [`super::MetadataStore::commit_version`].
pub(crate) async fn commit_version(
    mut tx: impl SqlTx,
    new: NewVersion,
    expected_latest: Option<u64>,
) -> Result<VersionRecord> {
    let doc = tx.create_document(&new).await?;
    check_owner(&doc, &new)?;
    doc.ensure_live()?;
    check_expected(&new.document_id, expected_latest, doc.latest_version)?;
    let record = next_version(new, doc.latest_version);
    tx.insert_version(&record).await?;
    // The row is locked, so the latest version cannot have moved; checked all the same.
    if !tx
        .advance_latest(&record.document_id, doc.latest_version, record.version)
        .await?
    {
        return Err(Error::bad_record("concurrent version commit detected"));
    }
    let event = outbox::file_uploaded(&record);
    tx.outbox_insert(
        outbox::FILE_UPLOADED,
        &record.document_id,
        event,
        record.created_at,
    )
    .await?;
    tx.commit().await?;
    Ok(record)
}

/// [`super::MetadataStore::set_tombstone`].
pub(crate) async fn set_tombstone(
    mut tx: impl SqlTx,
    document_id: &str,
    tombstone: Option<(Timestamp, String)>,
) -> Result<DocumentRecord> {
    let Some(doc) = tx
        .write_tombstone(document_id, tombstone.map(|(t, by)| (t.0, by)))
        .await?
    else {
        return Err(Error::NotFound {
            document: document_id.to_owned(),
            version: None,
        });
    };
    let event = outbox::file_deleted(document_id, None, tombstone_reason(doc.deleted_at.is_some()));
    tx.outbox_insert(outbox::FILE_DELETED, document_id, event, Timestamp::now())
        .await?;
    tx.commit().await?;
    Ok(doc)
}

/// [`super::MetadataStore::purge`]: the hold check and the delete under one lock.
pub(crate) async fn purge(mut tx: impl SqlTx, document_id: &str, now: Timestamp) -> Result<Vec<String>> {
    let doc = tx.lock_document(document_id).await?;
    if let Some(reason) = doc.purge_refusal(now) {
        return Err(Error::Refused {
            document: document_id.to_owned(),
            reason,
        });
    }
    let keys = tx.blob_keys(document_id).await?;
    tx.delete_document(document_id).await?;
    let event = outbox::file_deleted(document_id, None, "purged");
    tx.outbox_insert(outbox::FILE_DELETED, document_id, event, now)
        .await?;
    tx.commit().await?;
    Ok(keys)
}

/// [`super::MetadataStore::replace_key_block`]: a re-wrap is one compare-and-swap; a shred (an
/// empty new block) also empties the renditions' blocks and announces itself, with the
/// document's lock holding off a concurrent hold between the check and the write.
pub(crate) async fn replace_key_block(
    mut tx: impl SqlTx,
    document_id: &str,
    version: u64,
    expected: &[u8],
    new: &[u8],
) -> Result<()> {
    if !new.is_empty() {
        if !tx.swap_key_block(document_id, version, expected, new).await? {
            return Err(key_block_changed(document_id, version));
        }
        return tx.commit().await;
    }
    let now = Timestamp::now();
    if let Some(reason) = tx.lock_document(document_id).await?.shred_refusal(now) {
        return Err(Error::Refused {
            document: document_id.to_owned(),
            reason,
        });
    }
    let renditions = tx
        .renditions_if_key_block(document_id, version, expected)
        .await?
        .ok_or_else(|| key_block_changed(document_id, version))?;
    let cleared = join::shredded(&super::rows::renditions_from_json(&renditions)?);
    tx.write_shred(document_id, version, new, &join::renditions_json(&cleared)?)
        .await?;
    let event = outbox::file_deleted(document_id, Some(version), "shredded");
    tx.outbox_insert(outbox::FILE_DELETED, document_id, event, now)
        .await?;
    tx.commit().await
}

/// [`super::MetadataStore::record_stage`]: the version's lock serialises concurrent stage
/// completions; the join's rules are [`join::merge`].
pub(crate) async fn record_stage(
    mut tx: impl SqlTx,
    document_id: &str,
    version: u64,
    result: StageResult,
    required: &[String],
) -> Result<JoinOutcome> {
    let Some((record, stages)) = tx.lock_version(document_id, version).await? else {
        return Err(Error::NotFound {
            document: document_id.to_owned(),
            version: Some(version),
        });
    };
    // Read without a lock: a shred locks the document, then this version row, so locking the
    // document here, after the version row, could deadlock with it.
    join::refuse_if_deleted(&tx.read_document(document_id).await?)?;
    let merged = join::merge(&record, &stages, result, required)?;
    let renditions = join::renditions_json(&merged.renditions)?;
    tx.write_stages(
        document_id,
        version,
        &merged.stages_json,
        &renditions,
        merged.state,
    )
    .await?;
    if let Some(event) = merged.event {
        tx.outbox_insert(outbox::FILE_PROCESSED, document_id, event, Timestamp::now())
            .await?;
    }
    tx.commit().await?;
    Ok(merged.outcome)
}

/// The statements of one SQL dialect. Parameters are numbered in the order the code binds them.
pub(crate) struct Statements {
    /// Insert a document row unless it exists (id, patient, exam, kind, created).
    pub(crate) insert_document: String,
    /// A document row by id.
    pub(crate) select_document: String,
    /// A document row by id, locked until commit.
    pub(crate) select_document_locked: String,
    /// Run before `select_document_locked` where a lock is taken by writing (SQLite).
    pub(crate) lock_document: Option<String>,
    /// Insert a version row (its columns in `version_from_row` order, renditions `[]`).
    pub(crate) insert_version: String,
    /// Move the latest version (to, id, from).
    pub(crate) advance_latest: String,
    /// Set or clear the tombstone, returning the row (at, by, id).
    pub(crate) write_tombstone: String,
    /// Blob keys and renditions of a document's versions (id).
    pub(crate) blob_keys: String,
    /// Delete a document's versions (id).
    pub(crate) delete_versions: String,
    /// Delete a document's row (id).
    pub(crate) delete_document: String,
    /// Swap a key block (new, id, version, expected).
    pub(crate) swap_key_block: String,
    /// A version's renditions if its key block is as expected, locked (id, version, expected).
    pub(crate) renditions_if_key_block: String,
    /// Write a shredded version (key block, renditions, id, version).
    pub(crate) write_shred: String,
    /// Run before `select_version_stages_locked` where a lock is taken by writing (id, version).
    pub(crate) lock_version: Option<String>,
    /// A version row and its `stages`, locked (id, version).
    pub(crate) select_version_stages_locked: String,
    /// Write stage results, renditions and state (stages, renditions, state, id, version).
    pub(crate) write_stages: String,
    /// Insert an outbox entry (event id, type, key, payload, created).
    pub(crate) insert_outbox: String,
    /// A version row (id, version).
    pub(crate) select_version: String,
    /// The latest version row (id).
    pub(crate) select_latest_version: String,
    /// Every version row of a document, oldest first (id).
    pub(crate) select_versions: String,
    /// Documents after an id, in id order (after, limit).
    pub(crate) list_documents: String,
    /// Unsent outbox entries in order (limit).
    pub(crate) outbox_pending: String,
    /// Swap a version's renditions (new, id, version, expected).
    pub(crate) replace_renditions: String,
    /// Record an exam release unless one is (exam, patient, at, by).
    pub(crate) insert_release: String,
    /// An exam's release (exam).
    pub(crate) select_release: String,
}

/// Implements [`SqlTx`] for a backend's transaction type `$tx` (a struct with a `tx` field and an
/// `err()` mapping) and the statements' reads and single writes on its store type `$store` (a
/// `pool` field and an `err()`), both over the dialect's `$st: &Statements`.
macro_rules! impl_sql {
    ($tx:ty, $store:ty, $st:expr) => {
        #[async_trait::async_trait]
        impl $crate::meta::sql::SqlTx for $tx {
            async fn create_document(
                &mut self,
                new: &$crate::model::NewVersion,
            ) -> $crate::Result<$crate::model::DocumentRecord> {
                sqlx::query(&$st.insert_document)
                    .bind(&new.document_id)
                    .bind(&new.patient_id)
                    .bind(&new.exam_id)
                    .bind(new.kind.as_str())
                    .bind(new.created_at.0)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                // The insert took SQLite's write lock; PostgreSQL locks the row now.
                self.select_document(&$st.select_document_locked, &new.document_id)
                    .await
            }

            async fn lock_document(&mut self, id: &str) -> $crate::Result<$crate::model::DocumentRecord> {
                if let Some(lock) = &$st.lock_document {
                    sqlx::query(lock)
                        .bind(id)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(self.err())?;
                }
                self.select_document(&$st.select_document_locked, id).await
            }

            async fn read_document(&mut self, id: &str) -> $crate::Result<$crate::model::DocumentRecord> {
                self.select_document(&$st.select_document, id).await
            }

            async fn insert_version(&mut self, record: &$crate::model::VersionRecord) -> $crate::Result<()> {
                sqlx::query(&$st.insert_version)
                    .bind(&record.document_id)
                    .bind(record.version as i64)
                    .bind(record.version_id.as_str())
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
                    .execute(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                Ok(())
            }

            async fn advance_latest(&mut self, id: &str, from: u64, to: u64) -> $crate::Result<bool> {
                let res = sqlx::query(&$st.advance_latest)
                    .bind(to as i64)
                    .bind(id)
                    .bind(from as i64)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                Ok(res.rows_affected() == 1)
            }

            async fn write_tombstone(
                &mut self,
                id: &str,
                tombstone: Option<(i64, String)>,
            ) -> $crate::Result<Option<$crate::model::DocumentRecord>> {
                let (at, by) = tombstone.unzip();
                let row = sqlx::query(&$st.write_tombstone)
                    .bind(at)
                    .bind(by)
                    .bind(id)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                row.as_ref()
                    .map($crate::meta::rows::document_from_row)
                    .transpose()
            }

            async fn blob_keys(&mut self, id: &str) -> $crate::Result<Vec<String>> {
                use $crate::meta::rows::RowAccess as _;
                let rows = sqlx::query(&$st.blob_keys)
                    .bind(id)
                    .fetch_all(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                let mut keys = Vec::new();
                for r in &rows {
                    keys.push(r.text("blob_key")?);
                    keys.extend(
                        $crate::meta::rows::renditions(r)?
                            .into_iter()
                            .map(|r| r.blob_key),
                    );
                }
                Ok(keys)
            }

            async fn delete_document(&mut self, id: &str) -> $crate::Result<()> {
                for sql in [&$st.delete_versions, &$st.delete_document] {
                    sqlx::query(sql)
                        .bind(id)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(self.err())?;
                }
                Ok(())
            }

            async fn swap_key_block(
                &mut self,
                id: &str,
                version: u64,
                expected: &[u8],
                new: &[u8],
            ) -> $crate::Result<bool> {
                let res = sqlx::query(&$st.swap_key_block)
                    .bind(new)
                    .bind(id)
                    .bind(version as i64)
                    .bind(expected)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                Ok(res.rows_affected() == 1)
            }

            async fn renditions_if_key_block(
                &mut self,
                id: &str,
                version: u64,
                expected: &[u8],
            ) -> $crate::Result<Option<String>> {
                use $crate::meta::rows::RowAccess as _;
                let row = sqlx::query(&$st.renditions_if_key_block)
                    .bind(id)
                    .bind(version as i64)
                    .bind(expected)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                row.map(|r| r.text("renditions")).transpose()
            }

            async fn write_shred(
                &mut self,
                id: &str,
                version: u64,
                key_block: &[u8],
                renditions: &str,
            ) -> $crate::Result<()> {
                sqlx::query(&$st.write_shred)
                    .bind(key_block)
                    .bind(renditions)
                    .bind(id)
                    .bind(version as i64)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                Ok(())
            }

            async fn lock_version(
                &mut self,
                id: &str,
                version: u64,
            ) -> $crate::Result<Option<($crate::model::VersionRecord, String)>> {
                use $crate::meta::rows::RowAccess as _;
                if let Some(lock) = &$st.lock_version {
                    sqlx::query(lock)
                        .bind(id)
                        .bind(version as i64)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(self.err())?;
                }
                let row = sqlx::query(&$st.select_version_stages_locked)
                    .bind(id)
                    .bind(version as i64)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                row.map(|r| Ok(($crate::meta::rows::version_from_row(&r)?, r.text("stages")?)))
                    .transpose()
            }

            async fn write_stages(
                &mut self,
                id: &str,
                version: u64,
                stages: &str,
                renditions: &str,
                state: $crate::model::ProcessingState,
            ) -> $crate::Result<()> {
                sqlx::query(&$st.write_stages)
                    .bind(stages)
                    .bind(renditions)
                    .bind(state.as_str())
                    .bind(id)
                    .bind(version as i64)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                Ok(())
            }

            async fn outbox_insert(
                &mut self,
                event_type: &str,
                key: &str,
                (event_id, payload): (String, String),
                at: $crate::model::Timestamp,
            ) -> $crate::Result<()> {
                sqlx::query(&$st.insert_outbox)
                    .bind(event_id)
                    .bind(event_type)
                    .bind(key)
                    .bind(payload)
                    .bind(at.0)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                Ok(())
            }

            async fn commit(self) -> $crate::Result<()> {
                let err = self.err();
                self.tx.commit().await.map_err(err)
            }
        }

        impl $tx {
            async fn select_document(
                &mut self,
                sql: &str,
                id: &str,
            ) -> $crate::Result<$crate::model::DocumentRecord> {
                let row = sqlx::query(sql)
                    .bind(id)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(self.err())?;
                $crate::meta::rows::found(row, $crate::meta::rows::document_from_row, id, None)
            }
        }

        /// The store: its transactional writes are this module's flows, its other calls the
        /// statements' reads and writes below, or what the backend does its own way
        /// (`read_document`, `write_hold`, `documents_where`, `find_referenced`, `mark_sent`).
        #[async_trait::async_trait]
        impl $crate::meta::MetadataStore for $store {
            async fn commit_version(
                &self,
                new: $crate::model::NewVersion,
                expected_latest: Option<u64>,
            ) -> $crate::Result<$crate::model::VersionRecord> {
                $crate::meta::sql::commit_version(self.tx().await?, new, expected_latest).await
            }

            async fn document(&self, document_id: &str) -> $crate::Result<$crate::model::DocumentRecord> {
                self.read_document(document_id).await
            }

            async fn version(
                &self,
                document_id: &str,
                version: Option<u64>,
            ) -> $crate::Result<$crate::model::VersionRecord> {
                self.read_version(document_id, version).await
            }

            async fn versions(&self, document_id: &str) -> $crate::Result<Vec<$crate::model::VersionRecord>> {
                self.read_versions(document_id).await
            }

            async fn set_tombstone(
                &self,
                document_id: &str,
                tombstone: Option<($crate::model::Timestamp, String)>,
            ) -> $crate::Result<$crate::model::DocumentRecord> {
                $crate::meta::sql::set_tombstone(self.tx().await?, document_id, tombstone).await
            }

            async fn set_hold(
                &self,
                document_id: &str,
                change: $crate::meta::HoldChange,
            ) -> $crate::Result<$crate::model::DocumentRecord> {
                self.write_hold(document_id, change).await
            }

            async fn purge(
                &self,
                document_id: &str,
                now: $crate::model::Timestamp,
            ) -> $crate::Result<Vec<String>> {
                $crate::meta::sql::purge(self.tx().await?, document_id, now).await
            }

            async fn documents_by_patient(
                &self,
                patient_id: &str,
            ) -> $crate::Result<Vec<$crate::model::DocumentRecord>> {
                self.documents_where("patient_id", patient_id).await
            }

            async fn documents_by_exam(
                &self,
                exam_id: &str,
            ) -> $crate::Result<Vec<$crate::model::DocumentRecord>> {
                self.documents_where("exam_id", exam_id).await
            }

            async fn replace_key_block(
                &self,
                document_id: &str,
                version: u64,
                expected: &[u8],
                new: &[u8],
            ) -> $crate::Result<()> {
                $crate::meta::sql::replace_key_block(self.tx().await?, document_id, version, expected, new)
                    .await
            }

            async fn replace_renditions(
                &self,
                document_id: &str,
                version: u64,
                expected: &[$crate::model::Rendition],
                new: &[$crate::model::Rendition],
            ) -> $crate::Result<()> {
                self.swap_renditions(document_id, version, expected, new)
                    .await
            }

            async fn list_documents(
                &self,
                after: Option<&str>,
                limit: usize,
            ) -> $crate::Result<Vec<$crate::model::DocumentRecord>> {
                self.read_document_list(after, limit).await
            }

            async fn referenced_blobs(
                &self,
                keys: &[String],
            ) -> $crate::Result<std::collections::HashSet<String>> {
                self.find_referenced(keys).await
            }

            async fn outbox_pending(&self, limit: usize) -> $crate::Result<Vec<$crate::model::OutboxEntry>> {
                self.read_outbox_pending(limit).await
            }

            async fn outbox_mark_sent(&self, event_ids: &[String]) -> $crate::Result<()> {
                self.mark_sent(event_ids).await
            }

            async fn record_stage(
                &self,
                document_id: &str,
                version: u64,
                result: $crate::model::StageResult,
                required: &[String],
            ) -> $crate::Result<$crate::model::JoinOutcome> {
                $crate::meta::sql::record_stage(self.tx().await?, document_id, version, result, required)
                    .await
            }

            async fn record_release(
                &self,
                release: &$crate::model::ExamRelease,
            ) -> $crate::Result<$crate::model::ExamRelease> {
                self.write_release(release).await
            }

            async fn exam_release(
                &self,
                exam_id: &str,
            ) -> $crate::Result<Option<$crate::model::ExamRelease>> {
                self.read_release(exam_id).await
            }
        }

        impl $store {
            /// A version row, or the latest.
            async fn read_version(
                &self,
                document_id: &str,
                version: Option<u64>,
            ) -> $crate::Result<$crate::model::VersionRecord> {
                let row = match version {
                    Some(v) => {
                        sqlx::query(&$st.select_version)
                            .bind(document_id)
                            .bind(v as i64)
                            .fetch_optional(&self.pool)
                            .await
                    }
                    None => {
                        sqlx::query(&$st.select_latest_version)
                            .bind(document_id)
                            .fetch_optional(&self.pool)
                            .await
                    }
                }
                .map_err(self.err())?;
                $crate::meta::rows::found(
                    row,
                    $crate::meta::rows::version_from_row,
                    document_id,
                    version,
                )
            }

            async fn read_versions(
                &self,
                document_id: &str,
            ) -> $crate::Result<Vec<$crate::model::VersionRecord>> {
                let rows = sqlx::query(&$st.select_versions)
                    .bind(document_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(self.err())?;
                rows.iter()
                    .map($crate::meta::rows::version_from_row)
                    .collect()
            }

            async fn read_document_list(
                &self,
                after: Option<&str>,
                limit: usize,
            ) -> $crate::Result<Vec<$crate::model::DocumentRecord>> {
                let rows = sqlx::query(&$st.list_documents)
                    .bind(after.unwrap_or(""))
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(self.err())?;
                rows.iter()
                    .map($crate::meta::rows::document_from_row)
                    .collect()
            }

            async fn read_outbox_pending(
                &self,
                limit: usize,
            ) -> $crate::Result<Vec<$crate::model::OutboxEntry>> {
                let rows = sqlx::query(&$st.outbox_pending)
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(self.err())?;
                rows.iter()
                    .map($crate::meta::rows::outbox_from_row)
                    .collect()
            }

            async fn swap_renditions(
                &self,
                document_id: &str,
                version: u64,
                expected: &[$crate::model::Rendition],
                new: &[$crate::model::Rendition],
            ) -> $crate::Result<()> {
                let res = sqlx::query(&$st.replace_renditions)
                    .bind($crate::meta::join::renditions_json(new)?)
                    .bind(document_id)
                    .bind(version as i64)
                    .bind($crate::meta::join::renditions_json(expected)?)
                    .execute(&self.pool)
                    .await
                    .map_err(self.err())?;
                if res.rows_affected() != 1 {
                    return Err($crate::meta::join::renditions_changed(document_id, version));
                }
                Ok(())
            }

            async fn write_release(
                &self,
                release: &$crate::model::ExamRelease,
            ) -> $crate::Result<$crate::model::ExamRelease> {
                sqlx::query(&$st.insert_release)
                    .bind(&release.exam_id)
                    .bind(&release.patient_id)
                    .bind(release.released_at.0)
                    .bind(&release.released_by)
                    .execute(&self.pool)
                    .await
                    .map_err(self.err())?;
                $crate::meta::rules::kept_release(self.read_release(&release.exam_id).await?, release)
            }

            async fn read_release(
                &self,
                exam_id: &str,
            ) -> $crate::Result<Option<$crate::model::ExamRelease>> {
                let row = sqlx::query(&$st.select_release)
                    .bind(exam_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(self.err())?;
                row.as_ref()
                    .map($crate::meta::rows::release_from_row)
                    .transpose()
            }
        }
    };
}
pub(crate) use impl_sql;
