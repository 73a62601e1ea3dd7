//! The binary's error paths: every mistake a user can make gets a clear one-line
//! message, a non-zero exit, and leaves no file behind.

use std::os::unix::fs::PermissionsExt;
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

/// The service the real Quadlet generator makes of `unit`.
fn generated_service(unit: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("agent-acme.container"), unit).expect("write");
    let out = Command::new(quadlet_path::quadlet())
        .args(["-dryrun", "-user"])
        .env("QUADLET_UNIT_DIRS", dir.path())
        .output()
        .expect("run the generator");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
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
        self.command(args).output().expect("run sandboxctl")
    }

    /// `run` with a fake `podman` (and `journalctl`) in front of `PATH`: shell scripts
    /// given by name and body.
    fn run_with_fakes(&self, args: &[&str], fakes: &[(&str, &str)]) -> Output {
        let bin = self.dir.path().join("fake-bin");
        std::fs::create_dir_all(&bin).expect("fake-bin");
        for (name, body) in fakes {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write fake");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod fake");
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        self.command(args)
            .env("PATH", path)
            .env("SANDBOXCTL_PODMAN", bin.join("podman"))
            .output()
            .expect("run sandboxctl")
    }

    /// Settings for a client written by hand, as `enable` would have left them.
    fn client_settings(&self, client: &str, toml: &str) -> PathBuf {
        let cfg = self
            .home()
            .join(".local/share/agent-sandbox/clients")
            .join(client)
            .join("config");
        std::fs::create_dir_all(&cfg).expect("mkdir");
        std::fs::write(cfg.join("sandbox.toml"), toml).expect("settings");
        cfg
    }

    /// A podman that knows its version and succeeds at everything else.
    fn fake_podman(&self) -> PathBuf {
        let path = self.dir.path().join("fake-podman");
        if !path.exists() {
            std::fs::write(
                &path,
                "#!/bin/sh\n[ \"$1\" = --version ] && echo 'podman version 5.4.2'\nexit 0\n",
            )
            .expect("write fake podman");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod fake podman");
        }
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandboxctl"));
        cmd.args(args)
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
            .env("SANDBOXCTL_QUADLET", quadlet_or_true());
        cmd
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
            .env("SANDBOXCTL_QUADLET", quadlet_path::quadlet())
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
    std::os::unix::fs::symlink(quadlet_path::quadlet(), &generator).expect("symlink");
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
