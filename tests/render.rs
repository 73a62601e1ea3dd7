//! Rendered units: snapshots for each agent, network mode and mount kind, and every
//! rendered unit fed to the real Quadlet generator (`-dryrun`), which must accept it and
//! produce the expected `podman run` arguments. The generator is the judge.

use std::fmt::Write as _;
use std::process::Command;

use sandboxctl::host::{Cgroups, HostProfile, Version, fixed_profile};
use sandboxctl::render::{Sandbox, render, volume_lines};
use sandboxctl::sandbox::client::ClientName;
use sandboxctl::sandbox::settings::{Agent, Autonomy, ExtraMount, NetworkMode, Settings};

use crate::support::fixture::{layout, this_host};

/// A typical distribution with systemd, cgroup v2 and a matching Quadlet.
fn modern_host() -> HostProfile {
    fixed_profile(
        Version::new(5, 4, 2),
        Version::new(5, 4, 2),
        Cgroups::V2,
        true,
    )
}

/// The oldest Quadlet (4.4): keys it lacks fall back to `PodmanArgs`.
fn oldest_host() -> HostProfile {
    fixed_profile(
        Version::new(4, 4, 0),
        Version::new(4, 4, 0),
        Cgroups::V2,
        true,
    )
}

fn render_for(client: &str, settings: &Settings, host: &HostProfile) -> String {
    let client = ClientName::parse(client).expect("valid name");
    render(&Sandbox {
        client: &client,
        settings,
        layout: &layout(),
        host,
    })
    .expect("renders")
}

/// Runs the generator on one unit; returns the generated service text.
fn generate(client: &str, unit: &str) -> String {
    crate::support::quadlet::generate(&format!("agent-{client}.container"), unit)
        .unwrap_or_else(|e| panic!("Quadlet rejected the unit:\n{e}\n--- unit ---\n{unit}"))
}

/// Splits an `ExecStart=` command line the way systemd does: `%%` → `%`, `$$` → `$`,
/// double-quoted words with C escapes.
fn exec_start_argv(service: &str) -> Vec<String> {
    let line = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart line");
    let line = line.replace("%%", "\u{1}").replace("$$", "\u{2}");
    assert!(
        !line.contains('%') || line.contains("%t/%N.cid"),
        "unescaped specifier in {line}"
    );
    let mut argv = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' => {
                let n = chars.next().expect("escape");
                cur.push(match n {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    argv.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        argv.push(cur);
    }
    argv.into_iter()
        .map(|a| a.replace('\u{1}', "%").replace('\u{2}', "$"))
        .collect()
}

fn has_pair(argv: &[String], flag: &str, value: &str) -> bool {
    argv.windows(2).any(|w| w[0] == flag && w[1] == value)
        || argv.iter().any(|a| *a == format!("{flag}={value}"))
}

fn settings(agent: Agent, network: NetworkMode) -> Settings {
    Settings {
        agent,
        network,
        projects: vec!["/home/user/projects/acme-web".into()],
        ..Settings::default()
    }
}

#[test]
fn snapshots_and_generator_for_each_agent_and_network() {
    for agent in [Agent::Claude, Agent::Codex, Agent::Shell] {
        for network in [NetworkMode::Open, NetworkMode::None] {
            let s = settings(agent, network);
            let unit = render_for("acme", &s, &this_host());
            insta::assert_snapshot!(format!("{agent}_{network}"), unit);
            let argv = exec_start_argv(&generate("acme", &unit));
            assert!(
                has_pair(&argv, "--env", &format!("SANDBOX_AGENT={agent}")),
                "{argv:?}"
            );
            assert!(has_pair(&argv, "--name", "agent-acme"), "{argv:?}");
            assert!(has_pair(&argv, "--cap-drop", "all"), "{argv:?}");
            assert!(has_pair(&argv, "--userns", "keep-id"), "{argv:?}");
            assert!(argv.contains(&"--read-only".to_owned()), "{argv:?}");
            assert!(argv.contains(&"--init".to_owned()), "{argv:?}");
            assert!(
                argv.contains(&"--security-opt=no-new-privileges".to_owned()),
                "{argv:?}"
            );
            assert!(
                has_pair(&argv, "--label", "io.sandboxctl.client=acme"),
                "{argv:?}"
            );
            assert!(
                has_pair(
                    &argv,
                    "-v",
                    "/home/user/projects/acme-web:/home/user/projects/acme-web:rw,z"
                ),
                "{argv:?}"
            );
            assert!(
                has_pair(&argv, "--workdir", "/home/user/projects/acme-web"),
                "{argv:?}"
            );
            assert_eq!(
                network == NetworkMode::None,
                has_pair(&argv, "--network", "none"),
                "{argv:?}"
            );
            assert_eq!(
                argv.last().map(String::as_str),
                Some("localhost/agent-sandbox:latest")
            );
        }
    }
}

#[test]
fn allowlist_has_no_network_but_the_proxy_socket() {
    let s = settings(Agent::Claude, NetworkMode::Allowlist);
    let unit = render_for("acme", &s, &this_host());
    insta::assert_snapshot!("claude_allowlist", unit);
    let service = generate("acme", &unit);
    assert!(
        service.contains("Wants=sandboxctl-proxy@acme.socket"),
        "{service}"
    );
    assert!(
        service.contains("After=sandboxctl-proxy@acme.socket"),
        "{service}"
    );
    let argv = exec_start_argv(&service);
    assert!(has_pair(&argv, "--network", "none"), "{argv:?}");
    assert!(
        has_pair(
            &argv,
            "-v",
            "%t/agent-sandbox/proxy/acme:/run/sandbox-proxy:ro,Z"
        ),
        "{argv:?}"
    );
    for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"] {
        assert!(
            has_pair(&argv, "--env", &format!("{var}=http://127.0.0.1:3128")),
            "{argv:?}"
        );
    }
    assert!(
        has_pair(&argv, "--env", "NO_PROXY=localhost,127.0.0.1"),
        "{argv:?}"
    );
    assert!(
        has_pair(
            &argv,
            "--env",
            "SANDBOX_PROXY_SOCKET=/run/sandbox-proxy/proxy.sock"
        ),
        "{argv:?}"
    );
}

