//! `sessions`, and the git worktrees of `attach --worktree` and `worktree rm`.
//!
//! Everything read from the sandbox (tmux's list of panes, git's errors) is written by
//! the agent's side: it is read with a size and time bound and shown only through
//! `terminal::sanitize`. Git runs inside the sandbox (`podman exec`), never on the host,
//! which must not run git in a repository the agent wrote.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::client::ClientName;
use crate::layout::Layout;
use crate::notify::{self, Kind, SessionState};
use crate::output::outln;
use crate::settings::Settings;
use crate::systemd::Systemd;

/// Where `attach --worktree NAME` puts the worktree, inside the client's first project.
pub const WORKTREES_DIR: &str = ".worktrees";

/// The most bytes read from a command in the sandbox, per stream.
const OUTPUT_MAX: usize = 64 * 1024;
/// The most sessions listed, and the longest field shown.
const ROWS_MAX: usize = 200;
const FIELD_MAX: usize = 200;
/// How long a command in the sandbox may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// A worktree's name is also its branch's: git refuses a branch starting with '-'.
pub fn check_branch(name: &str) -> Result<()> {
    if name.starts_with('-') {
        bail!(
            "invalid worktree name {}: a branch name cannot start with '-'",
            crate::escape::display(name)
        );
    }
    Ok(())
}

/// Runs `cmd`, keeping at most `OUTPUT_MAX` bytes of stdout and stderr each, killed
/// after `timeout`.
fn bounded_output(mut cmd: Command, timeout: Duration) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", crate::podman::binary()))?;
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
fn require_running(client: &ClientName) -> Result<()> {
    let systemd = Systemd::connect_user()?;
    let unit = client.service_name();
    let states = systemd.unit_states(std::slice::from_ref(&unit))?;
    if !states
        .first()
        .is_some_and(crate::systemd::UnitState::is_active)
    {
        bail!("{client} is not running; start it with `sandboxctl start {client}`");
    }
    Ok(())
}

/// A field from the sandbox, made safe to print and bounded.
fn field(raw: &[u8]) -> String {
    let mut s = crate::terminal::sanitize(raw);
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

/// One pane as tmux lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pane {
    session: String,
    pid: u32,
    command: String,
    path: String,
}

/// The tmux format of one pane: tab-separated fields, the path last (it may hold tabs).
const PANE_FORMAT: &str =
    "#{session_name}\t#{pane_pid}\t#{pane_current_command}\t#{pane_current_path}";

/// The line between tmux's panes and `ps`'s processes in `LIST_SCRIPT`'s output.
const PS_MARK: &[u8] = b"#ps";

/// Lists the panes, then the processes (tmux's own foreground command is the process
/// group leader: `agent-session`, not the agent it runs).
const LIST_SCRIPT: &str = r#"tmux list-panes -a -F "$1" || exit
echo '#ps'
ps -eo pid=,ppid=,pgid=,tpgid=,comm=
"#;

/// The first pane of each session (the agent's), from `list-panes -a` output.
fn parse_panes(text: &[u8]) -> Vec<Pane> {
    let mut out: Vec<Pane> = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        let mut f = line.splitn(4, |b| *b == b'\t');
        let (Some(session), Some(pid), Some(command), Some(path)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
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
            pid: std::str::from_utf8(pid)
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            command: field(command),
            path: field(path),
        });
    }
    out
}

/// A process as `ps -eo pid=,ppid=,pgid=,tpgid=,comm=` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: u32,
    ppid: u32,
    pgid: i64,
    tpgid: i64,
    comm: String,
}

/// The most processes read.
const PROCS_MAX: usize = 4096;

