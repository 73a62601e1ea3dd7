//! Autonomy and agent arguments (issue 12, part 1) and `run` as `run-agent.sh`'s users
//! expect it (part 4), on the real user manager. The agents cannot log in here, but they
//! start and sit at their first screen, which is enough to read their argv from
//! `/proc` inside the sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Client, HostTerminal, env, podman, sbx, unit_property, wait_for};

/// Arguments that must reach Claude untouched: spaces, both quotes, `$`, `%`, a
/// backslash, and flags with a leading `-`.
fn claude_args() -> Vec<String> {
    [
        "--append-system-prompt",
        "a b \"q\" 'sq' $HOME ${X} %h 100% c\\d",
        "--verbose",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The same for Codex, whose `-c` takes TOML (a string here) and whose `--model` value
/// starts with `-`.
fn codex_args() -> Vec<String> {
    [
        "-c",
        "notice.sandboxctl_test=\"a b 'sq' $HOME %h 100%\"",
        "--model=-x y",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The argv of every child of the session's `agent-session` inside the sandbox. A
/// tmux client connects first: the server runs its config's `new-session` (and so
/// the agent) only once a client has connected, as `attach` does.
fn agent_children(c: &Client) -> Vec<Vec<String>> {
    const SCRIPT: &str = "tmux list-sessions >/dev/null 2>&1; \
        s=$(pgrep -o -f /usr/local/bin/agent-session) || exit 0; \
        for p in $(pgrep -P \"$s\"); do cat /proc/$p/cmdline 2>/dev/null; echo; done";
    let out = c.sh(SCRIPT);
    out.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim_end_matches('\0')
                .split('\0')
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The agent's own arguments: argv without the program (and without `node` when the
/// program is a Node script), if the program is `agent`.
fn agent_argv(argv: &[String], agent: &str) -> Option<Vec<String>> {
    let base = |s: &String| s.rsplit('/').next().unwrap_or_default().to_owned();
    let (program, rest) = match argv.first().map(base).as_deref() {
        Some("node") => (argv.get(1).map(base), argv.get(2..)?),
        Some(_) => (argv.first().map(base), argv.get(1..)?),
        None => return None,
    };
    program
        .is_some_and(|p| p == agent || p == format!("{agent}.exe"))
        .then(|| rest.to_vec())
}

/// Waits until the sandbox's agent runs with exactly `want`.
#[track_caller]
fn assert_agent_runs_with(c: &Client, agent: &str, want: &[String]) {
    wait_for(
        &format!("{agent} with argv {want:?} under agent-session"),
        Duration::from_mins(1),
        || {
            agent_children(c)
                .iter()
                .find_map(|a| agent_argv(a, agent))
                .filter(|a| a == want)
        },
        || {
            format!(
                "children of agent-session: {:?}\n{}",
                agent_children(c),
                c.diagnostics()
            )
        },
    );
}

/// Codex's notification program (the client's notifications are on by default).
const CODEX_NOTIFY: &str = r#"notify=["/usr/local/bin/agent-event","finished"]"#;

/// Claude and Codex × ask and auto: the agent process runs with exactly the arguments
/// the mode and `--agent-arg` give; the unit's description and `status` name the mode.
#[test]
fn au_agent_argv_for_each_agent_and_autonomy() {
    let c = Client::new("au-argv");
    let cases: [(&str, &str, Vec<String>, &[&str]); 4] = [
        (
            "claude",
            "ask",
            claude_args(),
            &["--permission-mode", "manual"],
        ),
        (
            "claude",
            "auto",
            claude_args(),
            &["--dangerously-skip-permissions"],
        ),
        (
            "codex",
            "ask",
            codex_args(),
            &[
                "--sandbox",
                "danger-full-access",
                "--ask-for-approval",
                "on-request",
                "-c",
                CODEX_NOTIFY,
            ],
        ),
        (
            "codex",
            "auto",
            codex_args(),
            &[
                "--sandbox",
                "danger-full-access",
                "--ask-for-approval",
                "never",
                "-c",
                CODEX_NOTIFY,
            ],
        ),
    ];
    for (agent, mode, args, fixed) in cases {
        let mut cmd = vec![
            "enable".to_owned(),
            c.name.clone(),
            c.project_str().to_owned(),
            "--image".to_owned(),
            env().image.clone(),
            "--agent".to_owned(),
            agent.to_owned(),
            "--autonomy".to_owned(),
            mode.to_owned(),
            "--now".to_owned(),
        ];
        for a in &args {
            cmd.push(format!("--agent-arg={a}"));
        }
        let out = sbx(&cmd).run().success();
        assert_eq!(
            unit_property(&c.unit(), "ActiveState"),
            "active",
            "{out}\n{}",
            c.diagnostics()
        );
        let mut want: Vec<String> = fixed.iter().map(|s| (*s).to_owned()).collect();
        want.extend(args.iter().cloned());
        assert_agent_runs_with(&c, agent, &want);
        assert_eq!(
            unit_property(&c.unit(), "Description"),
            format!(
                "sandboxctl coding-agent sandbox for client {} ({agent}, autonomy {mode})",
                c.name
            )
        );
        let status = sbx(["status", &c.name, "--json"]).run().success();
        let v = status.json();
        assert_eq!(v["autonomy"], mode, "{status}");
        assert_eq!(v["agent_args"], serde_json::json!(args), "{status}");
        let table = sbx(["status", &c.name]).run().success();
        assert!(
            table
                .stdout
                .lines()
                .any(|l| l.starts_with(&c.name) && l.split_whitespace().nth(5) == Some(mode)),
            "{table}"
        );
    }
}

/// The file the host terminal's output goes to.
fn terminal_log(c: &mut Client) -> PathBuf {
    c.scratch_dir("terminal").join("pane.log")
}

fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// `sandboxctl run ARGS…` in a pseudo-terminal, started in `dir`, its output logged.
fn run_in_terminal(dir: &Path, args: &str, log: &Path) -> HostTerminal {
    let bin = env().bin.display().to_string();
    // The pause lets the log start before sandboxctl prints anything.
    let term = HostTerminal::start(&format!(
        "sleep 1; cd '{}' && exec {bin} run {args}",
        dir.display()
    ));
    term.log_to(log);
    term
}

#[track_caller]
fn wait_for_log_line(log: &Path, prefix: &str) -> String {
    wait_for(
        &format!("a line starting with {prefix:?} in the terminal"),
        Duration::from_mins(2),
        || {
            read_log(log)
                .lines()
                .map(|l| l.trim_start_matches(|c: char| c.is_control()).to_owned())
                .find(|l| l.starts_with(prefix))
        },
        || format!("--- terminal log ---\n{}", read_log(log)),
    )
}

/// `run` with no project in the project's directory uses it (the agent's working
/// directory is the project); `run` again with other settings (`--network open`,
/// `run-agent.sh`'s default) restarts the sandbox first, saying what changed; the
/// same settings again just attach to the running sandbox.
#[test]
fn au_run_uses_the_current_directory_and_restarts_on_changed_settings() {
    let mut c = Client::new("au-run");
    let log = terminal_log(&mut c);
    let image = &env().image;
    let term = run_in_terminal(
        &c.project,
        &format!("--client {} --agent shell --image {image}", c.name),
        &log,
    );
    term.wait_for_shell(&c);
    term.type_line("echo dir=$(pwd)");
    term.wait_for_line(
        &format!("dir={}", c.project.display()),
        Duration::from_secs(20),
    );
    let status = sbx(["status", &c.name, "--json"]).run().success();
    assert_eq!(
        status.json()["projects"],
        serde_json::json!([c.project_str()]),
        "{status}"
    );
    assert!(
        !read_log(&log).contains("without the current directory"),
        "{}",
        read_log(&log)
    );
    let first = c.container_id().expect("a running container");
    term.kill();

    let _ = std::fs::remove_file(&log);
    let term = run_in_terminal(
        &c.project,
        &format!("--client {} --network open", c.name),
        &log,
    );
    let line = wait_for_log_line(
        &log,
        &format!("restarting {} with the new settings", c.name),
    );
    assert!(
        line.contains("(network allowlist → open)"),
        "{line}\n{}",
        read_log(&log)
    );
    term.wait_for_shell(&c);
    let second = c.container_id().expect("a running container");
    assert_ne!(first, second, "the sandbox was not restarted");
    let status = sbx(["status", &c.name, "--json"]).run().success();
    assert_eq!(status.json()["network"], "open", "{status}");
    term.kill();

    let _ = std::fs::remove_file(&log);
    let term = run_in_terminal(
        &c.project,
        &format!("--client {} --network open", c.name),
        &log,
    );
    term.wait_for_shell(&c);
    assert_eq!(
        c.container_id().as_ref(),
        Some(&second),
        "same settings: no restart"
    );
    assert!(!read_log(&log).contains("restarting"), "{}", read_log(&log));
    term.kill();

    // Settings changed by an `enable` without `--now`: the next `run` applies them.
    std::thread::sleep(Duration::from_millis(1100));
    let out = sbx(["enable", &c.name, "--network", "none"])
        .run()
        .success();
    assert!(
        out.stdout.contains("is running the previous settings"),
        "{out}"
    );
    let _ = std::fs::remove_file(&log);
    let term = run_in_terminal(&c.project, &format!("--client {}", c.name), &log);
    wait_for_log_line(
        &log,
        &format!(
            "restarting {} with the new settings (its unit was written after it started)",
            c.name
        ),
    );
    term.wait_for_shell(&c);
    assert_ne!(c.container_id(), Some(second), "not restarted");
    term.kill();
}

/// `run --resume` for a client that does not exist creates and starts it; started in
/// the home directory, which may not be a project, it runs without one and says so.
#[test]
fn au_run_resume_creates_a_missing_client_without_refused_cwd() {
    let mut c = Client::new("au-resume");
    let log = terminal_log(&mut c);
    let image = &env().image;
    let term = run_in_terminal(
        &env().home,
        &format!("--client {} --resume --agent shell --image {image}", c.name),
        &log,
    );
    wait_for_log_line(
        &log,
        &format!("{} does not exist yet: creating and starting it", c.name),
    );
    let line = wait_for_log_line(
        &log,
        &format!(
            "{} runs without the current directory as its project:",
            c.name
        ),
    );
    assert!(line.contains("choose a"), "{line}");
    term.wait_for_shell(&c);
    assert_eq!(unit_property(&c.unit(), "ActiveState"), "active");
    let status = sbx(["status", &c.name, "--json"]).run().success();
    assert_eq!(status.json()["projects"], serde_json::json!([]), "{status}");
    term.kill();
}

/// `run --firewall` puts the client on the allowlist with the bundles `run-agent.sh
/// --firewall` allowed (both agents' APIs for the shell, GitHub with SSH, the image's
/// package registries) and prints them as it starts.
#[test]
fn au_run_firewall_prints_and_enables_the_original_bundles() {
    let mut c = Client::new("au-fw");
    let log = terminal_log(&mut c);
    let image = &env().image;
    c.enable(&["--network", "open"]);
    let term = run_in_terminal(
        &c.project,
        &format!("--client {} --firewall --image {image}", c.name),
        &log,
    );
    let line = wait_for_log_line(
        &log,
        &format!("firewall for {}: network allowlist with ", c.name),
    );
    for want in [
        "@claude (api.anthropic.com,",
        "@codex (api.openai.com,",
        "@github (github.com, github.com:22, api.github.com, codeload.github.com)",
        "@packages (",
    ] {
        assert!(line.contains(want), "{want:?} missing: {line}");
    }
    assert!(!line.contains("@packages ()"), "{line}");
    term.wait_for_shell(&c);
    let status = sbx(["status", &c.name, "--json"]).run().success();
    assert_eq!(status.json()["network"], "allowlist", "{status}");
    let policy = sbx(["policy", &c.name]).run().success();
    for b in ["claude", "codex", "github", "packages"] {
        assert!(policy.stdout.contains(b), "{b}: {policy}");
    }
    // The sandbox has no network of its own: only the proxy.
    let inspect = podman([
        "container",
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}}",
        &c.container(),
    ])
    .run()
    .success();
    assert_eq!(inspect.stdout.trim(), "none", "{inspect}");
    term.kill();
}
