//! Building `podman` command lines. Every podman invocation goes through here so the
//! binary can be overridden (`SANDBOXCTL_PODMAN`) and arguments are never passed
//! through a shell.

use std::process::Command;

/// The podman binary to run: `$SANDBOXCTL_PODMAN` or `podman` from `PATH`.
pub fn binary() -> String {
    std::env::var("SANDBOXCTL_PODMAN").unwrap_or_else(|_| "podman".to_owned())
}

/// Variables that hold credentials in the user's environment. sandboxctl stores them as
/// Podman secrets; no podman process it starts inherits them, so they do not show in
/// that process's `/proc/<pid>/environ`.
pub use crate::sandbox::agent::KEY_VARS as CREDENTIAL_VARS;

/// A `Command` for podman with the given arguments.
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(binary());
    cmd.args(args);
    for var in CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// A finished podman's standard error as one line, for an error message, with terminal
/// controls rendered visibly (it may quote what a container printed).
pub fn stderr_line(out: &std::process::Output) -> String {
    crate::base::terminal::one_line(&out.stderr)
}

/// Podman's image and container store as `podman info` names it, with the room left on
/// its file system. (`podman info` answers on a full disk; creating a container does not.)
#[derive(Debug, Clone, serde::Serialize)]
pub struct Storage {
    pub driver: String,
    pub graph_root: std::path::PathBuf,
    /// Bytes an unprivileged user can still write there.
    pub available: u64,
    /// Size of that file system in bytes.
    pub size: u64,
}

/// A store with less room than this (or 1 % of its file system, whichever is smaller)
/// cannot be trusted to create a container: Podman writes layer and container records
/// there on every start.
const STORAGE_LOW: u64 = 256 << 20;

impl Storage {
    /// Asks Podman where its store is and the file system how much room is left.
    pub fn probe() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let out = command([
            "info",
            "--format",
            "{{.Store.GraphDriverName}}\n{{.Store.GraphRoot}}",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", binary()))?;
        if !out.status.success() {
            anyhow::bail!("`podman info` failed: {}", stderr_line(&out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (driver, root) = text
            .trim_end_matches('\n')
            .split_once('\n')
            .with_context(|| format!("`podman info` printed {text:?}, not a driver and a path"))?;
        let graph_root = std::path::PathBuf::from(root);
        let fs = rustix::fs::statvfs(&graph_root)
            .with_context(|| format!("cannot read the free space of {}", graph_root.display()))?;
        Ok(Self {
            driver: driver.to_owned(),
            available: fs.f_bavail.saturating_mul(fs.f_frsize),
            size: fs.f_blocks.saturating_mul(fs.f_frsize),
            graph_root,
        })
    }

    /// Whether the store is (nearly) full.
    pub fn is_full(&self) -> bool {
        self.available < STORAGE_LOW.min(self.size / 100)
    }

    /// `Podman's storage /home/u/.local/share/containers/storage is full (0 B free)`.
    pub fn full_in_words(&self) -> String {
        format!(
            "Podman's storage {} is full ({} free)",
            self.graph_root.display(),
            crate::base::sizes::human(self.available)
        )
    }
}

/// The fix for a full store, after "…: ".
pub const STORAGE_FIX: &str = "free space there (`podman system prune` removes stopped containers and unused images; `podman image prune -a` every image no container uses)";

#[cfg(test)]
mod tests {
    #[test]
    fn podman_never_inherits_credentials() {
        let cmd = super::command(["version"]);
        for var in super::CREDENTIAL_VARS {
            assert!(
                cmd.get_envs().any(|(k, v)| k == var && v.is_none()),
                "{var} is not removed"
            );
        }
    }

    #[test]
    fn stderr_line_is_one_line_without_terminal_controls() {
        use std::os::unix::process::ExitStatusExt;
        let out = std::process::Output {
            status: std::process::ExitStatus::from_raw(125 << 8),
            stdout: Vec::new(),
            stderr: b"Error: \x1b]52;c;ZXZpbA==\x07bad\r\nmore \x9b\n".to_vec(),
        };
        assert_eq!(
            super::stderr_line(&out),
            "Error: ^[]52;c;ZXZpbA==^Gbad more \\x9b"
        );
    }

    fn storage(available: u64, size: u64) -> super::Storage {
        super::Storage {
            driver: "overlay".to_owned(),
            graph_root: "/s".into(),
            available,
            size,
        }
    }

    #[test]
    fn storage_is_full_below_one_percent_or_256_mib() {
        const G: u64 = 1 << 30;
        // A large disk: 256 MiB is the line.
        assert!(storage(255 << 20, 500 * G).is_full());
        assert!(!storage(257 << 20, 500 * G).is_full());
        // A small file system: 1 % of it.
        assert!(storage(0, 1 << 20).is_full());
        assert!(storage(10_000, 1 << 20).is_full());
        assert!(!storage(20_000, 1 << 20).is_full());
        assert_eq!(
            storage(0, 1 << 20).full_in_words(),
            "Podman's storage /s is full (0 B free)"
        );
    }
}
