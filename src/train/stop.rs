//! Asking a run to stop early: whoever drives the run (the CLI on SIGINT/SIGTERM, a test, a
//! program embedding the library) holds a [`StopToken`]; the run checks it after every step,
//! writes a checkpoint and returns. The library installs no signal handler and keeps no
//! process-wide flag, so several runs can follow each other in one process.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared "please stop" flag. Clones observe the same flag.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// A token nobody has set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop after its current step. One atomic store, so a signal handler may
    /// call it.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`stop`](Self::stop) was called on this token or a clone of it.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
