//! Row decoding shared by the SQL backends: one mapping from columns to records, whatever the
//! engine's native types.

use crate::error::{Error, Result};
use crate::model::{
    DocumentRecord, Kind, OutboxEntry, ProcessingState, Rendition, Timestamp, VersionId, VersionRecord,
};

/// Typed column access that each SQL backend implements for its row type.
pub(crate) trait RowAccess {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn flag(&self, col: &str) -> Result<bool>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>>;
}

/// Implements [`RowAccess`] for an sqlx row type; the closure-like argument says how that engine
/// stores booleans (SQLite: an integer 0/1).
macro_rules! impl_row_access {
    ($row:ty, |$this:ident, $col:ident| $flag:expr) => {
        impl $crate::meta::rows::RowAccess for $row {
            fn text(&self, col: &str) -> $crate::Result<String> {
                sqlx::Row::try_get(self, col).map_err($crate::meta::rows::row_err)
            }
            fn opt_text(&self, col: &str) -> $crate::Result<Option<String>> {
                sqlx::Row::try_get(self, col).map_err($crate::meta::rows::row_err)
            }
            fn int(&self, col: &str) -> $crate::Result<i64> {
                sqlx::Row::try_get(self, col).map_err($crate::meta::rows::row_err)
            }
            fn opt_int(&self, col: &str) -> $crate::Result<Option<i64>> {
                sqlx::Row::try_get(self, col).map_err($crate::meta::rows::row_err)
            }
            fn bytes(&self, col: &str) -> $crate::Result<Vec<u8>> {
                sqlx::Row::try_get(self, col).map_err($crate::meta::rows::row_err)
            }
            fn flag(&self, col: &str) -> $crate::Result<bool> {
                let ($this, $col) = (self, col);
                $flag
            }
        }
    };
}
pub(crate) use impl_row_access;

/// A row that the database built as a JSON array (SQLite's `json_array`), for lists fetched as
/// one aggregated value: values in `columns` order, integers as JSON numbers, booleans as 0/1.
pub(crate) struct JsonRow<'c> {
    pub(crate) columns: &'c [&'c str],
    pub(crate) values: Vec<serde_json::Value>,
}

impl JsonRow<'_> {
    fn get(&self, col: &str) -> Result<&serde_json::Value> {
        self.columns
            .iter()
            .position(|c| *c == col)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| Error::bad_record(format!("no column {col} in the row")))
    }
}

impl RowAccess for JsonRow<'_> {
    fn text(&self, col: &str) -> Result<String> {
        self.opt_text(col)?
            .ok_or_else(|| Error::bad_record(format!("column {col} is null")))
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        match self.get(col)? {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            _ => Err(Error::bad_record(format!("column {col} is not text"))),
        }
    }
    fn int(&self, col: &str) -> Result<i64> {
        self.opt_int(col)?
            .ok_or_else(|| Error::bad_record(format!("column {col} is null")))
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        match self.get(col)? {
            serde_json::Value::Null => Ok(None),
            v => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| Error::bad_record(format!("column {col} is not an integer"))),
        }
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.int(col)? != 0)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        // No list carries a blob column: JSON cannot hold one.
        Err(Error::bad_record(format!(
            "column {col} is binary; not in a JSON row"
        )))
    }
}

/// The record in `row`, or `NotFound` for `document` when there is no row.
pub(crate) fn found<R: RowAccess, T>(
    row: Option<R>,
    decode: impl Fn(&R) -> Result<T>,
    document: &str,
    version: Option<u64>,
) -> Result<T> {
    match row {
        Some(r) => decode(&r),
        None => Err(Error::NotFound {
            document: document.to_owned(),
            version,
        }),
    }
}

pub(crate) fn row_err(e: sqlx::Error) -> Error {
    Error::Metadata(e.into())
}

fn kind(r: &impl RowAccess) -> Result<Kind> {
    let s = r.text("kind")?;
    s.parse()
        .map_err(|_| Error::bad_record(format!("unknown kind {s:?} in database")))
}

pub(crate) fn renditions(r: &impl RowAccess) -> Result<Vec<Rendition>> {
    renditions_from_json(&r.text("renditions")?)
}

/// A `renditions` column's JSON.
pub(crate) fn renditions_from_json(text: &str) -> Result<Vec<Rendition>> {
    serde_json::from_str(text).map_err(|e| Error::Metadata(e.into()))
}

pub(crate) fn document_from_row(r: &impl RowAccess) -> Result<DocumentRecord> {
    Ok(DocumentRecord {
        document_id: r.text("document_id")?,
        patient_id: r.text("patient_id")?,
        exam_id: r.text("exam_id")?,
        kind: kind(r)?,
        latest_version: r.int("latest_version")? as u64,
        created_at: Timestamp(r.int("created_at")?),
        deleted_at: r.opt_int("deleted_at")?.map(Timestamp),
        deleted_by: r.opt_text("deleted_by")?,
        legal_hold: r.flag("legal_hold")?,
        retain_until: r.opt_int("retain_until")?.map(Timestamp),
    })
}

pub(crate) fn version_from_row(r: &impl RowAccess) -> Result<VersionRecord> {
    Ok(VersionRecord {
        document_id: r.text("document_id")?,
        version: r.int("version")? as u64,
        version_id: VersionId::stored(r.text("version_id")?)?,
        patient_id: r.text("patient_id")?,
        exam_id: r.text("exam_id")?,
        kind: kind(r)?,
        media_type: r.text("media_type")?,
        size: r.int("size")? as u64,
        sha256: r.text("sha256")?,
        created_at: Timestamp(r.int("created_at")?),
        created_by: r.text("created_by")?,
        blob_key: r.text("blob_key")?,
        key_block: r.bytes("key_block")?,
        state: ProcessingState::parse(&r.text("state")?)?,
        renditions: renditions(r)?,
    })
}

pub(crate) fn outbox_from_row(r: &impl RowAccess) -> Result<OutboxEntry> {
    Ok(OutboxEntry {
        seq: r.int("seq")?,
        event_id: r.text("event_id")?,
        event_type: r.text("event_type")?,
        key: r.text("key")?,
        payload: r.text("payload")?,
        created_at: Timestamp(r.int("created_at")?),
    })
}

/// An `exam_releases` row.
pub(crate) fn release_from_row(row: &impl RowAccess) -> Result<crate::model::ExamRelease> {
    Ok(crate::model::ExamRelease {
        exam_id: row.text("exam_id")?,
        patient_id: row.text("patient_id")?,
        released_at: crate::model::Timestamp(row.int("released_at")?),
        released_by: row.text("released_by")?,
    })
}
