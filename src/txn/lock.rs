//! One change at a time: every command that changes a client (its settings, units,
//! policy, secrets, port forwards, the image it runs) holds an exclusive lock on
//! `$XDG_RUNTIME_DIR/sandboxctl.lock` (one per user, whatever the data directory;
//! `~/.cache/sandboxctl/change.lock` without a runtime directory) while it
//! reads what is there and writes what is new. Two such commands started together
//! therefore end as if run one after the other, and the shared template units are
//! never written by two at once. The lock is `flock(2)`: the kernel drops it when its
//! holder dies, however it dies, so a crashed command never blocks the next one —
//! which then undoes what the crash left half-done (see `journal`).
//!
//! Reading commands (`status`, `list`, `logs`, `update --dry-run`) take no lock.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt as _;

use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};

use crate::sandbox::layout::Layout;

thread_local! {
    /// How many guards this thread holds: a command that calls another (`secret set`
    /// re-enables the client) takes the lock once.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Held while a command changes clients; dropping it releases the lock.
pub struct ChangeLock {
    _file: Option<File>,
}

impl ChangeLock {
    /// Takes the lock, waiting (and saying so) while another command holds it, then
    /// undoes whatever an interrupted command left.
    pub fn take(layout: &Layout) -> Result<Self> {
        if DEPTH.get() > 0 {
            DEPTH.set(DEPTH.get() + 1);
            return Ok(Self { _file: None });
        }
        let (file, path) = open_lock(layout)?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            eprintln!(
                "sandboxctl: waiting for another sandboxctl command that is changing clients ({})",
                path.display()
            );
            flock(&file, FlockOperation::LockExclusive)
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        DEPTH.set(1);
        let guard = Self { _file: Some(file) };
        crate::txn::journal::recover(layout)?;
        Ok(guard)
    }
}

/// The lock file: in the runtime directory, so that taking the lock writes nothing
/// into the data or config tree (a refused command leaves them as they were); in
/// sandboxctl's cache directory where there is no runtime directory.
fn lock_path(layout: &Layout) -> Result<std::path::PathBuf> {
    match &layout.runtime_dir {
        Some(dir) if dir.is_dir() => Ok(dir.join("sandboxctl.lock")),
        _ => {
            crate::sandbox::layout::create_private_dir(&layout.cache_dir)?;
            Ok(layout.cache_dir.join("change.lock"))
        }
    }
}

fn open_lock(layout: &Layout) -> Result<(File, std::path::PathBuf)> {
    let path = lock_path(layout)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    Ok((file, path))
}

/// For reading commands: if an interrupted command left an undo log and no command
/// is changing clients now, undo it first, so what is shown is what is there.
pub fn recover_if_idle(layout: &Layout) -> Result<()> {
    if DEPTH.get() > 0 || !crate::txn::journal::pending(layout) {
        return Ok(());
    }
    let (file, _) = open_lock(layout)?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        // A change is being made right now; its log is not an interrupted one.
        return Ok(());
    }
    DEPTH.set(1);
    let result = crate::txn::journal::recover(layout);
    DEPTH.set(0);
    result
}

impl Drop for ChangeLock {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_in_another_process_waits_and_a_nested_take_does_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = crate::sandbox::layout::Layout::under(tmp.path());
        std::fs::create_dir_all(layout.runtime_dir.as_ref().expect("runtime dir")).expect("mkdir");
        let first = ChangeLock::take(&layout).expect("lock");
        assert!(
            !layout.data_dir.exists(),
            "the lock wrote into the data tree"
        );
        // Nested in the same thread: no deadlock.
        let nested = ChangeLock::take(&layout).expect("nested");
        drop(nested);
        // Another open file description (as another process has) cannot lock it.
        let other = File::open(lock_path(&layout).expect("path")).expect("open");
        assert!(flock(&other, FlockOperation::NonBlockingLockExclusive).is_err());
        drop(first);
        assert!(flock(&other, FlockOperation::NonBlockingLockExclusive).is_ok());
    }
}
