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
//! The index holds patient data (the text of reports, stored for snippets): its directory is
//! created 0700 and refused if group- or world-accessible; see docs/search.md for how it is
//! protected at rest and who may query it. Searches are audited by [`search`].

use std::collections::BTreeMap;
use std::ops::{Bound, Range};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use docstore::Timestamp;
use serde::Serialize;
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, BoxTokenStream, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Score, SegmentReader, TantivyDocument, Term,
};

/// Name of the Portuguese analyser in the index's tokenizer registry.
pub const PT_ANALYZER: &str = "pt_folded";

/// Name of the analyser that indexes each pair of adjacent analysed words as one term, so a
/// phrase is looked up like a word instead of by intersecting the positions of common words
/// (the idea of Elasticsearch's `index_phrases`).
pub const PAIR_ANALYZER: &str = "pt_pairs";

/// Joins the two words of a pair term. The word tokenizer splits on it, so no word holds it.
const PAIR_SEPARATOR: char = ' ';

/// Schema field names a query may name (`patient:`...); the text fields are internal.
const TEXT: &str = "text";
const TEXT_PAIRS: &str = "text_pairs";
const TEXT_PRIOR: &str = "text_prior";

/// Heap of the single index writer.
const WRITER_HEAP: usize = 64 << 20;

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
/// Most dictionary words one fuzzy term is expanded to for highlighting.
const MAX_FUZZY_EXPANSIONS: usize = 64;
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
    /// The index itself failed (I/O, corruption).
    #[error("index: {0}")]
    Index(String),
    /// Recording the search in the audit log failed (the search is refused).
    #[error("audit: {0}")]
    Audit(String),
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

struct Fields {
    document_id: Field,
    version: Field,
    latest: Field,
    patient: Field,
    exam: Field,
    kind: Field,
    clinic: Field,
    created: Field,
    /// The latest version's text. Older versions keep theirs in `text_prior`, so a search of
    /// latest versions needs no filter on `latest` (a filter would disable block-max pruning).
    text: Field,
    /// Adjacent word pairs of `text` (phrase lookups).
    text_pairs: Field,
    /// Text of versions that are not the latest.
    text_prior: Field,
}

fn schema() -> (Schema, Fields) {
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

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::Portuguese))
        .build()
}

/// The words of [`analyzer`], paired: "colesterol total hdl" gives "colesterol total" at
/// position 0 and "total hdl" at 1. Words with a gap between them (a dropped over-long word)
/// make no pair.
#[derive(Clone)]
struct PairTokenizer(TextAnalyzer);

struct PairStream<'a> {
    words: BoxTokenStream<'a>,
    previous: Option<Token>,
    pair: Token,
}

impl Tokenizer for PairTokenizer {
    type TokenStream<'a> = PairStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PairStream<'a> {
        PairStream {
            words: self.0.token_stream(text),
            previous: None,
            pair: Token::default(),
        }
    }
}

impl TokenStream for PairStream<'_> {
    fn advance(&mut self) -> bool {
        while self.words.advance() {
            let word = self.words.token();
            let paired = match &self.previous {
                Some(first) if first.position + 1 == word.position => {
                    let pair = &mut self.pair;
                    pair.text.clear();
                    pair.text.push_str(&first.text);
                    pair.text.push(PAIR_SEPARATOR);
                    pair.text.push_str(&word.text);
                    pair.offset_from = first.offset_from;
                    pair.offset_to = word.offset_to;
                    pair.position = first.position;
                    pair.position_length = 1;
                    true
                }
                _ => false,
            };
            match &mut self.previous {
                Some(first) => first.clone_from(word),
                None => self.previous = Some(word.clone()),
            }
            if paired {
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        &self.pair
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.pair
    }
}

/// Positions of the words `analyzer` makes of `phrase`, if they follow each other (`None`
/// when there is a gap).
fn adjacent_words(words: &mut TextAnalyzer, phrase: &str) -> Option<usize> {
    let mut stream = words.token_stream(phrase);
    let mut count = 0;
    let mut last: Option<usize> = None;
    while stream.advance() {
        let at = stream.token().position;
        if last.is_some_and(|l| l + 1 != at) {
            return None;
        }
        last = Some(at);
        count += 1;
    }
    Some(count)
}

/// Rewrites a parsed query for the latest versions' fields: a phrase of adjacent words (quoted,
/// or one literal the analyser splits, like "covid-19") becomes a lookup of its word pairs;
/// literals with no words are dropped and nested conjunctions flattened, as tantivy's own
/// parser does, so a single word stays a bare term query (block-max pruned).
fn rewrite_for_pairs(ast: UserInputAst, words: &mut TextAnalyzer) -> Option<UserInputAst> {
    match ast {
        UserInputAst::Clause(clauses) => {
            let mut out = Vec::with_capacity(clauses.len());
            for (occur, sub) in clauses {
                let Some(sub) = rewrite_for_pairs(sub, words) else {
                    continue;
                };
                let required = is_required(occur);
                match sub {
                    UserInputAst::Clause(inner) if required && inner.iter().all(|(o, _)| is_required(*o)) => {
                        out.extend(inner)
                    }
                    other => out.push((occur, other)),
                }
            }
            match out.len() {
                0 => None,
                1 if is_required(out[0].0) => out.pop().map(|(_, sub)| sub),
                _ => Some(UserInputAst::Clause(out)),
            }
        }
        UserInputAst::Boost(sub, by) => {
            rewrite_for_pairs(*sub, words).map(|sub| UserInputAst::Boost(Box::new(sub), by))
        }
        UserInputAst::Leaf(leaf) => match *leaf {
            UserInputLeaf::Literal(mut literal)
                if literal.field_name.as_deref().is_none_or(|f| f == TEXT) =>
            {
                match adjacent_words(words, &literal.phrase) {
                    Some(0) => None,
                    Some(n) if n >= 2 && literal.slop == 0 && !literal.prefix => {
                        literal.field_name = Some(TEXT_PAIRS.to_owned());
                        Some(UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(literal))))
                    }
                    _ => Some(UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(literal)))),
                }
            }
            other => Some(UserInputAst::Leaf(Box::new(other))),
        },
    }
}

