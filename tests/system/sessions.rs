//! Issue 12, parts 5 and 7: notifications through the per-client event socket, and
//! parallel sessions in git worktrees. Test names start with `sn_`.
//!
//! The notification tests point the notifier at a private session bus: a `dbus-daemon`
//! the test starts, on which the test itself serves `org.freedesktop.Notifications`
//! (zbus) and records every call. The user manager is told with `systemctl --user
//! set-environment SANDBOXCTL_NOTIFY_BUS=…` (unset again when the test ends).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{Client, Cmd, HostTerminal, env, podman, sbx, systemctl, wait_for};

/// One recorded `Notify`: (app name, summary, body).
type Call = (String, String, String);

struct FakeNotifications {
    calls: Arc<Mutex<Vec<Call>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl FakeNotifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        replaces_id: u32,
        app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, zbus::zvariant::OwnedValue>,
        expire_timeout: i32,
    ) -> u32 {
        // Only what the test asserts is kept.
        let _ = (replaces_id, app_icon, actions, hints, expire_timeout);
        let mut calls = self.calls.lock().expect("lock");
        calls.push((app_name, summary, body));
        u32::try_from(calls.len()).unwrap_or(u32::MAX)
    }
}

/// A private bus with a fake notification server, set as the notifier's bus.
struct FakeBus {
    daemon: Child,
    _server: zbus::blocking::Connection,
    calls: Arc<Mutex<Vec<Call>>>,
    socket: std::path::PathBuf,
}

