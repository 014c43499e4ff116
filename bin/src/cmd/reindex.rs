//! `docstore reindex`: the search index rebuilt from the store.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use docstore::{DocStore, Error, Identity};
use docstore_search::SearchIndex;
use docstore_stages::index::indexable_versions;
use indicatif::{ProgressBar, ProgressStyle};

use super::search::{IndexArgs, search_err};

/// `docstore reindex`.
#[derive(Args, Debug)]
pub(crate) struct ReindexArgs {
    #[command(flatten)]
    index: IndexArgs,
    /// Clinic name recorded on indexed versions.
    #[arg(long, env = "DOCSTORE_CLINIC", default_value = "Clínica")]
    clinic: String,
}

/// What `docstore reindex` did.
#[derive(Debug, serde::Serialize)]
struct ReindexReport {
    documents: usize,
    versions: usize,
}

pub(crate) async fn run(
    store: &DocStore,
    who: &Identity,
    data_dir: &Path,
    a: ReindexArgs,
    json_out: bool,
) -> Result<(), Error> {
    // An index of an older schema is replaced: it is rebuilt from the store below anyway.
    let index = Arc::new(
        SearchIndex::open_or_replace(&a.index.dir(data_dir), store.keys().as_ref())
            .await
            .map_err(search_err)?,
    );
    // Ids first (a page at a time), so the bar knows its length.
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.metadata().list_documents(after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.document_id.clone());
        ids.extend(page.into_iter().map(|d| d.document_id));
    }
    let bar = if json_out || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(ids.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} documents  {per_sec}  eta {eta}")
            .expect("template"),
    );
    // A rebuild: start empty (documents purged from the store leave too); searches keep seeing
    // the old index until the one commit at the end.
    index.clear().map_err(search_err)?;
    let mut versions = 0;
    for id in &ids {
        let found = indexable_versions(store, who, id, &a.clinic)
            .await
            .map_err(|e| Error::unavailable_from("store", e.to_string(), e))?;
        versions += found.len();
        let idx = index.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || idx.replace_document(&id, &found))
            .await
            .map_err(|e| Error::InvalidInput(format!("index task: {e}")))?
            .map_err(search_err)?;
        bar.inc(1);
    }
    let idx = index.clone();
    tokio::task::spawn_blocking(move || idx.commit())
        .await
        .map_err(|e| Error::InvalidInput(format!("index task: {e}")))?
        .map_err(search_err)?;
    bar.finish_and_clear();
    let report = ReindexReport {
        documents: ids.len(),
        versions,
    };
    crate::emit(json_out, &report, |r| {
        say!("indexed {} versions of {} documents", r.versions, r.documents)
    });
    Ok(())
}
