//! A sandbox's tmux sessions as rows (what runs, whether the agent waits), the mode the
//! agent shows, the wait for its start, and the git worktrees of `attach --worktree`.
//!
//! Everything read from the sandbox (tmux's list of panes, git's errors) is written by
//! the agent's side: it is read with a size and time bound and shown only through
//! `terminal::sanitize`. Git runs inside the sandbox (`podman exec`), never on the host,
//! which must not run git in a repository the agent wrote.

#[cfg(test)]
mod tests;
pub(crate) mod worktree;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::host::systemd::Systemd;
use crate::notify::{self, Kind, SessionState};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

pub use worktree::{
    WORKTREES_DIR, check_branch, check_worktree_name, ensure_worktree, remove_worktree,
};

/// The most bytes read from a command in the sandbox, per stream.
const OUTPUT_MAX: usize = 64 * 1024;

/// The most sessions listed, and the longest field shown.
const ROWS_MAX: usize = 200;

const FIELD_MAX: usize = 200;

/// How long a command in the sandbox may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cmd`, keeping at most `OUTPUT_MAX` bytes of stdout and stderr each, killed
/// after `timeout`.
fn bounded_output(mut cmd: Command, timeout: Duration) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", crate::host::podman::binary()))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(p) = pipe {
                // Past the bound the pipe is closed: the writer gets EPIPE, not a wait.
                let _ = p.take(OUTPUT_MAX as u64).read_to_end(&mut out);
            }
            out
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().context("cannot wait for podman")? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the command in the sandbox did not finish within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status, out, err))
}

/// The client's sandbox must run (nothing here starts it).
pub fn require_running(client: &ClientName) -> Result<()> {
    let systemd = Systemd::connect_user()?;
    if !systemd.is_active(&client.service_name())? {
        bail!("{client} is not running; start it with `sandboxctl start {client}`");
    }
    Ok(())
}

/// A field from the sandbox, made safe to print and bounded.
fn field(raw: &[u8]) -> String {
    let mut s = crate::base::terminal::sanitize(raw);
    if s.len() > FIELD_MAX {
        let mut cut = FIELD_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// One pane: its session, its process, and what runs in its foreground where.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pane {
    session: String,
    pid: u32,
    command: String,
    path: String,
}

/// The tmux format of one pane: the session's name and the pane's process. Nothing a
/// program in the pane sets can hold a line break here: tmux escapes tabs and line
/// breaks in session names, and the pid is a number. The command and the working
/// directory, which the agent's programs choose freely, come from `/proc` instead
/// (`PROCS_SCRIPT`), framed by NUL bytes.
const PANE_FORMAT: &str = "#{session_name}\t#{pane_pid}";

/// Every process of the sandbox as two NUL-terminated fields: `/proc/PID/stat`, then
/// the working directory. A NUL cannot occur in either, so no name or path can make
/// one process look like two.
const PROCS_SCRIPT: &str = r#"for d in /proc/[0-9]*; do
    cat "$d/stat" 2>/dev/null || continue
    printf '\0'
    readlink -z "$d/cwd" 2>/dev/null || printf '\0'
done
"#;

/// The first pane of each session (the agent's), from `list-panes -a` output; the
/// command and path are filled in from the process table.
fn parse_panes(text: &[u8]) -> Vec<Pane> {
    let mut out: Vec<Pane> = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        let mut f = line.splitn(2, |b| *b == b'\t');
        let (Some(session), Some(pid)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(pid) = std::str::from_utf8(pid).ok().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let session = field(session);
        if out.iter().any(|p| p.session == session) {
            continue;
        }
        if out.len() >= ROWS_MAX {
            break;
        }
        out.push(Pane {
            session,
            pid,
            command: String::new(),
            path: String::new(),
        });
    }
    out
}

/// A process of the sandbox, from its `/proc/PID/stat` and working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: u32,
    ppid: u32,
    pgid: i64,
    tpgid: i64,
    comm: String,
    cwd: String,
}

/// The most processes read.
const PROCS_MAX: usize = 4096;

/// One `/proc/PID/stat` line: `PID (COMM) STATE PPID PGRP SESSION TTY TPGID …`. The
/// name may hold anything but NUL, parentheses and spaces included: it ends at the
/// last `)`.
fn parse_stat(stat: &[u8], cwd: &[u8]) -> Option<Proc> {
    let open = stat.iter().position(|b| *b == b'(')?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    if close < open {
        return None;
    }
    let pid = std::str::from_utf8(&stat[..open])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut f = rest.split_ascii_whitespace().skip(1); // the state
    let mut num = || f.next().and_then(|n| n.parse::<i64>().ok());
    let (parent, group, _session, _tty, foreground) = (num()?, num()?, num()?, num()?, num()?);
    Some(Proc {
        pid,
        ppid: u32::try_from(parent).ok()?,
        pgid: group,
        tpgid: foreground,
        comm: field(&stat[open + 1..close]),
        cwd: field(cwd),
    })
}