#[test]
fn secrets_are_mounted_never_in_the_environment() {
    let s = Settings {
        agent: Agent::Codex,
        secrets: vec!["OPENAI_API_KEY".into(), "GH_TOKEN".into()],
        ..settings(Agent::Codex, NetworkMode::Open)
    };
    let unit = render_for("acme", &s, &this_host());
    let argv = exec_start_argv(&generate("acme", &unit));
    assert!(
        has_pair(
            &argv,
            "--secret",
            "agent-acme.OPENAI_API_KEY,type=mount,target=OPENAI_API_KEY"
        ),
        "{argv:?}"
    );
    assert!(
        has_pair(
            &argv,
            "--secret",
            "agent-acme.GH_TOKEN,type=mount,target=GH_TOKEN"
        ),
        "{argv:?}"
    );
    let old = render_for("acme", &s, &oldest_host());
    assert!(
        old.contains("PodmanArgs=\"--secret=agent-acme.GH_TOKEN,type=mount,target=GH_TOKEN\""),
        "{old}"
    );
    generate("acme", &old);
}

#[test]
fn extra_mounts_and_shared_claude_config() {
    let s = Settings {
        agent: Agent::Claude,
        projects: vec!["/home/user/p1".into(), "/home/user/p2".into()],
        mounts: vec![
            ExtraMount {
                host: "/home/user/.gitconfig".into(),
                container: "/home/agent/.gitconfig".into(),
                writable: false,
            },
            ExtraMount {
                host: "/home/user/cache".into(),
                container: "/cache".into(),
                writable: true,
            },
        ],
        podman_args: vec!["--pids-limit=512".into()],
        claude_config: Some("/home/user/.claude".into()),
        ..Settings::default()
    };
    let unit = render_for("acme", &s, &this_host());
    insta::assert_snapshot!("mounts", unit);
    let argv = exec_start_argv(&generate("acme", &unit));
    assert!(
        has_pair(
            &argv,
            "-v",
            "/home/user/.gitconfig:/home/agent/.gitconfig:ro"
        ),
        "{argv:?}"
    );
    assert!(
        has_pair(&argv, "-v", "/home/user/cache:/cache:rw"),
        "{argv:?}"
    );
    assert!(
        has_pair(&argv, "-v", "/home/user/p2:/home/user/p2:rw,z"),
        "{argv:?}"
    );
    // A shared Claude config is never mounted (the agent could plant hooks there that
    // Claude Code on the host runs): the client's own dir is, and only the login is
    // copied by the CLI.
    assert!(
        !argv.iter().any(|a| a.contains("/home/user/.claude")),
        "{argv:?}"
    );
    assert!(
        has_pair(
            &argv,
            "-v",
            "/home/user/.local/share/agent-sandbox/clients/acme/claude:/home/agent/.claude:rw,Z"
        ),
        "{argv:?}"
    );
    assert!(argv.contains(&"--pids-limit=512".to_owned()), "{argv:?}");
    assert!(
        has_pair(&argv, "--env", "CLAUDE_CONFIG_DIR=/home/agent/.claude"),
        "{argv:?}"
    );
    // The client's persistent home, with its own dirs over it and a capped tmpfs for
    // caches; no tmpfs home any more.
    assert!(
        has_pair(
            &argv,
            "-v",
            "/home/user/.local/share/agent-sandbox/clients/acme/home:/home/agent:rw,Z"
        ),
        "{argv:?}"
    );
    assert!(
        has_pair(
            &argv,
            "--tmpfs",
            "/home/agent/.cache:rw,exec,nosuid,nodev,size=1g,mode=1777"
        ),
        "{argv:?}"
    );
    assert!(
        !argv.iter().any(|a| a.starts_with("/home/agent:")),
        "{argv:?}"
    );
}

