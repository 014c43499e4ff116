//! `docstore relay`, and the bus option the event commands share.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use docstore::{DocStore, Error};
use docstore_bus::{BusError, EventBus, open_bus};
use docstore_pipeline::relay::{OutboxRelay, RelayError};
use docstore_pipeline::runtime::shutdown_signal;
use serde_json::json;

/// Where the events go.
#[derive(Args, Debug, Clone)]
pub(crate) struct BusArgs {
    /// Event bus: `kafka://host:port[,…][?partitions=N&prefix=P]` or `memory://`.
    #[arg(long, env = "DOCSTORE_BUS")]
    pub(crate) bus: String,
}

/// `docstore relay`.
#[derive(Args, Debug)]
pub(crate) struct RelayArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// One pass over the pending entries, then exit (default: run until SIGTERM/SIGINT).
    #[arg(long)]
    once: bool,
    /// Entries per pass.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

/// The CLI's error for a bus failure: a bad URL is bad input, the rest is an outage.
pub(crate) fn bus_err(e: BusError) -> Error {
    match e {
        BusError::Config(m) => Error::InvalidInput(m),
        other => Error::unavailable_from("bus", other.to_string(), other),
    }
}

/// The bus `args` name.
pub(crate) fn bus(args: &BusArgs) -> Result<Arc<dyn EventBus>, Error> {
    open_bus(&args.bus).map_err(bus_err)
}

/// Publishes the outbox: one pass with `--once`, else until SIGTERM or SIGINT.
pub(crate) async fn run(store: &DocStore, a: RelayArgs, json_out: bool) -> Result<(), Error> {
    let relay = OutboxRelay::new(store.metadata().clone(), bus(&a.bus)?, a.batch);
    if a.once {
        let mut total = 0;
        loop {
            let n = relay.run_once().await.map_err(|e| match e {
                RelayError::Store(e) => e,
                RelayError::Bus(e) => bus_err(e),
                other => Error::unavailable_from("relay", other.to_string(), other),
            })?;
            total += n;
            if n < a.batch {
                break;
            }
        }
        crate::emit(json_out, &json!({"published": total}), |_| {
            say!("published {total} events")
        });
        return Ok(());
    }
    eprintln!("relaying the outbox to {}; stop with Ctrl-C", a.bus.bus);
    relay.run(Duration::from_millis(200), shutdown_signal()).await;
    Ok(())
}
