//! What a search asks and answers ([`SearchQuery`], [`SearchResults`]), the bounds a query's text
//! is checked against before tantivy parses it, and the rewrite of phrases onto word pairs.

use std::collections::BTreeMap;
use std::ops::Range;

use docstore::Timestamp;
use serde::Serialize;
use tantivy::query::Query;
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::tokenizer::TextAnalyzer;

use crate::analysis::adjacent_words;
use crate::schema::{IndexedVersion, TEXT, TEXT_PAIRS};
use crate::{MAX_FUZZY_TERMS, MAX_OFFSET, MAX_QUERY_BYTES, MAX_QUERY_DEPTH, MAX_QUERY_TERMS, SearchError};

/// Most dictionary words one fuzzy term is expanded to for highlighting.
pub(crate) const MAX_FUZZY_EXPANSIONS: usize = 64;
/// Rewrites a parsed query for the latest versions' fields: a phrase of adjacent words (quoted,
/// or one literal the analyser splits, like "covid-19") becomes a lookup of its word pairs;
/// literals with no words are dropped and nested conjunctions flattened, as tantivy's own
/// parser does, so a single word stays a bare term query (block-max pruned).
pub(crate) fn rewrite_for_pairs(ast: UserInputAst, words: &mut TextAnalyzer) -> Option<UserInputAst> {
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
pub(crate) fn is_required(occur: Option<tantivy::query::Occur>) -> bool {
    matches!(occur, None | Some(tantivy::query::Occur::Must))
}

/// Whether every hit of `ast` (rewritten by [`rewrite_for_pairs`]) holds a word of the latest
/// versions' text fields: then the query itself keeps to latest versions. `patient:x` alone
/// does not, and needs the `latest` filter.
pub(crate) fn requires_latest_text(ast: &UserInputAst) -> bool {
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
pub(crate) struct TextQueries {
    /// As typed: it names the words to highlight in snippets.
    pub(crate) typed: Box<dyn Query>,
    /// What runs: phrases looked up by word pairs on latest versions.
    pub(crate) matcher: Box<dyn Query>,
    /// Every hit of `matcher` is a latest version (no `latest` filter needed).
    pub(crate) keeps_to_latest: bool,
}

/// Checks a query's text against the limits before tantivy parses it (its grammar recurses once
/// per parenthesis).
pub(crate) fn check_query_text(text: &str, fuzzy: bool) -> Result<(), SearchError> {
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
pub(crate) fn has_unsupported_leaf(ast: &UserInputAst) -> bool {
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
pub(crate) fn count_terms(ast: &UserInputAst) -> usize {
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