/// A project that is a git work tree gets its git dir pinned over the project mount:
/// the dir itself (so it cannot be renamed away), its config, hooks and commondir
/// read-only; linked worktrees' commondir too. `--git-writable-config` drops the pins.
#[test]
fn git_dirs_of_projects_are_pinned_read_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = std::fs::canonicalize(tmp.path())
        .expect("canon")
        .join("proj");
    let g = project.join(".git");
    std::fs::create_dir_all(g.join("hooks")).expect("mkdir");
    std::fs::create_dir_all(g.join("worktrees/w1")).expect("mkdir");
    std::fs::write(g.join("worktrees/w1/commondir"), "../..\n").expect("write");
    std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").expect("write");
    std::fs::write(g.join("config"), "[core]\n").expect("write");
    let mut s = Settings {
        projects: vec![project.clone()],
        ..Settings::default()
    };
    let unit = render_for("acme", &s, &this_host());
    let argv = exec_start_argv(&generate("acme", &unit));
    let p = project.display().to_string();
    let gd = g.display().to_string();
    assert!(has_pair(&argv, "-v", &format!("{p}:{p}:rw,z")), "{argv:?}");
    for (path, mode) in [
        (gd.clone(), "rw"),
        (format!("{gd}/config"), "ro"),
        (format!("{gd}/hooks"), "ro"),
        (format!("{gd}/commondir"), "ro"),
        (format!("{gd}/worktrees/w1"), "rw"),
        (format!("{gd}/worktrees/w1/commondir"), "ro"),
    ] {
        assert!(
            has_pair(&argv, "-v", &format!("{path}:{path}:{mode}")),
            "{path} not mounted {mode}: {argv:?}"
        );
    }
    // Rendering reads only: the commondir that `enable` will create is not there yet.
    assert!(!g.join("commondir").exists());
    s.git_writable_config = true;
    let unit = render_for("acme", &s, &this_host());
    let argv = exec_start_argv(&generate("acme", &unit));
    assert!(
        !argv.iter().any(|a| a.contains("/.git")),
        "--git-writable-config mounts no git dir: {argv:?}"
    );
}

#[test]
fn host_adaptations_follow_the_host() {
    let s = settings(Agent::Shell, NetworkMode::Open);
    let here = render_for("acme", &s, &this_host());
    let modern = render_for("acme", &s, &modern_host());
    insta::assert_snapshot!("modern_host", modern);
    for line in [
        "PodmanArgs=\"--cgroups=disabled\"",
        "ExecStartPre=-/bin/rm -f %t/%N.cid",
        "DefaultDependencies=false",
        "StandardOutput=append:%t/agent-acme.log",
    ] {
        assert!(here.contains(line), "this host needs {line}:\n{here}");
        assert!(
            !modern.contains(line),
            "a modern host does not need {line}:\n{modern}"
        );
    }
    assert!(
        here.contains("# Detected: podman 4.3.1; Quadlet 5.4.2"),
        "{here}"
    );
    generate("acme", &modern);
}

/// The lines of one `[section]` of a unit (comments included), without the header.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("[{name}]");
    text.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.is_empty())
        .collect()
}

