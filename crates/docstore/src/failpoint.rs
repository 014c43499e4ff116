//! Crash-test pause points, in the spirit of tantivy's `fail` points: with the `failpoints` feature,
//! `DOCSTORE_FAILPOINTS=name=pause[,name=pause]` makes the process stop at that point forever, so a
//! test can SIGKILL it in a precise state. Without the feature this compiles to nothing.

/// Pauses forever at `name` when the environment asks for it (feature `failpoints` only).
#[cfg(feature = "failpoints")]
pub(crate) async fn hit(name: &str) {
    let armed = std::env::var("DOCSTORE_FAILPOINTS")
        .map(|v| v.split(',').any(|p| p.trim() == format!("{name}=pause")))
        .unwrap_or(false);
    if armed {
        eprintln!("failpoint {name}: paused");
        futures::future::pending::<()>().await;
    }
}

/// Pauses forever at `name` when the environment asks for it (feature `failpoints` only).
#[cfg(not(feature = "failpoints"))]
pub(crate) async fn hit(_name: &str) {}
