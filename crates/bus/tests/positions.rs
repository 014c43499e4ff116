//! A consumer group's committed positions, read and seeded (what a search snapshot records and
//! what a node restored from it starts at), on the in-process bus and on a real Kafka broker.

use std::time::Duration;

use docstore_bus::{BusError, EventBus, InProcessBus, Message, Position};

fn msg(topic: &str, key: &str, i: u32) -> Message {
    Message {
        topic: topic.into(),
        key: key.into(),
        payload: i.to_be_bytes().to_vec(),
        headers: vec![],
    }
}

/// Reads every delivery the subscription gets until `want` arrived or 30 s passed.
async fn read(bus: &dyn EventBus, group: &str, topic: &str, want: usize, ack: bool) -> Vec<u32> {
    let mut sub = bus.subscribe(group, &[topic.to_owned()]).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        for d in sub.poll(10, Duration::from_millis(200)).await.unwrap() {
            got.push(u32::from_be_bytes(d.message.payload[..4].try_into().unwrap()));
            if ack {
                sub.ack(&d).await.unwrap();
            }
        }
    }
    sub.close().await.unwrap();
    got.sort();
    got
}

/// The positions contract, on any bus.
async fn positions(bus: &dyn EventBus, topic: &str) {
    let (a, c) = (format!("{topic}-a"), format!("{topic}-c"));
    let topics = [topic.to_owned()];
    assert_eq!(
        bus.committed(&a, &topics).await.unwrap(),
        vec![],
        "a new group has none"
    );
    for i in 0..12 {
        bus.publish(msg(topic, &format!("doc-{i}"), i)).await.unwrap();
    }
    assert_eq!(read(bus, &a, topic, 12, true).await, (0..12).collect::<Vec<_>>());
    let committed = bus.committed(&a, &topics).await.unwrap();
    assert_eq!(
        committed.iter().map(|p| p.offset).sum::<u64>(),
        12,
        "{committed:?}"
    );
    assert!(committed.iter().all(|p| p.topic == topic), "{committed:?}");
    assert!(committed.windows(2).all(|w| w[0] < w[1]), "sorted: {committed:?}");

    // A new group seeded at those positions reads only what came after them.
    bus.seed(&c, &committed).await.unwrap();
    assert_eq!(bus.committed(&c, &topics).await.unwrap(), committed);
    for i in 12..15 {
        bus.publish(msg(topic, &format!("doc-{i}"), i)).await.unwrap();
    }
    assert_eq!(read(bus, &c, topic, 3, true).await, vec![12, 13, 14]);
    // A group that already committed is never moved back.
    match bus.seed(&c, &committed).await {
        Err(BusError::Config(why)) => assert!(why.contains("already"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        bus.committed(&c, &topics)
            .await
            .unwrap()
            .iter()
            .map(|p| p.offset)
            .sum::<u64>(),
        15
    );
}

#[tokio::test]
async fn positions_on_the_in_process_bus() {
    positions(&InProcessBus::new(4), "t").await;
    // Seeding names what was not committed: a partition left out starts from its beginning.
    let bus = InProcessBus::new(2);
    for i in 0..4 {
        bus.publish(msg("u", &format!("doc-{i}"), i)).await.unwrap();
    }
    let seeded = [Position {
        topic: "u".into(),
        partition: 0,
        offset: 1,
    }];
    bus.seed("g", &seeded).await.unwrap();
    let mut sub = bus.subscribe("g", &["u".into()]).await.unwrap();
    let got = sub.poll(10, Duration::from_millis(50)).await.unwrap();
    let p0: Vec<u64> = got
        .iter()
        .filter(|d| d.partition == 0)
        .map(|d| d.offset)
        .collect();
    assert!(p0.iter().all(|o| *o >= 1), "{p0:?}");
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_on_kafka() {
    use docstore_bus::kafka::{KafkaBus, KafkaConfig};
    let Some(brokers) = docstore_testkit::service("DOCSTORE_TEST_KAFKA") else {
        return;
    };
    let mut config = KafkaConfig::new(brokers);
    config.partitions = 3;
    config.topic_prefix = format!("positions-{}.", uuid::Uuid::new_v4().simple());
    let bus = KafkaBus::new(config).unwrap();
    positions(&bus, "file.processed").await;
}
