//! [`MetadataStore`] on Amazon DynamoDB. Table design: `docs/dynamodb.md`.
//!
//! One table, generic `pk`/`sk` keys. A version commit is one `TransactWriteItems`: the document
//! item (conditional on the latest version the writer read), the version item (must not exist),
//! a blob-reference item and the outbox item — all or nothing. A writer that loses the race re-reads
//! and retries (bounded, with jitter); with `expected_version` it gets `Conflict` instead.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ScalarAttributeType,
    TransactWriteItem, Update,
};

use super::rules::{
    check_expected, check_owner, kept_release, key_block_changed, next_version, tombstone_reason,
};
use super::{HoldChange, MetadataStore};
use crate::error::{Error, MetadataFailure, Result};
use crate::model::{
    DocumentRecord, ExamRelease, JoinOutcome, Kind, NewVersion, OutboxEntry, ProcessingState, Rendition,
    StageResult, Timestamp, VersionId, VersionRecord,
};

type Item = HashMap<String, Av>;

/// Attempts of an optimistic commit before giving up under contention.
const COMMIT_ATTEMPTS: u32 = 200;
/// DynamoDB's limit on items per transaction.
const TRANSACTION_ITEMS: usize = 100;
const DOC_SK: &str = "#DOC";
const BLOB_SK: &str = "#BLOB";
const OUTBOX_SK: &str = "#OUTBOX";
const PENDING: &str = "OUTBOX";
const RELEASE_SK: &str = "#RELEASE";

/// Commit lock stripes per process (see [`DynamoMetadata::commit_version`]).
const STRIPES: usize = 64;

/// DynamoDB metadata store.
#[derive(Debug, Clone)]
pub struct DynamoMetadata {
    client: Client,
    table: String,
    stripes: std::sync::Arc<[tokio::sync::Mutex<()>; STRIPES]>,
}

fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}
fn n(v: i64) -> Av {
    Av::N(v.to_string())
}
fn doc_pk(id: &str) -> String {
    format!("D#{id}")
}
fn exam_pk(id: &str) -> String {
    format!("E#{id}")
}
fn version_sk(v: u64) -> String {
    format!("V#{v:020}")
}

fn ddb_err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &str,
    e: SdkError<E>,
) -> Error {
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            let detail = format!("{op}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(&e));
            Error::unavailable_from("dynamodb", detail, e)
        }
        _ => match e.code() {
            Some(
                "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded",
            ) => Error::unavailable_from("dynamodb", format!("{op}: throttled after retries"), e),
            _ if e.raw_response().is_some_and(|r| r.status().is_server_error()) => {
                Error::unavailable_from("dynamodb", format!("{op}: server error after retries"), e)
            }
            code => {
                let what = format!("dynamodb {op}: {}", code.unwrap_or("unknown error"));
                Error::Metadata(MetadataFailure::Client {
                    what,
                    source: Box::new(e),
                })
            }
        },
    }
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::Metadata(MetadataFailure::Client {
        what: "dynamodb request".into(),
        source: Box::new(e),
    })
}

/// True when a transaction was cancelled by a failed condition or a concurrent transaction.
fn lost_race(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as T;
    match e.as_service_error() {
        Some(T::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .iter()
            .any(|r| matches!(r.code(), Some("ConditionalCheckFailed" | "TransactionConflict"))),
        _ => false,
    }
}

fn get_s(item: &Item, k: &str) -> Result<String> {
    match item.get(k) {
        Some(Av::S(v)) => Ok(v.clone()),
        _ => Err(Error::bad_record(format!("dynamodb item lacks string {k}"))),
    }
}
fn opt_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}
fn get_n(item: &Item, k: &str) -> Result<i64> {
    opt_n(item, k)?.ok_or_else(|| Error::bad_record(format!("dynamodb item lacks number {k}")))
}
fn opt_n(item: &Item, k: &str) -> Result<Option<i64>> {
    match item.get(k) {
        Some(Av::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| Error::bad_record(format!("dynamodb item has bad number {k}"))),
        _ => Ok(None),
    }
}
fn kind_of(item: &Item) -> Result<Kind> {
    get_s(item, "kind")?
        .parse()
        .map_err(|_| Error::bad_record("dynamodb item has unknown kind"))
}

