//! # docstore-search
//!
//! Staff full-text search: a tantivy index of every processed version's extracted text and its
//! metadata (document, version, patient, exam, kind, clinic, date).
//!
//! - Text is analysed for Portuguese: split on non-alphanumerics, lower-cased, ASCII-folded, then
//!   stemmed (Snowball Portuguese) — folding first, so "hemoglobina", "Hemoglobína" and
//!   "HEMOGLOBINA" are one term, and a query typed without accents meets a text written with them.
//! - Every version of a document is indexed; exactly one — the highest version number present — is
//!   flagged `latest`, which searches return by default. Changes to a document go through
//!   [`SearchIndex::replace_document`], which rewrites all its entries at once (a document has few
//!   versions), so re-indexing replaces and never duplicates, and removing the latest version
//!   promotes the one before it.
//! - One writer per index (tantivy's lock file refuses a second). Writes become visible at
//!   [`SearchIndex::commit`], which reloads the reader before returning: no stale read after an
//!   acknowledged commit. Concurrent callers share commits (group commit).
//!
//! The index holds patient data (the text of reports, stored for snippets): every file of it is
//! sealed in the envelope format (`sealed.rs`), its directory is created 0700 and refused if
//! group- or world-accessible; see docs/search.md for how it is protected at rest and who may
//! query it. Searches are audited by [`search`].
//!
//! ## Layout
//! - `lib.rs`: the bounds every search runs under, [`SearchError`], and [`search`], the audited
//!   entry point;
//! - `schema.rs`: the fields a version is indexed under ([`IndexedVersion`]);
//! - `analysis.rs`: the Portuguese word analyser and the word-pair analyser for phrases;
//! - `query.rs`: [`SearchQuery`] and [`SearchResults`], the checks on a query's text before
//!   tantivy parses it, and the rewrite of phrases onto word pairs;
//! - `collect.rs`: counts by kind in the pass that finds the top hits, and the search deadline;
//! - `index.rs`: [`SearchIndex`], the index directory, its single writer with group commit, and
//!   its searches;
//! - `sealed.rs`: the index at rest, every file sealed in the envelope format under an
//!   [`IndexKey`] wrapped by the store's key provider ([`SealedDirectory`]);
//! - `snapshot.rs`: snapshots of a commit's sealed files in the object store, with a sealed
//!   manifest, and their checked restore on a new node.

mod analysis;
mod collect;
mod index;
mod query;
mod schema;
mod sealed;
pub mod snapshot;

use docstore::Timestamp;

pub use analysis::{PAIR_ANALYZER, PT_ANALYZER};
pub use index::SearchIndex;
pub use query::{Hit, HitSnippet, SearchQuery, SearchResults, Sort};
pub use schema::IndexedVersion;
pub use sealed::{FRAME_CACHE_BYTES, FRAME_SIZE, IndexKey, KEY_FILE, SealedDirectory};

