//! The binary's error paths: every mistake a user can make gets a clear one-line
//! message, a non-zero exit, and leaves no file behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/quadlet.rs"]
mod quadlet_path;

/// Feeds a unit `render` printed to the real Quadlet generator, which must accept it.
fn assert_generator_accepts(unit: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("agent-acme.container"), unit).expect("write");
    let out = Command::new(quadlet_path::quadlet())
        .args(["-dryrun", "-user"])
        .env("QUADLET_UNIT_DIRS", dir.path())
        .output()
        .expect("run the generator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("---agent-acme.service---"),
        "the generator rejected the rendered unit: {}\n{unit}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch home for one test, with the environment set on the child only.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(dir.path().join("project")).expect("project");
        Self { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            // Nothing listens here: a command that got past validation would fail
            // to reach systemd, still before writing anything.
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}/no-bus", self.dir.path().display()),
            )
            .env("SANDBOXCTL_QUADLET", quadlet_or_true())
            .output()
            .expect("run sandboxctl")
    }

    /// Every file under the home directory, for "nothing was written" checks.
    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                }
                out.push(p);
            }
        }
        let mut out = Vec::new();
        walk(&self.home(), &mut out);
        // The host-detection cache is not client state.
        out.retain(|p| !p.starts_with(self.home().join(".cache")));
        out
    }
}

/// Validation must not depend on the generator; any executable will do here.
fn quadlet_or_true() -> String {
    std::env::var("SANDBOXCTL_QUADLET").unwrap_or_else(|_| "/bin/true".into())
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
        vec!["run", "--client", "ghost", "--resume"],
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
            "Volume=%t/agent-sandbox/proxy/acme:/run/sandbox-proxy:rw,Z",
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

#[test]
fn firewall_flag_selects_the_allowlist() {
    let sb = Sandbox::new();
    // Without a user manager the command stops before writing anything.
    let out = sb.run(&["run", "--client", "acme", "--firewall"]);
    assert!(!out.status.success());
    assert!(sb.files().is_empty(), "{:?}", sb.files());
    let out = sb.run(&["run", "--client", "acme", "--firewall", "--no-network"]);
    assert_eq!(out.status.code(), Some(2), "the two flags conflict");
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
    let sb = Sandbox::new();
    let out = sb.run(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "enable", "disable", "start", "stop", "restart", "status", "list", "attach", "exec",
        "logs", "render", "run", "image",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from help:\n{text}");
    }
}