/// Whether a clause must match: `Must`, or no operator (the parser joins words with AND).
fn is_required(occur: Option<tantivy::query::Occur>) -> bool {
    matches!(occur, None | Some(tantivy::query::Occur::Must))
}

/// Whether every hit of `ast` (rewritten by [`rewrite_for_pairs`]) holds a word of the latest
/// versions' text fields: then the query itself keeps to latest versions. `patient:x` alone
/// does not, and needs the `latest` filter.
fn requires_latest_text(ast: &UserInputAst) -> bool {
    use tantivy::query::Occur as O;
    match ast {
        UserInputAst::Leaf(leaf) => matches!(
            leaf.as_ref(),
            UserInputLeaf::Literal(l)
                if l.field_name.as_deref().is_none_or(|f| f == TEXT || f == TEXT_PAIRS)
        ),
        UserInputAst::Boost(sub, _) => requires_latest_text(sub),
        UserInputAst::Clause(clauses) => {
            let mut required = clauses.iter().filter(|(o, _)| is_required(*o)).peekable();
            let mut optional = clauses.iter().filter(|(o, _)| *o == Some(O::Should)).peekable();
            if required.peek().is_some() {
                required.any(|(_, sub)| requires_latest_text(sub))
            } else {
                optional.peek().is_some() && optional.all(|(_, sub)| requires_latest_text(sub))
            }
        }
    }
}

/// A search's text, parsed.
struct TextQueries {
    /// As typed: it names the words to highlight in snippets.
    typed: Box<dyn Query>,
    /// What runs: phrases looked up by word pairs on latest versions.
    matcher: Box<dyn Query>,
    /// Every hit of `matcher` is a latest version (no `latest` filter needed).
    keeps_to_latest: bool,
}

/// Counts hits, in total and by kind, reading the `kind` column: one pass without scores,
/// beside a top-k pass that block-max pruning keeps short.
struct KindTally;

struct SegmentTally {
    kinds: Option<tantivy::columnar::StrColumn>,
    by_ord: Vec<u64>,
    total: u64,
    /// Scratch for a block's kind ordinals.
    ords: Vec<Option<u64>>,
}