/// The processes, by pid, from `PROCS_SCRIPT`'s output.
fn parse_procs(text: &[u8]) -> HashMap<u32, Proc> {
    let mut fields = text.split(|b| *b == 0);
    let mut out = HashMap::new();
    while let (Some(stat), Some(cwd)) = (fields.next(), fields.next()) {
        if out.len() >= PROCS_MAX {
            break;
        }
        if let Some(p) = parse_stat(stat, cwd) {
            out.insert(p.pid, p);
        }
    }
    out
}

/// The command in the foreground of a pane: the deepest descendant of the pane's
/// process in its terminal's foreground process group (a script's child, such as the
/// agent `agent-session` runs, shares its group). A tmux client there is a helper of
/// what runs (the booted Debian 13 lane saw one under Codex), never the
/// session's command.
fn foreground(procs: &HashMap<u32, Proc>, pane_pid: u32) -> Option<&Proc> {
    let tpgid = procs.get(&pane_pid)?.tpgid;
    if tpgid <= 0 {
        return None;
    }
    let depth = |p: &Proc| -> Option<usize> {
        let mut pid = p.pid;
        for depth in 0..64 {
            if pid == pane_pid {
                return Some(depth);
            }
            pid = procs.get(&pid)?.ppid;
        }
        None
    };
    procs
        .values()
        .filter(|p| p.pgid == tpgid && !p.comm.starts_with("tmux"))
        .filter_map(|p| depth(p).map(|d| (d, p)))
        // The deepest; of equals, the lowest pid, so the answer does not depend on the
        // map's order.
        .max_by_key(|(d, p)| (*d, std::cmp::Reverse(p.pid)))
        .map(|(_, p)| p)
}

/// A pane's command and working directory: its foreground command, in the directory of
/// the foreground group's leader as tmux reports it (else of that command, else of the
/// pane's own process).
fn describe(procs: &HashMap<u32, Proc>, pane_pid: u32) -> (String, String) {
    let own = procs.get(&pane_pid);
    let fg = foreground(procs, pane_pid);
    let command = fg.or(own).map(|p| p.comm.clone()).unwrap_or_default();
    let leader = fg.and_then(|p| procs.get(&u32::try_from(p.pgid).ok()?));
    let path = leader
        .or(fg)
        .or(own)
        .map(|p| p.cwd.clone())
        .unwrap_or_default();
    (command, path)
}

/// What a session's agent is doing, and whether it waits for the user: a shell in the
/// foreground waits at its prompt (the agent ended, or the session is a shell);
/// otherwise the agent's last event says (also for an agent started by hand in a
/// shell session), and without one it runs.
fn activity(command: &str, event: Option<SessionState>) -> (&'static str, bool) {
    let shell = matches!(command, "bash" | "sh" | "dash" | "zsh" | "fish");
    if shell {
        return (SHELL_PROMPT, true);
    }
    match event.map(|e| e.state) {
        None => ("running", false),
        Some(Kind::Waiting) => ("waiting for input", true),
        Some(Kind::Finished) => (FINISHED, true),
        Some(Kind::Working) => ("working", false),
    }
}

/// Busy, for `update`: a session whose agent runs, works or waits for input (a question
/// it asked would be lost with the container). Idle: a shell at its prompt, or an agent
/// that reported its turn finished (its conversation is in the client's history).
fn busy(activity: &str) -> bool {
    !matches!(activity, SHELL_PROMPT | FINISHED)
}

const SHELL_PROMPT: &str = "at a shell prompt";

const FINISHED: &str = "finished";

impl Row {
    /// Whether restarting the sandbox would interrupt this session (see `busy`).
    pub fn busy(&self) -> bool {
        busy(self.activity)
    }
}

/// The worktree a path is in: `PROJECT/.worktrees/NAME[/…]` → NAME.
fn worktree_of(project: Option<&Path>, path: &str) -> Option<String> {
    let project = project?.to_str()?;
    let rest = path
        .strip_prefix(project)?
        .strip_prefix('/')?
        .strip_prefix(WORKTREES_DIR)?
        .strip_prefix('/')?;
    let name = rest.split('/').next()?;
    notify::is_session_name(name).then(|| name.to_owned())
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub session: String,
    /// The pane's foreground command.
    pub command: String,
    pub activity: &'static str,
    pub waits_for_input: bool,
    /// When the agent last reported (seconds since the epoch), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_at: Option<u64>,
    pub worktree: Option<String>,
    /// For a worktree: whether the unit pins its `.git` file read-only, which makes git
    /// on the host safe to run in it (`enable` pins the worktrees that exist then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_git_pinned: Option<bool>,
    path: String,
}

