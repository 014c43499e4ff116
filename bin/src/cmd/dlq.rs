//! `docstore dlq list|show|replay`.

use std::time::Duration;

use clap::{Args, Subcommand};
use docstore::Error;
use docstore_bus::Delivery;
use docstore_pipeline::runtime::{dlq_headers, replay_dead_letters};
use serde_json::json;

use super::relay::{BusArgs, bus, bus_err};

/// `docstore dlq …`.
#[derive(Subcommand, Debug)]
pub(crate) enum DlqCommand {
    /// List the dead letters of a topic.
    List(DlqArgs),
    /// Show one dead letter (headers and event) by `partition:offset`.
    Show {
        #[command(flatten)]
        args: DlqArgs,
        /// `partition:offset`, as `dlq list` prints it.
        id: String,
    },
    /// Send dead letters back to their original topic (each once).
    Replay {
        #[command(flatten)]
        args: DlqArgs,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

/// Options shared by the `dlq` subcommands.
#[derive(Args, Debug)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Dead-letter topic.
    #[arg(long, default_value = "file.uploaded.dlq")]
    topic: String,
    /// How long to wait for more messages before concluding the topic is read.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

/// Reads the whole topic as a throwaway group that never commits (so nothing is consumed).
async fn read_all(args: &DlqArgs) -> Result<Vec<Delivery>, Error> {
    let bus = bus(&args.bus)?;
    let group = format!("docstore-dlq-inspect-{}", uuid::Uuid::new_v4().simple());
    let mut sub = bus
        .subscribe(&group, std::slice::from_ref(&args.topic))
        .await
        .map_err(bus_err)?;
    let mut all = Vec::new();
    // Bounded: at most a million letters are listed.
    while all.len() < 1_000_000 {
        let batch = sub.poll(500, args.wait).await.map_err(bus_err)?;
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
    }
    all.sort_by_key(|d| (d.partition, d.offset));
    Ok(all)
}

fn header<'a>(d: &'a Delivery, k: &str) -> &'a str {
    d.message
        .headers
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn letter_json(d: &Delivery, with_event: bool) -> serde_json::Value {
    let mut v = json!({
        "id": format!("{}:{}", d.partition, d.offset),
        "key": d.message.key,
        "kind": header(d, dlq_headers::KIND),
        "attempts": header(d, dlq_headers::ATTEMPTS),
        "stage": header(d, dlq_headers::STAGE),
        "error": header(d, dlq_headers::ERROR),
        "original_topic": header(d, dlq_headers::ORIGINAL_TOPIC),
    });
    if with_event {
        v["headers"] = json!(
            d.message
                .headers
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()
        );
        // Events carry ids and digests, never content; a malformed one is shown as text.
        v["event"] = serde_json::from_slice(&d.message.payload)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&d.message.payload)));
    }
    v
}

/// Lists, shows or replays the dead letters of a topic.
pub(crate) async fn run(cmd: DlqCommand, json_out: bool) -> Result<(), Error> {
    match cmd {
        DlqCommand::List(args) => {
            let all = read_all(&args).await?;
            let rows: Vec<_> = all.iter().map(|d| letter_json(d, false)).collect();
            crate::emit(json_out, &rows, |rows| {
                say!("{} dead letters in {}", rows.len(), args.topic);
                for r in rows {
                    say!(
                        "{:<10} {:<36} {:<9} attempts={:<2} stage={:<10} {}",
                        r["id"].as_str().unwrap_or(""),
                        r["key"].as_str().unwrap_or(""),
                        r["kind"].as_str().unwrap_or(""),
                        r["attempts"].as_str().unwrap_or(""),
                        r["stage"].as_str().unwrap_or(""),
                        r["error"].as_str().unwrap_or(""),
                    );
                }
            });
            Ok(())
        }
        DlqCommand::Show { args, id } => {
            let all = read_all(&args).await?;
            let found = all
                .iter()
                .find(|d| format!("{}:{}", d.partition, d.offset) == id)
                .ok_or_else(|| Error::InvalidInput(format!("no dead letter {id} in {}", args.topic)))?;
            let v = letter_json(found, true);
            crate::emit(json_out, &v, |v| {
                say!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            });
            Ok(())
        }
        DlqCommand::Replay { args, max } => {
            let bus = bus(&args.bus)?;
            let n = replay_dead_letters(bus.as_ref(), &args.topic, max, args.wait)
                .await
                .map_err(bus_err)?;
            crate::emit(json_out, &json!({"replayed": n}), |_| {
                say!("replayed {n} dead letters from {}", args.topic)
            });
            Ok(())
        }
    }
}
