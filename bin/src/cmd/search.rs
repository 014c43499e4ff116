//! `docstore search` and `docstore reindex`: the staff search index (crates/search).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use docstore::{DocStore, Error, Identity, Timestamp};
use docstore_search::{SearchError, SearchIndex, SearchQuery, SearchResults, Sort};

/// Where the index lives.
#[derive(Args, Debug, Clone)]
pub(crate) struct IndexArgs {
    /// Search index directory (default: `<data-dir>/index`).
    #[arg(long, env = "DOCSTORE_INDEX")]
    index: Option<PathBuf>,
}

impl IndexArgs {
    pub(crate) fn dir(&self, data_dir: &Path) -> PathBuf {
        self.index.clone().unwrap_or_else(|| data_dir.join("index"))
    }
}

/// `docstore search`.
#[derive(Args, Debug)]
pub(crate) struct SearchArgs {
    /// Query: words (all must match, accents and plurals folded), "a phrase", a OR b, -word,
    /// field:value (patient:, exam:, kind:, clinic:). Empty: filters only.
    #[arg(default_value = "")]
    query: String,
    #[command(flatten)]
    index: IndexArgs,
    /// Only this patient's documents.
    #[arg(long)]
    patient: Option<String>,
    /// Only this exam's.
    #[arg(long)]
    exam: Option<String>,
    /// Only this kind (report, image, attachment).
    #[arg(long)]
    kind: Option<String>,
    /// Only this clinic's.
    #[arg(long)]
    clinic: Option<String>,
    /// Created on or after (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    from: Option<String>,
    /// Created before (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    until: Option<String>,
    /// Match words within one typo.
    #[arg(long)]
    fuzzy: bool,
    /// Every version, not only the latest of each document.
    #[arg(long)]
    all_versions: bool,
    /// Order: relevance or newest.
    #[arg(long, default_value = "relevance", value_parser = ["relevance", "newest"])]
    sort: String,
    /// Page number, from 1.
    #[arg(long, default_value_t = 1)]
    page: usize,
    /// Hits per page.
    #[arg(long, default_value_t = 10)]
    per_page: usize,
}

pub(crate) fn search_err(e: SearchError) -> Error {
    match e {
        SearchError::Query(m) => Error::InvalidInput(format!("search query: {m}")),
        other => Error::unavailable_from("index", other.to_string(), other),
    }
}

fn parse_time(s: &str, flag: &str) -> Result<Timestamp, Error> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    Timestamp::parse(&full)
        .map_err(|_| Error::InvalidInput(format!("{flag}: not a date (YYYY-MM-DD or RFC 3339): {s}")))
}

pub(crate) async fn search(
    store: &DocStore,
    who: &Identity,
    data_dir: &Path,
    a: SearchArgs,
    json_out: bool,
) -> Result<(), Error> {
    if a.page == 0 || a.per_page == 0 || a.per_page > docstore_search::MAX_PAGE {
        return Err(Error::InvalidInput(format!(
            "--page starts at 1; --per-page is 1..={}",
            docstore_search::MAX_PAGE
        )));
    }
    let q = SearchQuery {
        text: a.query.clone(),
        fuzzy: a.fuzzy,
        patient: a.patient.clone(),
        exam: a.exam.clone(),
        exams: None,
        kind: a.kind.clone(),
        clinic: a.clinic.clone(),
        from: a.from.as_deref().map(|s| parse_time(s, "--from")).transpose()?,
        until: a.until.as_deref().map(|s| parse_time(s, "--until")).transpose()?,
        all_versions: a.all_versions,
        offset: (a.page - 1).saturating_mul(a.per_page),
        limit: a.per_page,
        sort: if a.sort == "newest" {
            Sort::Newest
        } else {
            Sort::Relevance
        },
        snippet_chars: 160,
        deadline: None,
    };
    let index = Arc::new(
        SearchIndex::open_read_only(&a.index.dir(data_dir), store.keys().as_ref())
            .await
            .map_err(search_err)?,
    );
    let results = docstore_search::search(store, &index, who, q)
        .await
        .map_err(search_err)?;
    if json_out {
        say!(
            "{}",
            serde_json::to_string_pretty(&results).expect("serializable")
        );
    } else {
        print_results(&results, a.page, a.per_page);
    }
    Ok(())
}

fn print_results(r: &SearchResults, page: usize, per_page: usize) {
    let first = (page - 1) * per_page + 1;
    if r.hits.is_empty() {
        say!("no hits ({} in all)", r.total);
        return;
    }
    let (bold, plain) = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("[", "]")
    };
    for (i, h) in r.hits.iter().enumerate() {
        let v = &h.version;
        say!(
            "{:>3}. {} v{}  {}  patient {}  exam {}  {}",
            first + i,
            v.document_id,
            v.version,
            v.kind,
            v.patient_id,
            v.exam_id,
            v.created_at.to_rfc3339()
        );
        if let Some(s) = &h.snippet {
            say!("     {}", s.marked(bold, plain).trim());
        }
    }
    let kinds: Vec<String> = r.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    say!(
        "hits {}–{} of {}  ({})",
        first,
        first + r.hits.len() - 1,
        r.total,
        kinds.join(", ")
    );
}
