//! Into a client's running sandbox: `podman exec` of tmux (the session created if needed,
//! in a worktree with `attach --worktree`), the sandbox started first if it is not
//! running. The podman process replaces sandboxctl, so the terminal, signals and exit
//! status are podman's own (with a shared Claude login, it waits for podman instead,
//! to sync the login afterwards).

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;

use anyhow::{Context, Result, bail};

use crate::host::systemd::{Systemd, Verb};
use crate::sandbox::layout::Layout;

/// tmux session names: tmux itself rewrites ':' and '.', so keep to a plain set.
pub fn check_session(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!(
            "invalid session name {}: use 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            crate::base::escape::display(name)
        );
    }
    Ok(())
}

/// The podman arguments that attach to (or create) a tmux session in the sandbox.
pub fn attach_args(container: &str, session: &str) -> Vec<String> {
    [
        "exec",
        "-it",
        // Empty detach keys: Ctrl-P and friends reach the agent; detach is tmux's job.
        "--detach-keys=",
        container,
        "tmux",
        "new-session",
        "-A",
        "-s",
        session,
    ]
    .map(str::to_owned)
    .to_vec()
}

pub fn attach(layout: &Layout, name: &str, session: &str) -> Result<()> {
    attach_to(layout, name, session, None)
}

/// `attach`, or with a worktree: into the session of that name running in the worktree
/// (created inside the sandbox if needed).
pub fn attach_to(layout: &Layout, name: &str, session: &str, worktree: Option<&str>) -> Result<()> {
    let session = worktree.unwrap_or(session);
    check_session(session)?;
    if worktree.is_some() {
        crate::ops::sessions::check_branch(session)?;
    }
    let (client, settings) = crate::ops::clients::known_with_podman(layout, name)?;
    if !std::io::stdin().is_terminal() {
        bail!("attach needs a terminal; use `sandboxctl exec {client} -- COMMAND` from scripts");
    }
    let systemd = Systemd::connect_user()?;
    if !systemd.is_active(&client.service_name())? {
        crate::ops::start::run(layout, &systemd, &client, &settings, Verb::Start)?;
    }
    let mut args = attach_args(&client.container_name(), session);
    if worktree.is_some() {
        let dir = crate::ops::sessions::ensure_worktree(&client, &settings, session)?;
        // The session starts in the worktree (an existing session is joined as it is).
        args.extend(["-c".to_owned(), dir]);
    }
    let mut cmd = crate::host::podman::command(args);
    if settings.claude_config.is_none() {
        let err = cmd.exec();
        bail!("cannot run {}: {err}", crate::host::podman::binary())
    }
    // A shared Claude login refreshed during the session goes back to the host when
    // the user detaches, so wait for podman instead of becoming it.
    crate::state::claude_login::sync_client(layout, &client, &settings);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", crate::host::podman::binary()))?;
    crate::state::claude_login::sync_client(layout, &client, &settings);
    if !status.success() {
        bail!("{} exited with {status}", crate::host::podman::binary());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_command_line() {
        assert_eq!(
            attach_args("agent-acme", "main").join(" "),
            "exec -it --detach-keys= agent-acme tmux new-session -A -s main"
        );
    }

    #[test]
    fn session_names() {
        assert!(check_session("main").is_ok());
        assert!(check_session("work_2-b").is_ok());
        for bad in ["", "a:b", "a.b", "a b", "x\n"] {
            assert!(check_session(bad).is_err(), "{bad:?}");
        }
    }
}
