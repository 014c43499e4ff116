//! What the API says about documents and versions, and cursor pagination. Views leave out what
//! only the store needs (blob keys, wrapped keys).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use docstore::{DocumentRecord, ProcessingState, VersionRecord};
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;

/// A rendition of a version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RenditionView {
    /// Stage that made it (`stamp`, `thumbnail`, `text`).
    pub stage: String,
    /// Stage version.
    pub stage_version: u32,
    /// Media type.
    pub media_type: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// A version's record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    /// Document id.
    pub document_id: String,
    /// Version number.
    pub version: u64,
    /// The version's unique id (also its `ETag`).
    pub version_id: String,
    /// Patient id.
    pub patient_id: String,
    /// Exam id.
    pub exam_id: String,
    /// Kind: `report`, `image` or `attachment`.
    #[schema(value_type = String)]
    pub kind: docstore::Kind,
    /// Media type.
    pub media_type: String,
    /// Plaintext size, bytes.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Commit time, RFC 3339.
    pub created_at: String,
    /// Who committed it.
    pub created_by: String,
    /// Processing state: `pending`, `processed` or `failed`.
    #[schema(value_type = String)]
    pub state: ProcessingState,
    /// Renditions made so far.
    pub renditions: Vec<RenditionView>,
    /// Whether the version was crypto-shredded.
    pub shredded: bool,
}

impl From<&VersionRecord> for VersionView {
    fn from(v: &VersionRecord) -> Self {
        VersionView {
            document_id: v.document_id.clone(),
            version: v.version,
            version_id: v.version_id.to_string(),
            patient_id: v.patient_id.clone(),
            exam_id: v.exam_id.clone(),
            kind: v.kind,
            media_type: v.media_type.clone(),
            size: v.size,
            sha256: v.sha256.clone(),
            created_at: v.created_at.to_rfc3339(),
            created_by: v.created_by.clone(),
            state: v.state,
            renditions: v
                .renditions
                .iter()
                .map(|r| RenditionView {
                    stage: r.stage.clone(),
                    stage_version: r.stage_version,
                    media_type: r.media_type.clone(),
                    size: r.size,
                    sha256: r.sha256.clone(),
                })
                .collect(),
            shredded: v.key_block.is_empty(),
        }
    }
}

/// A document's record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    /// Document id.
    pub document_id: String,
    /// Patient id.
    pub patient_id: String,
    /// Exam id.
    pub exam_id: String,
    /// Kind: `report`, `image` or `attachment`.
    #[schema(value_type = String)]
    pub kind: docstore::Kind,
    /// Latest version.
    pub latest_version: u64,
    /// First version's commit time, RFC 3339.
    pub created_at: String,
    /// Soft-delete time, RFC 3339.
    pub deleted_at: Option<String>,
    /// Legal hold.
    pub legal_hold: bool,
    /// Retention date, RFC 3339.
    pub retain_until: Option<String>,
}

impl From<&DocumentRecord> for DocumentView {
    fn from(d: &DocumentRecord) -> Self {
        DocumentView {
            document_id: d.document_id.clone(),
            patient_id: d.patient_id.clone(),
            exam_id: d.exam_id.clone(),
            kind: d.kind,
            latest_version: d.latest_version,
            created_at: d.created_at.to_rfc3339(),
            deleted_at: d.deleted_at.map(|t| t.to_rfc3339()),
            legal_hold: d.legal_hold,
            retain_until: d.retain_until.map(|t| t.to_rfc3339()),
        }
    }
}

/// `?cursor=…&limit=…` of every list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Opaque: the `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page, 1–200 (default 50).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Largest page.
pub const MAX_PAGE: usize = 200;

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Pages `items` (already in their list order, with strictly increasing `key`s).
    pub fn of(items: Vec<T>, q: &PageQuery, key: impl Fn(&T) -> String) -> Result<Page<T>, ApiError> {
        let limit = q.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!("limit must be 1..={MAX_PAGE}")));
        }
        let after = match &q.cursor {
            None => None,
            Some(c) => Some(
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ApiError::BadRequest("cursor is not one this server issued".into()))?,
            ),
        };
        let mut rest: Vec<T> = match after {
            None => items,
            Some(a) => items.into_iter().filter(|i| key(i) > a).collect(),
        };
        let next_cursor = if rest.len() > limit {
            rest.truncate(limit);
            rest.last().map(|i| URL_SAFE_NO_PAD.encode(key(i)))
        } else {
            None
        };
        Ok(Page {
            items: rest,
            next_cursor,
        })
    }
}