fn parse_procs(text: &[u8]) -> Vec<Proc> {
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n').take(PROCS_MAX) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let mut f = line.split_whitespace();
        let mut num = || f.next().and_then(|n| n.parse::<i64>().ok());
        let (Some(pid), Some(parent), Some(group), Some(fg)) = (num(), num(), num(), num()) else {
            continue;
        };
        let (Ok(pid), Ok(parent)) = (u32::try_from(pid), u32::try_from(parent)) else {
            continue;
        };
        let comm = f.collect::<Vec<_>>().join(" ");
        out.push(Proc {
            pid,
            ppid: parent,
            pgid: group,
            tpgid: fg,
            comm: field(comm.as_bytes()),
        });
    }
    out
}

/// The command in the foreground of a pane: the deepest descendant of the pane's
/// process in its terminal's foreground process group (a script's child, such as the
/// agent `agent-session` runs, shares its group). A tmux client there is a helper of
/// what runs (the booted Debian 13 lane saw one under Codex), never the
/// session's command.
fn foreground(procs: &[Proc], pane_pid: u32) -> Option<String> {
    let tpgid = procs.iter().find(|p| p.pid == pane_pid)?.tpgid;
    if tpgid <= 0 {
        return None;
    }
    let depth = |p: &Proc| -> Option<usize> {
        let mut pid = p.pid;
        for depth in 0..64 {
            if pid == pane_pid {
                return Some(depth);
            }
            pid = procs.iter().find(|q| q.pid == pid)?.ppid;
        }
        None
    };
    procs
        .iter()
        .filter(|p| p.pgid == tpgid && !p.comm.starts_with("tmux"))
        .filter_map(|p| depth(p).map(|d| (d, p)))
        .max_by_key(|(d, _)| *d)
        .map(|(_, p)| p.comm.clone())
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
    worktree: Option<String>,
    /// For a worktree: whether the unit pins its `.git` file read-only, which makes git
    /// on the host safe to run in it (`enable` pins the worktrees that exist then).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_git_pinned: Option<bool>,
    path: String,
}

