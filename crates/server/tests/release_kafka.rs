//! `exam.result.ready` on the real Kafka broker releases an exam's documents to their patient
//! (and not before); a malformed exam event goes to the dead-letter topic. Needs
//! `DOCSTORE_TEST_KAFKA` (scripts/services.sh); fails rather than skips under
//! `DOCSTORE_REQUIRE_SERVICES`.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use docstore_bus::{Message, open_bus};
use docstore_server::policy::Role;

fn event(kind: &str, id: &str, data: serde_json::Value) -> Message {
    let ev = serde_json::json!({
        "specversion": "1.0", "id": id, "source": "urn:clinic:exams", "type": kind,
        "datacontenttype": "application/json", "data": data,
    });
    Message {
        topic: kind.into(),
        key: data["exam_id"].as_str().unwrap_or("-").into(),
        payload: serde_json::to_vec(&ev).unwrap(),
        headers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exam_result_ready_on_kafka_releases_within_two_seconds() {
    let Some(broker) = docstore_testkit::service("DOCSTORE_TEST_KAFKA") else {
        return;
    };
    let url = format!("kafka://{broker}?prefix=rel{}.", uuid::Uuid::new_v4().simple());
    let bus = open_bus(&url).unwrap();
    let h = Harness::start(false, |c| c.exam_bus = Some(open_bus(&url).unwrap())).await;
    let id = h
        .upload(
            &h.staff(),
            "pac-kf",
            "exm-kf",
            "application/pdf",
            b"%PDF-1.4 kafka".to_vec(),
        )
        .await;
    let patient = h.token(Role::Patient, "kf", Some("pac-kf"));
    let read = || {
        let (http, url) = (h.http.clone(), h.url(&format!("/v1/documents/{id}")));
        let token = patient.clone();
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(read().await, 404);

    // Wait until the service's consumer is assigned: an exam.created for another exam lands.
    let access = h.service.as_ref().unwrap().state().access.clone();
    let started = Instant::now();
    let mut n = 0;
    while access.exam("exm-warm").await.unwrap().is_none() {
        n += 1;
        bus.publish(event(
            "exam.created",
            &format!("warm-{n}"),
            serde_json::json!({"exam_id": "exm-warm", "patient_id": "pac-w"}),
        ))
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the exam consumer never started"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(read().await, 404, "readable before the release");

    bus.publish(event(
        "exam.result.ready",
        "ready-1",
        serde_json::json!({"exam_id": "exm-kf", "patient_id": "pac-kf"}),
    ))
    .await
    .unwrap();
    let published = Instant::now();
    while read().await != 200 {
        assert!(published.elapsed() < Duration::from_secs(10), "never released");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let took = published.elapsed();
    eprintln!("released {took:?} after exam.result.ready was acknowledged by the broker");
    assert!(took <= Duration::from_secs(2), "release took {took:?} (SLO 2 s)");

    // A malformed exam event (no patient) is dead-lettered with its error.
    bus.publish(event(
        "exam.result.ready",
        "bad-1",
        serde_json::json!({"exam_id": "exm-bad"}),
    ))
    .await
    .unwrap();
    let mut dlq = bus
        .subscribe(
            &format!("dlq-reader-{}", uuid::Uuid::new_v4()),
            &["exam.result.ready.dlq".to_owned()],
        )
        .await
        .unwrap();
    let started = Instant::now();
    let dead = loop {
        let got = dlq.poll(10, Duration::from_millis(500)).await.unwrap();
        if let Some(d) = got
            .into_iter()
            .find(|d| String::from_utf8_lossy(&d.message.payload).contains("bad-1"))
        {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no dead letter");
    };
    assert!(dead.message.headers.iter().any(|(k, _)| k == "dlq.error"));
    assert!(access.exam("exm-bad").await.unwrap().is_none());
    h.stop().await;
}
