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

/// A finished podman's standard error as one line, for an error message.
pub fn stderr_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', " ")
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
}