/// The sessions of the running sandbox of `client`, one row each: asked of its tmux
/// (`podman exec`, bounded in size and time, every field sanitised), with the agent's
/// last reported event.
pub fn list(layout: &Layout, client: &ClientName, settings: &Settings) -> Result<Vec<Row>> {
    let cmd = crate::podman::command([
        "exec",
        &client.container_name(),
        "sh",
        "-c",
        LIST_SCRIPT,
        "sh",
        PANE_FORMAT,
    ]);
    let (status, out, err) = bounded_output(cmd, EXEC_TIMEOUT)?;
    let panes = if status.success() {
        // The panes, the mark line, the processes.
        let mark = out.windows(PS_MARK.len() + 2).position(|w| {
            w[0] == b'\n' && &w[1..=PS_MARK.len()] == PS_MARK && w[PS_MARK.len() + 1] == b'\n'
        });
        let (tmux, ps) = match mark {
            Some(i) => (&out[..i], &out[i + PS_MARK.len() + 2..]),
            None => (&out[..], &[][..]),
        };
        let procs = parse_procs(ps);
        let mut panes = parse_panes(tmux);
        for p in &mut panes {
            if let Some(c) = foreground(&procs, p.pid) {
                p.command = c;
            }
        }
        panes
    } else if String::from_utf8_lossy(&err).contains("no server running") {
        Vec::new()
    } else {
        bail!(
            "cannot list the tmux sessions of {client}: {}",
            crate::terminal::one_line(&err)
        );
    };
    let reported = match notify::state_path(client) {
        Some(p) => notify::State::load(&p)?,
        None => notify::State::default(),
    };
    let project = settings.projects.first().map(std::path::PathBuf::as_path);
    let unit = crate::render::all_unit_paths(layout, client)
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let rows: Vec<Row> = panes
        .into_iter()
        .map(|p| {
            let event = reported.sessions.get(&p.session).copied();
            let (activity, waits) = activity(&p.command, event);
            let worktree = worktree_of(project, &p.path);
            let host_git_pinned = project.zip(worktree.as_deref()).map(|(dir, name)| {
                let dotgit = dir.join(WORKTREES_DIR).join(name).join(".git");
                crate::git_guard::pinned_read_only(&unit, &dotgit)
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

pub fn sessions(layout: &Layout, name: &str, json: bool) -> Result<()> {
    let (client, settings) = super::known_client_with_podman(layout, name)?;
    require_running(&client)?;
    let rows = list(layout, &client, &settings)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        outln!("no sessions in {client}; `sandboxctl attach {client}` starts one");
        return Ok(());
    }
    outln!(
        "{:<20} {:<12} {:<18} WORKTREE",
        "SESSION",
        "COMMAND",
        "STATE"
    );
    for r in &rows {
        let host_git = match r.host_git_pinned {
            Some(true) => " (git on the host: pinned)".to_owned(),
            Some(false) => format!(
                " (git on the host: NOT safe until `sandboxctl enable {client}` and a restart)"
            ),
            None => String::new(),
        };
        outln!(
            "{:<20} {:<12} {:<18} {}{host_git}",
            r.session,
            r.command,
            r.activity,
            r.worktree.as_deref().unwrap_or("-")
        );
    }
    Ok(())
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
        let cmd = crate::podman::command([
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

/// Exit status of the worktree scripts for "not a git repository" / "no such worktree".
const NOT_A_REPO: i32 = 3;
const NO_WORKTREE: i32 = 4;
const REUSED: i32 = 5;

/// Creates (or reuses) the worktree `PROJECT/.worktrees/NAME` on branch NAME inside the
/// running sandbox; returns its path. `.worktrees/` ignores itself, so the main checkout
/// does not list the worktrees as untracked files.
const ENSURE_SCRIPT: &str = r#"set -eu
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

const REMOVE_SCRIPT: &str = r#"set -eu
[ -e ".worktrees/$1/.git" ] || exit 4
shift_force=$2
if [ "$shift_force" = force ]; then
    git worktree remove --force ".worktrees/$1"
else
    git worktree remove ".worktrees/$1"
fi
"#;

fn first_project(client: &ClientName, settings: &Settings) -> Result<String> {
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
fn in_project(
    client: &ClientName,
    project: &str,
    script: &str,
    name: &str,
    arg: &str,
) -> Result<(ExitStatus, Vec<u8>)> {
    let cmd = crate::podman::command([
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
            crate::terminal::one_line(&err)
        ),
    }
}

pub fn worktree_rm(layout: &Layout, name: &str, worktree: &str, force: bool) -> Result<()> {
    if !notify::is_session_name(worktree) {
        bail!(
            "invalid worktree name {}: use 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            crate::escape::display(worktree)
        );
    }
    check_branch(worktree)?;
    let (client, settings) = super::known_client_with_podman(layout, name)?;
    let project = first_project(&client, &settings)?;
    require_running(&client)?;
    let (status, err) = in_project(
        &client,
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
            crate::terminal::one_line(&err)
        ),
    }
    // Its session ends too ("=" asks tmux for this exact name); none is fine.
    let kill = crate::podman::command([
        "exec",
        &client.container_name(),
        "tmux",
        "kill-session",
        "-t",
        &format!("={worktree}"),
    ]);
    let ended = bounded_output(kill, EXEC_TIMEOUT).is_ok_and(|(s, _, _)| s.success());
    outln!(
        "removed the worktree {worktree} of {client}{}; its branch {worktree} stays (`sandboxctl exec {client} -- git -C {project} branch -D {worktree}` deletes it)",
        if ended { " and ended its session" } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_are_sanitised_bounded_and_one_per_session() {
        let text =
            b"main\t7\tclaude\t/p/web\nmain\t8\tbash\t/p/web\nwa\t9\tbash\t/p/web/.worktrees/wa\n\
                     \x1b]52;c;x\x07\tx\tsl\x1b[2Jeep\t/p/\ttab\nshort\tline\n";
        let panes = parse_panes(text);
        assert_eq!(panes.len(), 3, "{panes:?}");
        assert_eq!(panes[0].command, "claude");
        assert_eq!(panes[0].pid, 7);
        assert_eq!(panes[2].pid, 0);
        assert_eq!(panes[1].session, "wa");
        assert_eq!(panes[2].session, "^[]52;c;x^G");
        assert_eq!(panes[2].command, "sl^[[2Jeep");
        assert_eq!(panes[2].path, "/p/\ttab");
        let long = format!("s\t1\t{}\t/\n", "x".repeat(5000));
        assert!(parse_panes(long.as_bytes())[0].command.chars().count() <= FIELD_MAX + 1);
        let many: Vec<String> = (0..1000).map(|i| format!("s{i}\t1\tbash\t/")).collect();
        assert_eq!(parse_panes(many.join("\n").as_bytes()).len(), ROWS_MAX);
    }

    #[test]
    fn the_foreground_command_is_the_deepest_in_the_foreground_group() {
        let ps = b"  1     0     1    -1 podman-init\n\
                   12     4    12    12 agent-session\n\
                   20    12    12    12 codex\n\
                   21    20    12    12 tmux: client\n\
                   30     4    30    31 bash\n\
                   31    30    31    31 sleep\n\
                   32    30    32    31 bg-job\n\
                   40     4    40    40 bash\n\
                   garbage line\n\
                   41    40    40    40 sl\x1b[2Jy with space\n";
        let procs = parse_procs(ps);
        assert_eq!(procs.len(), 9);
        assert_eq!(foreground(&procs, 12).as_deref(), Some("codex"));
        assert_eq!(foreground(&procs, 30).as_deref(), Some("sleep"));
        assert_eq!(
            foreground(&procs, 40).as_deref(),
            Some("sl^[[2Jy with space")
        );
        assert_eq!(foreground(&procs, 99), None);
        assert_eq!(foreground(&procs, 1), None);
    }

    #[test]
    fn activity_from_events_and_the_foreground_command() {
        let at = |state| Some(SessionState { state, at: 1 });
        assert_eq!(activity("claude", None), ("running", false));
        assert_eq!(
            activity("claude", at(Kind::Waiting)),
            ("waiting for input", true)
        );
        assert_eq!(activity("node", at(Kind::Finished)), ("finished", true));
        assert_eq!(activity("claude", at(Kind::Working)), ("working", false));
        assert_eq!(
            activity("bash", at(Kind::Working)),
            ("at a shell prompt", true)
        );
        assert_eq!(activity("sleep", None), ("running", false));
        assert_eq!(activity("bash", None), ("at a shell prompt", true));
    }

    #[test]
    fn busy_is_anything_but_a_shell_prompt_or_a_finished_turn() {
        let at = |state| Some(SessionState { state, at: 1 });
        let busy_for = |command, event| busy(activity(command, event).0);
        assert!(!busy_for("bash", None));
        assert!(!busy_for("bash", at(Kind::Working)));
        assert!(!busy_for("claude", at(Kind::Finished)));
        assert!(busy_for("claude", at(Kind::Waiting)));
        assert!(busy_for("claude", at(Kind::Working)));
        assert!(busy_for("claude", None));
        assert!(busy_for("sleep", None));
    }

    #[test]
    fn worktrees_from_paths() {
        let p = Some(Path::new("/p/web"));
        assert_eq!(
            worktree_of(p, "/p/web/.worktrees/wa/src"),
            Some("wa".into())
        );
        assert_eq!(worktree_of(p, "/p/web/.worktrees/wb"), Some("wb".into()));
        assert_eq!(worktree_of(p, "/p/web"), None);
        assert_eq!(worktree_of(p, "/p/website/.worktrees/wa"), None);
        assert_eq!(worktree_of(p, "/p/web/.worktrees/a b"), None);
        assert_eq!(worktree_of(None, "/p/web/.worktrees/wa"), None);
    }

    #[test]
    fn branch_names() {
        assert!(check_branch("feature-1").is_ok());
        assert!(check_branch("-x").is_err());
    }
}
