//! A test hook for crash safety: `SANDBOXCTL_TEST_KILL_AT_STEP=N` makes this process
//! kill itself with SIGKILL when it reaches its N-th checkpoint (counted from 0), so a
//! test can stop a command at every step of `enable` or `disable` the way a power cut
//! or an OOM kill would: no destructor, no undo, no flush. Unset, a checkpoint does
//! nothing, and a build without the `test-hooks` feature (release, the package) has no
//! such hook at all.

#[cfg(feature = "test-hooks")]
use std::sync::OnceLock;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable that names the checkpoint to die at.
pub const KILL_AT_STEP: &str = "SANDBOXCTL_TEST_KILL_AT_STEP";

#[cfg(feature = "test-hooks")]
static TARGET: OnceLock<Option<usize>> = OnceLock::new();
#[cfg(feature = "test-hooks")]
static REACHED: AtomicUsize = AtomicUsize::new(0);

/// Counts a checkpoint; at the one the test named, dies at once. Only in a build with
/// the `test-hooks` feature: any other build ignores the variable.
#[cfg(not(feature = "test-hooks"))]
pub fn checkpoint() {}

/// Counts a checkpoint; at the one the test named, dies at once.
#[cfg(feature = "test-hooks")]
pub fn checkpoint() {
    let target = *TARGET.get_or_init(|| std::env::var(KILL_AT_STEP).ok()?.parse().ok());
    let n = REACHED.fetch_add(1, Ordering::SeqCst);
    if target == Some(n) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
}