impl FakeBus {
    fn start() -> Self {
        let socket = env()
            .runtime_dir
            .join(format!("sn-test-bus-{}", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let address = format!("unix:path={}", socket.display());
        let daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        wait_for(
            "the private bus socket",
            Duration::from_secs(10),
            || socket.exists().then_some(()),
            || "dbus-daemon did not create its socket".to_owned(),
        );
        let calls = Arc::new(Mutex::new(Vec::new()));
        let server = zbus::blocking::connection::Builder::address(address.as_str())
            .and_then(|b| b.name("org.freedesktop.Notifications"))
            .and_then(|b| {
                b.serve_at(
                    "/org/freedesktop/Notifications",
                    FakeNotifications {
                        calls: Arc::clone(&calls),
                    },
                )
            })
            .and_then(zbus::blocking::connection::Builder::build)
            .expect("serve the fake notification server");
        systemctl([
            "set-environment",
            &format!("SANDBOXCTL_NOTIFY_BUS={address}"),
        ])
        .run()
        .success();
        Self {
            daemon,
            _server: server,
            calls,
            socket,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
}

impl Drop for FakeBus {
    fn drop(&mut self) {
        let _ = systemctl(["unset-environment", "SANDBOXCTL_NOTIFY_BUS"]).run();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The command of the first hook of `event` in the image's Claude Code managed settings,
/// read from inside the sandbox.
fn hook_command(c: &Client, event: &str) -> String {
    let out = c
        .exec(&["cat", "/etc/claude-code/managed-settings.json"])
        .success();
    let v = out.json();
    v["hooks"][event][0]["hooks"][0]["command"]
        .as_str()
        .unwrap_or_else(|| panic!("no {event} hook command in managed-settings.json:\n{out}"))
        .to_owned()
}

/// Runs `command` inside the sandbox in tmux: a new session `session` (which then
/// sleeps, so its foreground command is not a shell), or a new window of it.
fn run_in_tmux(c: &Client, session: &str, command: &str, new_session: bool) {
    let script = format!("{command}; exec sleep 600");
    let args: Vec<&str> = if new_session {
        vec![
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "sh",
            "-c",
            &script,
        ]
    } else {
        vec![
            "tmux",
            "new-window",
            "-d",
            "-t",
            session,
            "sh",
            "-c",
            &script,
        ]
    };
    c.exec(&args).success();
}

/// The `sessions --json` row of `session`, if listed.
fn session_row(c: &Client, session: &str) -> Option<serde_json::Value> {
    let out = sbx(["sessions", &c.name, "--json"]).run().success();
    out.json()
        .as_array()
        .expect("an array")
        .iter()
        .find(|r| r["session"] == session)
        .cloned()
}

/// Part 7: the hook as configured in the image, run in a tmux session of the sandbox,
/// gives exactly one notification naming the client and the session; a repeat within
/// the window and garbage give none; `finished` gives its own; `sessions` shows the
/// reported state.
#[test]
fn sn_notify_once_per_event_from_the_configured_hooks() {
    let bus = FakeBus::start();
    let c = Client::new("sn1");
    c.enable(&[]);
    c.start();
    let status = sbx(["status", &c.name, "--json"]).run().success();
    assert_eq!(status.json()["notify"], true, "{status}");

    let waiting = hook_command(&c, "Notification");
    run_in_tmux(&c, "hooka", &waiting, true);
    let calls = wait_for(
        "one Notify on the private bus",
        Duration::from_secs(30),
        || {
            let calls = bus.calls();
            (!calls.is_empty()).then_some(calls)
        },
        || {
            let log = systemctl(["status", "--no-pager", "--lines=20"])
                .arg(format!("sandboxctl-notify@{}.service", c.name))
                .run();
            format!("{log}\n{}", c.diagnostics())
        },
    );
    let (app, summary, body) = &calls[0];
    assert_eq!(app, "sandboxctl");
    assert_eq!(summary, &format!("{}: hooka is waiting for input", c.name));
    assert!(body.contains(&c.name) && body.contains("hooka"), "{body}");

    // What `sessions` shows for that session.
    let row = wait_for(
        "hooka listed as waiting",
        Duration::from_secs(10),
        || session_row(&c, "hooka").filter(|r| r["waits_for_input"] == true),
        || format!("{:?}", session_row(&c, "hooka")),
    );
    assert_eq!(row["activity"], "waiting for input", "{row}");
    assert_eq!(row["command"], "sleep", "{row}");

    // The same event again within the window; garbage of every kind.
    run_in_tmux(&c, "hooka", &waiting, false);
    let sock = "/run/sandbox-events/events.sock";
    for garbage in [
        "printf 'waiting bad:name\\n'",
        "printf 'explode main\\n'",
        "printf 'waiting main'",
        "head -c 4000 /dev/zero | tr '\\\\0' a",
        "printf '\\033]52;c;eA==\\007 main\\n'",
    ] {
        c.sh(&format!("{garbage} | socat -u - UNIX-CONNECT:{sock}"))
            .success();
    }
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(bus.calls().len(), 1, "{:?}", bus.calls());

    // Finished is another event: one more.
    run_in_tmux(&c, "hooka", &hook_command(&c, "Stop"), false);
    let calls = wait_for(
        "a second Notify",
        Duration::from_secs(30),
        || {
            let calls = bus.calls();
            (calls.len() >= 2).then_some(calls)
        },
        || format!("{:?}", bus.calls()),
    );
    assert_eq!(calls[1].1, format!("{}: hooka finished", c.name));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bus.calls().len(), 2, "{:?}", bus.calls());
    let row = session_row(&c, "hooka").expect("hooka listed");
    assert_eq!(row["activity"], "finished", "{row}");

    // The journal of the notifier says what it dropped.
    let log = sbx(["sessions", &c.name]).run().success();
    assert!(log.stdout.contains("hooka"), "{log}");
}

/// Part 7: switching a running client to `--notify off` stops its event socket; the
/// restarted sandbox mounts no channel; the hook exits 0 and nothing is notified.
#[test]
fn sn_notify_off_gives_nothing() {
    let bus = FakeBus::start();
    let c = Client::new("sn2");
    c.enable(&[]);
    c.start();
    let socket = format!("sandboxctl-notify@{}.socket", c.name);
    let active = systemctl(["is-active", &socket]).run();
    assert_eq!(active.stdout.trim(), "active", "{active}");
    c.enable(&["--notify", "off", "--now"]);
    let status = sbx(["status", &c.name, "--json"]).run().success();
    assert_eq!(status.json()["notify"], false, "{status}");
    let unit = std::fs::read_to_string(c.unit_file()).expect("unit");
    assert!(!unit.contains("sandbox-events"), "{unit}");
    assert!(!unit.contains("sandboxctl-notify@"), "{unit}");
    let waiting = hook_command(&c, "Notification");
    let out = c.sh(&format!(
        "test ! -e /run/sandbox-events && tmux new-session -d -s hookb sh -c '{waiting}; echo rc=$? >/tmp/rc; sleep 600'"
    ));
    out.success();
    let rc = wait_for(
        "the hook's exit status",
        Duration::from_secs(10),
        || {
            let o = c.exec(&["cat", "/tmp/rc"]);
            o.status.success().then(|| o.stdout.trim().to_owned())
        },
        String::new,
    );
    assert_eq!(rc, "rc=0");
    std::thread::sleep(Duration::from_secs(3));
    assert!(bus.calls().is_empty(), "{:?}", bus.calls());
    let active = systemctl(["is-active", &socket]).run();
    assert_ne!(active.stdout.trim(), "active", "{active}");
}

/// Part 5: two worktrees of one client, each with its session and shell; files written
/// in one are absent in the other; `sessions` lists both with their worktrees; removal
/// refuses a dirty worktree without --force, then removes it and ends its session.
#[test]
fn sn_worktrees_run_in_parallel_and_are_removed() {
    let c = Client::new("sn3");
    let git = |args: &[&str]| {
        Cmd::new("git")
            .arg("-C")
            .arg(&c.project)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .run()
            .success();
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(c.project.join("README"), "base\n").expect("write");
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "base"]);
    c.enable(&[]);
    c.start();

    let bin = env().bin.to_str().expect("UTF-8").to_owned();
    let mut terms = Vec::new();
    for name in ["wa", "wb"] {
        let term = HostTerminal::start(&format!("{bin} attach {} --worktree {name}", c.name));
        term.wait_for_shell(&c);
        term.type_line(&format!(
            "pwd; echo {name}-work > only-in-{name}.txt; echo done-$((1+1))"
        ));
        term.wait_for_line("done-2", Duration::from_secs(15));
        terms.push(term);
    }
    let wt = |n: &str| c.project.join(".worktrees").join(n);
    assert!(wt("wa").join("only-in-wa.txt").is_file());
    assert!(wt("wb").join("only-in-wb.txt").is_file());
    assert!(!wt("wa").join("only-in-wb.txt").exists());
    assert!(!wt("wb").join("only-in-wa.txt").exists());
    assert!(!c.project.join("only-in-wa.txt").exists());
    assert!(
        wt("wa").join("README").is_file(),
        "the worktree has the checkout"
    );
    // Each worktree is on its own branch, and the main checkout does not see them.
    let branch = c.exec(&[
        "git",
        "-C",
        wt("wa").to_str().expect("UTF-8"),
        "branch",
        "--show-current",
    ]);
    assert_eq!(branch.success().stdout.trim(), "wa");
    let status = c.exec(&["git", "-C", c.project_str(), "status", "--porcelain"]);
    assert_eq!(
        status.success().stdout.trim(),
        "",
        "the main checkout is clean"
    );

    let out = sbx(["sessions", &c.name, "--json"]).run().success();
    let rows = out.json();
    let worktree_of = |s: &str| {
        rows.as_array()
            .expect("array")
            .iter()
            .find(|r| r["session"] == s)
            .map(|r| r["worktree"].clone())
    };
    assert_eq!(worktree_of("wa"), Some(serde_json::json!("wa")), "{out}");
    assert_eq!(worktree_of("wb"), Some(serde_json::json!("wb")), "{out}");
    assert_eq!(worktree_of("main"), Some(serde_json::Value::Null), "{out}");
    // Made after `enable`, so not pinned: git on the host is not safe in them yet.
    let pinned = rows
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["session"] == "wa")
        .map(|r| r["host_git_pinned"].clone());
    assert_eq!(pinned, Some(serde_json::json!(false)), "{out}");
    let table = sbx(["sessions", &c.name]).run().success();
    assert!(
        table.stdout.lines().any(|l| l.starts_with("wa ")
            && l.contains(" wa (git on the host: NOT safe until `sandboxctl enable")),
        "{table}"
    );

    // Reattaching reuses the worktree and the session.
    let again = HostTerminal::start(&format!("{bin} attach {} --worktree wa", c.name));
    again.wait_for_shell(&c);
    again.type_line("ls only-in-*; echo listed-$((2+2))");
    let screen = again.wait_for_line("listed-4", Duration::from_secs(15));
    assert!(screen.contains("only-in-wa.txt"), "{screen}");
    again.kill();

    // Untracked work: refused without --force, with a hint.
    let refused = sbx(["worktree", "rm", &c.name, "wa"]).run().failure();
    assert!(refused.stderr.contains("--force"), "{refused}");
    assert!(wt("wa").join("only-in-wa.txt").is_file());
    let removed = sbx(["worktree", "rm", &c.name, "wa", "--force"])
        .run()
        .success();
    assert!(removed.stdout.contains("ended its session"), "{removed}");
    assert!(!wt("wa").exists(), "{removed}");
    assert!(wt("wb").join("only-in-wb.txt").is_file());
    let out = sbx(["sessions", &c.name, "--json"]).run().success();
    assert!(!out.stdout.contains("\"wa\""), "{out}");
    let missing = sbx(["worktree", "rm", &c.name, "wa"]).run().failure();
    assert!(missing.stderr.contains("no worktree wa"), "{missing}");
    drop(terms);
    let _ = podman(["ps"]).run();
}

/// Part 7: Codex runs `agent-event` as its notify program (with the JSON it appends),
/// and that reaches the notifier as `finished`.
#[test]
fn sn_codex_notify_program_reports_finished() {
    let bus = FakeBus::start();
    let c = Client::new("sn4");
    sbx([
        "enable",
        &c.name,
        c.project_str(),
        "--agent",
        "codex",
        "--image",
        &env().image,
    ])
    .run()
    .success();
    c.start();
    let notify = r#"notify=["/usr/local/bin/agent-event","finished"]"#;
    let args = wait_for(
        "codex running with its notify program",
        Duration::from_mins(1),
        || {
            // The tmux server forks the `main` pane's program once a tmux client talks
            // to it: `sessions` is one.
            let _ = session_row(&c, "main");
            // `ps`, not `pgrep -a`: pgrep shows this process as `[codex]` only.
            let out = c.exec(&["ps", "-eo", "args"]);
            out.stdout
                .lines()
                .find(|l| l.contains("codex") && l.contains("notify="))
                .map(str::to_owned)
        },
        || c.diagnostics(),
    );
    assert!(args.contains(notify), "{args}");
    // At its start Codex runs git in the foreground for a moment (the repository's
    // state), and the pane's command is then `git`: wait for codex itself.
    let row = wait_for(
        "main showing codex running",
        Duration::from_secs(30),
        || session_row(&c, "main").filter(|r| r["command"] == "codex"),
        || c.diagnostics(),
    );
    assert_eq!(row["activity"], "running", "{row}");
    // The program as Codex calls it: its JSON appended.
    let program = "/usr/local/bin/agent-event finished '{\"type\":\"agent-turn-complete\"}'";
    run_in_tmux(&c, "cx", program, true);
    let calls = wait_for(
        "the Notify of codex's turn",
        Duration::from_secs(30),
        || {
            let calls = bus.calls();
            (!calls.is_empty()).then_some(calls)
        },
        || c.diagnostics(),
    );
    assert_eq!(calls[0].1, format!("{}: cx finished", c.name));
}

/// The command lines of `pid`'s descendants, read from the host's /proc (no tmux client
/// connects to the sandbox to learn them).
fn descendants(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
                out.push(
                    String::from_utf8_lossy(&cmdline)
                        .replace('\0', " ")
                        .trim()
                        .to_owned(),
                );
                todo.push(child);
            }
        }
    }
    out
}