/// A sandbox with no network of its own (allowlist, none) does not wait for the host's
/// network: from Quadlet 5.3 it opts out of `podman-user-wait-network-online.service`
/// (90 s on every start where nothing brings `network-online.target` up), an `open` one
/// keeps the wait on a booted host. Older Quadlets add no wait a user unit notices and
/// reject the key, so they get none. The real generator checks each unit it can read
/// (it is 5.4.2 here: a unit for an older Quadlet gets 5.4.2's wait, as it would there).
#[test]
fn network_online_dependencies_per_mode_and_quadlet_version() {
    const WAIT: &str = "podman-user-wait-network-online.service";
    let mut table = String::new();
    for quadlet in [
        Version::new(4, 4, 0),
        Version::new(5, 2, 0),
        Version::new(5, 3, 0),
        Version::new(5, 4, 2),
    ] {
        let host = fixed_profile(Version::new(5, 4, 2), quadlet, Cgroups::V2, true);
        for network in [NetworkMode::Open, NetworkMode::None, NetworkMode::Allowlist] {
            let unit = render_for("acme", &settings(Agent::Shell, network), &host);
            let opted_out = quadlet >= Version::new(5, 3, 0) && network != NetworkMode::Open;
            assert_eq!(
                unit.contains("\nDefaultDependencies=false\n"),
                opted_out,
                "Quadlet {quadlet}, network {network}:\n{unit}"
            );
            let generated = generate("acme", &unit);
            let service = generated
                .split("---agent-acme.service---")
                .nth(1)
                .expect("the service");
            let service_unit = section(service, "Unit");
            assert_eq!(
                !service_unit.contains(&format!("After={WAIT}").as_str()),
                opted_out,
                "Quadlet {quadlet}, network {network}: {service_unit:#?}"
            );
            // Everything else the unit is ordered after stays.
            assert!(
                service_unit.contains(&"RequiresMountsFor=%t/containers"),
                "{service_unit:#?}"
            );
            if network == NetworkMode::Allowlist {
                assert!(
                    service_unit.contains(&"After=sandboxctl-proxy@acme.socket"),
                    "{service_unit:#?}"
                );
            }
            writeln!(table, "## Quadlet {quadlet}, network {network}\n[Unit]").expect("write");
            for l in section(&unit, "Unit") {
                writeln!(table, "{l}").expect("write");
            }
            let quadlet_section = section(&unit, "Quadlet");
            if !quadlet_section.is_empty() {
                table.push_str("[Quadlet]\n");
                for l in quadlet_section {
                    writeln!(table, "{l}").expect("write");
                }
            }
            table.push_str("-> generated by Quadlet 5.4.2:\n");
            for l in service_unit
                .iter()
                .filter(|l| l.starts_with("After=") || l.starts_with("Wants="))
            {
                writeln!(table, "{l}").expect("write");
            }
            table.push('\n');
        }
    }
    insta::assert_snapshot!("network_online_dependencies", table);
}

#[test]
fn oldest_quadlet_gets_podman_args_for_missing_keys() {
    let s = settings(Agent::Claude, NetworkMode::None);
    let unit = render_for("acme", &s, &oldest_host());
    insta::assert_snapshot!("oldest_quadlet", unit);
    for key in ["UserNS=", "Tmpfs=", "HostName=", "WorkingDir="] {
        assert!(
            !unit.contains(&format!("\n{key}")),
            "{key} is newer than Quadlet 4.4:\n{unit}"
        );
    }
    // The generator here is newer; it must still accept the fallback form and pass the
    // same options to podman.
    let argv = exec_start_argv(&generate("acme", &unit));
    assert!(argv.contains(&"--userns=keep-id".to_owned()), "{argv:?}");
    assert!(
        argv.contains(&"--workdir=/home/user/projects/acme-web".to_owned()),
        "{argv:?}"
    );
    assert!(argv.contains(&"--hostname=acme".to_owned()), "{argv:?}");
}

/// A git name with every character a unit or a shell treats specially.
const GIT_NAME: &str = "Zoë \"q\" 100% $HOME 'a' b\\c #x ;y";

/// Values that are legal but hostile: they must reach podman exactly as given and never
/// become a key or a specifier.
#[test]
fn hostile_values_reach_podman_literally() {
    let weird_dir = "/home/user/100% $HOME \"q\" 'a' b\\c #x ;y";
    let s = Settings {
        agent: Agent::Shell,
        projects: vec!["/home/user/with space/%h and $USER".into()],
        mounts: vec![ExtraMount {
            host: "/home/user/a b%c$d".into(),
            container: "/mnt/x y".into(),
            writable: false,
        }],
        podman_args: vec![
            format!("--env=WEIRD={weird_dir}"),
            "--env=INJECT=x\\".replace('\\', "\\\\"),
            "--label=k=%n%%$${X}".into(),
        ],
        git_name: Some(GIT_NAME.into()),
        git_email: Some("a+%h$x@example.com".into()),
        git_credential_hosts: Some(vec![
            "https://git.example:8443".into(),
            "http://127.0.0.1:8080".into(),
        ]),
        ..Settings::default()
    };
    let unit = render_for("acme", &s, &this_host());
    let argv = exec_start_argv(&generate("acme", &unit));
    let project = "/home/user/with space/%h and $USER";
    assert!(
        has_pair(&argv, "-v", &format!("{project}:{project}:rw,z")),
        "{argv:?}"
    );
    assert!(has_pair(&argv, "--workdir", project), "{argv:?}");
    assert!(
        has_pair(&argv, "-v", "/home/user/a b%c$d:/mnt/x y:ro"),
        "{argv:?}"
    );
    assert!(
        argv.contains(&format!("--env=WEIRD={weird_dir}")),
        "{argv:?}"
    );
    assert!(argv.contains(&"--env=INJECT=x\\\\".to_owned()), "{argv:?}");
    assert!(argv.contains(&"--label=k=%n%%$${X}".to_owned()), "{argv:?}");
    for (name, value) in [
        ("GIT_CONFIG_COUNT", "2"),
        ("GIT_CONFIG_KEY_0", "user.name"),
        ("GIT_CONFIG_VALUE_0", GIT_NAME),
        ("GIT_CONFIG_KEY_1", "user.email"),
        ("GIT_CONFIG_VALUE_1", "a+%h$x@example.com"),
        (
            "SANDBOX_GIT_CREDENTIAL_HOSTS",
            "https://git.example:8443 http://127.0.0.1:8080",
        ),
    ] {
        assert!(
            has_pair(&argv, "--env", &format!("{name}={value}")),
            "{name}: {argv:?}"
        );
    }
    // No line of the unit starts anything but a key, a comment, a section or nothing.
    for line in unit.lines() {
        assert!(
            line.is_empty() || line.starts_with('#') || line.starts_with('[') || line.contains('='),
            "stray line {line:?}"
        );
    }
}

