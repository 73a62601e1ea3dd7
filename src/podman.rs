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
pub const CREDENTIAL_VARS: [&str; 2] = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"];

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
    crate::terminal::one_line(&out.stderr)
}

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
}