fn document_from_item(item: &Item) -> Result<DocumentRecord> {
    Ok(DocumentRecord {
        document_id: get_s(item, "document_id")?,
        patient_id: get_s(item, "patient_id")?,
        exam_id: get_s(item, "exam_id")?,
        kind: kind_of(item)?,
        latest_version: get_n(item, "latest_version")? as u64,
        created_at: Timestamp(get_n(item, "created_at")?),
        deleted_at: opt_n(item, "deleted_at")?.map(Timestamp),
        deleted_by: opt_s(item, "deleted_by"),
        legal_hold: matches!(item.get("legal_hold"), Some(Av::Bool(true))),
        retain_until: opt_n(item, "retain_until")?.map(Timestamp),
    })
}

fn version_from_item(item: &Item) -> Result<VersionRecord> {
    Ok(VersionRecord {
        document_id: get_s(item, "document_id")?,
        version: get_n(item, "version")? as u64,
        version_id: VersionId::stored(get_s(item, "version_id")?)?,
        patient_id: get_s(item, "patient_id")?,
        exam_id: get_s(item, "exam_id")?,
        kind: kind_of(item)?,
        media_type: get_s(item, "media_type")?,
        size: get_n(item, "size")? as u64,
        sha256: get_s(item, "sha256")?,
        created_at: Timestamp(get_n(item, "created_at")?),
        created_by: get_s(item, "created_by")?,
        blob_key: get_s(item, "blob_key")?,
        key_block: match item.get("key_block") {
            Some(Av::B(b)) => b.as_ref().to_vec(),
            _ => Vec::new(),
        },
        state: ProcessingState::parse(&get_s(item, "state")?)?,
        renditions: serde_json::from_str(&get_s(item, "renditions")?)
            .map_err(|e| Error::Metadata(e.into()))?,
    })
}

fn outbox_from_item(item: &Item) -> Result<OutboxEntry> {
    Ok(OutboxEntry {
        seq: get_n(item, "seq")?,
        event_id: get_s(item, "event_id")?,
        event_type: get_s(item, "event_type")?,
        key: get_s(item, "key")?,
        payload: get_s(item, "payload")?,
        created_at: Timestamp(get_n(item, "created_at")?),
    })
}