impl Collector for KindTally {
    type Fruit = (usize, BTreeMap<String, u64>);
    type Child = SegmentTally;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentTally> {
        let kinds = segment.fast_fields().str("kind")?;
        let terms = kinds.as_ref().map_or(0, |k| k.num_terms());
        Ok(SegmentTally {
            kinds,
            by_ord: vec![0; terms],
            total: 0,
            ords: vec![None; tantivy::COLLECT_BLOCK_BUFFER_LEN],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, segments: Vec<(u64, BTreeMap<String, u64>)>) -> tantivy::Result<Self::Fruit> {
        let mut total = 0;
        let mut by_kind = BTreeMap::new();
        for (n, kinds) in segments {
            total += n;
            for (kind, count) in kinds {
                *by_kind.entry(kind).or_insert(0) += count;
            }
        }
        Ok((usize::try_from(total).unwrap_or(usize::MAX), by_kind))
    }
}

impl SegmentCollector for SegmentTally {
    type Fruit = (u64, BTreeMap<String, u64>);

    fn collect(&mut self, doc: DocId, _: Score) {
        self.total += 1;
        if let Some(ord) = self.kinds.as_ref().and_then(|k| k.ords().first(doc))
            && let Some(n) = self.by_ord.get_mut(ord as usize)
        {
            *n += 1;
        }
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        self.total += docs.len() as u64;
        let Some(kinds) = &self.kinds else { return };
        // A block at a time: the column reads a full block without an iterator per document.
        for chunk in docs.chunks(self.ords.len()) {
            let ords = &mut self.ords[..chunk.len()];
            ords.fill(None);
            kinds.ords().first_vals(chunk, ords);
            for ord in ords.iter().flatten() {
                if let Some(n) = self.by_ord.get_mut(*ord as usize) {
                    *n += 1;
                }
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        let mut by_kind = BTreeMap::new();
        if let Some(kinds) = &self.kinds {
            for (ord, &count) in self.by_ord.iter().enumerate() {
                let mut name = String::new();
                if count > 0 && kinds.ord_to_str(ord as u64, &mut name).unwrap_or(false) {
                    by_kind.insert(name, count);
                }
            }
        }
        (self.total, by_kind)
    }
}

/// Checks a query's text against the limits before tantivy parses it (its grammar recurses once
/// per parenthesis).
fn check_query_text(text: &str, fuzzy: bool) -> Result<(), SearchError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(SearchError::Limit("query longer than 1 KiB"));
    }
    let (mut depth, mut deepest, mut quoted) = (0usize, 0usize, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_QUERY_DEPTH {
        return Err(SearchError::Limit("parentheses nested deeper than 32"));
    }
    let ast =
        tantivy::query_grammar::parse_query(text).map_err(|_| SearchError::Query("syntax error".into()))?;
    if has_unsupported_leaf(&ast) {
        // `field:*` and `/regex/` reach the index as queries on whatever field they name (an
        // unknown one fails inside tantivy) and regexes have no cost bound: not part of the
        // query language.
        return Err(SearchError::Query(
            "field existence and regex queries are not supported".into(),
        ));
    }
    let terms = count_terms(&ast);
    if terms > MAX_QUERY_TERMS {
        return Err(SearchError::Limit("more than 64 terms"));
    }
    if fuzzy && terms > MAX_FUZZY_TERMS {
        return Err(SearchError::Limit("more than 16 fuzzy terms"));
    }
    Ok(())
}

/// Whether a parsed query holds a `field:*` or a `/regex/` leaf.
fn has_unsupported_leaf(ast: &UserInputAst) -> bool {
    match ast {
        UserInputAst::Clause(clauses) => clauses.iter().any(|(_, sub)| has_unsupported_leaf(sub)),
        UserInputAst::Boost(sub, _) => has_unsupported_leaf(sub),
        UserInputAst::Leaf(leaf) => matches!(
            leaf.as_ref(),
            UserInputLeaf::Exists { .. } | UserInputLeaf::Regex { .. }
        ),
    }
}

/// Terms of a parsed query: each word of a literal or phrase, each bound of a range, each
/// element of a set.
fn count_terms(ast: &UserInputAst) -> usize {
    match ast {
        UserInputAst::Clause(clauses) => clauses.iter().map(|(_, sub)| count_terms(sub)).sum(),
        UserInputAst::Boost(sub, _) => count_terms(sub),
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::Literal(l) => l.phrase.split_whitespace().count().max(1),
            UserInputLeaf::Set { elements, .. } => elements.len().max(1),
            UserInputLeaf::Range { .. } => 2,
            _ => 1,
        },
    }
}

/// A search's deadline, checked by the collectors between segments and by the hit loop.
struct Deadline {
    until: std::time::Instant,
    passed: std::sync::atomic::AtomicBool,
}

impl Deadline {
    fn after(d: std::time::Duration) -> Self {
        Deadline {
            until: std::time::Instant::now() + d,
            passed: Default::default(),
        }
    }

    fn check(&self) -> Result<(), SearchError> {
        if std::time::Instant::now() > self.until {
            self.passed.store(true, Ordering::Relaxed);
            return Err(SearchError::Limit("the search ran past its deadline"));
        }
        Ok(())
    }

    fn on<C>(&self, inner: C) -> Timed<'_, C> {
        Timed {
            inner,
            deadline: self,
        }
    }

    /// A collector's error: the deadline's when it was the cause.
    fn error(&self, e: tantivy::TantivyError) -> SearchError {
        if self.passed.load(Ordering::Relaxed) {
            SearchError::Limit("the search ran past its deadline")
        } else {
            e.into()
        }
    }
}

/// A collector that refuses to start another segment once its deadline has passed.
struct Timed<'a, C> {
    inner: C,
    deadline: &'a Deadline,
}

impl<C> Timed<'_, C> {
    fn started(&self) -> tantivy::Result<()> {
        self.deadline
            .check()
            .map_err(|_| tantivy::TantivyError::InvalidArgument("search deadline".into()))
    }
}

