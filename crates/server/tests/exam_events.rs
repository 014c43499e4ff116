//! The exam service's events through the pipeline's runtime (in-process bus): `exam.created`
//! with a requesting doctor assigns the exam, `exam.result.ready` releases it to its patient,
//! `exam.completed` marks it complete, and a malformed exam event is dead-lettered, not applied.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Harness;
use docstore_bus::{EventBus, InProcessBus, Message};
use docstore_pipeline::runtime::{RuntimeConfig, Worker};
use docstore_server::exam_events::{ExamEvents, TOPICS};
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
async fn exam_events_assign_release_and_dead_letter() {
    let h = Harness::start(false, |_| {}).await;
    let access = h.service.as_ref().unwrap().state().access.clone();
    let meta = h.service.as_ref().unwrap().state().store.metadata().clone();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new(2));
    let mut rc = RuntimeConfig::new("exam-access", TOPICS);
    rc.poll_wait = Duration::from_millis(20);
    rc.backoff = Duration::from_millis(10);
    let worker = Arc::new(Worker::new(
        bus.clone(),
        Arc::new(ExamEvents::new(access, meta.clone())),
        rc,
    ));
    let metrics = worker.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let w = worker.clone();
    let task = tokio::spawn(async move {
        w.run(async {
            let _ = stopped.await;
        })
        .await
    });

    let id = h
        .upload(
            &h.staff(),
            "pac-k",
            "exm-k",
            "application/pdf",
            b"%PDF-1.4 k".to_vec(),
        )
        .await;
    let patient = h.token(Role::Patient, "kim", Some("pac-k"));
    let doctor = h.token(Role::Doctor, "dr-y", None);
    let read = |token: String| {
        let url = h.url(&format!("/v1/documents/{id}"));
        let http = h.http.clone();
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
    assert_eq!(read(patient.clone()).await, 404);
    assert_eq!(read(doctor.clone()).await, 404);

    bus.publish(event(
        "exam.created",
        "ex-1",
        serde_json::json!({"exam_id": "exm-k", "patient_id": "pac-k", "requested_by": "dr-y"}),
    ))
    .await
    .unwrap();
    bus.publish(event(
        "exam.result.ready",
        "ex-2",
        serde_json::json!({"exam_id": "exm-k", "patient_id": "pac-k"}),
    ))
    .await
    .unwrap();
    // Malformed: no patient. And a release naming another patient than the exam's.
    bus.publish(event(
        "exam.result.ready",
        "ex-3",
        serde_json::json!({"exam_id": "exm-z"}),
    ))
    .await
    .unwrap();
    bus.publish(event(
        "exam.result.ready",
        "ex-4",
        serde_json::json!({"exam_id": "exm-k", "patient_id": "pac-other"}),
    ))
    .await
    .unwrap();

    let started = Instant::now();
    while read(patient.clone()).await != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(doctor).await, 200);
    while metrics.dead_lettered.get() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "malformed events not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other patient's claim released nothing to them.
    let other = h.token(Role::Patient, "eve", Some("pac-other"));
    assert_eq!(read(other).await, 404);

    // exam.completed marks the exam complete; the release time shows beside it.
    let staff = h.staff();
    let status = || h.get_json("/v1/exams/exm-k", &staff);
    assert!(status().await["completed_at"].is_null());
    bus.publish(event(
        "exam.completed",
        "ex-5",
        serde_json::json!({"exam_id": "exm-k", "patient_id": "pac-k"}),
    ))
    .await
    .unwrap();
    let exam = loop {
        let s = status().await;
        if !s["completed_at"].is_null() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exam["patient_id"], "pac-k");
    // The release is the metadata store's (what the stamp prints), with the same time, and the
    // second patient's claim left it alone.
    let release = meta.exam_release("exm-k").await.unwrap().unwrap();
    assert_eq!(
        (release.patient_id.as_str(), release.released_by.as_str()),
        ("pac-k", "event:ex-2")
    );
    assert_eq!(exam["released_at"], release.released_at.to_rfc3339());
    assert_eq!(meta.exam_release("exm-z").await.unwrap(), None);
    // A patient has no exam view; it reads as missing.
    let r = h
        .http
        .get(h.url("/v1/exams/exm-k"))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    h.stop().await;
}
