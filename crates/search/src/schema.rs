//! The index's schema: which fields a version is indexed under, how each is stored, and the
//! version handed to the index ([`IndexedVersion`]).

use docstore::Timestamp;
use serde::Serialize;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};

use crate::analysis::{PAIR_ANALYZER, PT_ANALYZER};

/// Schema field names a query may name (`patient:`...); the text fields are internal.
pub(crate) const TEXT: &str = "text";
pub(crate) const TEXT_PAIRS: &str = "text_pairs";
pub(crate) const TEXT_PRIOR: &str = "text_prior";

/// One version as indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexedVersion {
    /// Document id.
    pub document_id: String,
    /// Version number.
    pub version: u64,
    /// Patient id.
    pub patient_id: String,
    /// Exam id.
    pub exam_id: String,
    /// Kind (`report`, `image`, `attachment`).
    pub kind: String,
    /// Clinic that released it.
    pub clinic: String,
    /// When the version was created.
    pub created_at: Timestamp,
    /// Extracted text (pages separated by form feeds).
    #[serde(skip)]
    pub text: String,
}

/// The text is patient data: wiped when the entry is dropped (the index keeps its own copy).
impl Drop for IndexedVersion {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.text);
    }
}

pub(crate) struct Fields {
    pub(crate) document_id: Field,
    pub(crate) version: Field,
    pub(crate) latest: Field,
    pub(crate) patient: Field,
    pub(crate) exam: Field,
    pub(crate) kind: Field,
    pub(crate) clinic: Field,
    pub(crate) created: Field,
    /// The latest version's text. Older versions keep theirs in `text_prior`, so a search of
    /// latest versions needs no filter on `latest` (a filter would disable block-max pruning).
    pub(crate) text: Field,
    /// Adjacent word pairs of `text` (phrase lookups).
    pub(crate) text_pairs: Field,
    /// Text of versions that are not the latest.
    pub(crate) text_prior: Field,
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = |tokenizer: &str, stored: bool| {
        let o = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored { o.set_stored() } else { o }
    };
    let fields = Fields {
        document_id: b.add_text_field("document", STRING | STORED),
        version: b.add_u64_field("version", INDEXED | STORED | FAST),
        latest: b.add_u64_field("latest", INDEXED | FAST),
        patient: b.add_text_field("patient", STRING | STORED),
        exam: b.add_text_field("exam", STRING | STORED),
        kind: b.add_text_field("kind", STRING | STORED | FAST),
        clinic: b.add_text_field("clinic", STRING | STORED),
        created: b.add_i64_field("created", INDEXED | STORED | FAST),
        text: b.add_text_field(TEXT, text_options(PT_ANALYZER, true)),
        text_pairs: b.add_text_field(TEXT_PAIRS, text_options(PAIR_ANALYZER, false)),
        text_prior: b.add_text_field(TEXT_PRIOR, text_options(PT_ANALYZER, true)),
    };
    (b.build(), fields)
}