impl<C: Collector> Collector for Timed<'_, C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn check_schema(&self, schema: &Schema) -> tantivy::Result<()> {
        self.inner.check_schema(schema)
    }

    fn for_segment(&self, id: u32, segment: &SegmentReader) -> tantivy::Result<Self::Child> {
        self.started()?;
        self.inner.for_segment(id, segment)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    // Delegated as a whole: top-k collectors prune blocks (block-max WAND) in their own
    // `collect_segment`, which the default one would lose.
    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        id: u32,
        segment: &SegmentReader,
    ) -> tantivy::Result<<Self::Child as SegmentCollector>::Fruit> {
        self.started()?;
        self.inner.collect_segment(weight, id, segment)
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<Self::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Self::Fruit> {
        self.inner.merge_fruits(fruits)
    }
}

/// A search index on disk (or in memory, for tests).
pub struct SearchIndex {
    index: Index,
    fields: Fields,
    /// `None` when opened read-only.
    writer: Option<Mutex<IndexWriter>>,
    reader: IndexReader,
    /// Threads for the passes that visit every hit (the count, newest-first order), a share of
    /// the segments each. The relevance pass stays on the caller's thread: pruning keeps it short.
    counting: tantivy::Executor,
    /// Writes applied to the writer, and the count the last commit covered.
    applied: AtomicU64,
    committed: Mutex<u64>,
    place: String,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("place", &self.place).finish()
    }
}

