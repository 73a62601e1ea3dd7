//! Git worktrees of a client's first project for parallel agents (`attach --worktree`,
//! `worktree rm`): made and removed inside the sandbox, never by git on the host.

use std::process::ExitStatus;

use anyhow::{Context, Result, bail};

use crate::notify::{self};
use crate::sandbox::client::ClientName;
use crate::sandbox::settings::Settings;

#[allow(clippy::wildcard_imports)]
use super::*;

/// Where `attach --worktree NAME` puts the worktree, inside the client's first project.
pub const WORKTREES_DIR: &str = ".worktrees";

/// A worktree's name is also its branch's: git refuses a branch starting with '-'.
pub fn check_branch(name: &str) -> Result<()> {
    if name.starts_with('-') {
        bail!(
            "invalid worktree name {}: a branch name cannot start with '-'",
            crate::base::escape::display(name)
        );
    }
    Ok(())
}

/// Exit status of the worktree scripts for "not a git repository" / "no such worktree".
pub(crate) const NOT_A_REPO: i32 = 3;

pub(crate) const NO_WORKTREE: i32 = 4;

pub(crate) const REUSED: i32 = 5;

/// Creates (or reuses) the worktree `PROJECT/.worktrees/NAME` on branch NAME inside the
/// running sandbox; returns its path. `.worktrees/` ignores itself, so the main checkout
/// does not list the worktrees as untracked files.
pub(crate) const ENSURE_SCRIPT: &str = r#"set -eu
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 3
wt=.worktrees/$1
[ -e "$wt/.git" ] && exit 5
mkdir -p .worktrees
[ -e .worktrees/.gitignore ] || printf '*\n' >.worktrees/.gitignore
if git show-ref --verify --quiet "refs/heads/$1"; then
    git worktree add --quiet "$wt" "$1"
else
    git worktree add --quiet -b "$1" "$wt"
fi
"#;

pub(crate) const REMOVE_SCRIPT: &str = r#"set -eu
[ -e ".worktrees/$1/.git" ] || exit 4
shift_force=$2
if [ "$shift_force" = force ]; then
    git worktree remove --force ".worktrees/$1"
else
    git worktree remove ".worktrees/$1"
fi
"#;

pub(crate) fn first_project(client: &ClientName, settings: &Settings) -> Result<String> {
    let project = settings.projects.first().with_context(|| {
        format!(
            "{client} has no project for a worktree; give it one with `sandboxctl enable {client} PROJECT_DIR`"
        )
    })?;
    project
        .to_str()
        .map(str::to_owned)
        .with_context(|| format!("the project {} is not UTF-8", project.display()))
}

/// Runs `script NAME ARG` with `sh` in the project directory inside the sandbox.
pub(crate) fn in_project(
    client: &ClientName,
    project: &str,
    script: &str,
    name: &str,
    arg: &str,
) -> Result<(ExitStatus, Vec<u8>)> {
    let cmd = crate::host::podman::command([
        "exec",
        "-w",
        project,
        &client.container_name(),
        "sh",
        "-c",
        script,
        "sh",
        name,
        arg,
    ]);
    let (status, _, err) = bounded_output(cmd, EXEC_TIMEOUT)?;
    Ok((status, err))
}

pub fn ensure_worktree(client: &ClientName, settings: &Settings, name: &str) -> Result<String> {
    let project = first_project(client, settings)?;
    let (status, err) = in_project(client, &project, ENSURE_SCRIPT, name, "")?;
    let dir = format!("{project}/{WORKTREES_DIR}/{name}");
    match status.code() {
        Some(REUSED) => Ok(dir),
        Some(0) => {
            eprintln!(
                "created the worktree {dir} on branch {name} inside {client}; its `.git` file and git dir are read-only for the agent only after `sandboxctl enable {client}` and a restart: until then do not run git on the host in it (`sandboxctl sessions {client}` says which worktrees are pinned)"
            );
            Ok(dir)
        }
        Some(NOT_A_REPO) => bail!(
            "{project} is not a git repository; run `git init` in it (or `sandboxctl exec {client} -- git init`) first"
        ),
        _ => bail!(
            "cannot create the worktree {name} of {project} in {client}: {}",
            crate::base::terminal::one_line(&err)
        ),
    }
}

/// Refuses a worktree name that is not also a plain session and branch name.
pub fn check_worktree_name(worktree: &str) -> Result<()> {
    if !notify::is_session_name(worktree) {
        bail!(
            "invalid worktree name {}: use 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            crate::base::escape::display(worktree)
        );
    }
    check_branch(worktree)
}

/// Removes the worktree `worktree` of the client's first project, inside the sandbox
/// (`force`: with its uncommitted changes), and ends its session; returns whether a
/// session ended. The branch stays.
pub fn remove_worktree(
    client: &ClientName,
    settings: &Settings,
    worktree: &str,
    force: bool,
) -> Result<(String, bool)> {
    check_worktree_name(worktree)?;
    let project = first_project(client, settings)?;
    require_running(client)?;
    let (status, err) = in_project(
        client,
        &project,
        REMOVE_SCRIPT,
        worktree,
        if force { "force" } else { "" },
    )?;
    match status.code() {
        Some(0) => {}
        Some(NO_WORKTREE) => bail!(
            "{client} has no worktree {worktree} ({project}/{WORKTREES_DIR}/{worktree}); `sandboxctl sessions {client}` lists them"
        ),
        _ => bail!(
            "cannot remove the worktree {worktree} of {client}: {}; `sandboxctl worktree rm {client} {worktree} --force` removes it with its uncommitted changes",
            crate::base::terminal::one_line(&err)
        ),
    }
    // Its session ends too ("=" asks tmux for this exact name); none is fine.
    let kill = crate::host::podman::command([
        "exec",
        &client.container_name(),
        "tmux",
        "kill-session",
        "-t",
        &format!("={worktree}"),
    ]);
    let ended = bounded_output(kill, EXEC_TIMEOUT).is_ok_and(|(s, _, _)| s.success());
    Ok((project, ended))
}
