//! SIGINT/SIGTERM for the whole process. The library installs no handler: `train` is handed a
//! [`StopToken`] that the handler sets, and `launch` polls the last signal to forward it.
use cliptrain::train::StopToken;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

/// The token the handler sets; created before the handler is installed.
static STOP: OnceLock<StopToken> = OnceLock::new();
/// The last signal received, until the launcher takes it.
static LAST: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: atomic loads and stores only (OnceLock::get is an atomic load).
    LAST.store(sig, Ordering::SeqCst);
    if let Some(token) = STOP.get() {
        token.stop();
    }
}

fn install() {
    // SAFETY: the handler only touches atomics.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// A token set by the next SIGINT or SIGTERM (which then no longer end the process).
pub fn stop_token() -> StopToken {
    let token = STOP.get_or_init(StopToken::new).clone();
    install();
    token
}

/// The last SIGINT/SIGTERM received (0 = none since the last take), which no longer end the
/// process: whoever polls it decides.
pub fn last_signal() -> &'static AtomicI32 {
    install();
    &LAST
}