/// The sessions of the running sandbox of `client`, one row each: asked of its tmux
/// (`podman exec`, bounded in size and time, every field sanitised), with the agent's
/// last reported event.
pub fn list(layout: &Layout, client: &ClientName, settings: &Settings) -> Result<Vec<Row>> {
    let container = client.container_name();
    let tmux = crate::host::podman::command([
        "exec",
        &container,
        "tmux",
        "list-panes",
        "-a",
        "-F",
        PANE_FORMAT,
    ]);
    let (status, out, err) = bounded_output(tmux, EXEC_TIMEOUT)?;
    let mut panes = if status.success() {
        parse_panes(&out)
    } else if String::from_utf8_lossy(&err).contains("no server running") {
        Vec::new()
    } else {
        bail!(
            "cannot list the tmux sessions of {client}: {}",
            crate::base::terminal::one_line(&err)
        );
    };
    if !panes.is_empty() {
        // The process table in a call of its own: nothing in the panes' list can end it.
        let ps = crate::host::podman::command(["exec", &container, "sh", "-c", PROCS_SCRIPT]);
        let (_, out, _) = bounded_output(ps, EXEC_TIMEOUT)?;
        let procs = parse_procs(&out);
        for p in &mut panes {
            (p.command, p.path) = describe(&procs, p.pid);
        }
    }
    let reported = match notify::state_path(client) {
        Some(p) => notify::State::load(&p)?,
        None => notify::State::default(),
    };
    let project = settings.projects.first().map(std::path::PathBuf::as_path);
    let unit = crate::render::written_unit(layout, client)
        .map(|(_, text)| text)
        .unwrap_or_default();
    let rows: Vec<Row> = panes
        .into_iter()
        .map(|p| {
            let event = reported.sessions.get(&p.session).copied();
            let (activity, waits) = activity(&p.command, event);
            let worktree = worktree_of(project, &p.path);
            let host_git_pinned = project.zip(worktree.as_deref()).map(|(dir, name)| {
                let dotgit = dir.join(WORKTREES_DIR).join(name).join(".git");
                crate::state::git_guard::pinned_read_only(&unit, &dotgit)
            });
            Row {
                worktree,
                host_git_pinned,
                reported_at: event.map(|e| e.at),
                session: p.session,
                command: p.command,
                activity,
                waits_for_input: waits,
                path: p.path,
            }
        })
        .collect();
    Ok(rows)
}

/// The permission mode the agent shows in the `main` pane, as it words it (Claude
/// Code's footer: `manual mode on`, `accept edits on`, `bypass permissions on`, …), if
/// it shows one. Read from the pane's text (`tmux capture-pane`, bounded, sanitised):
/// what the agent says it does, not the flag it was given.
pub fn agent_mode(client: &ClientName) -> Option<String> {
    let cmd = crate::host::podman::command([
        "exec",
        &client.container_name(),
        "tmux",
        "capture-pane",
        "-p",
        "-t",
        "main",
    ]);
    let (status, out, _) = bounded_output(cmd, EXEC_TIMEOUT).ok()?;
    status.success().then(|| mode_in(&out)).flatten()
}

/// The mode line in a pane's text: the last line that says `… mode on`, `… permissions
/// on` or `… edits on` (Claude Code's footer), from its first letter to that `on`; else
/// Codex's header line `permissions: …`, to its end or the box's edge.
fn mode_in(screen: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(screen);
    let footer = text.lines().rev().find_map(|line| {
        ["mode on", "permissions on", "edits on"]
            .iter()
            .find_map(|marker| {
                let end = line.find(marker)? + marker.len();
                let start = line[..end].find(|c: char| c.is_alphabetic())?;
                Some(field(&line.as_bytes()[start..end]))
            })
    });
    footer.or_else(|| {
        text.lines().find_map(|line| {
            let start = line.find("permissions: ")?;
            let rest = &line[start..];
            let shown = rest.split('│').next().unwrap_or(rest).trim_end();
            Some(field(shown.as_bytes()))
        })
    })
}

/// How long a start waits for the agent's session to run.
const AGENT_START_DEADLINE: Duration = Duration::from_secs(15);

/// After a start: waits until the session `main` runs its program, the agent (the
/// container's entry makes it as the container starts, not at the first attach), so
/// that `start` returns with the agent running. One not running by the deadline is
/// named in a warning; the first attach starts it.
pub fn wait_for_agent(client: &ClientName) {
    let start = Instant::now();
    loop {
        let cmd = crate::host::podman::command([
            "exec",
            &client.container_name(),
            "tmux",
            "list-panes",
            "-t",
            "main",
            "-F",
            "#{pane_dead}",
        ]);
        if let Ok((status, out, _)) = bounded_output(cmd, EXEC_TIMEOUT)
            && status.success()
            && out.split(|b| *b == b'\n').any(|l| l == b"0")
        {
            return;
        }
        if start.elapsed() > AGENT_START_DEADLINE {
            eprintln!(
                "warning: the agent of {client} is not running {} s after the start; `sandboxctl logs {client}` shows why, `sandboxctl attach {client}` starts it",
                AGENT_START_DEADLINE.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