/// Most hits one page may ask for.
pub const MAX_PAGE: usize = 1_000;
/// Longest query text, bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Deepest nesting of parentheses in a query.
pub const MAX_QUERY_DEPTH: usize = 32;
/// Most terms in a query (each word of a phrase counts).
pub const MAX_QUERY_TERMS: usize = 64;
/// Most terms of a fuzzy query (each one is a Levenshtein automaton over the term dictionary).
pub const MAX_FUZZY_TERMS: usize = 16;
/// Most hits a search may skip: deeper pages size the top-k buffer.
pub const MAX_OFFSET: usize = 10_000;
/// Longest snippet, characters (longer requests are cut to it).
pub const MAX_SNIPPET_CHARS: usize = 1_000;
/// How long one search may take unless [`SearchQuery::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a search or an index write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The query text does not parse. The text itself is never quoted (it can name a patient).
    #[error("bad query: {0}")]
    Query(String),
    /// The query is over one of the limits (`MAX_QUERY_BYTES`, `MAX_QUERY_DEPTH`,
    /// `MAX_QUERY_TERMS`, `MAX_FUZZY_TERMS`, `MAX_OFFSET`) or ran past its deadline; the text
    /// says which, never the query.
    #[error("query over a limit: {0}")]
    Limit(&'static str),
    /// The index directory is accessible to others than its owner.
    #[error("index directory {0} is group- or world-accessible (chmod 700 it)")]
    Permissions(String),
    /// Another process holds the index writer.
    #[error("the index at {0} is open for writing elsewhere (one writer per index)")]
    Locked(String),
    /// A write to an index opened read-only.
    #[error("the index at {0} is open read-only")]
    ReadOnly(String),
    /// No index at the path (read-only opens do not create one).
    #[error("no search index at {0} (run the index worker or `docstore reindex`)")]
    Missing(String),
    /// The index was built with another schema (an older docstore): `docstore reindex`
    /// rebuilds it.
    #[error("the index at {0} was built by another docstore version: rebuild it with `docstore reindex`")]
    Outdated(String),
    /// The index key could not be made or unwrapped (the key provider refused or failed).
    #[error("index key: {0}")]
    Key(#[source] docstore::Error),
    /// The index itself failed (I/O, corruption).
    #[error("index: {0}")]
    Index(String),
    /// Recording the search in the audit log failed (the search is refused).
    #[error("audit: {0}")]
    Audit(String),
    /// A snapshot's bytes are not what its sealed manifest says (altered, missing or extra),
    /// or its manifest does not open under its key: nothing of it is used.
    #[error("integrity: {0}")]
    Integrity(String),
    /// A snapshot request that cannot be met as given: an id of the wrong form, or a restore
    /// into a directory that is not empty.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The object store holding snapshots failed.
    #[error("snapshot store")]
    Store(#[source] docstore::Error),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Index(e.to_string())
    }
}

/// Maps a failure to take an index's writer: its lock held elsewhere is [`SearchError::Locked`].
fn locked_at(place: &str) -> impl Fn(tantivy::TantivyError) -> SearchError + '_ {
    move |e| match e {
        tantivy::TantivyError::LockFailure(..) => SearchError::Locked(place.to_owned()),
        other => other.into(),
    }
}

/// Runs a search for `who` and records it in the store's audit log (the query's digest and
/// filters, never its text: a query can name a patient); a search whose audit record cannot be
/// written is refused.
pub async fn search(
    store: &docstore::DocStore,
    index: &std::sync::Arc<SearchIndex>,
    who: &docstore::Identity,
    q: SearchQuery,
) -> Result<SearchResults, SearchError> {
    use sha2::Digest;
    let idx = index.clone();
    let query = q.clone();
    let result = tokio::task::spawn_blocking(move || idx.search(&query))
        .await
        .map_err(|e| SearchError::Index(format!("search task: {e}")))?;
    let digest = hex::encode(&sha2::Sha256::digest(q.text.as_bytes())[..8]);
    let mut detail = format!("query_sha256={digest}");
    for (name, value) in [
        ("patient", &q.patient),
        ("exam", &q.exam),
        ("kind", &q.kind),
        ("clinic", &q.clinic),
    ] {
        if let Some(v) = value {
            detail.push_str(&format!(" {name}={v}"));
        }
    }
    if let Ok(r) = &result {
        detail.push_str(&format!(" hits={}", r.total));
    }
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(SearchError::Query(_)) => "invalid_input".to_owned(),
        Err(_) => "unavailable".to_owned(),
    };
    store
        .audit_sink()
        .record(docstore::audit::AuditRecord {
            at: Timestamp::now(),
            actor: who.subject.clone(),
            action: "search".into(),
            document: None,
            version: None,
            outcome,
            detail: Some(detail),
        })
        .await
        .map_err(|e| SearchError::Audit(e.to_string()))?;
    result
}
