//! Consumer lag on a real Kafka broker: measured in the background, so a worker's loop never
//! waits for the watermark queries (each one waits on the broker behind the consumer's own
//! long-poll fetch), and still the right figure once measured.

#![cfg(feature = "kafka")]

use std::time::Duration;

use docstore_bus::kafka::{KafkaBus, KafkaConfig};
use docstore_bus::{EventBus, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_measured_in_the_background_on_kafka() {
    let Some(brokers) = docstore_testkit::service("DOCSTORE_TEST_KAFKA") else {
        return;
    };
    let mut config = KafkaConfig::new(brokers);
    config.partitions = 3;
    config.topic_prefix = format!("lag-{}.", uuid::Uuid::new_v4().simple());
    let bus = KafkaBus::new(config).unwrap();
    let topic = "file.uploaded".to_owned();
    for i in 0..12u32 {
        bus.publish(Message {
            topic: topic.clone(),
            key: format!("doc-{i}"),
            payload: i.to_be_bytes().to_vec(),
            headers: vec![],
        })
        .await
        .unwrap();
    }
    let mut sub = bus
        .subscribe("lag-group", std::slice::from_ref(&topic))
        .await
        .unwrap();
    let mut read = 0u64;
    for _ in 0..100 {
        read += sub.poll(4, Duration::from_millis(300)).await.unwrap().len() as u64;
        if read > 0 {
            break;
        }
    }
    assert!((1..12).contains(&read), "read {read} of 12");
    // The first call only starts a measurement.
    assert_eq!(sub.lag().await, None);
    let mut seen = None;
    for _ in 0..200 {
        seen = sub.lag().await;
        if seen == Some(12 - read) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(12 - read), "lag after reading {read} of 12");
    sub.close().await.unwrap();
}