/// The agent starts with its unit: after `systemctl --user start`, with no tmux client
/// ever connecting, the session `main` runs the agent (the shell agent's `bash -l`); and
/// `sandboxctl start` returns with the agent already running.
#[test]
fn sn_the_agent_starts_with_its_unit() {
    let c = Client::new("sn-up");
    c.enable(&["--network", "none"]);
    systemctl(["start", &c.unit()]).run().success();
    let agent_runs = || descendants(c.host_pid()).iter().any(|l| l == "bash -l");
    wait_for(
        "the agent to run after `systemctl --user start`",
        Duration::from_secs(20),
        || agent_runs().then_some(()),
        || format!("{:?}\n{}", descendants(c.host_pid()), c.diagnostics()),
    );
    sbx(["stop", &c.name]).run().success();
    c.start();
    assert!(
        agent_runs(),
        "`start` returned before the agent ran: {:?}",
        descendants(c.host_pid())
    );
}

/// #26 part 9: a pane whose directory name holds line breaks, tabs and what looks like
/// tmux's and ps's output, and a session whose name holds a line break, forge nothing:
/// `sessions` lists each real session once, the directory as one sanitised path, and
/// the command the pane really runs.
#[test]
fn sn_names_with_line_breaks_forge_no_sessions() {
    let c = Client::new("sn5");
    c.enable(&[]);
    c.start();
    let evil = "/tmp/evil\nmain\t1\tclaude\t/\n#ps\n1 0 1 1 claude";
    c.exec(&["mkdir", "-p", evil]).success();
    for (name, dir) in [("hostile", evil), ("two\nforged\t1", "/tmp")] {
        c.exec(&[
            "tmux",
            "new-session",
            "-d",
            "-s",
            name,
            "-c",
            dir,
            "sleep",
            "600",
        ])
        .success();
    }
    let rows = wait_for(
        "three sessions listed",
        Duration::from_secs(30),
        || {
            let out = sbx(["sessions", &c.name, "--json"]).run().success();
            let rows = out.json().as_array().expect("an array").clone();
            (rows.len() >= 3).then_some(rows)
        },
        || c.diagnostics(),
    );
    let names: Vec<&str> = rows.iter().filter_map(|r| r["session"].as_str()).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        names.contains(&"main") && names.contains(&"hostile"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("forged")),
        "a line break in a session name made a row: {names:?}"
    );
    let hostile = rows
        .iter()
        .find(|r| r["session"] == "hostile")
        .expect("hostile");
    assert_eq!(hostile["command"], "sleep", "{hostile}");
    assert_eq!(
        hostile["path"], "/tmp/evil^Jmain\t1\tclaude\t/^J#ps^J1 0 1 1 claude",
        "{hostile}"
    );
    let main = rows.iter().find(|r| r["session"] == "main").expect("main");
    assert_ne!(main["command"], "claude", "{main}");
}
