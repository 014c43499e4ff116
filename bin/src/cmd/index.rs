//! `docstore index snapshot|restore|status`: a search node's index copied to and from sealed
//! snapshots in the store's object store, with the bus positions it covers.

use std::path::Path;

use clap::{Args, Subcommand};
use docstore::{DocStore, Error};
use docstore_search::snapshot::{self, Position, SnapshotManifest};
use docstore_search::{SearchError, SearchIndex};

use super::relay::bus_err;
use super::search::{IndexArgs, search_err};

/// `docstore index …`.
#[derive(Subcommand, Debug)]
pub(crate) enum IndexCommand {
    /// Copy the committed index (sealed as it is on disk) to a new snapshot in the object store,
    /// with the bus positions of the node's consumer group when --bus is given.
    Snapshot(NodeArgs),
    /// Put the newest snapshot (or --id) in place of an empty or missing index directory, and
    /// start the node's consumer group at the positions it records when --bus is given.
    Restore {
        #[command(flatten)]
        node: NodeArgs,
        /// The snapshot to restore (default: the newest).
        #[arg(long)]
        id: Option<String>,
    },
    /// The local index, the snapshots in the object store and the group's positions.
    Status(NodeArgs),
}

/// Which node: its index directory, and the bus and consumer group it follows.
#[derive(Args, Debug)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    index: IndexArgs,
    /// Event bus the node's index stage follows (`kafka://…`); without it no position is
    /// recorded or seeded.
    #[arg(long, env = "DOCSTORE_BUS")]
    bus: Option<String>,
    /// The node's consumer group (each search node has its own).
    #[arg(long, env = "DOCSTORE_GROUP", default_value = docstore_stages::index::DEFAULT_GROUP)]
    group: String,
}

impl NodeArgs {
    async fn positions(&self) -> Result<Option<Vec<Position>>, Error> {
        let Some(url) = &self.bus else { return Ok(None) };
        let bus = docstore_bus::open_bus(url).map_err(bus_err)?;
        let topics: Vec<String> = docstore::outbox::INDEX_TOPICS
            .iter()
            .map(|t| t.to_string())
            .collect();
        bus.committed(&self.group, &topics)
            .await
            .map(Some)
            .map_err(bus_err)
    }
}

/// A snapshot refused on its bytes is refused, not "unavailable": retrying will not help.
fn snapshot_err(e: SearchError) -> Error {
    match e {
        SearchError::Integrity(why) => Error::Refused {
            document: snapshot::SNAPSHOT_PREFIX.into(),
            reason: format!("integrity: {why}"),
        },
        SearchError::Missing(what) => Error::NotFound {
            document: what,
            version: None,
        },
        SearchError::Snapshot(why) => Error::InvalidInput(why),
        other => search_err(other),
    }
}

#[derive(serde::Serialize)]
struct Taken<'a> {
    id: &'a str,
    entries: u64,
    files: usize,
    bytes: u64,
    positions: &'a [Position],
}

impl<'a> From<&'a SnapshotManifest> for Taken<'a> {
    fn from(m: &'a SnapshotManifest) -> Self {
        Taken {
            id: &m.id,
            entries: m.entries,
            files: m.files.len(),
            bytes: m.bytes(),
            positions: &m.positions,
        }
    }
}

fn say_positions(positions: &[Position]) {
    for p in positions {
        say!("  {}[{}] at {}", p.topic, p.partition, p.offset);
    }
}

pub(crate) async fn run(
    store: &DocStore,
    data_dir: &Path,
    c: IndexCommand,
    json_out: bool,
) -> Result<(), Error> {
    let (blobs, keys) = (store.blobs().as_ref(), store.keys().as_ref());
    match c {
        IndexCommand::Snapshot(node) => {
            // Positions first: what the group acknowledged is already committed to the index.
            let positions = node.positions().await?.unwrap_or_default();
            let m = snapshot::take(&node.index.dir(data_dir), blobs, keys, positions)
                .await
                .map_err(snapshot_err)?;
            crate::emit(json_out, &Taken::from(&m), |t| {
                say!(
                    "snapshot {}: {} entries, {} files, {} bytes",
                    t.id,
                    t.entries,
                    t.files,
                    t.bytes
                );
                say_positions(t.positions);
            });
        }
        IndexCommand::Restore { node, id } => {
            let bus = match &node.bus {
                Some(url) => Some(docstore_bus::open_bus(url).map_err(bus_err)?),
                None => None,
            };
            let m = snapshot::restore(&node.index.dir(data_dir), blobs, keys, id.as_deref())
                .await
                .map_err(snapshot_err)?;
            if let Some(bus) = bus {
                bus.seed(&node.group, &m.positions).await.map_err(bus_err)?;
            }
            crate::emit(json_out, &Taken::from(&m), |t| {
                say!(
                    "restored snapshot {}: {} entries, {} files",
                    t.id,
                    t.entries,
                    t.files
                );
                say_positions(t.positions);
            });
        }
        IndexCommand::Status(node) => {
            let dir = node.index.dir(data_dir);
            let local = match SearchIndex::open_read_only(&dir, keys).await {
                Ok(index) => Some(index.len()),
                Err(SearchError::Missing(_)) => None,
                Err(e) => return Err(search_err(e)),
            };
            let snapshots = snapshot::list(blobs).await.map_err(snapshot_err)?;
            let newest = snapshot::manifest(blobs, keys, None)
                .await
                .map_err(snapshot_err)?;
            let group = node.positions().await?;
            let status = Status {
                index: dir.display().to_string(),
                entries: local,
                snapshots: snapshots.len(),
                newest: newest.as_ref().map(Taken::from),
                group: node.group.clone(),
                positions: group,
            };
            crate::emit(json_out, &status, |s| {
                match s.entries {
                    Some(n) => say!("index {}: {n} entries", s.index),
                    None => say!("index {}: none", s.index),
                }
                match &s.newest {
                    Some(t) => {
                        say!(
                            "{} snapshots; newest {}: {} entries, {} bytes",
                            s.snapshots,
                            t.id,
                            t.entries,
                            t.bytes
                        );
                        say_positions(t.positions);
                    }
                    None => say!("no snapshot"),
                }
                if let Some(ps) = &s.positions {
                    say!("group {}:", s.group);
                    say_positions(ps);
                }
            });
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Status<'a> {
    index: String,
    entries: Option<u64>,
    snapshots: usize,
    newest: Option<Taken<'a>>,
    group: String,
    positions: Option<Vec<Position>>,
}