#[test]
fn unsafe_values_are_refused_before_rendering() {
    let client = ClientName::parse("acme").expect("name");
    let bad: Vec<Settings> = vec![
        Settings {
            projects: vec!["/p\nExecStartPre=/bin/evil".into()],
            ..Settings::default()
        },
        Settings {
            projects: vec!["/p:/etc".into()],
            ..Settings::default()
        },
        Settings {
            projects: vec!["/p\\".into()],
            ..Settings::default()
        },
        Settings {
            podman_args: vec!["--x\n[Service]".into()],
            ..Settings::default()
        },
        Settings {
            image: "img\nExec=/bin/sh".into(),
            ..Settings::default()
        },
        Settings {
            image: "img with space".into(),
            ..Settings::default()
        },
        Settings {
            image: "--privileged".into(),
            ..Settings::default()
        },
        Settings {
            mounts: vec![ExtraMount {
                host: "/a".into(),
                container: "/b:rw".into(),
                writable: false,
            }],
            ..Settings::default()
        },
    ];
    for s in bad {
        let err = render(&Sandbox {
            client: &client,
            settings: &s,
            layout: &layout(),
            host: &this_host(),
        })
        .expect_err(&format!("{s:?} must be refused"));
        assert!(
            !format!("{err:#}").contains('\n'),
            "one-line error: {err:#}"
        );
    }
}

/// This host with Quadlet turned off (`SANDBOXCTL_QUADLET=none`): the plain service.
fn plain_host() -> HostProfile {
    let mut h = this_host();
    h.quadlet = None;
    h.quadlet_disabled = true;
    h
}

/// The options of a `podman run` command line, one entry per option with its value
/// (`--flag value` and `--flag=value` alike), sorted: two command lines with the same
/// options in another order or spelling compare equal.
fn run_options(argv: &[String]) -> Vec<String> {
    const VALUE_FLAGS: [&str; 11] = [
        "--name",
        "--hostname",
        "--workdir",
        "--tmpfs",
        "--network",
        "--cap-drop",
        "--userns",
        "-v",
        "--env",
        "--label",
        "--secret",
    ];
    let run = argv.iter().position(|a| a == "run").expect("podman run");
    let mut out = Vec::new();
    let mut words = argv[run + 1..].iter();
    while let Some(w) = words.next() {
        if VALUE_FLAGS.contains(&w.as_str()) {
            let v = words.next().expect("a flag's value");
            out.push(format!("{w}={v}"));
        } else {
            out.push(w.clone());
        }
    }
    out.sort();
    out
}

/// The plain service's `ExecStart=` as systemd reads it: continuation lines joined
/// (a trailing `\` becomes a space), then the same splitting as the generated service's.
fn plain_argv(service: &str) -> Vec<String> {
    let mut line = String::new();
    let mut lines = service.lines().skip_while(|l| !l.starts_with("ExecStart="));
    for l in lines.by_ref() {
        if let Some(part) = l.strip_suffix('\\') {
            line.push_str(part);
            line.push(' ');
        } else {
            line.push_str(l);
            break;
        }
    }
    exec_start_argv(&line)
}

/// `systemd-analyze verify` on a plain service: it must load with no complaint.
fn systemd_verify(client: &str, service: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("agent-{client}.service"));
    std::fs::write(&path, service).expect("write service");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze (systemd is needed for these tests)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&format!("agent-{client}.service")))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify rejected the service:\n{stderr}\n--- service ---\n{service}"
    );
}