impl DynamoMetadata {
    /// A store on an existing table (see [`DynamoMetadata::create_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoMetadata {
            client,
            table: table.into(),
            stripes: std::sync::Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table with its three indexes (on-demand billing) and waits until it is active.
    pub async fn create_table(client: &Client, table: &str) -> Result<()> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err)
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(build_err)
        };
        let gsi = |name: &str, pk: &str, sk: &str| -> Result<GlobalSecondaryIndex> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(build_err)
        };
        let mut req = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(gsi("by_patient", "gsi1pk", "gsi1sk")?)
            .global_secondary_indexes(gsi("by_exam", "gsi2pk", "gsi2sk")?)
            .global_secondary_indexes(gsi("outbox_pending", "gsi3pk", "gsi3sk")?);
        for a in [
            "pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk",
        ] {
            req = req.attribute_definitions(attr(a)?);
        }
        req.send().await.map_err(|e| ddb_err("CreateTable", e))?;
        for _ in 0..120 {
            let d = client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| ddb_err("DescribeTable", e))?;
            if d.table().and_then(|t| t.table_status()).map(|s| s.as_str()) == Some("ACTIVE") {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(Error::bad_record(format!("table {table} did not become active")))
    }

    fn key(pk: String, sk: &str) -> Item {
        HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
    }

    async fn get_item(&self, pk: String, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb_err("GetItem", e))?;
        Ok(out.item)
    }

    async fn document_item(&self, id: &str) -> Result<Option<Item>> {
        self.get_item(doc_pk(id), DOC_SK).await
    }

    /// Every item of a query, following pagination.
    async fn query_all(
        &self,
        index: Option<&str>,
        key_condition: &str,
        values: Item,
        forward: bool,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_owned))
                .key_condition_expression(key_condition)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(forward)
                .consistent_read(index.is_none())
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| ddb_err("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    async fn version_items(&self, document_id: &str) -> Result<Vec<Item>> {
        let values = HashMap::from([
            (":pk".to_owned(), s(doc_pk(document_id))),
            (":v".to_owned(), s("V#")),
        ]);
        self.query_all(None, "pk = :pk AND begins_with(sk, :v)", values, true)
            .await
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete(&self, pk: String, sk: &str) -> Result<TransactWriteItem> {
        let del = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().delete(del).build())
    }

    fn commit_items(
        &self,
        doc: Option<&DocumentRecord>,
        record: &VersionRecord,
    ) -> Result<Vec<TransactWriteItem>> {
        let id = &record.document_id;
        let mut items = Vec::with_capacity(4);
        match doc {
            Some(d) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(doc_pk(id), DOC_SK)))
                    .update_expression("SET latest_version = :n")
                    .condition_expression(
                        "latest_version = :l AND attribute_not_exists(deleted_at) AND attribute_not_exists(purging)",
                    )
                    .expression_attribute_values(":n", n(record.version as i64))
                    .expression_attribute_values(":l", n(d.latest_version as i64))
                    .build()
                    .map_err(build_err)?;
                items.push(TransactWriteItem::builder().update(update).build());
            }
            None => {
                let order = format!("{:015}#{id}", record.created_at.0);
                let mut item = Self::key(doc_pk(id), DOC_SK);
                item.extend([
                    ("document_id".to_owned(), s(id)),
                    ("patient_id".to_owned(), s(&record.patient_id)),
                    ("exam_id".to_owned(), s(&record.exam_id)),
                    ("kind".to_owned(), s(record.kind.as_str())),
                    ("latest_version".to_owned(), n(record.version as i64)),
                    ("created_at".to_owned(), n(record.created_at.0)),
                    ("legal_hold".to_owned(), Av::Bool(false)),
                    ("gsi1pk".to_owned(), s(format!("P#{}", record.patient_id))),
                    ("gsi1sk".to_owned(), s(&order)),
                    ("gsi2pk".to_owned(), s(format!("E#{}", record.exam_id))),
                    ("gsi2sk".to_owned(), s(&order)),
                ]);
                items.push(self.put(item, Some("attribute_not_exists(pk)"))?);
            }
        }
        let mut v = Self::key(doc_pk(id), &version_sk(record.version));
        v.extend([
            ("document_id".to_owned(), s(id)),
            ("version".to_owned(), n(record.version as i64)),
            ("version_id".to_owned(), s(record.version_id.as_str())),
            ("patient_id".to_owned(), s(&record.patient_id)),
            ("exam_id".to_owned(), s(&record.exam_id)),
            ("kind".to_owned(), s(record.kind.as_str())),
            ("media_type".to_owned(), s(&record.media_type)),
            ("size".to_owned(), n(record.size as i64)),
            ("sha256".to_owned(), s(&record.sha256)),
            ("created_at".to_owned(), n(record.created_at.0)),
            ("created_by".to_owned(), s(&record.created_by)),
            ("blob_key".to_owned(), s(&record.blob_key)),
            ("key_block".to_owned(), Av::B(Blob::new(record.key_block.clone()))),
            ("state".to_owned(), s(record.state.as_str())),
            ("renditions".to_owned(), s("[]")),
        ]);
        items.push(self.put(v, Some("attribute_not_exists(pk)"))?);
        let mut blob = Self::key(format!("B#{}", record.blob_key), BLOB_SK);
        blob.extend([
            ("document_id".to_owned(), s(id)),
            ("version".to_owned(), n(record.version as i64)),
        ]);
        items.push(self.put(blob, Some("attribute_not_exists(pk)"))?);
        let (event_id, payload) = crate::outbox::file_uploaded(record);
        items.push(self.outbox_put(
            &event_id,
            crate::outbox::FILE_UPLOADED,
            id,
            record.version,
            payload,
        )?);
        Ok(items)
    }

    /// The outbox item of an event about version `version` of document `id`; it sits in the sparse
    /// `outbox_pending` index until marked sent.
    fn outbox_put(
        &self,
        event_id: &str,
        event_type: &str,
        id: &str,
        version: u64,
        payload: String,
    ) -> Result<TransactWriteItem> {
        let now = Timestamp::now().0;
        let mut ev = Self::key(format!("O#{event_id}"), OUTBOX_SK);
        ev.extend([
            ("event_id".to_owned(), s(event_id)),
            ("event_type".to_owned(), s(event_type)),
            ("key".to_owned(), s(id)),
            ("payload".to_owned(), s(payload)),
            ("created_at".to_owned(), n(now)),
            ("seq".to_owned(), n(now)),
            ("gsi3pk".to_owned(), s(PENDING)),
            ("gsi3sk".to_owned(), s(format!("{now:015}#{id}#{version:020}"))),
        ]);
        self.put(ev, Some("attribute_not_exists(pk)"))
    }

    /// Like [`Self::update_document`], recording a `file.deleted` entry (`reason`) in the same
    /// transaction.
    async fn update_document_announced(
        &self,
        id: &str,
        update: &str,
        condition: &str,
        values: Item,
        reason: &str,
    ) -> Result<DocumentRecord> {
        let change = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(doc_pk(id), DOC_SK)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(if values.is_empty() { None } else { Some(values) })
            .build()
            .map_err(build_err)?;
        let (event_id, payload) = crate::outbox::file_deleted(id, None, reason);
        let items = vec![
            TransactWriteItem::builder().update(change).build(),
            self.outbox_put(&event_id, crate::outbox::FILE_DELETED, id, 0, payload)?,
        ];
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => self.document(id).await,
            Err(e) if lost_race(&e) => Err(self.document_condition_failed(id).await?),
            Err(e) => Err(ddb_err("TransactWriteItems", e)),
        }
    }

    async fn update_document(
        &self,
        id: &str,
        update: &str,
        condition: &str,
        values: Item,
    ) -> Result<DocumentRecord> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(doc_pk(id), DOC_SK)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(if values.is_empty() { None } else { Some(values) })
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(o) => document_from_item(&o.attributes.unwrap_or_default()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(self.document_condition_failed(id).await?)
            }
            Err(e) => Err(ddb_err("UpdateItem", e)),
        }
    }

    /// Why a conditional update of a document failed: it is gone, or a purge holds it.
    async fn document_condition_failed(&self, id: &str) -> Result<Error> {
        Ok(match self.document_item(id).await? {
            None => Error::NotFound {
                document: id.to_owned(),
                version: None,
            },
            Some(_) => Error::Refused {
                document: id.to_owned(),
                reason: "a purge is in progress".into(),
            },
        })
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<()> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ddb_err("TransactWriteItems", e))
    }
}

