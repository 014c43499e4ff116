//! `docstore process [--follow]`: the stages and the index for what was put on this store, in
//! this process, through the in-process bus: the outbox relay, stamp, thumbnail, text (each its
//! own consumer group, joined into `file.processed`) and the index stage, as `docstore demo` and
//! `docstore serve` run them. Without `--follow` it exits once nothing is left to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docstore::{DocStore, Error};
use docstore_search::SearchIndex;
use docstore_tools::local::{LocalConfig, LocalPipeline};

use crate::cmd::demo::index_err;

#[derive(clap::Args)]
pub(crate) struct ProcessArgs {
    /// Keep going after the outbox is drained, handling new versions as they are put, until
    /// SIGINT or SIGTERM.
    #[arg(long)]
    follow: bool,
    /// Clinic name on stamps and in the index.
    #[arg(long, default_value = "Clínica")]
    clinic: String,
    /// Search index folder (default: `<data dir>/index`, where `docstore search` looks).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Without --follow: the longest to wait for the work to drain before giving up.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(crate) async fn process(
    store: DocStore,
    data_dir: &Path,
    a: ProcessArgs,
    json_out: bool,
) -> Result<(), Error> {
    let started = Instant::now();
    let store = Arc::new(store);
    let index_dir = a.index.unwrap_or_else(|| data_dir.join("index"));
    // An index of an older docstore is replaced; the catch-up below refills it from the store.
    let index = Arc::new(
        SearchIndex::open_or_replace(&index_dir, store.keys().as_ref())
            .await
            .map_err(index_err)?,
    );
    let pipeline = LocalPipeline::start(
        store,
        index,
        LocalConfig {
            clinic: a.clinic,
            ..LocalConfig::default()
        },
    );
    let outcome = run(&pipeline, a.follow, a.timeout).await;
    let dead = pipeline.dead_lettered();
    let stages: serde_json::Map<String, serde_json::Value> = pipeline
        .metrics()
        .iter()
        .map(|(name, m)| (name.clone(), m.processed.get().into()))
        .collect();
    pipeline.stop().await;
    let caught_up = outcome?;
    if json_out {
        say!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "catch_up": caught_up,
                "handled": stages,
                "dead_lettered": dead,
                "seconds": started.elapsed().as_secs_f64(),
            }))
            .expect("serializable")
        );
    } else {
        let handled: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {v}")).collect();
        say!(
            "handled: {} ({} dead-lettered) in {:.1}s; {} pending version(s) announced again, {} document(s) re-indexed",
            handled.join(", "),
            dead,
            started.elapsed().as_secs_f64(),
            caught_up.reannounced,
            caught_up.reindexed
        );
    }
    if dead > 0 {
        // The versions stay pending, so the next run tries them again; the WARN lines name them.
        return Err(Error::unavailable(
            "pipeline",
            format!("{dead} event(s) dead-lettered; see the `dead-lettered` log lines"),
        ));
    }
    Ok(())
}

async fn run(
    pipeline: &LocalPipeline,
    follow: bool,
    timeout: Duration,
) -> Result<docstore_tools::local::CatchUp, Error> {
    let caught_up = pipeline.catch_up().await?;
    let deadline = Instant::now() + timeout;
    let stop = docstore_pipeline::runtime::shutdown_signal();
    tokio::pin!(stop);
    loop {
        if !follow && pipeline.drained().await? {
            return Ok(caught_up);
        }
        if !follow && Instant::now() > deadline {
            return Err(Error::unavailable(
                "pipeline",
                format!("work not drained after {}", humantime::format_duration(timeout)),
            ));
        }
        tokio::select! {
            _ = &mut stop => return Ok(caught_up),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}
