//! Third-party parsers on bounded helper threads: a panic is caught, a loop is abandoned after
//! its time limit, and the number of such threads alive at once is capped.
//!
//! Lives with the runtime, not with the stages, because the worker's metrics
//! ([`crate::observe`]) report the helper threads whichever stages a binary links.

use crate::runtime::StageError;

/// Why [`bounded`] returned without the work's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aborted {
    /// The work panicked (caught).
    Panicked,
    /// The work did not finish within the bound; its thread is abandoned, not killed (counted in
    /// [`helper_threads`] until it ends).
    TimedOut,
    /// No thread was started: [`MAX_HELPER_THREADS`] are still running (abandoned ones
    /// included), or the OS refused one.
    NoThread,
}

/// Most helper threads of third-party parsers alive at once in a process. A timed-out parser
/// cannot be killed inside the process, so each looping file would otherwise keep one more
/// thread (and its plaintext copy) burning a core: past this cap new work is refused instead,
/// and the `parser_threads_*` metrics show it (restart the worker).
pub const MAX_HELPER_THREADS: usize = 32;

static HELPERS_ALIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static HELPERS_ABANDONED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// This process's parser helper threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelperThreads {
    /// Alive now: at work, or timed out and still running.
    pub alive: usize,
    /// Timed out since the process started (each left running).
    pub abandoned: u64,
}

/// The helper threads' counts, for metrics.
pub fn helper_threads() -> HelperThreads {
    use std::sync::atomic::Ordering::Relaxed;
    HelperThreads {
        alive: HELPERS_ALIVE.load(Relaxed),
        abandoned: HELPERS_ABANDONED.load(Relaxed),
    }
}

/// A stage about to parse refuses, transiently, while every helper slot is taken (by parsers
/// that timed out and run on): the file is not at fault, and retries wait for slots to free.
pub fn helpers_available() -> Result<(), StageError> {
    if helper_threads().alive >= MAX_HELPER_THREADS {
        return Err(StageError::Transient(format!(
            "all {MAX_HELPER_THREADS} parser helper threads are busy or stuck; restart the worker if this lasts"
        )));
    }
    Ok(())
}

/// Gives the helper slot back when its thread ends, however it ends.
struct HelperSlot;

impl Drop for HelperSlot {
    fn drop(&mut self) {
        HELPERS_ALIVE.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Runs third-party parsing or rendering on a helper thread named `name`, catching panics, and
/// waits at most `limit`: a looping decoder cannot hold the caller past the bound, and at most
/// [`MAX_HELPER_THREADS`] such threads are alive at once.
pub fn bounded<T: Send + 'static>(
    name: &str,
    limit: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Aborted> {
    use std::sync::atomic::Ordering::{AcqRel, Relaxed};
    HELPERS_ALIVE
        .fetch_update(AcqRel, Relaxed, |n| (n < MAX_HELPER_THREADS).then_some(n + 1))
        .map_err(|_| {
            tracing::error!(name, max = MAX_HELPER_THREADS, "parser helper threads exhausted");
            Aborted::NoThread
        })?;
    let slot = HelperSlot;
    let (tx, rx) = std::sync::mpsc::channel();
    // The caller's span (document, trace id) follows the work, so the panic hook's line names them.
    let span = tracing::Span::current();
    let started = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let _slot = slot;
        let _in = span.enter();
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    });
    // A refused spawn dropped the closure, and the slot with it.
    started.map_err(|_| Aborted::NoThread)?;
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(Aborted::Panicked),
        Err(_) => {
            HELPERS_ABANDONED.fetch_add(1, Relaxed);
            tracing::warn!(name, "parser timed out; its thread is left running");
            Err(Aborted::TimedOut)
        }
    }
}
