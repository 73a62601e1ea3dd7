//! The binary's error paths: every mistake a user can make gets a clear one-line
//! message, a non-zero exit, and leaves no file behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support;
use crate::support::sandbox::Sandbox;

/// Feeds a unit `render` printed to the real Quadlet generator, which must accept it.
fn assert_generator_accepts(unit: &str) {
    generated_service(unit);
}

/// The service the real Quadlet generator makes of `unit`.
fn generated_service(unit: &str) -> String {
    support::quadlet::generate("agent-acme.container", unit)
        .unwrap_or_else(|e| panic!("the generator rejected the rendered unit: {e}\n{unit}"))
}

/// Asserts a failed run with exactly one line on stderr containing `want`.
fn assert_one_line_error(out: &Output, want: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "must fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].starts_with("sandboxctl: "), "{stderr}");
    assert!(stderr.contains(want), "want {want:?} in {stderr}");
    stderr
}

#[test]
fn bad_client_names_are_refused_by_every_command() {
    let sb = Sandbox::new();
    for name in ["Acme", "a_b", "a/b", "../x", "a\nb", "", &"a".repeat(64)] {
        for cmd in [
            vec!["enable", name],
            vec!["render", name],
            vec!["disable", name],
            vec!["start", name],
            vec!["stop", name],
            vec!["restart", name],
            vec!["status", name],
            vec!["attach", name],
            vec!["exec", name, "--", "true"],
            vec!["logs", name],
            vec!["run", "--client", name],
        ] {
            let out = sb.run(&cmd);
            assert_eq!(out.status.code(), Some(1), "{cmd:?}");
            assert_one_line_error(&out, "invalid client name");
        }
    }
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn missing_project_dir() {
    let sb = Sandbox::new();
    let missing = sb.dir.path().join("nope");
    let out = sb.run(&["enable", "acme", missing.to_str().expect("utf8")]);
    assert_one_line_error(&out, "project directory");
    assert_one_line_error(&out, "does not exist");
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn unknown_agent_and_network_are_usage_errors() {
    let sb = Sandbox::new();
    let out = sb.run(&["enable", "acme", "--agent", "robot"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown agent \"robot\""));
    let out = sb.run(&["enable", "acme", "--network", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use allowlist, none or open"));
    assert!(sb.files().is_empty());
}

#[test]
fn proxy_limits_must_be_positive() {
    let sb = Sandbox::new();
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--max-connections", "many"),
        ("--idle-timeout", "0"),
        ("--idle-timeout", "ten"),
    ] {
        let out = sb.run(&[
            "proxy",
            "--client",
            "acme",
            "--listen-tcp",
            "127.0.0.1:0",
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    assert!(sb.files().is_empty());
}

#[test]
fn injection_attempts_in_every_field_are_refused() {
    let sb = Sandbox::new();
    let proj = sb.project();
    let proj = proj.to_str().expect("utf8");
    let evil_dir = sb.dir.path().join("evil\nExecStartPre=touch /tmp/pwned");
    std::fs::create_dir_all(&evil_dir).expect("mkdir");
    let colon_dir = sb.dir.path().join("a:b");
    std::fs::create_dir_all(&colon_dir).expect("mkdir");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![evil_dir.display().to_string()], "line break"),
        (vec![colon_dir.display().to_string()], "contains ':'"),
        (
            vec![proj.into(), "--image".into(), "img\n[Service]".into()],
            "invalid image name",
        ),
        (
            vec![proj.into(), "--image".into(), "img name".into()],
            "invalid image name",
        ),
        (
            vec![
                proj.into(),
                "--mount".into(),
                "/etc:/x\nExec=/bin/sh".into(),
            ],
            "line break",
        ),
        (
            vec![proj.into(), "--mount-rw".into(), "/etc:/x:/y".into()],
            "cannot contain ':'",
        ),
        (
            vec![
                proj.into(),
                "--podman-arg".into(),
                "--env=A=1\nExecStart=/bin/sh".into(),
            ],
            "line break",
        ),
        (
            vec![
                proj.into(),
                "--claude-config".into(),
                evil_dir.display().to_string(),
            ],
            "line break",
        ),
        (
            vec![
                proj.into(),
                "--git-name".into(),
                "Ada\nExecStartPre=/bin/sh".into(),
            ],
            "invalid git name",
        ),
        (
            vec![proj.into(), "--git-email".into(), "ada at example".into()],
            "invalid git email",
        ),
        (
            vec![
                proj.into(),
                "--git-credential-host".into(),
                "github.com/evil?x".into(),
            ],
            "invalid --git-credential-host",
        ),
        (
            vec![
                proj.into(),
                "--git-credential-host".into(),
                "ftp://github.com".into(),
            ],
            "only https and http",
        ),
    ];
    for (extra, want) in cases {
        for cmd in ["enable", "render"] {
            let mut args = vec![cmd.to_owned(), "acme".to_owned()];
            args.extend(extra.iter().cloned());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = sb.run(&refs);
            assert_one_line_error(&out, want);
        }
    }
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn render_writes_nothing() {
    let sb = Sandbox::new();
    let proj = sb.project();
    let out = sb.run(&[
        "render",
        "acme",
        proj.to_str().expect("utf8"),
        "--agent",
        "codex",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("# Managed by sandboxctl for client acme"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Environment=\"SANDBOX_AGENT=codex\""),
        "{stdout}"
    );
    assert!(stdout.contains("# Detected: podman "), "{stdout}");
    assert_generator_accepts(&stdout);
    assert!(sb.files().is_empty(), "{:?}", sb.files());
    assert!(
        !sb.home().join(".cache").exists(),
        "render must not write a cache"
    );
}

#[test]
fn unknown_clients() {
    let sb = Sandbox::new();
    for cmd in [
        vec!["disable", "ghost"],
        vec!["disable", "ghost", "--purge"],
        vec!["start", "ghost"],
        vec!["status", "ghost"],
        vec!["attach", "ghost"],
        vec!["exec", "ghost", "--", "true"],
        vec!["logs", "ghost"],
    ] {
        let out = sb.run(&cmd);
        assert_one_line_error(&out, "ghost");
        assert_one_line_error(&out, "unknown client");
    }
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn malformed_settings_file_is_named() {
    let sb = Sandbox::new();
    let cfg = sb
        .home()
        .join(".local/share/agent-sandbox/clients/acme/config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(cfg.join("sandbox.toml"), "agent = [\n").expect("write");
    let out = sb.run(&["status", "acme"]);
    assert_one_line_error(&out, "malformed settings file");
    assert_one_line_error(&out, "sandbox.toml");
}

#[test]
fn relative_data_dir_is_refused() {
    let sb = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
        .args(["list"])
        .env("HOME", sb.home())
        .env("AGENT_SANDBOX_DATA", "relative/dir")
        .output()
        .expect("run");
    assert_one_line_error(&out, "AGENT_SANDBOX_DATA");
}

#[test]
fn no_user_manager_means_nothing_written() {
    let sb = Sandbox::new();
    let proj = sb.project();
    let out = sb.run(&["enable", "acme", proj.to_str().expect("utf8")]);
    if std::env::var_os("SANDBOXCTL_QUADLET").is_some() {
        assert_one_line_error(&out, "D-Bus");
    } else {
        assert!(!out.status.success());
    }
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn allowlist_is_the_default_and_has_no_network_but_the_proxy() {
    let sb = Sandbox::new();
    for args in [
        vec!["render", "acme"],
        vec!["render", "acme", "--network", "allowlist"],
    ] {
        let out = sb.run(&args);
        let unit = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in [
            "Network=none",
            "Wants=sandboxctl-proxy@acme.socket",
            "After=sandboxctl-proxy@acme.socket",
            "Volume=%t/agent-sandbox/proxy/acme:/run/sandbox-proxy:ro,Z",
            "Environment=\"HTTPS_PROXY=http://127.0.0.1:3128\"",
            "Environment=\"no_proxy=localhost,127.0.0.1\"",
        ] {
            assert!(unit.contains(line), "{line} missing:\n{unit}");
        }
        assert_generator_accepts(&unit);
    }
    let out = sb.run(&["render", "acme", "--network", "open"]);
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(
        !unit.contains("Network=") && !unit.contains("PROXY"),
        "{unit}"
    );
    assert_generator_accepts(&unit);
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

/// A fake podman for `run`: the image names two package registries, every other call
/// succeeds; calls are logged like the support's fake.
const PODMAN_WITH_REGISTRIES: &str = r#"#!/bin/sh
here=$(dirname "$0")
echo "$*" >>"$here/podman.log"
case "$1" in
--version) echo "podman version 5.4.2" ;;
run) case "$*" in *agent-package-hosts*) printf 'pkgs.mirror.test\nfiles.mirror.test\n' ;; esac ;;
exec) case "$*" in *" tmux list-panes "*) echo 0 ;; esac ;;
esac
exit 0
"#;

fn home_with_registries() -> support::sandbox::Home {
    let home = support::sandbox::Home::new();
    std::fs::write(home.path().join("fake-bin/podman"), PODMAN_WITH_REGISTRIES)
        .expect("write the fake podman");
    home
}

fn client_file(home: &support::sandbox::Home, client: &str, file: &str) -> String {
    std::fs::read_to_string(home.client_dir(client).join("config").join(file))
        .unwrap_or_else(|e| panic!("{file} of {client}: {e}"))
}

/// `--firewall` turns a client on the open network into an allowlist client with the
/// bundles `run-agent.sh --firewall` allowed, and prints them with their hosts;
/// `--network`, `--no-network` and `--firewall` exclude each other.
#[test]
fn firewall_flag_selects_the_allowlist() {
    let sb = Sandbox::new();
    for pair in [
        ["--firewall", "--no-network"],
        ["--firewall", "--network=open"],
        ["--no-network", "--network=none"],
    ] {
        let out = sb.run(&["run", "--client", "acme", pair[0], pair[1]]);
        assert_eq!(out.status.code(), Some(2), "{pair:?} conflict");
    }
    assert!(sb.files().is_empty(), "{:?}", sb.files());

    let home = home_with_registries();
    home.sandboxctl(["enable", "acme", "--agent", "codex", "--network", "open"])
        .run()
        .success();
    // The control: `run` alone keeps the client's network.
    home.sandboxctl(["run", "--client", "acme"])
        .run()
        .failure(&["attach needs a terminal"]);
    assert!(
        client_file(&home, "acme", "sandbox.toml").contains("network = \"open\""),
        "{}",
        client_file(&home, "acme", "sandbox.toml")
    );
    // Everything before the attach is done when attaching finds no terminal.
    let out = home
        .sandboxctl(["run", "--client", "acme", "--firewall"])
        .run()
        .failure(&["attach needs a terminal"]);
    let settings = client_file(&home, "acme", "sandbox.toml");
    assert!(settings.contains("network = \"allowlist\""), "{settings}");
    let policy = client_file(&home, "acme", "network.toml");
    assert!(
        policy.contains(r#"bundles = ["codex", "github", "packages"]"#),
        "{policy}"
    );
    assert!(
        policy.contains(r#"packages = ["pkgs.mirror.test", "files.mirror.test"]"#),
        "{policy}"
    );
    assert!(
        out.stdout.contains(
            "firewall for acme: network allowlist with @codex (api.openai.com, auth.openai.com, chatgpt.com), \
             @github (github.com, github.com:22, api.github.com, codeload.github.com), \
             @packages (pkgs.mirror.test, files.mirror.test)\n"
        ),
        "{}",
        out.stdout
    );
    // A bundle switched off is switched on again by the next `--firewall`.
    home.sandboxctl(["deny", "acme", "@github"]).run().success();
    home.sandboxctl(["run", "--client", "acme", "--firewall"])
        .run()
        .failure(&["attach needs a terminal"]);
    assert!(
        client_file(&home, "acme", "network.toml").contains(r#""github""#),
        "{}",
        client_file(&home, "acme", "network.toml")
    );
}

/// `run` without a project takes the current directory; one the guards refuse (a home
/// holding sandboxctl's data) is left out, said in one line.
#[test]
fn run_uses_the_current_directory_unless_refused() {
    let home = home_with_registries();
    let proj = home.mkdir("projects/web");
    let out = home
        .sandboxctl(["run", "--client", "web", "--agent", "shell"])
        .current_dir(&proj)
        .run()
        .failure(&["attach needs a terminal"]);
    let real = std::fs::canonicalize(&proj).expect("canonical project");
    let settings = client_file(&home, "web", "sandbox.toml");
    assert!(
        settings.contains(&format!("projects = [\"{}\"]", real.display())),
        "{settings}"
    );
    assert!(
        !out.stdout.contains("without the current directory"),
        "{out}"
    );

    let out = home
        .sandboxctl(["run", "--client", "other", "--agent", "shell"])
        .run()
        .failure(&["attach needs a terminal"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("other runs without the current directory as its project: "))
        .unwrap_or_else(|| panic!("no line saying so:\n{out}"));
    assert!(
        line.contains("contains sandboxctl's data directory"),
        "{line}"
    );
    let settings = client_file(&home, "other", "sandbox.toml");
    assert!(settings.contains("projects = []"), "{settings}");
}

/// `run --resume` creates and starts a client that does not exist; for one that
/// exists it only attaches (no reload, nothing rewritten).
#[test]
fn run_resume_creates_a_missing_client() {
    let home = home_with_registries();
    let proj = home.mkdir("projects/acme");
    let out = home
        .sandboxctl(["run", "--client", "acme", "--resume", "--agent", "shell"])
        .current_dir(&proj)
        .run()
        .failure(&["attach needs a terminal"]);
    assert!(
        out.stdout
            .contains("acme does not exist yet: creating and starting it\n"),
        "{out}"
    );
    assert!(home.unit_file("acme").is_file());
    assert_eq!(home.fake.count("StartUnit"), 1, "{}", home.fake.call_log());
    let reloads = home.fake.count("Reload");
    home.sandboxctl(["run", "--client", "acme", "--resume", "--agent", "codex"])
        .run()
        .failure(&["attach needs a terminal"]);
    assert_eq!(
        home.fake.count("Reload"),
        reloads,
        "{}",
        home.fake.call_log()
    );
    assert!(client_file(&home, "acme", "sandbox.toml").contains("agent = \"shell\""));
}

/// `run` restarts a running sandbox whose settings changed, saying what changed, and
/// leaves one with the same settings alone.
#[test]
fn run_restarts_a_sandbox_running_other_settings() {
    let home = home_with_registries();
    let proj = home.mkdir("projects/acme");
    home.sandboxctl(["enable", "acme", "--agent", "codex", "--now"])
        .arg(&proj)
        .run()
        .success();
    assert_eq!(home.fake.count("StartUnit"), 1, "{}", home.fake.call_log());
    let out = home
        .sandboxctl([
            "run",
            "--client",
            "acme",
            "--network",
            "none",
            "--autonomy",
            "auto",
            "--agent-arg=-v",
        ])
        .current_dir(&proj)
        .run()
        .failure(&["attach needs a terminal"]);
    assert!(
        out.stdout.contains(
            "restarting acme with the new settings (agent_args, autonomy ask → auto, network allowlist → none)\n"
        ),
        "{out}"
    );
    assert_eq!(
        home.fake.count("RestartUnit"),
        1,
        "{}",
        home.fake.call_log()
    );
    let out = home
        .sandboxctl(["run", "--client", "acme"])
        .current_dir(&proj)
        .run()
        .failure(&["attach needs a terminal"]);
    assert!(!out.stdout.contains("restarting"), "{out}");
    assert_eq!(
        home.fake.count("RestartUnit"),
        1,
        "{}",
        home.fake.call_log()
    );
    assert_eq!(home.fake.count("StartUnit"), 1, "{}", home.fake.call_log());
    // A container that started before its unit was written (at the epoch, here) runs
    // the settings of an earlier `enable` without `--now`: restarted too.
    std::fs::write(
        home.path().join("fake-bin/podman"),
        PODMAN_WITH_REGISTRIES.replace(
            "case \"$1\" in",
            "case \"$1\" in\ncontainer) [ \"$2\" = inspect ] && echo 1 ;;",
        ),
    )
    .expect("rewrite the fake podman");
    let out = home
        .sandboxctl(["run", "--client", "acme"])
        .current_dir(&proj)
        .run()
        .failure(&["attach needs a terminal"]);
    assert!(
        out.stdout.contains(
            "restarting acme with the new settings (its unit was written after it started)\n"
        ),
        "{out}"
    );
    assert_eq!(
        home.fake.count("RestartUnit"),
        2,
        "{}",
        home.fake.call_log()
    );
}

/// Unsafe agent arguments are refused with one line naming the value, by every command
/// that takes them, before anything is written; an unknown autonomy is a usage error.
#[test]
fn unsafe_agent_args_and_unknown_autonomy_are_refused() {
    let sb = Sandbox::new();
    let long = format!("--agent-arg={}", "x".repeat(1025));
    let many: Vec<String> = (0..33).map(|i| format!("--agent-arg={i}")).collect();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--agent-arg".into(), "--x\nExecStartPre=/bin/sh".into()],
            r#"agent argument "--x\nExecStartPre=/bin/sh" contains a line break"#,
        ),
        (
            vec!["--agent-arg=a\u{7}b".into()],
            "contains a control character",
        ),
        (vec![long], "is 1025 bytes long: at most 1024"),
        (many, "too many agent arguments (33)"),
    ];
    for (extra, want) in &cases {
        for cmd in [
            vec!["enable", "acme"],
            vec!["render", "acme"],
            vec!["run", "--client", "acme"],
        ] {
            let mut args: Vec<&str> = cmd.clone();
            args.extend(extra.iter().map(String::as_str));
            let out = sb.run_with_fakes(
                &args,
                &[(
                    "podman",
                    "[ \"$1\" = --version ] && echo 'podman version 5.4.2'; exit 0",
                )],
            );
            assert_one_line_error(&out, want);
        }
    }
    let out = sb.run(&["enable", "acme", "--autonomy", "yolo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use ask or auto"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        sb.files()
            .iter()
            .all(|p| p.starts_with(sb.home().join(".cache"))
                || !p.starts_with(sb.home().join(".local"))),
        "{:?}",
        sb.files()
    );
}

/// `render` shows the autonomy in the description and each agent argument as its own
/// environment variable, in a unit the generator accepts.
#[test]
fn render_shows_autonomy_and_agent_args() {
    let sb = Sandbox::new();
    let proj = sb.project();
    let out = sb.run(&[
        "render",
        "acme",
        proj.to_str().expect("utf8"),
        "--agent",
        "claude",
        "--autonomy",
        "auto",
        "--agent-arg=--model",
        "--agent-arg",
        "a b $x 100%",
    ]);
    let unit = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(unit.contains("(claude, autonomy auto)\n"), "{unit}");
    assert!(
        unit.contains("Environment=\"SANDBOX_AGENT_ARGC=2\"\n"),
        "{unit}"
    );
    assert!(
        unit.contains("Environment=\"SANDBOX_AGENT_ARG_1=--model\"\n"),
        "{unit}"
    );
    assert!(
        unit.contains("Environment=\"SANDBOX_AGENT_ARG_2=a b $$x 100%%\"\n"),
        "{unit}"
    );
    assert_generator_accepts(&unit);
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn policy_commands_need_a_known_client_and_valid_hosts() {
    let sb = Sandbox::new();
    for cmd in [
        vec!["allow", "ghost", "example.com"],
        vec!["deny", "ghost", "example.com"],
        vec!["policy", "ghost"],
    ] {
        assert_one_line_error(&sb.run(&cmd), "unknown client");
    }
    let cfg = sb
        .home()
        .join(".local/share/agent-sandbox/clients/acme/config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("sandbox.toml"),
        "agent = \"shell\"\nimage = \"localhost/agent-sandbox:latest\"\nnetwork = \"allowlist\"\n",
    )
    .expect("settings");
    for bad in ["exa mple.com", "*.com", "a\nb", "http://x", "@nosuchbundle"] {
        let out = sb.run(&["allow", "acme", bad]);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "{bad:?}"
        );
        assert!(
            !cfg.join("network.toml").exists(),
            "{bad:?}: nothing written"
        );
    }
    let out = sb.run(&["allow", "acme", "example.com", "*.example.org:8443"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.run(&["deny", "acme", "bad.example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.run(&["policy", "acme"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("example.com:443"), "{text}");
    assert!(text.contains("*.example.org:8443"), "{text}");
    assert!(text.contains("bad.example.org"), "{text}");
}

#[test]
fn help_lists_every_command() {
    use clap::CommandFactory;
    let sb = Sandbox::new();
    let out = sb.run(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // The names in the "Commands:" section of the help, exactly.
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A name stands two spaces in; wrapped descriptions stand further in.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut declared: Vec<String> = sandboxctl::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect();
    declared.push("help".to_owned());
    assert_eq!(listed, declared, "help:\n{text}");
    for cmd in [
        "enable", "disable", "start", "stop", "restart", "status", "list", "attach", "exec",
        "logs", "render", "run", "image", "doctor", "allow", "deny", "policy", "secret",
    ] {
        assert!(listed.contains(&cmd), "{cmd} missing from help:\n{text}");
    }
}

/// An agent controls what its container prints; `logs` must not hand terminal control
/// sequences (here an OSC 52 clipboard write) to the user's terminal, followed or not.
#[test]
fn logs_render_terminal_controls_visibly() {
    let sb = Sandbox::new();
    sb.client_settings(
        "acme",
        "agent = \"shell\"\nimage = \"localhost/agent-sandbox:latest\"\nnetwork = \"none\"\n",
    );
    let run = sb.dir.path().join("run");
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::write(
        run.join("agent-acme.log"),
        b"unit line \x1b]52;c;Y2xpcGJvYXJk\x07\n\x1b[2J\xc2\x9b\xff\n",
    )
    .expect("log file");
    let evil = r"printf 'out \033]52;c;Y2xpcGJvYXJk\007\r\n\033]0;title\007\n'; printf 'err \033[2J\n' >&2";
    let fakes = [("podman", evil), ("journalctl", evil)];
    for args in [vec!["logs", "acme"], vec!["logs", "acme", "-f"]] {
        let out = sb.run_with_fakes(&args, &fakes);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
            "{args:?} passed an ESC byte: {stdout:?} {stderr:?}"
        );
        assert!(
            !stdout.contains('\r') && !stdout.contains('\u{9b}'),
            "{stdout:?}"
        );
        assert!(stdout.contains("out ^[]52;c;Y2xpcGJvYXJk^G"), "{stdout}");
        assert!(stdout.contains("^[]0;title^G"), "{stdout}");
        assert!(stderr.contains("err ^[[2J"), "{stderr}");
        if !std::path::Path::new("/run/systemd/journal/socket").exists() {
            assert!(
                stdout.contains("unit line ^[]52;c;Y2xpcGJvYXJk^G"),
                "{stdout}"
            );
            assert!(stdout.contains("^[[2J<U+009B>\\xff"), "{stdout}");
        }
    }
    // The proxy's log: hosts and paths in it come from the agent's requests.
    std::fs::write(
        run.join("sandboxctl-proxy-acme.log"),
        "{\"host\":\"a\u{9b}2J\"} \x1b]0;t\x07\n",
    )
    .expect("proxy log");
    let out = sb.run_with_fakes(&["logs", "acme", "--network"], &fakes);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.contains(&0x1b) && !stdout.contains('\u{9b}'),
        "--network passed a control: {stdout:?}"
    );
    if !std::path::Path::new("/run/systemd/journal/socket").exists() {
        assert!(
            stdout.contains("<U+009B>2J") && stdout.contains("^[]0;t^G"),
            "{stdout}"
        );
    }
}

/// Every path under `root` (symlinks not followed) with its size, for "nothing was
/// written" checks; the host-detection cache is not client state.
fn snapshot(root: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            if meta.is_dir() {
                walk(&p, out);
            }
            out.push((p, meta.len()));
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.retain(|(p, _)| !p.components().any(|c| c.as_os_str() == ".cache"));
    out.sort();
    out
}

/// Runs `enable` and `render` with `args` after the client name and `HOME` = `home`;
/// both must refuse with one line containing every one of `wanted`, writing nothing.
fn assert_refused(sb: &Sandbox, home: &Path, args: &[String], wanted: &[&str]) {
    let podman = sb.fake_podman();
    let before = snapshot(sb.dir.path());
    for cmd in ["enable", "render"] {
        let mut full = vec![cmd, "acme"];
        full.extend(args.iter().map(String::as_str));
        let out = sb
            .command(&full)
            .env("HOME", home)
            .env("SANDBOXCTL_QUADLET", support::quadlet())
            .env("SANDBOXCTL_PODMAN", &podman)
            .output()
            .expect("run sandboxctl");
        for w in wanted {
            assert_one_line_error(&out, w);
        }
    }
    assert_eq!(snapshot(sb.dir.path()), before, "{args:?} wrote something");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

const GLOBEX: &str =
    "agent = \"shell\"\nimage = \"localhost/agent-sandbox:latest\"\nnetwork = \"none\"\n";
const DATA: &str = "sandboxctl's data directory";

// Stow-style dotfiles make `$HOME`, `~/.config` or the data directory a symlink. The
// guard compares real paths, so a project or mount that would expose sandboxctl's
// state, the unit directories, another client's files or the user's keys is refused
// however it is spelled, and nothing is written.

#[test]
fn symlinked_home_does_not_hide_protected_paths() {
    let sb = Sandbox::new();
    let root = std::fs::canonicalize(sb.dir.path()).expect("canon");
    let link = root.join("link-home");
    std::os::unix::fs::symlink(sb.home(), &link).expect("symlink");
    std::fs::create_dir_all(sb.home().join(".config")).expect("mkdir");
    std::fs::create_dir_all(sb.home().join(".ssh")).expect("mkdir");
    std::fs::create_dir_all(sb.home().join(".claude")).expect("mkdir");
    sb.client_settings("globex", GLOBEX);
    let globex_claude = link.join(".local/share/agent-sandbox/clients/globex/claude");
    std::fs::create_dir_all(&globex_claude).expect("mkdir");
    let proj = s(&sb.project());
    let data = DATA;
    for (args, wanted) in [
        (vec![s(&link)], vec!["contains", data]),
        (vec![s(&sb.home())], vec!["contains", data]),
        (
            vec![s(&link.join(".config"))],
            vec!["contains the Quadlet unit directory"],
        ),
        (
            vec![
                proj.clone(),
                "--mount".into(),
                format!("{}:/c", s(&link.join(".config"))),
            ],
            vec!["--mount", "contains the Quadlet unit directory"],
        ),
        (
            vec![
                proj.clone(),
                "--mount".into(),
                format!("{}:/c", s(&globex_claude)),
            ],
            vec!["--mount", "is inside", data],
        ),
        (
            vec![
                proj.clone(),
                "--mount-rw".into(),
                format!("{}:/s", s(&link.join(".ssh"))),
            ],
            vec!["--mount-rw", "is ~/.ssh"],
        ),
        (
            vec![s(&link.join(".claude"))],
            vec!["is the host's Claude Code config"],
        ),
    ] {
        assert_refused(&sb, &link, &args, &wanted);
    }
    // Sharing the host's Claude config is what --claude-config is for.
    let out = sb
        .command(&[
            "render",
            "acme",
            &proj,
            "--claude-config",
            &s(&link.join(".claude")),
        ])
        .env("HOME", &link)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn symlinked_config_dir_does_not_hide_the_unit_directories() {
    let sb = Sandbox::new();
    let root = std::fs::canonicalize(sb.dir.path()).expect("canon");
    let dotfiles = root.join("dotfiles");
    std::fs::create_dir_all(dotfiles.join("config/systemd/user")).expect("mkdir");
    std::os::unix::fs::symlink(dotfiles.join("config"), sb.home().join(".config"))
        .expect("symlink");
    let proj = s(&sb.project());
    for (args, wanted) in [
        (
            vec![s(&dotfiles)],
            vec!["contains the Quadlet unit directory"],
        ),
        (
            vec![s(&sb.home().join(".config"))],
            vec!["contains the Quadlet unit directory"],
        ),
        (
            vec![
                proj.clone(),
                "--mount-rw".into(),
                format!("{}:/c", s(&dotfiles.join("config/systemd"))),
            ],
            vec!["--mount-rw", "contains the systemd user unit directory"],
        ),
    ] {
        assert_refused(&sb, &sb.home(), &args, &wanted);
    }
}

/// Also: another client's project given as a mount.
#[test]
fn symlinked_data_dir_does_not_hide_other_clients() {
    let data = DATA;
    let sb = Sandbox::new();
    let root = std::fs::canonicalize(sb.dir.path()).expect("canon");
    let store = root.join("store");
    std::fs::create_dir_all(&store).expect("mkdir");
    std::fs::create_dir_all(sb.home().join(".local/share")).expect("mkdir");
    std::os::unix::fs::symlink(&store, sb.home().join(".local/share/agent-sandbox"))
        .expect("symlink");
    let theirs = root.join("globex-project");
    std::fs::create_dir_all(theirs.join("src")).expect("mkdir");
    sb.client_settings(
        "globex",
        &format!("{GLOBEX}projects = [{:?}]\n", s(&theirs)),
    );
    std::fs::create_dir_all(store.join("clients/globex/claude")).expect("mkdir");
    let proj = s(&sb.project());
    for (args, wanted) in [
        (vec![s(&store)], vec!["is", data]),
        (vec![s(&store.join("clients"))], vec!["is inside", data]),
        (
            vec![
                proj.clone(),
                "--mount-rw".into(),
                format!("{}:/c", s(&store.join("clients/globex/claude"))),
            ],
            vec!["is inside", data],
        ),
        (
            vec![
                proj.clone(),
                "--mount".into(),
                format!("{}:/g", s(&theirs.join("src"))),
            ],
            vec!["--mount", "overlaps project directory", "globex"],
        ),
        (
            vec![
                proj.clone(),
                "--mount-rw".into(),
                format!("{}:/g", s(&theirs)),
            ],
            vec!["--mount-rw", "overlaps project directory", "globex"],
        ),
    ] {
        assert_refused(&sb, &sb.home(), &args, &wanted);
    }
}

/// Quadlet strips whitespace, Unicode whitespace included, from the end of a value:
/// where a value cannot be quoted it is refused, where it is quoted it survives the
/// real generator unchanged.
#[test]
fn unicode_whitespace_survives_the_generator_or_is_refused() {
    let sb = Sandbox::new();
    let trailing = sb.dir.path().join("proj\u{a0}");
    std::fs::create_dir_all(&trailing).expect("mkdir");
    let out = sb.run(&["render", "acme", trailing.to_str().expect("utf8")]);
    assert_one_line_error(&out, "ends with whitespace (U+00A0)");

    let inner = sb.dir.path().join("a\u{3000}b");
    std::fs::create_dir_all(&inner).expect("mkdir");
    let inner = std::fs::canonicalize(&inner).expect("canon");
    let label = "--label=note=\u{a0}v\u{2003}";
    let out = sb.run(&[
        "render",
        "acme",
        "--agent",
        "shell",
        inner.to_str().expect("utf8"),
        "--podman-arg",
        label,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let service = generated_service(&String::from_utf8_lossy(&out.stdout));
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(exec.contains(label), "{exec:?}");
    assert!(
        exec.contains(&format!("{0}:{0}", inner.display())),
        "{exec:?}"
    );
}

/// The `# Detected:` comment quotes the generator's path, which comes from the
/// environment (`SANDBOXCTL_QUADLET`): a newline in it must not start unit lines.
#[test]
fn generator_path_cannot_inject_unit_lines() {
    let sb = Sandbox::new();
    let dir = sb
        .dir
        .path()
        .join("gen\nExecStartPre=/bin/touch /tmp/pwned\n[Service]\n%h");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let generator = dir.join("quadlet");
    std::os::unix::fs::symlink(support::quadlet(), &generator).expect("symlink");
    let out = sb
        .command(&["render", "acme", "--agent", "shell"])
        .env("SANDBOXCTL_QUADLET", &generator)
        .env("SANDBOXCTL_PODMAN", sb.fake_podman())
        .output()
        .expect("run");
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let detected: Vec<&str> = unit.lines().filter(|l| l.contains("pwned")).collect();
    assert_eq!(detected.len(), 1, "{unit}");
    assert!(detected[0].starts_with("# Detected: "), "{unit}");
    assert!(
        detected[0].contains("gen^JExecStartPre=/bin/touch /tmp/pwned^J[Service]^J%%h"),
        "{unit}"
    );
    assert!(
        !unit
            .lines()
            .any(|l| l.starts_with("ExecStartPre=/bin/touch")),
        "{unit}"
    );
    let service = generated_service(&unit);
    // The generator copies the comment; it stays a comment.
    assert!(
        service
            .lines()
            .filter(|l| l.contains("pwned"))
            .all(|l| l.starts_with("# Detected: ")),
        "{service}"
    );
}

/// The `packages` bundle's hosts come from the image; a broad one among them (an
/// object store anyone can write to) warns like `allow HOST` does.
#[test]
fn packages_bundle_warns_about_broad_hosts() {
    let sb = Sandbox::new();
    let cfg = sb.client_settings("acme", GLOBEX);
    let fake = r#"[ "$1" = run ] && printf 'registry.example\nstorage.googleapis.com\n'; exit 0"#;
    let out = sb.run_with_fakes(&["allow", "acme", "@packages"], &[("podman", fake)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("storage.googleapis.com"), "{stderr}");
    assert!(warnings[0].contains("send data out"), "{stderr}");
    let policy = std::fs::read_to_string(cfg.join("network.toml")).expect("policy");
    assert!(policy.contains("storage.googleapis.com"), "{policy}");

    let out = sb.run_with_fakes(
        &["allow", "acme", "@packages"],
        &[(
            "podman",
            r#"[ "$1" = run ] && echo registry.example; exit 0"#,
        )],
    );
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A project whose `.git` is a symbolic link cannot be protected (the agent could swap
/// it for a repository whose config git on the host runs): refused, in one line and
/// before anything is written, unless the user turns the protection off.
#[test]
fn a_symlinked_git_dir_is_refused_unless_git_config_is_writable() {
    let sb = Sandbox::new();
    let proj = sb.project();
    std::os::unix::fs::symlink(sb.home(), proj.join(".git")).expect("symlink");
    let p = proj.to_str().expect("utf8");
    for args in [
        vec!["render", "acme", p],
        vec!["enable", "acme", p],
        vec!["render", "acme", p, "--git-writable-config=false"],
    ] {
        let out = sb.run(&args);
        assert_one_line_error(&out, "symbolic link");
        assert!(sb.files().is_empty(), "{:?}", sb.files());
    }
    let out = sb.run(&["render", "acme", p, "--git-writable-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.run(&["render", "acme", p, "--git-writable-config=maybe"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

/// `port`: every refusal is one line (or a usage error), before anything is written
/// or systemd is asked.
#[test]
fn port_refusals() {
    let sb = Sandbox::new();
    sb.client_settings(
        "acme",
        "agent = \"shell\"\nimage = \"x\"\nnetwork = \"allowlist\"\n",
    );
    sb.client_settings(
        "beta",
        "agent = \"shell\"\nimage = \"x\"\nnetwork = \"none\"\n\n[[ports]]\nhost = 18080\ncontainer = 5000\n",
    );
    let before = snapshot(&sb.home());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").port().to_string();
    for (args, want) in [
        (vec!["port", "ghost", "3000"], "unknown client ghost"),
        (vec!["port", "ghost"], "unknown client ghost"),
        (
            vec!["port", "acme", "80"],
            "port 80 is privileged on the host; forward it to another with --host-port 1024-65535",
        ),
        (
            vec!["port", "acme", "3000", "--host-port", "443"],
            "host port 443 is privileged (below 1024)",
        ),
        (
            vec!["port", "acme", "3000", "--host-port", "18080"],
            "host port 18080 already forwards to port 5000 of beta; choose another --host-port, or remove that one with `sandboxctl port beta 5000 --host-port 18080 --rm`",
        ),
        (
            vec!["port", "acme", "3000", "--host-port", &taken],
            "is already in use on the host; choose another with --host-port",
        ),
        (
            vec!["port", "acme", "3000", "--rm"],
            "acme has no forward to port 3000; `sandboxctl port acme` lists them",
        ),
        (
            vec!["port", "beta", "5000", "--host-port", "18081", "--rm"],
            "beta has no forward to port 5000 from host port 18081",
        ),
        // Valid, but no user manager to reach: refused before writing.
        (
            vec!["port", "acme", "3000", "--host-port", "18082"],
            "cannot connect to the user's D-Bus",
        ),
    ] {
        let out = sb.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_one_line_error(&out, want);
    }
    for args in [
        vec!["port", "acme", "0"],
        vec!["port", "acme", "65536"],
        vec!["port", "acme", "--rm"],
        vec!["port", "acme", "--host-port", "8080"],
        vec!["port", "acme", "3000", "--rm", "--persist"],
    ] {
        let out = sb.run(&args);
        assert_eq!(out.status.code(), Some(2), "a usage error: {args:?}");
    }
    assert_eq!(snapshot(&sb.home()), before, "nothing written");
    assert!(
        !sb.dir.path().join("run/systemd").exists(),
        "no runtime unit written"
    );
}
/// A shell that must be installed for the completion tests (setup-host.sh installs
/// it); a missing one fails the test rather than skipping it.
fn shell(name: &str) -> PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed; tests/system/setup-host.sh installs it")
        })
}

/// A home with the clients `acme` and `beta`, a directory whose name is not a client
/// name (with a terminal escape in it), the three completion scripts written by
/// `sandboxctl completions`, and `sandboxctl` first in `PATH` (the scripts call it).
struct Completion {
    sb: Sandbox,
}

impl Completion {
    fn new() -> Self {
        let sb = Sandbox::new();
        for client in ["acme", "beta", "evil\x1b]0;pwned\x07"] {
            sb.client_settings(client, "agent = \"shell\"\n");
        }
        let bin = sb.dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sandboxctl"), bin.join("sandboxctl"))
            .expect("link sandboxctl");
        std::fs::create_dir_all(sb.dir.path().join("zsh")).expect("zsh dir");
        for (shell, file) in [
            ("bash", "sandboxctl.bash"),
            ("zsh", "zsh/_sandboxctl"),
            ("fish", "sandboxctl.fish"),
        ] {
            let out = sb.run(&["completions", shell]);
            assert!(out.status.success(), "{shell}: {out:?}");
            assert!(out.stderr.is_empty(), "{shell}: {out:?}");
            std::fs::write(sb.dir.path().join(file), &out.stdout).expect("write script");
        }
        Self { sb }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.sb.dir.path().join(rel)
    }

    /// `SHELL -c SCRIPT` in the home, `sandboxctl` in `PATH`; its stdout.
    fn run(&self, shell_name: &str, args: &[&str], script: &str) -> String {
        let out = Command::new(shell(shell_name))
            .args(args)
            .arg(script)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.path("bin").display()),
            )
            .env("HOME", self.sb.home())
            .env("LANG", "C.UTF-8")
            .env("DIR", self.sb.dir.path())
            .current_dir(self.sb.home())
            .output()
            .expect("run the shell");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{shell_name}: {stdout}\n{stderr}");
        assert!(stderr.is_empty(), "{shell_name}: {stderr}");
        stdout
    }
}

/// The candidates a real bash offers: the script is sourced, then the function it
/// registered with `complete -F` is called as bash's programmable completion calls it.
#[test]
fn bash_completes_subcommands_flags_and_client_names() {
    let c = Completion::new();
    let script = r#"
source "$DIR/sandboxctl.bash"
f=$(complete -p sandboxctl | sed -E 's/.* -F ([^ ]+) .*/\1/')
try() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    COMP_TYPE=9; COMPREPLY=()
    "$f" sandboxctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s\n' "${COMPREPLY[*]}"
}
try sandboxctl att
try sandboxctl attach ''
try sandboxctl disable b
try sandboxctl doctor --live ''
try sandboxctl enable acme --netw
"#;
    let out = c.run("bash", &["--norc", "--noprofile", "-c"], script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], "attach", "{out}");
    let words: Vec<&str> = lines[1].split(' ').collect();
    assert!(
        words.starts_with(&["acme", "beta"]) && words.contains(&"--session"),
        "{out:?}"
    );
    assert_eq!(lines[2], "beta", "{out}");
    assert_eq!(lines[3], "acme beta", "{out}");
    assert_eq!(lines[4], "--network", "{out}");
    assert!(
        !out.contains('\x1b'),
        "a name that is no client name reached the terminal: {out:?}"
    );
}

/// zsh loads the script as the autoloaded `_sandboxctl` from `fpath` (where the package
/// puts it) and completes at the first call; `_describe`, the completion system's
/// display function, is replaced by one that prints what it is given.
#[test]
fn zsh_completes_subcommands_and_client_names_from_fpath() {
    let c = Completion::new();
    let script = r#"
fpath=("$DIR/zsh" $fpath)
autoload -Uz _sandboxctl
_describe() { shift 2; print -rl -- "${(@P)1}"; }
words=(sandboxctl attach ''); CURRENT=3; _sandboxctl
print -- ---
words=(sandboxctl sta); CURRENT=2; _sandboxctl
"#;
    let out = c.run("zsh", &["-f", "-c"], script);
    let (clients, subcommands) = out.split_once("---\n").expect("two parts");
    let clients: Vec<&str> = clients.lines().collect();
    assert!(clients.starts_with(&["acme", "beta"]), "{out}");
    assert!(clients.iter().all(|l| !l.contains("evil")), "{out:?}");
    let names: Vec<&str> = subcommands
        .lines()
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(names, ["start", "status"], "{out}");
}

/// fish completes a command line non-interactively with `complete -C`.
#[test]
fn fish_completes_subcommands_and_client_names() {
    let c = Completion::new();
    let script = r#"source "$DIR/sandboxctl.fish"
complete -C 'sandboxctl attach '
echo ---
complete -C 'sandboxctl sta'"#;
    let out = c.run("fish", &["--no-config", "-c"], script);
    let (clients, subcommands) = out.split_once("---\n").expect("two parts");
    let first = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect()
    };
    let clients = first(clients);
    assert!(
        clients.starts_with(&["acme".to_owned(), "beta".to_owned()]),
        "{out}"
    );
    assert!(!out.contains("evil"), "{out:?}");
    assert_eq!(first(subcommands), ["start", "status"], "{out}");
}

#[test]
fn completions_for_an_unknown_shell_are_a_usage_error() {
    let sb = Sandbox::new();
    let out = sb.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

/// One page per visible command, made from the clap definitions, each rendered by
/// `man` without a warning.
#[test]
fn man_pages_for_every_command_render_without_warnings() {
    use clap::CommandFactory;
    fn pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        let name = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub, &name, out);
        }
        out.push(format!("{name}.1"));
    }
    let mut want = Vec::new();
    pages(&sandboxctl::cli::Cli::command(), "", &mut want);
    want.retain(|p| p != "sandboxctl-help.1");
    want.sort();
    assert!(
        want.contains(&"sandboxctl-image-build.1".to_owned()),
        "{want:?}"
    );

    let sb = Sandbox::new();
    let dir = sb.dir.path().join("man");
    let out = sb.run(&["man", dir.to_str().expect("UTF-8")]);
    assert!(out.status.success(), "{out:?}");
    let mut got: Vec<String> = std::fs::read_dir(&dir)
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert!(
        !got.contains(&"sandboxctl-man.1".to_owned()),
        "the hidden command has no page"
    );

    for page in &got {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(dir.join(page))
            .env("MANWIDTH", "80")
            .env("LANG", "C.UTF-8")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("run man (man-db)");
        // Without a terminal, man marks bold as `X\bX`: keep the last of each pair.
        let text: String = String::from_utf8_lossy(&out.stdout)
            .split('\u{8}')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.get(1..).unwrap_or_default()
                }
            })
            .collect();
        assert!(out.status.success(), "{page}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}: {text}"
        );
    }
    let enable = std::fs::read_to_string(dir.join("sandboxctl-enable.1")).expect("page");
    assert!(enable.contains("git\\-writable\\-config"), "{enable}");
}

#[test]
fn notify_switch_renders_the_event_channel_or_nothing() {
    let sb = Sandbox::new();
    let channel = [
        "Wants=sandboxctl-notify@acme.socket",
        "After=sandboxctl-notify@acme.socket",
        "Volume=%t/agent-sandbox/events/acme:/run/sandbox-events:ro,Z",
    ];
    for args in [
        vec!["render", "acme", "--network", "none"],
        vec!["render", "acme", "--network", "none", "--notify", "on"],
    ] {
        let out = sb.run(&args);
        let unit = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{unit}");
        for line in channel {
            assert!(unit.contains(line), "{line} missing:\n{unit}");
        }
        assert_generator_accepts(&unit);
    }
    let out = sb.run(&["render", "acme", "--network", "none", "--notify", "off"]);
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{unit}");
    assert!(
        !unit.contains("sandbox-events") && !unit.contains("sandboxctl-notify"),
        "{unit}"
    );
    let out = sb.run(&["render", "acme", "--notify", "maybe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use on or off"));
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn sessions_and_worktree_user_errors() {
    let sb = Sandbox::new();
    for cmd in [
        vec!["sessions", "ghost"],
        vec!["worktree", "rm", "ghost", "wa"],
        vec!["attach", "ghost", "--worktree", "wa"],
    ] {
        let out = sb.run(&cmd);
        assert_one_line_error(&out, "unknown client ghost");
    }
    for (cmd, want) in [
        (
            vec!["attach", "ghost", "--worktree", "a/b"],
            "invalid session name",
        ),
        (
            vec!["attach", "ghost", "--worktree=-x"],
            "cannot start with '-'",
        ),
        (
            vec!["worktree", "rm", "ghost", "a b"],
            "invalid worktree name",
        ),
        (
            vec!["worktree", "rm", "ghost", "--", "-x"],
            "cannot start with '-'",
        ),
    ] {
        let out = sb.run(&cmd);
        assert_one_line_error(&out, want);
    }
    let out = sb.run(&["attach", "acme", "--worktree", "wa", "--session", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

/// `export --to kube`: a private file, one stderr line per setting Kubernetes cannot
/// express, the policy in a `ConfigMap`, no secret values.
#[test]
fn export_kube_writes_a_private_file_and_lists_what_it_drops() {
    let sb = Sandbox::new();
    export_client(&sb);
    let file = sb.dir.path().join("acme.yaml");
    let out = sb.run(&[
        "export",
        "acme",
        "--to",
        "kube",
        "--flavor",
        "pod",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "-o",
        file.to_str().expect("utf8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "acme: not exported: podman argument \"--memory=2g\": no Kubernetes counterpart\nacme: wrote {}\n",
            file.display()
        )
    );
    let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let yaml = std::fs::read_to_string(&file).expect("read");
    assert!(yaml.contains("\nkind: \"Pod\"\n"), "{yaml}");
    assert!(yaml.contains("\n    runAsUser: 1000\n"), "{yaml}");
    assert!(
        yaml.contains("  network.toml: \"allow = [\\\"example.com\\\"]\\n\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "# Not exported: podman argument \"--memory=2g\": no Kubernetes counterpart\n"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains("kubectl create secret generic acme-credentials"),
        "{yaml}"
    );
    assert!(!yaml.contains("\nkind: \"Secret\""), "{yaml}");
}

/// A client `export` has something to say about: allowlist, a podman argument, a secret.
fn export_client(sb: &Sandbox) {
    let cfg = sb.client_settings(
        "acme",
        "agent = \"claude\"\nimage = \"localhost/agent-sandbox:latest\"\nnetwork = \"allowlist\"\n\
         podman_args = [\"--memory=2g\"]\nsecrets = [\"GH_TOKEN\"]\nnotify = false\n",
    );
    std::fs::write(cfg.join("network.toml"), "allow = [\"example.com\"]\n").expect("policy");
}

/// A client whose API key the egress proxy holds cannot be exported yet (the cluster
/// proxy cannot add the key): one line saying how, nothing written; with the key in the
/// sandbox it exports.
#[test]
fn export_kube_refuses_a_key_held_by_the_proxy() {
    let sb = Sandbox::new();
    let body = "agent = \"claude\"\nimage = \"localhost/agent-sandbox:latest\"\nnetwork = \"allowlist\"\n\
                secrets = [\"ANTHROPIC_API_KEY\"]\nnotify = false\n";
    let cfg = sb.client_settings("acme", body);
    std::fs::write(cfg.join("network.toml"), "allow = [\"example.com\"]\n").expect("policy");
    let file = sb.dir.path().join("acme.yaml");
    let args = [
        "export",
        "acme",
        "--to",
        "kube",
        "--uid=1000",
        "--gid=1000",
        "-o",
        file.to_str().expect("utf8"),
    ];
    let out = sb.run(&args);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out, "held by the egress proxy");
    assert_one_line_error(&out, "`sandboxctl enable acme --key-in-sandbox on`");
    assert!(!file.exists());
    sb.client_settings("acme", &format!("{body}key_in_sandbox = true\n"));
    let out = sb.run(&args);
    assert!(out.status.success(), "{out:?}");
    assert!(file.exists());
}

/// `export --include-secrets`: refused in one line where Podman cannot show values; the
/// value base64 in a `Secret` where it can; the uid is never root.
#[test]
fn export_kube_secrets_uid_and_namespace() {
    let sb = Sandbox::new();
    export_client(&sb);
    // A Podman without `secret inspect --showsecret` (4.3): refused, nothing written.
    let file = sb.dir.path().join("acme.yaml");
    let old = "case \"$*\" in --version) echo 'podman version 4.3.1' ;; \
               'secret inspect --help') echo '  -f, --format string   Format' ;; esac";
    let out = sb.run_with_fakes(
        &[
            "export",
            "acme",
            "--to",
            "kube",
            "--include-secrets",
            "-o",
            file.to_str().expect("utf8"),
        ],
        &[("podman", old)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--include-secrets: this Podman cannot show secret values"),
        "{stderr}"
    );
    assert!(!file.exists());

    // One that can: the value, base64, in a Secret.
    let new = "case \"$*\" in --version) echo 'podman version 5.4.2' ;; \
               'secret inspect --help') echo '      --showsecret   Display the secret' ;; \
               'secret inspect --showsecret --format {{.SecretData}} agent-acme.GH_TOKEN') echo 'ghp_s3cret' ;; esac";
    let out = sb.run_with_fakes(
        &[
            "export",
            "acme",
            "--to",
            "kube",
            "--include-secrets",
            "--uid=1000",
        ],
        &[("podman", new)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("  GH_TOKEN: \"Z2hwX3MzY3JldA==\"\n"),
        "{yaml}"
    );
    assert!(yaml.contains("\nkind: \"Sandbox\"\n"), "{yaml}");

    // Without --uid: the user's own uid, never root.
    let out = sb.run(&["export", "acme", "--to", "kube"]);
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("cannot export a sandbox that runs as uid 0"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("runAsUser: {uid}\n")));
    }
    let out = sb.run(&["export", "acme", "--to", "kube", "--namespace", "Bad_NS"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid namespace \"Bad_NS\""), "{stderr}");
}

/// Whether this machine's cgroups could enforce the limits (cgroup v2 with memory, pids
/// and cpu delegated to the user); the test host is hybrid cgroup v1, where they cannot.
fn host_enforces_limits() -> bool {
    let uid = rustix::process::getuid().as_raw();
    let v2 = rustix::fs::statfs("/sys/fs/cgroup").is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast, clippy::cast_lossless)]
        let kind = s.f_type as i64;
        kind == 0x6367_7270
    });
    let controllers = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    ))
    .unwrap_or_default();
    v2 && ["memory", "pids", "cpu"]
        .iter()
        .all(|c| controllers.split_whitespace().any(|h| h == *c))
}

/// `--memory`, `--cpus` and `--pids` are refused where the host cannot enforce them
/// (here: cgroup v1), with why and the drop-in that delegates the controllers, and
/// nothing written; where it can, they reach the unit. Malformed values are refused
/// everywhere.
#[test]
fn limits_are_refused_where_cgroups_cannot_enforce_them() {
    let sb = Sandbox::new();
    let home = sb.home();
    let proj = s(&sb.project());
    let limits = ["--memory", "8g", "--cpus", "1", "--pids", "4096"].map(str::to_owned);
    let mut args = vec![proj.clone()];
    args.extend(limits.iter().cloned());
    if host_enforces_limits() {
        let out = sb
            .command(
                &[
                    &["render", "acme"],
                    &args.iter().map(String::as_str).collect::<Vec<_>>()[..],
                ]
                .concat(),
            )
            .env("SANDBOXCTL_PODMAN", sb.fake_podman())
            .output()
            .expect("render");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("--cpus=1"), "{stdout}");
    } else {
        assert_refused(
            &sb,
            &home,
            &args,
            &[
                "cannot apply --memory, --cpus, --pids",
                "Delegate=cpu cpuset io memory pids",
                "user@.service.d/delegate.conf",
                "(--memory none)",
            ],
        );
    }
    for (flag, value, want) in [
        ("--memory", "8 gigs", "--memory: invalid memory size"),
        ("--cpus", "two", "--cpus: invalid CPU count"),
        ("--pids", "-1", "--pids: invalid pid limit"),
    ] {
        assert_refused(
            &sb,
            &home,
            &[proj.clone(), format!("{flag}={value}")],
            &[want],
        );
    }
}

/// `image build` takes exact agent versions only (the image's labels record them):
/// anything else is one line naming the flag, before podman runs.
#[test]
fn image_build_refuses_inexact_agent_versions() {
    let sb = Sandbox::new();
    for (flag, value) in [
        ("--claude-version", "latest"),
        ("--codex-version", "^0.171"),
        ("--codex-version", "1.0;rm -rf /"),
    ] {
        let out = sb.run_with_fakes(
            &["image", "build", flag, value],
            &[(
                "podman",
                "[ \"$1\" = --version ] && echo 'podman version 5.4.2' && exit 0\necho \"$@\" >> \"$HOME/podman-ran\"",
            )],
        );
        assert_one_line_error(&out, &format!("{flag} "));
        assert_one_line_error(&out, "use an exact npm version");
        assert!(!sb.home().join("podman-ran").exists(), "podman ran");
    }
}

/// `update` of a client that does not exist is one line naming it, before anything
/// runs; with no clients it says so.
#[test]
fn update_names_an_unknown_client_and_handles_none() {
    let sb = Sandbox::new();
    let out = sb.run(&["update", "--dry-run", "nosuch"]);
    assert_one_line_error(&out, "nosuch");
    let out = sb
        .command(&["update"])
        .env("SANDBOXCTL_PODMAN", sb.fake_podman())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("no clients"),
        "{out:?}"
    );
}

/// `update` restarts clients, so it takes the change lock as `enable` and `disable` do:
/// while another command holds it, `update` says it is waiting and goes no further
/// until the lock is released. A dry run changes nothing and does not wait.
#[test]
fn update_waits_for_the_change_lock() {
    use std::io::BufRead as _;
    let sb = Sandbox::new();
    let run = sb.dir.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    // Another sandboxctl changing clients, as far as the lock can tell.
    let held = std::fs::File::create(run.join("sandboxctl.lock")).expect("lock file");
    held.lock().expect("take the lock");
    let update = |args: &[&str]| {
        sb.command(args)
            .env("SANDBOXCTL_PODMAN", sb.fake_podman())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run sandboxctl")
    };
    let out = update(&["update", "--dry-run"])
        .wait_with_output()
        .expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");

    let mut child = update(&["update"]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read stderr");
    assert!(
        line.starts_with(
            "sandboxctl: waiting for another sandboxctl command that is changing clients"
        ),
        "update did not wait for the lock: {line:?}"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "update ended while the lock was held"
    );
    drop(held);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("no clients"),
        "{out:?}"
    );
}

/// `[defaults]` in `~/.config/sandboxctl/config.toml` fill in the options a new client
/// is not given; a given option beats them, a client that exists keeps its settings,
/// and a bad file is one line naming it and the key.
#[test]
fn user_defaults_apply_to_new_clients_only() {
    let sb = Sandbox::new();
    let config = sb.home().join(".config/sandboxctl");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::write(
        config.join("config.toml"),
        "[defaults]\nagent = \"shell\"\nautonomy = \"auto\"\nnetwork = \"none\"\n",
    )
    .expect("write");
    let proj = s(&sb.project());
    let render = |args: &[&str]| {
        let out = sb
            .command(&[&["render"], args].concat())
            .env("SANDBOXCTL_PODMAN", sb.fake_podman())
            .output()
            .expect("render");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let unit = render(&["acme", &proj]);
    assert!(
        unit.contains("for client acme (shell, autonomy auto)"),
        "{unit}"
    );
    assert!(
        !unit.contains("sandbox-proxy"),
        "network none has no proxy:\n{unit}"
    );
    let unit = render(&["acme", &proj, "--agent", "codex"]);
    assert!(
        unit.contains("for client acme (codex, autonomy auto)"),
        "{unit}"
    );

    // A client that exists keeps its own settings (claude, ask).
    sb.client_settings(
        "old",
        "agent = \"claude\"\nimage = \"localhost/agent-sandbox:latest\"\nnetwork = \"allowlist\"\n",
    );
    let unit = render(&["old", &proj]);
    assert!(
        unit.contains("for client old (claude, autonomy ask)"),
        "{unit}"
    );
    // ... unless it starts again from the defaults.
    let unit = render(&["old", &proj, "--reset"]);
    assert!(
        unit.contains("for client old (shell, autonomy auto)"),
        "{unit}"
    );

    std::fs::write(config.join("config.toml"), "[defaults]\nmemroy = \"8g\"\n").expect("write");
    let out = sb.run(&["enable", "new", &proj]);
    assert_one_line_error(
        &out,
        &format!(
            "{}: [defaults] memroy: unknown key",
            config.join("config.toml").display()
        ),
    );
    assert!(
        !sb.home()
            .join(".local/share/agent-sandbox/clients/new")
            .exists(),
        "a client was written"
    );
}

/// A podman for `image build`: `image inspect` answers with the old agent versions
/// until a build ran, then with the versions of its build arguments; what ran is
/// logged in `$HOME/podman-ran`.
const BUILDING_PODMAN: &str = r#"[ "$1" = --version ] && echo 'podman version 5.4.2' && exit 0
echo "$@" >> "$HOME/podman-ran"
if [ "$1" = build ]; then
    for a in "$@"; do echo "$a"; done | sed -n 's/^CLAUDE_CODE_VERSION=//p' > "$HOME/built-claude"
    for a in "$@"; do echo "$a"; done | sed -n 's/^CODEX_VERSION=//p' > "$HOME/built-codex"
    exit 0
fi
if [ "$1" = image ] && [ "$2" = inspect ]; then
    if [ -f "$HOME/built-claude" ]; then
        printf '1000\t%s\t%s\t22.23.3\n' "$(cat "$HOME/built-claude")" "$(cat "$HOME/built-codex")"
    else
        printf '1000\t2.1.300\t0.170.0\t22.23.3\n'
    fi
fi
exit 0"#;

/// `image build --agents latest` asks npm for the newest versions, builds with them as
/// exact pins and prints old → new; it refuses an explicit version beside it, and
/// npm's answer must be a version.
#[test]
fn image_build_agents_latest_resolves_with_npm_and_prints_the_change() {
    let sb = Sandbox::new();
    let npm = r#"case "$2" in
    @anthropic-ai/claude-code) echo 2.1.400 ;;
    @openai/codex) echo 0.180.1 ;;
    *) exit 1 ;;
esac"#;
    let out = sb.run_with_fakes(
        &[
            "image",
            "build",
            "--agents",
            "latest",
            "--tag",
            "localhost/x:t",
        ],
        &[("podman", BUILDING_PODMAN), ("npm", npm)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("newest on npm: Claude Code 2.1.400, Codex 0.180.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Claude Code: 2.1.300 → 2.1.400"),
        "{stdout}"
    );
    assert!(stdout.contains("Codex: 0.170.0 → 0.180.1"), "{stdout}");
    let ran = std::fs::read_to_string(sb.home().join("podman-ran")).expect("podman ran");
    assert!(
        ran.contains("--build-arg CLAUDE_CODE_VERSION=2.1.400 --build-arg CODEX_VERSION=0.180.1"),
        "{ran}"
    );

    let out = sb.run_with_fakes(
        &[
            "image",
            "build",
            "--agents",
            "latest",
            "--codex-version",
            "0.1.0",
        ],
        &[("podman", BUILDING_PODMAN), ("npm", npm)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("'--agents <WHICH>' cannot be used with '--codex-version <VERSION>'"),
        "{stderr}"
    );

    std::fs::remove_file(sb.home().join("podman-ran")).expect("rm");
    let out = sb.run_with_fakes(
        &["image", "build", "--agents", "latest"],
        &[("podman", BUILDING_PODMAN), ("npm", "echo '2.1.1 && evil'")],
    );
    assert_one_line_error(&out, "printed something that is not one version");
    let ran = std::fs::read_to_string(sb.home().join("podman-ran")).unwrap_or_default();
    assert!(!ran.contains("build"), "podman built: {ran}");
}

/// A stored API key in allowlist mode is held by the proxy: not mounted, the base URL
/// and a placeholder instead; `--key-in-sandbox on` mounts it again, with a warning.
#[test]
fn an_api_key_is_held_by_the_proxy_unless_asked_into_the_sandbox() {
    let sb = Sandbox::new();
    let key = "sk-ant-cli-test-value";
    let out = sb
        .command(&["render", "acme"])
        .env("ANTHROPIC_API_KEY", key)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(!unit.contains("Secret="), "{unit}");
    assert!(!unit.contains(key), "{unit}");
    for line in [
        "Environment=\"ANTHROPIC_BASE_URL=http://127.0.0.1:3128/anthropic\"",
        "Environment=\"ANTHROPIC_API_KEY=sandboxctl-proxy-held-key\"",
    ] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }
    let out = sb
        .command(&["render", "acme", "--key-in-sandbox", "on"])
        .env("ANTHROPIC_API_KEY", key)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let unit = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        unit.contains("Secret=agent-acme.ANTHROPIC_API_KEY,type=mount,target=ANTHROPIC_API_KEY"),
        "{unit}"
    );
    assert!(!unit.contains("ANTHROPIC_BASE_URL"), "{unit}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: acme's agent gets its API key itself")),
        "{err}"
    );
    assert!(!err.contains(key), "{err}");
    let out = sb.run(&["render", "acme", "--key-in-sandbox", "maybe"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use on or off"));
}

// A hostile-input corpus: every value a user (or a prompt-injected agent writing a
// script for them) could hand the CLI that must be refused, through the real binary in
// a home with an enabled client. Each case must fail with exit status 1 and one
// `sandboxctl: …` line naming the value, and leave the whole home (settings, policy,
// units, data) byte-for-byte as it was.

/// Every path under `root` with its kind, mode and content (or link target; for files
/// over 1 MiB size, inode and modification time): two equal trees give equal maps.
fn tree_state(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    use std::os::unix::fs::MetadataExt as _;
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            // Not client state: the host-detection cache, the fake podman's call log.
            if rel.starts_with(".cache") || rel.ends_with("podman.log") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            let mut state = format!("{:o} ", meta.mode()).into_bytes();
            if meta.file_type().is_symlink() {
                state.extend(
                    std::fs::read_link(&p)
                        .expect("link")
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if meta.is_file() && meta.len() > 1 << 20 {
                // Large files (the installed binary): any write changes these.
                let stamp = format!("{} {} {}", meta.len(), meta.ino(), meta.mtime_nsec());
                state.extend(format!("{stamp} {}", meta.mtime()).into_bytes());
            } else if meta.is_file() {
                state.extend(std::fs::read(&p).unwrap_or_default());
            } else if meta.is_dir() {
                walk(root, &p, out);
            }
            out.insert(rel, state);
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// One hostile input: the arguments after `sandboxctl`, optional stdin, and the text
/// the error line must contain (the value as shown, or the thing named).
struct Hostile {
    args: Vec<std::ffi::OsString>,
    stdin: Option<Vec<u8>>,
    want: String,
}

fn hostile(args: &[&str], want: &str) -> Hostile {
    Hostile {
        args: args.iter().map(std::ffi::OsString::from).collect(),
        stdin: None,
        want: want.to_owned(),
    }
}

/// Paths under `home` that exist but cannot be used as a project or mount (each
/// with the text its error names), created here.
fn hostile_paths(home: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = |name: &str| {
        let p = home.join(name);
        std::fs::create_dir_all(&p).expect("create hostile dir");
        p.display().to_string()
    };
    for (name, want) in [
        ("new\nline", "new\\nline"),
        ("car\rret", "car\\rret"),
        ("tab\there", "tab\\there"),
        ("esc\u{1b}]0;x\u{7}", "esc\\u{1b}"),
        ("del\u{7f}", "del\\u{7f}"),
        ("nel\u{85}", "nel\\u{85}"),
        ("colon:x", "colon:x"),
        ("quote\"x", "quote\\\"x"),
        ("apos'x", "apos'x"),
        ("back\\x", "back\\\\x"),
        ("trail\u{3000}", "trail\\u{3000}"),
        ("trail\u{a0}", "trail\\u{a0}"),
        ("trail ", "trail "),
    ] {
        out.push((dir(name), want.to_owned()));
    }
    // Paths that do not lead to a usable directory.
    let loop_a = home.join("loop-a");
    std::os::unix::fs::symlink(home.join("loop-b"), &loop_a).expect("symlink");
    std::os::unix::fs::symlink(&loop_a, home.join("loop-b")).expect("symlink");
    out.push((loop_a.display().to_string(), "loop-a".into()));
    let dangling = home.join("dangling");
    std::os::unix::fs::symlink(home.join("nowhere"), &dangling).expect("symlink");
    out.push((dangling.display().to_string(), "dangling".into()));
    let fifo = home.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    out.push((fifo.display().to_string(), "fifo".into()));
    let file = home.join("plain-file");
    std::fs::write(&file, "x").expect("write");
    out.push((file.display().to_string(), "plain-file".into()));
    let long = format!("{}/{}", home.display(), "l".repeat(4096));
    out.push((long, "llllllll".into()));
    for name in [
        "missing%h",
        "missing$HOME",
        "missing;rm -rf ~",
        "miss`id`",
        "missing\u{2028}x",
    ] {
        let shown = format!("{name:?}");
        out.push((
            format!("{}/{name}", home.display()),
            shown[1..shown.len() - 1].to_owned(),
        ));
    }
    out
}

#[test]
#[allow(clippy::too_many_lines)] // one table of cases, then one loop
fn hostile_input_corpus_is_refused_cleanly() {
    let home = support::sandbox::Home::new();
    let project = home.mkdir("projects/acme");
    home.sandboxctl(["enable", "acme", "--agent", "shell"])
        .arg(&project)
        .run()
        .success();
    let root = home.path().to_path_buf();
    let mut cases: Vec<Hostile> = Vec::new();

    // Project and mount paths.
    for (path, want) in hostile_paths(&home.mkdir("hostile")) {
        cases.push(hostile(&["enable", "acme", &path], &want));
        cases.push(hostile(&["render", "acme", &path], &want));
        // A single file may be mounted on purpose; a project must be a directory.
        if want == "fifo" || want == "plain-file" {
            continue;
        }
        cases.push(hostile(
            &["enable", "acme", "--mount", &format!("{path}:/mnt/x")],
            &want,
        ));
        cases.push(hostile(
            &["enable", "acme", "--mount-rw", &format!("{path}:/mnt/x")],
            &want,
        ));
    }
    // Container sides of mounts.
    let p = project.display().to_string();
    for (target, want) in [
        ("/mnt/a\nb", "/mnt/a\\nb"),
        ("relative", "relative"),
        ("/mnt/a:b", "/mnt/a:b"),
        ("/mnt/q\"x", "q\\\"x"),
        ("/mnt/b\\x", "b\\\\x"),
        ("/mnt/w\u{3000}", "w\\u{3000}"),
        ("", "must be absolute"),
    ] {
        cases.push(hostile(
            &["enable", "acme", "--mount", &format!("{p}:{target}")],
            want,
        ));
    }
    cases.push(hostile(
        &["enable", "acme", "--mount", "no-colon"],
        "no-colon",
    ));
    // Podman and agent arguments, git identity, image.
    for (value, want) in [
        ("--env=A\nB", "A\\nB"),
        ("--label=x\ry", "x\\ry"),
        ("--env=E\u{1b}[2J", "E\\u{1b}[2J"),
        ("--env=D\u{7f}", "D\\u{7f}"),
        ("--env=N\u{85}", "N\\u{85}"),
    ] {
        for flag in ["--podman-arg", "--agent-arg", "--git-name", "--git-email"] {
            cases.push(hostile(
                &["enable", "acme", &format!("{flag}={value}")],
                want,
            ));
        }
    }
    for image in ["bad image", "img\nx", "-rf", "img\u{1b}x", "img;id"] {
        let shown = format!("{image:?}");
        cases.push(hostile(
            &["enable", "acme", &format!("--image={image}")],
            &shown[1..shown.len() - 1],
        ));
    }
    // Client names, on several commands.
    for name in [
        "Acme",
        "a_b",
        "../x",
        "a\nb",
        "",
        "a%b",
        "a$b",
        "a:b",
        "a b",
        "é",
        "x.y",
        &"a".repeat(64),
    ] {
        for cmd in ["enable", "status", "disable", "allow"] {
            let mut args = vec![cmd, name];
            if cmd == "allow" {
                args.push("example.com");
            }
            cases.push(hostile(&args, "invalid client name"));
        }
    }
    // Secrets: names and values (read from stdin).
    for name in [
        "bad name",
        "A=B",
        "1ABC",
        "a\nb",
        "",
        "A-B",
        "X$Y",
        &"A".repeat(129),
    ] {
        let mut c = hostile(&["secret", "set", "acme", name], "invalid secret name");
        c.stdin = Some(b"value\n".to_vec());
        cases.push(c);
    }
    for (value, want) in [
        (&b""[..], "is empty"),
        (b"\n", "is empty"),
        (b"a\0b", "NUL byte"),
        (b"a\nb", "line break"),
        (b"a\rb\n", "line break"),
    ] {
        let mut c = hostile(&["secret", "set", "acme", "API_TOKEN"], want);
        c.stdin = Some(value.to_vec());
        cases.push(c);
    }
    // Policy entries.
    for entry in [
        "http://example.com",
        "example.com/path",
        "user@example.com",
        "a b.com",
        "a\nb.com",
        "*.com",
        "*",
        "example.com:99999",
        "example.com:0",
        "[::1",
        "ex_ample..com",
        "@nope",
        "",
    ] {
        let shown = format!("{entry:?}");
        let want = if entry.starts_with('@') {
            "nope"
        } else {
            &shown[1..shown.len() - 1]
        };
        cases.push(hostile(&["allow", "acme", entry], want));
        cases.push(hostile(&["deny", "acme", entry], want));
    }

    let total = cases.len();
    let mut failures = Vec::new();
    let mut slowest = (std::time::Duration::ZERO, Vec::new());
    for case in &cases {
        let before = tree_state(&root);
        let started = std::time::Instant::now();
        let mut cmd = home.sandboxctl(&case.args);
        if let Some(stdin) = &case.stdin {
            cmd = cmd.stdin_bytes(stdin);
        }
        let out = cmd.run();
        if started.elapsed() > slowest.0 {
            slowest = (started.elapsed(), case.args.clone());
        }
        let one_line = out.stderr.lines().count() == 1 && out.stderr.starts_with("sandboxctl: ");
        let problem = if out.code != Some(1) {
            Some(format!("exit {:?}", out.code))
        } else if !one_line {
            Some("not one `sandboxctl:` line".to_owned())
        } else if !out.stderr.contains(&case.want) {
            Some(format!("error does not name {:?}", case.want))
        } else if tree_state(&root) != before {
            Some("the home changed".to_owned())
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!("{:?}: {p}\n{}", case.args, out.stderr));
        }
    }
    let refused = total - failures.len();
    println!(
        "hostile inputs: {total} tried, {refused} refused cleanly ({}.{} %); slowest: {slowest:?}",
        refused * 100 / total,
        refused * 1000 / total % 10
    );
    assert!(total >= 100, "only {total} cases");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Corrupted state: a broken settings or policy file, a unit edited by hand, a unit
/// directory that is a file. Each is refused with one line naming the file, and the
/// home is left as it was (the corruption included).
#[test]
#[allow(clippy::too_many_lines)] // one table of cases, then one loop
fn corrupted_state_is_named_and_left_alone() {
    let home = support::sandbox::Home::new();
    let project = home.mkdir("projects/acme");
    home.sandboxctl(["enable", "acme", "--agent", "shell"])
        .arg(&project)
        .run()
        .success();
    let config = home.client_dir("acme").join("config");
    let settings = config.join("sandbox.toml");
    let policy = config.join("network.toml");
    let unit = home.unit_file("acme");
    let unit_dir = home.unit_dir();
    let cases: Vec<(&Path, &str, Vec<&str>, &str)> = vec![
        (
            &settings,
            "agent = [",
            vec!["render", "acme"],
            "sandbox.toml",
        ),
        (
            &settings,
            "agent = [",
            vec!["enable", "acme"],
            "sandbox.toml",
        ),
        (
            &settings,
            "agent = [",
            vec!["status", "acme"],
            "sandbox.toml",
        ),
        (
            &settings,
            "agent = \"bogus\"\n",
            vec!["enable", "acme"],
            "sandbox.toml",
        ),
        (
            &settings,
            "\0\u{1b}]0;x\u{7}",
            vec!["render", "acme"],
            "sandbox.toml",
        ),
        (
            &policy,
            "allow = [",
            vec!["allow", "acme", "example.com"],
            "network.toml",
        ),
        // (`policy` shows an invalid policy as its answer, with exit status 0.)
        (
            &policy,
            "allow = [",
            vec!["deny", "acme", "a.com"],
            "network.toml",
        ),
        (
            &policy,
            "allow = [\"http://x\"]\n",
            vec!["deny", "acme", "a.com"],
            "network.toml",
        ),
        (
            &policy,
            "nope = 1\n",
            vec!["allow", "acme", "example.com"],
            "network.toml",
        ),
        (
            &unit,
            "[Container]\nImage=mine\n",
            vec!["enable", "acme"],
            "agent-acme.container",
        ),
    ];
    let mut failures = Vec::new();
    let run_case = |args: &[&str], want: &str, failures: &mut Vec<String>| {
        let before = tree_state(home.path());
        let out = home.sandboxctl(args).run();
        let one_line = out.stderr.lines().count() == 1 && out.stderr.starts_with("sandboxctl: ");
        if out.code != Some(1) || !one_line || !out.stderr.contains(want) {
            failures.push(format!("{args:?}: {:?} {}", out.code, out.stderr));
        } else if tree_state(home.path()) != before {
            failures.push(format!("{args:?}: the home changed"));
        }
    };
    for (file, text, args, want) in &cases {
        let good = std::fs::read(file).expect("read state file");
        std::fs::write(file, text).expect("corrupt");
        run_case(args, want, &mut failures);
        std::fs::write(file, good).expect("restore");
    }
    // The unit directory is a file: nothing can be written there.
    std::fs::rename(&unit_dir, home.path().join("units-aside")).expect("move aside");
    std::fs::write(&unit_dir, "").expect("a file in its place");
    run_case(
        &["enable", "acme", "--agent", "codex"],
        "systemd",
        &mut failures,
    );
    println!(
        "corrupted state: {} tried, {} refused cleanly",
        cases.len() + 1,
        cases.len() + 1 - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A reader that goes away (`sandboxctl status | head -1`) ends a command as if it had
/// read everything: no panic, no error, exit status the command's own (0 when it
/// succeeded), and what the command changes is changed all the same. Each command that
/// prints to stdout runs in one home with a pipe whose reader is gone before it starts,
/// and in another with its output read; stderr, exit status and the files written must
/// be the same, and the read one must print on stdout.
///
/// Not run here: `attach`, `run` and `exec` (what they show is the sandbox's, through
/// podman, on a terminal for attach) and `worktree rm` (a running sandbox): the system
/// tests run them on real podman and systemd. `proxy` and `notify` are daemons that
/// print nothing on stdout; `secret list` and `image build` print what podman lists and
/// inspects, and the fake podman here has no secret and no image. `logs` reads journald where it runs, so it is run here only on a
/// host without it.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
        .to_string();
    let cases = |home: &support::sandbox::Home| -> Vec<Vec<String>> {
        let project = s(&home.mkdir("projects/acme"));
        let man = s(&home.path().join("man"));
        home.fake
            .add_unit(&format!("sandboxctl-port-acme-{port}.socket"));
        let mut cases: Vec<Vec<&str>> = vec![
            vec!["--help"],
            vec!["--version"],
            vec!["help", "status"],
            vec!["completions", "bash"],
            vec!["completions", "zsh"],
            vec!["completions", "fish"],
            vec!["man", &man],
            vec!["list"],
            vec!["enable", "acme", "--agent", "shell", &project],
            vec!["render", "acme"],
            vec!["status"],
            vec!["status", "acme"],
            vec!["status", "acme", "--json"],
            vec!["list"],
            vec!["list", "--json"],
            vec!["policy", "acme"],
            vec!["allow", "acme", "example.org"],
            vec!["deny", "acme", "example.org"],
            vec!["secret", "set", "acme", "GH_TOKEN"],
            vec!["secret", "rm", "acme", "GH_TOKEN"],
            vec!["start", "acme"],
            vec!["restart", "acme"],
            vec!["sessions", "acme"],
            vec!["port", "acme"],
            vec!["port", "acme", "3000", "--host-port", &port],
            vec!["port", "acme", "3000", "--rm"],
            vec!["update", "--dry-run"],
            vec!["update"],
            vec![
                "export", "acme", "--to", "kube", "--uid", "1000", "--gid", "1000",
            ],
            vec!["doctor"],
            vec!["doctor", "--json"],
            vec!["stop", "acme"],
        ];
        if !Path::new("/run/systemd/journal/socket").exists() {
            cases.push(vec!["logs", "acme"]);
        }
        cases.push(vec!["disable", "acme"]);
        cases
            .into_iter()
            .map(|c| c.into_iter().map(str::to_owned).collect())
            .collect()
    };
    let closed_home = support::sandbox::Home::new();
    let read_home = support::sandbox::Home::new();
    let files = |home: &support::sandbox::Home| -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![home.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(home.path()).expect("prefix").to_owned());
            }
        }
        out.retain(|p| !p.starts_with("fake-bin") && !p.starts_with(".cache"));
        out.sort();
        out
    };
    for (c, r) in cases(&closed_home).iter().zip(cases(&read_home)) {
        let closed = closed_home
            .sandboxctl(c)
            .stdin_bytes(b"token\n")
            .stdout_closed()
            .run();
        let read = read_home.sandboxctl(&r).stdin_bytes(b"token\n").run();
        assert!(!read.stdout.is_empty(), "prints nothing on stdout:\n{read}");
        // Doctor's status is its checks' verdict on this host: compared, not fixed.
        if c[0] != "doctor" {
            assert_eq!(read.code, Some(0), "{read}");
        }
        assert_eq!(closed.code, read.code, "{closed}");
        let home_of =
            |stderr: &str, home: &support::sandbox::Home| stderr.replace(&s(home.path()), "HOME");
        assert_eq!(
            home_of(&closed.stderr, &closed_home),
            home_of(&read.stderr, &read_home),
            "{closed}"
        );
        assert_eq!(files(&closed_home), files(&read_home), "after {c:?}");
    }
}

/// A build without the `test-hooks` feature (release, the package; `cargo test` here)
/// ignores the test-only switches: `SANDBOXCTL_TEST_KILL_AT_STEP=0` would kill `enable`
/// at its first checkpoint, and here `enable` and `disable` run through.
#[cfg(not(feature = "test-hooks"))]
#[test]
fn a_build_without_test_hooks_ignores_the_kill_switch() {
    let home = support::sandbox::Home::new();
    let project = home.mkdir("projects/acme");
    for args in [
        vec!["enable", "acme", "--agent", "shell"],
        vec!["disable", "acme"],
    ] {
        let mut cmd = home.sandboxctl(&args);
        if args[0] == "enable" {
            cmd = cmd.arg(&project);
        }
        cmd.env("SANDBOXCTL_TEST_KILL_AT_STEP", "0").run().success();
    }
}

/// The agent leaves a FIFO where the client's Claude state file is: `enable` (which
/// holds the change lock) must not block on it, and says what is wrong. A symbolic link
/// there, to a host secret, is refused too: it is never read (nor copied back by an
/// undo into the client's directory, where the agent would read it).
#[test]
fn enable_reads_the_agents_claude_files_bounded() {
    let home = support::sandbox::Home::new();
    let project = home.mkdir("projects/acme");
    let enable = || {
        home.sandboxctl(["enable", "acme", "--agent", "claude"])
            .arg(&project)
    };
    enable().run().success();
    let state = home.client_dir("acme").join("claude/.claude.json");
    std::fs::remove_file(&state).expect("remove the state file");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &state,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let (tx, rx) = std::sync::mpsc::channel();
    let cmd = enable();
    std::thread::spawn(move || tx.send(cmd.run()));
    let Ok(out) = rx.recv_timeout(std::time::Duration::from_secs(30)) else {
        // Let the blocked open go, so the process ends.
        let _ = std::fs::OpenOptions::new().write(true).open(&state);
        panic!("enable blocks on a FIFO in the client's Claude directory");
    };
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(".claude.json") && out.stderr.contains("not a regular file"),
        "{}",
        out.stderr
    );

    std::fs::remove_file(&state).expect("remove the FIFO");
    let secret = home.path().join("host-secret");
    std::fs::write(&secret, "TOPSECRET-OF-THE-HOST").expect("write");
    std::os::unix::fs::symlink(&secret, &state).expect("symlink");
    let out = enable().run();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    for entry in std::fs::read_dir(state.parent().expect("dir")).expect("list") {
        let path = entry.expect("entry").path();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !text.contains("TOPSECRET"),
                "{} holds the secret",
                path.display()
            );
        }
    }
}