#[test]
fn plain_service_snapshot_and_systemd_verify() {
    let s = settings(Agent::Claude, NetworkMode::Allowlist);
    let service = render_for("acme", &s, &plain_host());
    insta::assert_snapshot!("plain_claude_allowlist", service);
    systemd_verify("acme", &service);
    for line in [
        "Type=notify",
        "NotifyAccess=all",
        "KillMode=mixed",
        "Delegate=yes",
        "ExecStop=\"/usr/bin/podman\" rm -v -f -i --cidfile=%t/%N.cid",
        "ExecStopPost=-\"/usr/bin/podman\" rm -v -f -i --cidfile=%t/%N.cid",
        "Wants=sandboxctl-proxy@acme.socket",
        "ExecStartPre=-/bin/rm -f %t/%N.cid",
        "StandardOutput=append:%t/agent-acme.log",
        "WantedBy=default.target",
        "# A plain service that runs podman the way a Quadlet unit would (SANDBOXCTL_QUADLET=none).",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "missing {line}:\n{service}"
        );
    }
    let argv = plain_argv(&service);
    for word in [
        "--cidfile=%t/%N.cid",
        "--replace",
        "--rm",
        "--sdnotify=conmon",
        "-d",
    ] {
        assert!(argv.contains(&word.to_owned()), "{word}: {argv:?}");
    }
    let modern = {
        let mut h = modern_host();
        h.quadlet = None;
        h.quadlet_disabled = true;
        h
    };
    let service = render_for("acme", &settings(Agent::Shell, NetworkMode::Open), &modern);
    insta::assert_snapshot!("plain_modern_host", service);
    systemd_verify("acme", &service);
}

/// What an existing unit mounts reads the same from either target.
#[test]
fn volume_lines_read_the_same_from_both_targets() {
    let s = Settings {
        projects: vec!["/home/user/with space/100%".into()],
        mounts: vec![ExtraMount {
            host: "/home/user/a".into(),
            container: "/mnt/a".into(),
            writable: false,
        }],
        ..settings(Agent::Shell, NetworkMode::Allowlist)
    };
    let quadlet = volume_lines(&render_for("acme", &s, &this_host()));
    let plain = volume_lines(&render_for("acme", &s, &plain_host()));
    assert_eq!(quadlet, plain);
    assert!(
        quadlet.contains(
            &"Volume=/home/user/with space/100%%:/home/user/with space/100%%:rw,z".to_owned()
        ),
        "{quadlet:?}"
    );
    // Projects, the home, the three agent dirs, the proxy and event sockets, the
    // extra mount.
    assert_eq!(quadlet.len(), 8, "{quadlet:?}");
}

/// The two targets cannot drift: for the same settings, the plain service's `podman
/// run` has exactly the options of the service the real Quadlet generator makes from
/// the `.container` unit.
#[test]
fn plain_service_runs_the_same_podman_options_as_quadlet() {
    let mut cases: Vec<Settings> = Vec::new();
    for agent in [Agent::Claude, Agent::Codex, Agent::Shell] {
        for network in [NetworkMode::Open, NetworkMode::None, NetworkMode::Allowlist] {
            cases.push(settings(agent, network));
        }
    }
    cases.push(Settings {
        agent: Agent::Codex,
        secrets: vec!["OPENAI_API_KEY".into(), "GH_TOKEN".into()],
        ..settings(Agent::Codex, NetworkMode::Open)
    });
    cases.push(Settings {
        agent: Agent::Shell,
        projects: vec!["/home/user/with space/%h and $USER".into()],
        mounts: vec![ExtraMount {
            host: "/home/user/a b%c$d".into(),
            container: "/mnt/x y".into(),
            writable: false,
        }],
        podman_args: vec![
            "--env=WEIRD=/home/user/100% $HOME \"q\" 'a' b\\c".into(),
            "--pids-limit=512".into(),
        ],
        claude_config: Some("/home/user/.claude".into()),
        git_name: Some(GIT_NAME.into()),
        git_email: Some("a+%h$x@example.com".into()),
        ..Settings::default()
    });
    cases.push(Settings {
        autonomy: Autonomy::Auto,
        agent_args: hostile_agent_args(),
        ..settings(Agent::Claude, NetworkMode::Allowlist)
    });
    for (quadlet_host, plain) in [
        (this_host(), plain_host()),
        (modern_host(), {
            let mut h = modern_host();
            h.quadlet = None;
            h.quadlet_disabled = true;
            h
        }),
    ] {
        for s in &cases {
            let unit = render_for("acme", s, &quadlet_host);
            let quadlet_argv = exec_start_argv(&generate("acme", &unit));
            let service = render_for("acme", s, &plain);
            let plain_argv = plain_argv(&service);
            assert_eq!(
                run_options(&quadlet_argv),
                run_options(&plain_argv),
                "the two targets differ for {s:?}\n--- plain ---\n{service}"
            );
        }
    }
}