#[async_trait]
impl MetadataStore for DynamoMetadata {
    async fn commit_version(&self, new: NewVersion, expected_latest: Option<u64>) -> Result<VersionRecord> {
        // Writers in this process queue per document (striped) instead of racing each other: a lost
        // race costs a transaction and write capacity. Other processes are still fenced by the
        // conditional transaction below.
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            new.document_id.hash(&mut h);
            h.finish() as usize % STRIPES
        };
        let _turn = self.stripes[stripe].lock().await;
        for attempt in 0..COMMIT_ATTEMPTS {
            let doc = self
                .document_item(&new.document_id)
                .await?
                .map(|i| document_from_item(&i))
                .transpose()?;
            let latest = doc.as_ref().map(|d| d.latest_version).unwrap_or(0);
            if let Some(d) = &doc {
                check_owner(d, &new)?;
                d.ensure_live()?;
            }
            check_expected(&new.document_id, expected_latest, latest)?;
            let record = next_version(new.clone(), latest);
            let items = self.commit_items(doc.as_ref(), &record)?;
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(record),
                Err(e) if lost_race(&e) => {
                    // Another writer committed first: re-read, and back off with jitter so that
                    // contenders spread out instead of colliding again.
                    let cap = 2u64.saturating_pow(attempt.min(6)).min(50);
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..=cap))).await;
                }
                Err(e) => return Err(ddb_err("TransactWriteItems", e)),
            }
        }
        Err(Error::unavailable(
            "dynamodb",
            format!("commit on {} lost {COMMIT_ATTEMPTS} races", new.document_id),
        ))
    }

    async fn document(&self, document_id: &str) -> Result<DocumentRecord> {
        match self.document_item(document_id).await? {
            Some(item) => document_from_item(&item),
            None => Err(Error::NotFound {
                document: document_id.to_owned(),
                version: None,
            }),
        }
    }

    async fn version(&self, document_id: &str, version: Option<u64>) -> Result<VersionRecord> {
        let item = match version {
            Some(v) => self.get_item(doc_pk(document_id), &version_sk(v)).await?,
            None => {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :v)")
                    .expression_attribute_values(":pk", s(doc_pk(document_id)))
                    .expression_attribute_values(":v", s("V#"))
                    .scan_index_forward(false)
                    .limit(1)
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| ddb_err("Query", e))?;
                out.items.unwrap_or_default().into_iter().next()
            }
        };
        match item {
            Some(i) => version_from_item(&i),
            None => Err(Error::NotFound {
                document: document_id.to_owned(),
                version,
            }),
        }
    }

    async fn versions(&self, document_id: &str) -> Result<Vec<VersionRecord>> {
        self.version_items(document_id)
            .await?
            .iter()
            .map(version_from_item)
            .collect()
    }

    async fn set_tombstone(
        &self,
        document_id: &str,
        tombstone: Option<(Timestamp, String)>,
    ) -> Result<DocumentRecord> {
        match tombstone {
            Some((at, by)) => {
                let values = HashMap::from([(":at".to_owned(), n(at.0)), (":by".to_owned(), s(by))]);
                self.update_document_announced(
                    document_id,
                    "SET deleted_at = :at, deleted_by = :by",
                    "attribute_exists(pk)",
                    values,
                    tombstone_reason(true),
                )
                .await
            }
            None => {
                self.update_document_announced(
                    document_id,
                    "REMOVE deleted_at, deleted_by",
                    "attribute_exists(pk) AND attribute_not_exists(purging)",
                    HashMap::new(),
                    tombstone_reason(false),
                )
                .await
            }
        }
    }

    async fn set_hold(&self, document_id: &str, change: HoldChange) -> Result<DocumentRecord> {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut values = HashMap::new();
        if let Some(h) = change.legal_hold {
            set.push("legal_hold = :h");
            values.insert(":h".to_owned(), Av::Bool(h));
        }
        match change.retain_until {
            Some(Some(t)) => {
                set.push("retain_until = :r");
                values.insert(":r".to_owned(), n(t.0));
            }
            Some(None) => remove.push("retain_until"),
            None => {}
        }
        let mut update = String::new();
        if !set.is_empty() {
            update.push_str(&format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        if update.is_empty() {
            return self.document(document_id).await;
        }
        self.update_document(document_id, update.trim(), "attribute_exists(pk)", values)
            .await
    }

    async fn purge(&self, document_id: &str, now: Timestamp) -> Result<Vec<String>> {
        // 1. Mark the document as purging, atomically with the checks; from here restore and new
        //    versions are refused, so the item-by-item deletion below cannot race them.
        let marked = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(doc_pk(document_id), DOC_SK)))
            .update_expression("SET purging = :t")
            .condition_expression(
                "attribute_exists(pk) AND attribute_exists(deleted_at) AND legal_hold = :f \
                 AND (attribute_not_exists(retain_until) OR retain_until <= :now)",
            )
            .expression_attribute_values(":t", Av::Bool(true))
            .expression_attribute_values(":f", Av::Bool(false))
            .expression_attribute_values(":now", n(now.0))
            .send()
            .await;
        if let Err(e) = marked {
            if e.code() != Some("ConditionalCheckFailedException") {
                return Err(ddb_err("UpdateItem", e));
            }
            let doc = self.document(document_id).await?;
            return Err(Error::Refused {
                document: document_id.to_owned(),
                reason: doc
                    .purge_refusal(now)
                    .unwrap_or_else(|| "purge conditions changed".into()),
            });
        }
        // 2. Delete versions and their blob references in transactions of at most 100 items, then
        //    the document item last: a crash midway leaves a purging document that a retry finishes.
        let versions: Vec<VersionRecord> = self.versions(document_id).await?;
        let mut keys = Vec::new();
        let mut deletes = Vec::new();
        for v in &versions {
            deletes.push(self.delete(doc_pk(document_id), &version_sk(v.version))?);
            deletes.push(self.delete(format!("B#{}", v.blob_key), BLOB_SK)?);
            keys.push(v.blob_key.clone());
            for r in &v.renditions {
                deletes.push(self.delete(format!("B#{}", r.blob_key), BLOB_SK)?);
                keys.push(r.blob_key.clone());
            }
        }
        let mut deletes = deletes.into_iter().peekable();
        while deletes.peek().is_some() {
            let chunk: Vec<_> = deletes.by_ref().take(TRANSACTION_ITEMS).collect();
            self.transact(chunk).await?;
        }
        let (event_id, payload) = crate::outbox::file_deleted(document_id, None, "purged");
        self.transact(vec![
            self.delete(doc_pk(document_id), DOC_SK)?,
            self.outbox_put(&event_id, crate::outbox::FILE_DELETED, document_id, 0, payload)?,
        ])
        .await?;
        Ok(keys)
    }

    async fn documents_by_patient(&self, patient_id: &str) -> Result<Vec<DocumentRecord>> {
        let values = HashMap::from([(":p".to_owned(), s(format!("P#{patient_id}")))]);
        self.query_all(Some("by_patient"), "gsi1pk = :p", values, true)
            .await?
            .iter()
            .map(document_from_item)
            .collect()
    }

    async fn documents_by_exam(&self, exam_id: &str) -> Result<Vec<DocumentRecord>> {
        let values = HashMap::from([(":e".to_owned(), s(format!("E#{exam_id}")))]);
        self.query_all(Some("by_exam"), "gsi2pk = :e", values, true)
            .await?
            .iter()
            .map(document_from_item)
            .collect()
    }

    async fn replace_key_block(
        &self,
        document_id: &str,
        version: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<()> {
        let changed = || key_block_changed(document_id, version);
        if new.is_empty() {
            // A shred: the version's and its renditions' key blocks are emptied, the document's
            // hold and retention checked, and file.deleted announced, in one transaction.
            let now = Timestamp::now();
            let refused = |reason| Error::Refused {
                document: document_id.to_owned(),
                reason,
            };
            if let Some(reason) = self.document(document_id).await?.shred_refusal(now) {
                return Err(refused(reason));
            }
            let item = self
                .get_item(doc_pk(document_id), &version_sk(version))
                .await?
                .ok_or_else(changed)?;
            let listed = opt_s(&item, "renditions").unwrap_or_default();
            let record = version_from_item(&item)?;
            let cleared = super::join::renditions_json(&super::join::shredded(&record.renditions))?;
            let hold = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(doc_pk(document_id), DOC_SK)))
                .condition_expression(
                    "legal_hold = :f AND (attribute_not_exists(retain_until) OR retain_until <= :now)",
                )
                .expression_attribute_values(":f", Av::Bool(false))
                .expression_attribute_values(":now", n(now.0))
                .build()
                .map_err(build_err)?;
            let change = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(doc_pk(document_id), &version_sk(version))))
                .update_expression("SET key_block = :new, renditions = :r")
                .condition_expression("key_block = :old AND renditions = :listed")
                .expression_attribute_values(":new", Av::B(Blob::new(Vec::new())))
                .expression_attribute_values(":old", Av::B(Blob::new(expected.to_vec())))
                .expression_attribute_values(":r", s(cleared))
                .expression_attribute_values(":listed", s(listed))
                .build()
                .map_err(build_err)?;
            let (event_id, payload) = crate::outbox::file_deleted(document_id, Some(version), "shredded");
            let items = vec![
                TransactWriteItem::builder().condition_check(hold).build(),
                TransactWriteItem::builder().update(change).build(),
                self.outbox_put(
                    &event_id,
                    crate::outbox::FILE_DELETED,
                    document_id,
                    version,
                    payload,
                )?,
            ];
            return match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if lost_race(&e) => match self.document(document_id).await?.shred_refusal(now) {
                    Some(reason) => Err(refused(reason)),
                    None => Err(changed()),
                },
                Err(e) => Err(ddb_err("TransactWriteItems", e)),
            };
        }
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(doc_pk(document_id), &version_sk(version))))
            .update_expression("SET key_block = :new")
            .condition_expression("key_block = :old")
            .expression_attribute_values(":new", Av::B(Blob::new(new.to_vec())))
            .expression_attribute_values(":old", Av::B(Blob::new(expected.to_vec())))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Err(changed()),
            Err(e) => Err(ddb_err("UpdateItem", e)),
        }
    }

    async fn replace_renditions(
        &self,
        document_id: &str,
        version: u64,
        expected: &[Rendition],
        new: &[Rendition],
    ) -> Result<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(doc_pk(document_id), &version_sk(version))))
            .update_expression("SET renditions = :new")
            .condition_expression("renditions = :old")
            .expression_attribute_values(":new", s(super::join::renditions_json(new)?))
            .expression_attribute_values(":old", s(super::join::renditions_json(expected)?))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(super::join::renditions_changed(document_id, version))
            }
            Err(e) => Err(ddb_err("UpdateItem", e)),
        }
    }

    async fn list_documents(&self, after: Option<&str>, limit: usize) -> Result<Vec<DocumentRecord>> {
        // A scan reads the whole table: fine for the rare admin passes (re-wrap, re-index) that use
        // this; results are sorted here because scans have no order.
        let mut docs = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :doc")
                .expression_attribute_values(":doc", s(DOC_SK))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| ddb_err("Scan", e))?;
            for item in out.items.unwrap_or_default() {
                let d = document_from_item(&item)?;
                if after.is_none_or(|a| d.document_id.as_str() > a) {
                    docs.push(d);
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        docs.sort_by(|a, b| a.document_id.cmp(&b.document_id));
        docs.truncate(limit);
        Ok(docs)
    }

    async fn referenced_blobs(&self, keys: &[String]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(100) {
            let mut pending: Vec<Item> = chunk
                .iter()
                .map(|k| Self::key(format!("B#{k}"), BLOB_SK))
                .collect();
            // BatchGetItem may return part of the batch as unprocessed: ask again, bounded.
            for _ in 0..10 {
                if pending.is_empty() {
                    break;
                }
                let req = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(|e| ddb_err("BatchGetItem", e))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    if let Some(k) = get_s(&item, "pk")?.strip_prefix("B#") {
                        found.insert(k.to_owned());
                    }
                }
                if let Some(mut un) = out.unprocessed_keys
                    && let Some(rest) = un.remove(&self.table)
                {
                    pending = rest.keys;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if !pending.is_empty() {
                return Err(Error::unavailable(
                    "dynamodb",
                    "BatchGetItem kept returning unprocessed keys",
                ));
            }
        }
        Ok(found)
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut entries = Vec::new();
        let mut start: Option<Item> = None;
        while entries.len() < limit {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("outbox_pending")
                .key_condition_expression("gsi3pk = :p")
                .expression_attribute_values(":p", s(PENDING))
                .limit((limit - entries.len()).min(1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| ddb_err("Query", e))?;
            for item in out.items.unwrap_or_default() {
                entries.push(outbox_from_item(&item)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(entries)
    }

    async fn outbox_mark_sent(&self, event_ids: &[String]) -> Result<()> {
        let now = Timestamp::now().0;
        for id in event_ids {
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(format!("O#{id}"), OUTBOX_SK)))
                // Leaving the sparse index is what removes it from `outbox_pending`.
                .update_expression("SET sent_at = :now REMOVE gsi3pk, gsi3sk")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":now", n(now))
                .send()
                .await;
            match res {
                Ok(_) => {}
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
                Err(e) => return Err(ddb_err("UpdateItem", e)),
            }
        }
        Ok(())
    }

    async fn record_stage(
        &self,
        document_id: &str,
        version: u64,
        result: StageResult,
        required: &[String],
    ) -> Result<JoinOutcome> {
        // Optimistic: the update is conditioned on the stage results read, so of concurrent
        // completions one commits and the others re-read and merge again.
        for attempt in 0..COMMIT_ATTEMPTS {
            let Some(item) = self.get_item(doc_pk(document_id), &version_sk(version)).await? else {
                return Err(Error::NotFound {
                    document: document_id.to_owned(),
                    version: Some(version),
                });
            };
            let record = version_from_item(&item)?;
            let old = opt_s(&item, "stages");
            let merged = super::join::merge(&record, old.as_deref().unwrap_or(""), result.clone(), required)?;
            let renditions = super::join::renditions_json(&merged.renditions)?;
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(doc_pk(document_id), &version_sk(version))))
                .update_expression("SET stages = :s, renditions = :r, #st = :state")
                .expression_attribute_names("#st", "state")
                .expression_attribute_values(":s", s(&merged.stages_json))
                .expression_attribute_values(":r", s(renditions))
                .expression_attribute_values(":state", s(merged.state.as_str()));
            // The key block read (not shredded, see merge) must still be there.
            update = update.expression_attribute_values(":kb", Av::B(Blob::new(record.key_block.clone())));
            update = match &old {
                Some(o) => update
                    .condition_expression("stages = :old AND key_block = :kb")
                    .expression_attribute_values(":old", s(o)),
                None => update.condition_expression(
                    "attribute_exists(pk) AND attribute_not_exists(stages) AND key_block = :kb",
                ),
            };
            let alive = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(doc_pk(document_id), DOC_SK)))
                .condition_expression("attribute_not_exists(deleted_at)")
                .build()
                .map_err(build_err)?;
            let mut items = vec![
                TransactWriteItem::builder()
                    .update(update.build().map_err(build_err)?)
                    .build(),
                TransactWriteItem::builder().condition_check(alive).build(),
            ];
            // Blob references: the new renditions are kept by gc, the replaced ones are not.
            let kept: HashSet<&str> = merged.renditions.iter().map(|r| r.blob_key.as_str()).collect();
            for r in &record.renditions {
                if !kept.contains(r.blob_key.as_str()) {
                    items.push(self.delete(format!("B#{}", r.blob_key), BLOB_SK)?);
                }
            }
            for r in &result.renditions {
                let mut blob = Self::key(format!("B#{}", r.blob_key), BLOB_SK);
                blob.extend([
                    ("document_id".to_owned(), s(document_id)),
                    ("version".to_owned(), n(version as i64)),
                ]);
                items.push(self.put(blob, None)?);
            }
            if let Some((event_id, payload)) = &merged.event {
                items.push(self.outbox_put(
                    event_id,
                    crate::outbox::FILE_PROCESSED,
                    document_id,
                    version,
                    payload.clone(),
                )?);
            }
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(merged.outcome),
                Err(e) if lost_race(&e) => {
                    // The transaction's ConditionCheck refuses a deleted document: tell that
                    // apart from a race with another stage (one read, off the common path).
                    super::join::refuse_if_deleted(&self.document(document_id).await?)?;
                    let cap = 2u64.saturating_pow(attempt.min(6)).min(50);
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..=cap))).await;
                }
                Err(e) => return Err(ddb_err("TransactWriteItems", e)),
            }
        }
        Err(Error::unavailable(
            "dynamodb",
            format!("stage result for {document_id} v{version} lost {COMMIT_ATTEMPTS} races"),
        ))
    }

    async fn record_release(&self, release: &ExamRelease) -> Result<ExamRelease> {
        let mut item = Self::key(exam_pk(&release.exam_id), RELEASE_SK);
        item.insert("patient_id".into(), s(&release.patient_id));
        item.insert("released_at".into(), n(release.released_at.0));
        item.insert("released_by".into(), s(&release.released_by));
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // The first release stays: a later one writes nothing.
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => {}
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
            Err(e) => return Err(ddb_err("PutItem", e)),
        }
        kept_release(self.exam_release(&release.exam_id).await?, release)
    }

    async fn exam_release(&self, exam_id: &str) -> Result<Option<ExamRelease>> {
        let Some(item) = self.get_item(exam_pk(exam_id), RELEASE_SK).await? else {
            return Ok(None);
        };
        Ok(Some(ExamRelease {
            exam_id: exam_id.to_owned(),
            patient_id: get_s(&item, "patient_id")?,
            released_at: Timestamp(get_n(&item, "released_at")?),
            released_by: get_s(&item, "released_by")?,
        }))
    }
}