impl SearchIndex {
    /// Opens the index in `dir` for writing, creating it (mode 0700) if absent. Fails with
    /// [`SearchError::Locked`] if another process has it open for writing.
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        Self::open_dir(dir, true)
    }

    /// Opens an existing index for searching only (beside a worker that writes it): sees what
    /// was committed when it opened and after each [`SearchIndex::refresh`].
    pub fn open_read_only(dir: &Path) -> Result<SearchIndex, SearchError> {
        Self::open_dir(dir, false)
    }

    fn open_dir(dir: &Path, write: bool) -> Result<SearchIndex, SearchError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let place = dir.display().to_string();
        if !dir.exists() {
            if !write {
                return Err(SearchError::Missing(place));
            }
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| SearchError::Index(format!("{place}: {e}")))?;
        }
        let mode = std::fs::metadata(dir)
            .map_err(|e| SearchError::Index(format!("{place}: {e}")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SearchError::Permissions(place));
        }
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| SearchError::Index(format!("{place}: {e}")))?;
        let index = if write {
            Index::open_or_create(directory, schema).map_err(|e| match e {
                tantivy::TantivyError::SchemaError(_) => SearchError::Outdated(place.clone()),
                other => other.into(),
            })?
        } else {
            if !Index::exists(&directory).map_err(|e| SearchError::Index(e.to_string()))? {
                return Err(SearchError::Missing(place));
            }
            let index = Index::open(directory)?;
            if index.schema() != schema {
                return Err(SearchError::Outdated(place));
            }
            index
        };
        Self::with_index(index, fields, place, write)
    }

    /// Opens the index in `dir` for writing, replacing it with an empty one if it was built with
    /// another schema ([`SearchError::Outdated`]): for `docstore reindex`, which then rebuilds
    /// it from the store. Only a directory that holds a tantivy index is removed.
    pub fn open_or_replace(dir: &Path) -> Result<SearchIndex, SearchError> {
        match Self::open(dir) {
            Err(SearchError::Outdated(place)) => {
                let index_err = |e: std::io::Error| SearchError::Index(format!("{place}: {e}"));
                // Opening it under its own schema proves it is an index (not a directory given
                // by mistake), and its writer lock that no other process writes it.
                let directory = tantivy::directory::MmapDirectory::open(dir)
                    .map_err(|e| SearchError::Index(format!("{place}: {e}")))?;
                let old = Index::open(directory)?;
                let lock = old
                    .writer_with_num_threads::<TantivyDocument>(1, 15 << 20)
                    .map_err(locked_at(&place))?;
                drop(lock);
                drop(old);
                std::fs::remove_dir_all(dir).map_err(index_err)?;
                Self::open(dir)
            }
            other => other,
        }
    }

    /// A throwaway index in memory.
    pub fn in_memory() -> Result<SearchIndex, SearchError> {
        let (schema, fields) = schema();
        Self::with_index(Index::create_in_ram(schema), fields, "memory".into(), true)
    }

    fn with_index(
        index: Index,
        fields: Fields,
        place: String,
        write: bool,
    ) -> Result<SearchIndex, SearchError> {
        index.tokenizers().register(PT_ANALYZER, analyzer());
        index
            .tokenizers()
            .register(PAIR_ANALYZER, TextAnalyzer::from(PairTokenizer(analyzer())));
        let writer = if write {
            let w = index
                .writer_with_num_threads(1, WRITER_HEAP)
                .map_err(locked_at(&place))?;
            Some(Mutex::new(w))
        } else {
            None
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let counting = if threads > 1 {
            tantivy::Executor::multi_thread(threads, "search-count-")?
        } else {
            tantivy::Executor::single_thread()
        };
        Ok(SearchIndex {
            index,
            fields,
            writer,
            reader,
            counting,
            applied: AtomicU64::new(0),
            committed: Mutex::new(0),
            place,
        })
    }

    /// Sees the latest commit (a read-only index does not follow its writer by itself).
    pub fn refresh(&self) -> Result<(), SearchError> {
        Ok(self.reader.reload()?)
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter>, SearchError> {
        let w = self
            .writer
            .as_ref()
            .ok_or_else(|| SearchError::ReadOnly(self.place.clone()))?;
        Ok(w.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn version_doc(&self, v: &IndexedVersion, latest: bool) -> TantivyDocument {
        let f = &self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.document_id, &v.document_id);
        d.add_u64(f.version, v.version);
        d.add_u64(f.latest, u64::from(latest));
        d.add_text(f.patient, &v.patient_id);
        d.add_text(f.exam, &v.exam_id);
        d.add_text(f.kind, &v.kind);
        d.add_text(f.clinic, &v.clinic);
        d.add_i64(f.created, v.created_at.0);
        if latest {
            d.add_text(f.text, &v.text);
            d.add_text(f.text_pairs, &v.text);
        } else {
            d.add_text(f.text_prior, &v.text);
        }
        d
    }

    fn read_doc(&self, d: &TantivyDocument) -> IndexedVersion {
        let f = &self.fields;
        let s = |field| {
            d.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        IndexedVersion {
            document_id: s(f.document_id),
            version: d
                .get_first(f.version)
                .and_then(|v| v.as_u64())
                .unwrap_or_default(),
            patient_id: s(f.patient),
            exam_id: s(f.exam),
            kind: s(f.kind),
            clinic: s(f.clinic),
            created_at: Timestamp(
                d.get_first(f.created)
                    .and_then(|v| v.as_i64())
                    .unwrap_or_default(),
            ),
            text: if d.get_first(f.text).is_some() {
                s(f.text)
            } else {
                s(f.text_prior)
            },
        }
    }

    /// Whether any committed version of `document_id` is indexed (a term lookup, no stored text
    /// read: `docstore load` polls it for time to searchable).
    pub fn contains(&self, document_id: &str) -> Result<bool, SearchError> {
        let q = TermQuery::new(
            Term::from_field_text(self.fields.document_id, document_id),
            IndexRecordOption::Basic,
        );
        Ok(self.reader.searcher().search(&q, &tantivy::collector::Count)? > 0)
    }

    /// The committed versions of a document, by version number.
    pub fn versions(&self, document_id: &str) -> Result<Vec<IndexedVersion>, SearchError> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.fields.document_id, document_id),
            IndexRecordOption::Basic,
        );
        let hits = searcher.search(&q, &TopDocs::with_limit(MAX_PAGE).order_by_score())?;
        let mut out = Vec::with_capacity(hits.len());
        for (_, addr) in hits {
            out.push(self.read_doc(&searcher.doc::<TantivyDocument>(addr)?));
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    /// Replaces everything indexed for `document_id` by `versions` (empty: removes the document).
    /// The highest version is flagged latest. Visible after the next [`SearchIndex::commit`].
    pub fn replace_document(
        &self,
        document_id: &str,
        versions: &[IndexedVersion],
    ) -> Result<(), SearchError> {
        let latest = versions.iter().map(|v| v.version).max();
        let docs: Vec<TantivyDocument> = versions
            .iter()
            .filter(|v| v.document_id == document_id)
            .map(|v| self.version_doc(v, Some(v.version) == latest))
            .collect();
        let writer = self.writer()?;
        writer.delete_term(Term::from_field_text(self.fields.document_id, document_id));
        for d in docs {
            writer.add_document(d)?;
        }
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Removes everything (visible at the next commit: a rebuild commits once, at its end).
    pub fn clear(&self) -> Result<(), SearchError> {
        self.writer()?.delete_all_documents()?;
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Indexes one version (replacing it if already indexed), keeping the document's other
    /// committed versions. Callers serialise writes per document (the runtime does: one
    /// partition, one document) and commit before the next write to the same document.
    pub fn upsert(&self, version: IndexedVersion) -> Result<(), SearchError> {
        let mut all: Vec<IndexedVersion> = self
            .versions(&version.document_id)?
            .into_iter()
            .filter(|v| v.version != version.version)
            .collect();
        let id = version.document_id.clone();
        all.push(version);
        self.replace_document(&id, &all)
    }

    /// Removes one version (the one before it becomes latest if it was).
    pub fn remove_version(&self, document_id: &str, version: u64) -> Result<(), SearchError> {
        let rest: Vec<IndexedVersion> = self
            .versions(document_id)?
            .into_iter()
            .filter(|v| v.version != version)
            .collect();
        self.replace_document(document_id, &rest)
    }

    /// Commits every write applied so far and reloads the reader; returns once they are visible
    /// to searches. Callers arriving during a commit share the next one.
    pub fn commit(&self) -> Result<(), SearchError> {
        let target = self.applied.load(Ordering::SeqCst);
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if *committed >= target {
            return Ok(());
        }
        let covers = self.applied.load(Ordering::SeqCst);
        self.writer()?.commit()?;
        self.reader.reload()?;
        *committed = covers;
        Ok(())
    }

    /// Commits, waits for the segment merges that commits start in the background, and goes on
    /// read-only: for the end of a bulk load, before serving searches (the merges would compete
    /// with them for the cores). Fails with [`SearchError::ReadOnly`] on a read-only index.
    pub fn finish_writing(mut self) -> Result<SearchIndex, SearchError> {
        self.commit()?;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| SearchError::ReadOnly(self.place.clone()))?
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(self)
    }

    /// Parses the text of `q`: `None` for an empty text (filters only).
    fn text_queries(&self, q: &SearchQuery) -> Result<Option<TextQueries>, SearchError> {
        if q.text.trim().is_empty() {
            return Ok(None);
        }
        let f = &self.fields;
        // The latest versions' text is in `text` (and `text_pairs`); every version's is in
        // `text` or `text_prior`.
        let text_fields = if q.all_versions {
            vec![f.text, f.text_prior]
        } else {
            vec![f.text]
        };
        let mut parser = QueryParser::for_index(&self.index, text_fields.clone());
        parser.set_conjunction_by_default();
        if q.fuzzy {
            for &field in &text_fields {
                parser.set_field_fuzzy(field, false, 1, true);
            }
        }
        // tantivy's messages can quote the query: a fixed description instead.
        let bad_query =
            |_: tantivy::query::QueryParserError| SearchError::Query("the query does not parse".into());
        let typed = parser.parse_query(&q.text).map_err(bad_query)?;
        let as_typed = |typed: Box<dyn Query>| TextQueries {
            typed: typed.box_clone(),
            matcher: typed,
            keeps_to_latest: false,
        };
        if q.all_versions {
            return Ok(Some(as_typed(typed)));
        }
        let ast = tantivy::query_grammar::parse_query(&q.text)
            .map_err(|_| SearchError::Query("syntax error".into()))?;
        Ok(Some(match rewrite_for_pairs(ast, &mut analyzer()) {
            Some(rewritten) => TextQueries {
                keeps_to_latest: requires_latest_text(&rewritten),
                matcher: parser
                    .build_query_from_user_input_ast(rewritten)
                    .map_err(bad_query)?,
                typed,
            },
            // Nothing left to match on (only punctuation, say): tantivy's own answer.
            None => as_typed(typed),
        }))
    }

    /// Searches (no audit: see [`search`]).
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults, SearchError> {
        let deadline = Deadline::after(q.deadline.unwrap_or(DEFAULT_DEADLINE));
        q.check_limits()?;
        let snippet_chars = q.snippet_chars.clamp(20, MAX_SNIPPET_CHARS);
        let f = &self.fields;
        let searcher = self.reader.searcher();
        let parsed = self.text_queries(q)?;
        let keeps_to_latest = parsed.as_ref().is_some_and(|p| p.keeps_to_latest);
        let (text_query, matcher) = match parsed {
            Some(p) => (Some(p.typed), Some(p.matcher)),
            None => (None, None),
        };
        let term = |field: Field, value: &str| -> (Occur, Box<dyn Query>) {
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(field, value),
                    IndexRecordOption::Basic,
                )),
            )
        };
        let mut filters: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(p) = &q.patient {
            filters.push(term(f.patient, p));
        }
        if let Some(e) = &q.exam {
            filters.push(term(f.exam, e));
        }
        if let Some(exams) = &q.exams {
            let any: Vec<(Occur, Box<dyn Query>)> = exams
                .iter()
                .map(|e| {
                    let t: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(f.exam, e),
                        IndexRecordOption::Basic,
                    ));
                    (Occur::Should, t)
                })
                .collect();
            // An empty disjunction matches nothing, which is what an empty allow-list means.
            filters.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if let Some(k) = &q.kind {
            filters.push(term(f.kind, k));
        }
        if let Some(c) = &q.clinic {
            filters.push(term(f.clinic, c));
        }
        if !q.all_versions && !keeps_to_latest {
            filters.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_u64(f.latest, 1),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if q.from.is_some() || q.until.is_some() {
            let lower = q.from.map_or(Bound::Unbounded, |t| {
                Bound::Included(Term::from_field_i64(f.created, t.0))
            });
            let upper = q.until.map_or(Bound::Unbounded, |t| {
                Bound::Excluded(Term::from_field_i64(f.created, t.0))
            });
            filters.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        // A bare text query keeps its own shape: wrapped in a one-clause boolean query it would
        // lose block-max pruning.
        let query: Box<dyn Query> = match (matcher, filters.is_empty()) {
            (Some(m), true) => m,
            (m, _) => {
                let mut clauses = filters;
                clauses.insert(0, (Occur::Must, m.unwrap_or_else(|| Box::new(AllQuery))));
                Box::new(BooleanQuery::new(clauses))
            }
        };
        let limit = q.limit.clamp(1, MAX_PAGE);
        let top = TopDocs::with_limit(limit).and_offset(q.offset);
        let addresses: Vec<(Option<f32>, tantivy::DocAddress)> = match q.sort {
            Sort::Relevance => searcher
                .search(query.as_ref(), &deadline.on(top.order_by_score()))
                .map_err(|e| deadline.error(e))?
                .into_iter()
                .map(|(s, a)| (Some(s), a))
                .collect(),
            // Unscored, and it visits every hit like the count: on all cores too.
            Sort::Newest => searcher
                .search_with_executor(
                    query.as_ref(),
                    &deadline.on(top.order_by_fast_field::<i64>("created", Order::Desc)),
                    &self.counting,
                    tantivy::query::EnableScoring::disabled_from_searcher(&searcher),
                )
                .map_err(|e| deadline.error(e))?
                .into_iter()
                .map(|(_, a)| (None, a))
                .collect(),
        };
        let (total, by_kind) = searcher
            .search_with_executor(
                query.as_ref(),
                &deadline.on(KindTally),
                &self.counting,
                tantivy::query::EnableScoring::disabled_from_searcher(&searcher),
            )
            .map_err(|e| deadline.error(e))?;
        // One generator per text field a hit's text can be in.
        let generator = |field: Field| -> Result<_, SearchError> {
            let Some(t) = &text_query else { return Ok(None) };
            let mut g = if q.fuzzy {
                self.fuzzy_snippets(&searcher, &q.text, field)?
            } else {
                tantivy::snippet::SnippetGenerator::create(&searcher, t.as_ref(), field)?
            };
            g.set_max_num_chars(snippet_chars);
            Ok(Some(g))
        };
        let latest_snippets = generator(f.text)?;
        let prior_snippets = if q.all_versions {
            generator(f.text_prior)?
        } else {
            None
        };
        let mut hits = Vec::with_capacity(addresses.len());
        for (score, addr) in addresses {
            deadline.check()?;
            let doc = searcher.doc::<TantivyDocument>(addr)?;
            let mut v = self.read_doc(&doc);
            let snippets = if doc.get_first(f.text).is_some() {
                &latest_snippets
            } else {
                &prior_snippets
            };
            let snippet = snippets.as_ref().map(|g| {
                let s = g.snippet_from_doc(&doc);
                if s.fragment().is_empty() {
                    // Nothing to highlight (a match on another field): show the text's start.
                    let end = v
                        .text
                        .char_indices()
                        .nth(snippet_chars)
                        .map_or(v.text.len(), |(i, _)| i);
                    HitSnippet {
                        fragment: v.text[..end].to_owned(),
                        highlights: Vec::new(),
                    }
                } else {
                    HitSnippet {
                        fragment: s.fragment().to_owned(),
                        highlights: s.highlighted().to_vec(),
                    }
                }
            });
            v.text = String::new();
            hits.push(Hit {
                version: v,
                score,
                snippet,
            });
        }
        Ok(SearchResults { total, hits, by_kind })
    }

    /// A snippet generator for a fuzzy query: tantivy's own enumerates no fuzzy terms, so each
    /// typed term is expanded here through the term dictionary (the same Levenshtein automaton
    /// as the query, at most [`MAX_FUZZY_EXPANSIONS`] words each), and those words are marked.
    fn fuzzy_snippets(
        &self,
        searcher: &tantivy::Searcher,
        text: &str,
        field: Field,
    ) -> Result<tantivy::snippet::SnippetGenerator, SearchError> {
        use tantivy::query::FuzzyTermQuery;
        let mut parser = QueryParser::for_index(&self.index, vec![field]);
        parser.set_conjunction_by_default();
        let plain = parser
            .parse_query(text)
            .map_err(|_| SearchError::Query("the query does not parse".into()))?;
        let mut typed: Vec<Term> = Vec::new();
        plain.query_terms(&mut |t, _| {
            if t.field() == field && !typed.contains(t) {
                typed.push(t.clone());
            }
        });
        let mut words = std::collections::BTreeMap::new();
        for term in typed {
            let fuzzy = FuzzyTermQuery::new(term, 1, true);
            let mut found = 0;
            for segment in searcher.segment_readers() {
                let index = segment.inverted_index(field)?;
                let mut stream = index
                    .terms()
                    .search(fuzzy.automaton()?)
                    .into_stream()
                    .map_err(tantivy::TantivyError::from)?;
                while found < MAX_FUZZY_EXPANSIONS && stream.advance() {
                    if let Ok(w) = std::str::from_utf8(stream.key())
                        && words.insert(w.to_owned(), 1.0).is_none()
                    {
                        found += 1;
                    }
                }
            }
        }
        Ok(tantivy::snippet::SnippetGenerator::new(
            words,
            self.index.tokenizer_for_field(field)?,
            field,
            MAX_SNIPPET_CHARS,
        ))
    }

    /// Indexed entries (every version), as of the last commit.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether nothing is indexed (as of the last commit).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Result order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Sort {
    /// Best match first (BM25).
    #[default]
    Relevance,
    /// Newest version first.
    Newest,
}

/// A search.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchQuery {
    /// Query text: terms (all must match), `"phrases"`, `OR`, `-term`, `field:value`
    /// (`patient:`, `exam:`, `kind:`, `clinic:`); empty: filters only.
    pub text: String,
    /// Terms match within one edit.
    pub fuzzy: bool,
    /// Only this patient's documents.
    pub patient: Option<String>,
    /// Only this exam's.
    pub exam: Option<String>,
    /// Only these exams' (an access policy's narrowing: applied inside the query, so totals,
    /// counts by kind and snippets never include another exam). `Some(empty)` matches nothing.
    pub exams: Option<Vec<String>>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this clinic's.
    pub clinic: Option<String>,
    /// Created at or after.
    pub from: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
    /// Every version, not only the latest of each document.
    pub all_versions: bool,
    /// Hits skipped (pagination).
    pub offset: usize,
    /// Hits returned (1..=[`MAX_PAGE`]).
    pub limit: usize,
    /// Order.
    pub sort: Sort,
    /// Longest snippet, characters (20..=[`MAX_SNIPPET_CHARS`]).
    pub snippet_chars: usize,
    /// How long the search may take; `None`: [`DEFAULT_DEADLINE`]. Checked between segments
    /// and between hits, so a search ends soon after it, with [`SearchError::Limit`].
    pub deadline: Option<std::time::Duration>,
}

