//! Building `podman` command lines. Every podman invocation goes through here so the
//! binary can be overridden (`SANDBOXCTL_PODMAN`) and arguments are never passed
//! through a shell.

use std::process::Command;

/// The podman binary to run: `$SANDBOXCTL_PODMAN` or `podman` from `PATH`.
pub fn binary() -> String {
    std::env::var("SANDBOXCTL_PODMAN").unwrap_or_else(|_| "podman".to_owned())
}

/// A `Command` for podman with the given arguments.
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(binary());
    cmd.args(args);
    cmd
}
