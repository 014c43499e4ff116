//! Parser helper threads are capped: each timed-out parser is counted as abandoned while it runs
//! on, and once `MAX_HELPER_THREADS` are alive new work is refused at once instead of starting
//! one more thread; the count and the refusals are in the worker's metrics. (Its own test binary:
//! the counts are per process.)

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use docstore_pipeline::observe::WorkerMetrics;
use docstore_stages::{Aborted, MAX_HELPER_THREADS, bounded, helper_threads};

#[test]
fn timed_out_parsers_are_counted_and_capped() {
    // Every "parser" blocks until the test lets them go, as a looping decoder would.
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.write().unwrap();
    for i in 0..MAX_HELPER_THREADS {
        let g = gate.clone();
        let r = bounded("looping", Duration::from_millis(5), move || drop(g.read()));
        assert_eq!(r, Err(Aborted::TimedOut), "{i}");
    }
    let now = helper_threads();
    assert_eq!(
        (now.alive, now.abandoned),
        (MAX_HELPER_THREADS, MAX_HELPER_THREADS as u64)
    );
    // At the cap even quick work is refused, without waiting for its bound.
    let started = Instant::now();
    assert_eq!(
        bounded("quick", Duration::from_secs(5), || 1),
        Err(Aborted::NoThread)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let metrics = WorkerMetrics::default().render("stamp");
    assert!(
        metrics.contains(&format!(
            r#"docstore_worker_parser_threads_alive{{stage="stamp"}} {MAX_HELPER_THREADS}"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"docstore_worker_parser_threads_abandoned_total{{stage="stamp"}} {MAX_HELPER_THREADS}"#
        )),
        "{metrics}"
    );

    // When the stuck parsers end, their slots come back.
    drop(closed);
    let start = Instant::now();
    while helper_threads().alive > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "slots not given back");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bounded("quick", Duration::from_secs(5), || 2), Ok(2));
    // A panic gives its slot back too.
    assert_eq!(
        bounded("panicking", Duration::from_secs(5), || -> u8 {
            panic!("parser bug")
        }),
        Err(Aborted::Panicked)
    );
    let start = Instant::now();
    while helper_threads().alive > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "panicked slot not given back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(helper_threads().abandoned, MAX_HELPER_THREADS as u64);
}