impl SearchQuery {
    /// Checks the query against the limits ([`MAX_QUERY_BYTES`], [`MAX_QUERY_DEPTH`],
    /// [`MAX_QUERY_TERMS`], [`MAX_FUZZY_TERMS`], [`MAX_OFFSET`]) without touching an index;
    /// [`SearchIndex::search`] does it first too.
    pub fn check_limits(&self) -> Result<(), SearchError> {
        if self.offset > MAX_OFFSET {
            return Err(SearchError::Limit("offset over 10,000"));
        }
        if self.text.trim().is_empty() {
            return Ok(());
        }
        check_query_text(&self.text, self.fuzzy)
    }

    /// A query for `text`, first page of 10, by relevance.
    pub fn new(text: impl Into<String>) -> Self {
        SearchQuery {
            text: text.into(),
            limit: 10,
            snippet_chars: 160,
            ..SearchQuery::default()
        }
    }
}

/// A highlighted excerpt of a hit's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HitSnippet {
    /// The excerpt.
    pub fragment: String,
    /// Byte ranges of `fragment` that matched.
    pub highlights: Vec<Range<usize>>,
}

impl HitSnippet {
    /// The excerpt with matches wrapped in `open` … `close`.
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(self.fragment.len() + 8 * self.highlights.len());
        let mut at = 0;
        for r in &self.highlights {
            if r.start < at || r.end > self.fragment.len() {
                continue;
            }
            out.push_str(&self.fragment[at..r.start]);
            out.push_str(open);
            out.push_str(&self.fragment[r.clone()]);
            out.push_str(close);
            at = r.end;
        }
        out.push_str(&self.fragment[at..]);
        out.replace(['\n', '\u{c}'], " ")
    }
}

/// One hit.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// The version (its text left out).
    #[serde(flatten)]
    pub version: IndexedVersion,
    /// BM25 score (relevance order only).
    pub score: Option<f32>,
    /// Highlighted excerpt (text queries only).
    pub snippet: Option<HitSnippet>,
}

/// A page of hits.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchResults {
    /// Hits in all pages.
    pub total: usize,
    /// This page.
    pub hits: Vec<Hit>,
    /// Hits in all pages by kind.
    pub by_kind: BTreeMap<String, u64>,
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
