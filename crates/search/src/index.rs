//! [`SearchIndex`]: the index on disk (or in memory), its single writer with group commit, and
//! its searches.

use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use docstore::Timestamp;
use tantivy::collector::TopDocs;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

use crate::analysis::{PAIR_ANALYZER, PT_ANALYZER, PairTokenizer, analyzer};
use crate::collect::{Deadline, KindTally};
use crate::query::{
    Hit, HitSnippet, MAX_FUZZY_EXPANSIONS, SearchQuery, SearchResults, Sort, TextQueries,
    requires_latest_text, rewrite_for_pairs,
};
use crate::schema::{Fields, IndexedVersion, schema};
use crate::sealed::{IndexKey, SealedDirectory, is_plaintext_index};
use crate::{DEFAULT_DEADLINE, MAX_PAGE, MAX_SNIPPET_CHARS, SearchError, locked_at};
use docstore::keys::KeyProvider;
use tantivy::directory::Directory;

/// Heap of the single index writer.
pub(crate) const WRITER_HEAP: usize = 64 << 20;

/// Segments under this many documents make one merge level. tantivy's default, 10,000, put a
/// growing index's largest segment in the same level as each new commit's, so every merge until
/// it passed 10,000 documents rewrote it: the merge threads' share of a day's CPU grew with the
/// day (docs/benchmarks/load-linear-2026-12-07.md). Above this, levels grow geometrically.
const MIN_MERGE_LAYER: u32 = 256;

/// tantivy's log merge policy with [`MIN_MERGE_LAYER`].
pub(crate) fn merge_policy() -> tantivy::merge_policy::LogMergePolicy {
    let mut policy = tantivy::merge_policy::LogMergePolicy::default();
    policy.set_min_layer_size(MIN_MERGE_LAYER);
    policy
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
    /// Opens the index in `dir` for writing, creating it (mode 0700) if absent, its files sealed
    /// under its index key (unwrapped with `keys`, or made with it for a new index; see
    /// [`IndexKey`]). Fails with [`SearchError::Locked`] if another process has it open for
    /// writing, and with [`SearchError::Outdated`] if it was built by another docstore version.
    pub async fn open(dir: &Path, keys: &dyn KeyProvider) -> Result<SearchIndex, SearchError> {
        Self::check_dir(dir, true)?;
        let key = IndexKey::load_or_create(dir, keys).await?;
        Self::open_dir(dir, &key, true)
    }

    /// Opens an existing index for searching only (beside a worker that writes it): sees what
    /// was committed when it opened and after each [`SearchIndex::refresh`].
    pub async fn open_read_only(dir: &Path, keys: &dyn KeyProvider) -> Result<SearchIndex, SearchError> {
        Self::check_dir(dir, false)?;
        let key = IndexKey::load(dir, keys).await?;
        Self::open_dir(dir, &key, false)
    }

    /// Refuses a directory others may read; a missing one is [`SearchError::Missing`] unless
    /// it is to be created.
    fn check_dir(dir: &Path, create: bool) -> Result<(), SearchError> {
        use std::os::unix::fs::PermissionsExt;
        let place = dir.display().to_string();
        match std::fs::metadata(dir) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(SearchError::Permissions(place)),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SearchError::Missing(place)),
            Err(e) => Err(SearchError::Index(format!("{place}: {e}"))),
        }
    }

    pub(crate) fn open_dir(dir: &Path, key: &IndexKey, write: bool) -> Result<SearchIndex, SearchError> {
        let place = dir.display().to_string();
        if is_plaintext_index(dir) {
            return Err(SearchError::Outdated(place));
        }
        let (schema, fields) = schema();
        let directory = SealedDirectory::open(dir, key)?;
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

    /// Opens the index in `dir` for writing, replacing it with an empty one if it was built by
    /// another docstore version ([`SearchError::Outdated`]: another schema, files not sealed, or
    /// its key file gone): for `docstore reindex`, which then rebuilds it from the store. Only a
    /// directory that holds a tantivy index, and whose writer lock no other process holds, is
    /// removed.
    pub async fn open_or_replace(dir: &Path, keys: &dyn KeyProvider) -> Result<SearchIndex, SearchError> {
        match Self::open(dir, keys).await {
            Err(SearchError::Outdated(place)) => {
                let index_err = |e: std::io::Error| SearchError::Index(format!("{place}: {e}"));
                if !dir.join("meta.json").exists() {
                    return Err(SearchError::Index(format!("{place}: not a search index")));
                }
                let plain = tantivy::directory::MmapDirectory::open(dir)
                    .map_err(|e| SearchError::Index(format!("{place}: {e}")))?;
                let lock = plain
                    .acquire_lock(&tantivy::directory::INDEX_WRITER_LOCK)
                    .map_err(|_| SearchError::Locked(place.clone()))?;
                drop(lock);
                drop(plain);
                std::fs::remove_dir_all(dir).map_err(index_err)?;
                Self::open(dir, keys).await
            }
            other => other,
        }
    }

    /// Opens `dir` as a plain tantivy directory, its files *not* sealed: only for the search
    /// bench's comparison of the sealed index with the plain one, behind the
    /// `plaintext-comparison` feature, which nothing but the bench enables.
    #[cfg(feature = "plaintext-comparison")]
    pub fn open_plaintext_for_comparison(dir: &Path) -> Result<SearchIndex, SearchError> {
        std::fs::create_dir_all(dir).map_err(|e| SearchError::Index(e.to_string()))?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| SearchError::Index(format!("{}: {e}", dir.display())))?;
        let index = Index::open_or_create(directory, schema)?;
        Self::with_index(index, fields, dir.display().to_string(), true)
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
            let w: IndexWriter = index
                .writer_with_num_threads(1, WRITER_HEAP)
                .map_err(locked_at(&place))?;
            w.set_merge_policy(Box::new(merge_policy()));
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

    /// The files the last commit's segments may have (their names in the index directory; not
    /// `meta.json`; some may not exist).
    pub(crate) fn committed_files(&self) -> Result<std::collections::BTreeSet<String>, SearchError> {
        Ok(self
            .index
            .load_metas()?
            .list_segment_files()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect())
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

#[cfg(test)]
mod tests {
    use tantivy::index::SegmentId;
    use tantivy::merge_policy::MergePolicy;
    use tantivy::{Index, schema::Schema};

    /// A 5,000-document segment and eight new commits of 20: tantivy's default policy merges all
    /// nine (rewriting the 5,000 again), ours merges the eight small ones only.
    #[test]
    fn small_commits_do_not_rewrite_the_largest_segment() {
        let index = Index::create_in_ram(Schema::builder().build());
        let mut segments = vec![index.new_segment_meta(SegmentId::generate_random(), 5_000)];
        for _ in 0..8 {
            segments.push(index.new_segment_meta(SegmentId::generate_random(), 20));
        }
        let merged = |policy: &dyn MergePolicy| -> Vec<usize> {
            policy
                .compute_merge_candidates(&segments)
                .iter()
                .map(|c| c.0.len())
                .collect()
        };
        assert_eq!(merged(&tantivy::merge_policy::LogMergePolicy::default()), [9]);
        assert_eq!(merged(&super::merge_policy()), [8]);
    }
}