/// Agent arguments with spaces, quotes, `$`, `%`, a backslash, a leading `-` and an
/// empty one.
fn hostile_agent_args() -> Vec<String> {
    [
        "--append-system-prompt",
        "a b \"q\" 'sq' $HOME ${X} %h 100%",
        "-x\\y",
        "",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Autonomy and every agent argument reach `podman run` as one `--env` each, byte for
/// byte, from both targets; the unit's description names the autonomy.
#[test]
fn autonomy_and_agent_args_reach_podman_as_one_variable_each() {
    let args = hostile_agent_args();
    let s = Settings {
        autonomy: Autonomy::Auto,
        agent_args: args.clone(),
        ..settings(Agent::Codex, NetworkMode::None)
    };
    let unit = render_for("acme", &s, &this_host());
    assert!(
        unit.contains(
            "\nDescription=sandboxctl coding-agent sandbox for client acme (codex, autonomy auto)\n"
        ),
        "{unit}"
    );
    let quadlet = exec_start_argv(&generate("acme", &unit));
    let service = render_for("acme", &s, &plain_host());
    assert!(
        service.contains(
            "\nDescription=sandboxctl coding-agent sandbox for client acme (codex, autonomy auto)\n"
        ),
        "{service}"
    );
    let plain = plain_argv(&service);
    for argv in [&quadlet, &plain] {
        assert!(has_pair(argv, "--env", "SANDBOX_AUTONOMY=auto"), "{argv:?}");
        assert!(has_pair(argv, "--env", "SANDBOX_AGENT_ARGC=4"), "{argv:?}");
        for (i, a) in args.iter().enumerate() {
            assert!(
                has_pair(argv, "--env", &format!("SANDBOX_AGENT_ARG_{}={a}", i + 1)),
                "argument {} ({a:?}) not passed literally: {argv:?}",
                i + 1
            );
        }
        assert!(
            !argv.iter().any(|a| a.contains("SANDBOX_AGENT_ARG_5")),
            "{argv:?}"
        );
    }
    let ask = render_for(
        "acme",
        &settings(Agent::Claude, NetworkMode::None),
        &this_host(),
    );
    assert!(ask.contains("(claude, autonomy ask)\n"), "{ask}");
    let ask_argv = exec_start_argv(&generate("acme", &ask));
    assert!(
        has_pair(&ask_argv, "--env", "SANDBOX_AUTONOMY=ask"),
        "{ask_argv:?}"
    );
    assert!(
        has_pair(&ask_argv, "--env", "SANDBOX_AGENT_ARGC=0"),
        "{ask_argv:?}"
    );
}

/// A port forward's socket, verified by systemd with its per-connection template
/// service beside it (an `Accept=yes` socket needs it).
#[test]
fn port_forward_units_pass_systemd_verify() {
    use sandboxctl::render::ports::{PortForward, render_units};
    let client = ClientName::parse("acme").expect("name");
    let fwd = PortForward {
        host: 8080,
        container: 3000,
        persist: false,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let [socket, service] =
        render_units(&client, fwd, std::path::Path::new("/usr/bin/podman"), true).expect("render");
    let socket_path = dir.path().join(fwd.socket_unit(&client));
    std::fs::write(&socket_path, &socket).expect("write socket");
    std::fs::write(dir.path().join(fwd.service_template(&client)), &service)
        .expect("write service");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&socket_path)
        .output()
        .expect("run systemd-analyze (systemd is needed for these tests)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sandboxctl-port-acme-8080"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify rejected the units:\n{stderr}\n--- socket ---\n{socket}\n--- service ---\n{service}"
    );
}

fn limited(s: Settings) -> Settings {
    Settings {
        limits: sandboxctl::sandbox::limits::Limits {
            memory: Some("8g".parse().expect("memory")),
            cpus: Some("1.5".parse().expect("cpus")),
            pids: Some(4096),
        },
        ..s
    }
}

/// Limits become Quadlet keys where the generator has them (`PidsLimit=` from 4.7,
/// `Memory=` from 5.5) and `PodmanArgs=` otherwise; the CPU quota and the swap cap
/// have no key. The real generator (5.4.2) passes each form to podman; the plain
/// service runs the same options.
#[test]
fn limits_render_as_keys_or_podman_args_per_quadlet_version() {
    let s = limited(settings(Agent::Shell, NetworkMode::Allowlist));
    let mut table = String::new();
    for quadlet in [
        Version::new(4, 4, 0),
        Version::new(4, 7, 0),
        Version::new(5, 4, 2),
        Version::new(5, 5, 0),
    ] {
        let host = fixed_profile(Version::new(5, 4, 2), quadlet, Cgroups::V2, true);
        let unit = render_for("acme", &s, &host);
        let lines: Vec<&str> = unit
            .lines()
            .filter(|l| {
                [
                    "Memory",
                    "PidsLimit",
                    "PodmanArgs=\"--memory",
                    "PodmanArgs=\"--pids",
                    "PodmanArgs=\"--cpus",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect();
        writeln!(table, "Quadlet {quadlet}: {}", lines.join(" | ")).expect("write");
        assert_eq!(
            unit.contains("\nPidsLimit=4096\n"),
            quadlet >= Version::new(4, 7, 0),
            "{unit}"
        );
        assert_eq!(
            unit.contains("\nMemory=8g\n"),
            quadlet >= Version::new(5, 5, 0),
            "{unit}"
        );
        assert!(unit.contains("\nPodmanArgs=\"--cpus=1.5\"\n"), "{unit}");
        assert!(
            unit.contains("\nPodmanArgs=\"--memory-swap=8g\"\n"),
            "{unit}"
        );
        // The generator here is 5.4.2: it rejects `Memory=`, a key from 5.5.
        if quadlet < Version::new(5, 5, 0) {
            let argv = exec_start_argv(&generate("acme", &unit));
            assert!(has_pair(&argv, "--memory", "8g"), "{argv:?}");
            assert!(has_pair(&argv, "--memory-swap", "8g"), "{argv:?}");
            assert!(has_pair(&argv, "--pids-limit", "4096"), "{argv:?}");
            assert!(has_pair(&argv, "--cpus", "1.5"), "{argv:?}");
            assert!(!argv.contains(&"--cgroups=disabled".to_owned()), "{argv:?}");
        }
    }
    insta::assert_snapshot!("limits_per_quadlet_version", table);

    let mut plain = modern_host();
    plain.quadlet = None;
    plain.quadlet_disabled = true;
    let service = render_for("acme", &s, &plain);
    systemd_verify("acme", &service);
    let argv = plain_argv(&service);
    for (flag, value) in [
        ("--memory", "8g"),
        ("--memory-swap", "8g"),
        ("--pids-limit", "4096"),
        ("--cpus", "1.5"),
    ] {
        assert!(has_pair(&argv, flag, value), "{flag}: {argv:?}");
    }
    let unit = render_for("acme", &s, &modern_host());
    let quadlet_argv = exec_start_argv(&generate("acme", &unit));
    // Quadlet may write `--pids-limit 4096` and `--memory 8g` as two words.
    let joined = |argv: &[String]| -> Vec<String> {
        let mut out = Vec::new();
        let mut words = argv.iter();
        while let Some(w) = words.next() {
            if w == "--pids-limit" || w == "--memory" {
                out.push(format!("{w}={}", words.next().expect("value")));
            } else {
                out.push(w.clone());
            }
        }
        run_options(&out)
    };
    assert_eq!(joined(&quadlet_argv), joined(&argv), "{service}");
}

/// On a host where the limits cannot apply (this machine: cgroup v1; or v2 without
/// the controllers delegated) rendering refuses them, naming why and how to delegate;
/// a client without limits renders as before.
#[test]
fn limits_are_refused_where_the_host_cannot_enforce_them() {
    let s = limited(settings(Agent::Shell, NetworkMode::None));
    let client = ClientName::parse("acme").expect("name");
    let try_render = |host: &HostProfile| {
        render(&Sandbox {
            client: &client,
            settings: &s,
            layout: &layout(),
            host,
        })
    };
    let err = format!("{:#}", try_render(&this_host()).expect_err("cgroup v1"));
    assert!(err.contains("cgroups are v1 (hybrid)"), "{err}");
    assert!(err.contains("Delegate=cpu cpuset io memory pids"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let mut undelegated = modern_host();
    undelegated.delegated_controllers = Some(vec!["memory".into(), "pids".into()]);
    let err = format!("{:#}", try_render(&undelegated).expect_err("no cpu"));
    assert!(err.contains("the cpu controller is not delegated"), "{err}");
    render_for(
        "acme",
        &settings(Agent::Shell, NetworkMode::None),
        &this_host(),
    );
}

/// `podman auto-update` learns the policy from the unit: `local` for a locally built
/// image, `registry` for a fully qualified pulled one, none for a short name or a
/// digest; both targets pass the same label to podman.
#[test]
fn auto_update_policy_per_image() {
    for (image, policy) in [
        ("localhost/agent-sandbox:latest", Some("local")),
        ("registry.example.com/team/agent:1", Some("registry")),
        ("agent:1", None),
        ("registry.example.com/agent@sha256:0123abcd", None),
    ] {
        let s = Settings {
            image: image.into(),
            ..settings(Agent::Shell, NetworkMode::None)
        };
        let unit = render_for("acme", &s, &modern_host());
        let argv = exec_start_argv(&generate("acme", &unit));
        let mut plain = modern_host();
        plain.quadlet = None;
        plain.quadlet_disabled = true;
        let plain_argv = plain_argv(&render_for("acme", &s, &plain));
        if let Some(p) = policy {
            assert!(unit.contains(&format!("\nAutoUpdate={p}\n")), "{unit}");
            let label = format!("io.containers.autoupdate={p}");
            assert!(has_pair(&argv, "--label", &label), "{argv:?}");
            assert!(has_pair(&plain_argv, "--label", &label), "{plain_argv:?}");
        } else {
            assert!(!unit.contains("AutoUpdate="), "{unit}");
            assert!(
                !argv.iter().any(|a| a.contains("io.containers.autoupdate")),
                "{argv:?}"
            );
        }
    }
}
