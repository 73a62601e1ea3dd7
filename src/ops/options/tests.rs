//! Tests of `options`.

use super::*;

fn setup() -> (tempfile::TempDir, Layout) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    (tmp, layout)
}

fn req<'a>(projects: &'a [PathBuf], options: &'a SandboxOptions) -> Request<'a> {
    Request {
        projects,
        options,
        network: None,
        reset: false,
    }
}

/// Each limit option replaces its limit and keeps the others, `none` removes one,
/// and a malformed value is one line naming the option.
#[test]
fn limits_merge_and_none_removes_one() {
    let (_tmp, layout) = setup();
    let client = ClientName::parse("acme").expect("name");
    let opts = SandboxOptions {
        memory: Some("2g".into()),
        pids: Some("512".into()),
        ..Default::default()
    };
    let first = apply(&layout, &client, &[], &req(&[], &opts)).expect("apply");
    assert_eq!(
        first.limits.memory.map(|m| m.to_string()).as_deref(),
        Some("2g")
    );
    assert_eq!(first.limits.pids, Some(512));
    assert_eq!(first.limits.cpus, None);
    let others = [(client.clone(), first.clone())];
    let opts = SandboxOptions {
        memory: Some("none".into()),
        cpus: Some("1".into()),
        ..Default::default()
    };
    let second = apply(&layout, &client, &others, &req(&[], &opts)).expect("apply");
    assert_eq!(second.limits.memory, None);
    assert_eq!(second.limits.pids, Some(512), "kept");
    assert_eq!(
        second.limits.cpus.map(crate::sandbox::limits::Cpus::millis),
        Some(1000)
    );
    for (opts, flag) in [
        (
            SandboxOptions {
                memory: Some("lots".into()),
                ..Default::default()
            },
            "--memory: invalid memory size",
        ),
        (
            SandboxOptions {
                cpus: Some("100000".into()),
                ..Default::default()
            },
            "--cpus: 100000 is more CPUs than this host has",
        ),
        (
            SandboxOptions {
                pids: Some("3".into()),
                ..Default::default()
            },
            "--pids: pid limit 3 is out of range",
        ),
    ] {
        let err = format!(
            "{:#}",
            apply(&layout, &client, &[], &req(&[], &opts)).expect_err(flag)
        );
        assert!(err.starts_with(flag), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn merges_over_current_settings() {
    let (tmp, layout) = setup();
    let client = ClientName::parse("acme").expect("name");
    let proj = tmp.path().join("p");
    std::fs::create_dir(&proj).expect("mkdir");
    let opts = SandboxOptions {
        agent: Some(crate::sandbox::settings::Agent::Shell),
        ..Default::default()
    };
    let first = apply(
        &layout,
        &client,
        &[],
        &req(std::slice::from_ref(&proj), &opts),
    )
    .expect("apply");
    assert_eq!(
        first.projects,
        vec![std::fs::canonicalize(&proj).expect("canon")]
    );
    let again = apply(
        &layout,
        &client,
        &[(client.clone(), first.clone())],
        &Request {
            network: Some(NetworkMode::None),
            ..req(&[], &SandboxOptions::default())
        },
    )
    .expect("apply");
    assert_eq!(again.projects, first.projects, "projects kept");
    assert_eq!(
        again.agent,
        crate::sandbox::settings::Agent::Shell,
        "agent kept"
    );
    assert_eq!(again.network, NetworkMode::None);
}

/// `--agent-arg` replaces the list, `--autonomy` sets the mode, other options keep
/// both, and `--reset` clears them.
#[test]
fn autonomy_and_agent_args_merge_and_reset() {
    let (_tmp, layout) = setup();
    let client = ClientName::parse("acme").expect("name");
    let opts = SandboxOptions {
        autonomy: Some(crate::sandbox::settings::Autonomy::Auto),
        agent_args: vec!["--model".into(), "a b".into()],
        ..Default::default()
    };
    let first = apply(&layout, &client, &[], &req(&[], &opts)).expect("apply");
    assert_eq!(first.autonomy, crate::sandbox::settings::Autonomy::Auto);
    assert_eq!(first.agent_args, ["--model", "a b"]);
    let others = [(client.clone(), first.clone())];
    let kept = apply(
        &layout,
        &client,
        &others,
        &req(&[], &SandboxOptions::default()),
    )
    .expect("apply");
    assert_eq!(kept, first);
    let replaced = SandboxOptions {
        agent_args: vec!["-x".into()],
        ..Default::default()
    };
    let replaced = apply(&layout, &client, &others, &req(&[], &replaced)).expect("apply");
    assert_eq!(replaced.agent_args, ["-x"]);
    assert_eq!(replaced.autonomy, crate::sandbox::settings::Autonomy::Auto);
    let reset = apply(
        &layout,
        &client,
        &others,
        &Request {
            reset: true,
            ..req(&[], &SandboxOptions::default())
        },
    )
    .expect("apply");
    assert_eq!(reset.autonomy, crate::sandbox::settings::Autonomy::Ask);
    assert!(reset.agent_args.is_empty());
}

#[test]
fn refuses_bad_agent_args() {
    let (_tmp, layout) = setup();
    let client = ClientName::parse("acme").expect("name");
    let long = "x".repeat(MAX_AGENT_ARG_LEN + 1);
    let many: Vec<String> = (0..=MAX_AGENT_ARGS).map(|i| i.to_string()).collect();
    for (args, want) in [
        (
            vec!["a\nb".to_owned()],
            "agent argument \"a\\nb\" contains a line break",
        ),
        (
            vec!["a\u{1b}[2J".to_owned()],
            "contains a control character",
        ),
        (vec![long], "at most 1024"),
        (many, "too many agent arguments (33)"),
    ] {
        let opts = SandboxOptions {
            agent_args: args,
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            apply(&layout, &client, &[], &req(&[], &opts)).expect_err(want)
        );
        assert!(err.contains(want), "{err}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn refuses_bad_inputs() {
    let (tmp, layout) = setup();
    std::fs::create_dir_all(&layout.data_dir).expect("mkdir");
    let client = ClientName::parse("acme").expect("name");
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let cases: Vec<(Vec<PathBuf>, SandboxOptions, &str)> = vec![
        (
            vec![tmp.path().join("missing")],
            SandboxOptions::default(),
            "does not exist",
        ),
        (
            vec![file.clone()],
            SandboxOptions::default(),
            "is not a directory",
        ),
        (
            vec![tmp.path().to_path_buf()],
            SandboxOptions::default(),
            "contains sandboxctl's data directory",
        ),
        (
            vec![layout.data_dir.clone()],
            SandboxOptions::default(),
            "is sandboxctl's data directory",
        ),
        (
            vec![PathBuf::from("/tmp/x\ny")],
            SandboxOptions::default(),
            "line break",
        ),
        (
            vec![],
            SandboxOptions {
                mounts: vec!["/etc".into()],
                ..Default::default()
            },
            "is not HOST:CONTAINER",
        ),
        (
            vec![],
            SandboxOptions {
                mounts: vec!["/etc:rel".into()],
                ..Default::default()
            },
            "must be absolute",
        ),
        (
            vec![],
            SandboxOptions {
                mounts: vec!["/etc:/x:ro".into()],
                ..Default::default()
            },
            "cannot contain ':'",
        ),
        (
            vec![],
            SandboxOptions {
                mounts_rw: vec!["/nope-x:/x".into()],
                ..Default::default()
            },
            "does not exist",
        ),
        (
            vec![],
            SandboxOptions {
                mounts: vec!["/:/host".into()],
                ..Default::default()
            },
            "contains sandboxctl's data directory",
        ),
        (
            vec![],
            SandboxOptions {
                podman_args: vec!["--env=A\nB".into()],
                ..Default::default()
            },
            "line break",
        ),
    ];
    for (projects, opts, want) in cases {
        let err = format!(
            "{:#}",
            apply(&layout, &client, &[], &req(&projects, &opts)).expect_err(want)
        );
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!err.contains('\n'), "one line: {err:?}");
    }
}

#[test]
fn refuses_overlap_with_another_clients_project() {
    let (tmp, layout) = setup();
    let proj = tmp.path().join("shared/sub");
    std::fs::create_dir_all(&proj).expect("mkdir");
    let other = ClientName::parse("globex").expect("name");
    layout.create_client_dirs(&other).expect("dirs");
    let theirs = Settings {
        projects: vec![std::fs::canonicalize(&proj).expect("canon")],
        ..Settings::default()
    };
    theirs
        .save(&layout.settings_path(&other), &other)
        .expect("save");
    let client = ClientName::parse("acme").expect("name");
    let parent = tmp.path().join("shared");
    let err = format!(
        "{:#}",
        apply(
            &layout,
            &client,
            &crate::ops::clients::all(&layout).expect("settings"),
            &req(&[parent], &SandboxOptions::default())
        )
        .expect_err("overlap")
    );
    assert!(err.contains("overlaps") && err.contains("globex"), "{err}");
}

/// A layout whose home, `~/.config` and data directory are symlinks, as with
/// stow-style dotfiles: `home` → `real-home`, `home/.config` → `dotfiles/config`,
/// the data directory → `store`.
fn symlinked() -> (tempfile::TempDir, Layout, PathBuf) {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(tmp.path()).expect("canon");
    for d in [
        "real-home/.local/share",
        "dotfiles/config",
        "store",
        "work/p",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    symlink(root.join("real-home"), root.join("home")).expect("symlink");
    symlink(root.join("dotfiles/config"), root.join("real-home/.config")).expect("symlink");
    symlink(
        root.join("store"),
        root.join("real-home/.local/share/agent-sandbox"),
    )
    .expect("symlink");
    let home = root.join("home");
    let layout = Layout {
        data_dir: home.join(".local/share/agent-sandbox"),
        unit_dir: home.join(".config/containers/systemd"),
        cache_dir: home.join(".cache/sandboxctl"),
        systemd_user_dir: home.join(".config/systemd/user"),
        libexec_dir: home.join(".local/libexec/sandboxctl"),
        user_config: home.join(".config/sandboxctl/config.toml"),
        home_dir: home,
        runtime_dir: Some(root.join("run")),
    };
    (tmp, layout, root)
}

#[test]
fn protected_paths_are_compared_through_symlinks() {
    let (_tmp, layout, root) = symlinked();
    let client = ClientName::parse("acme").expect("name");
    let other = ClientName::parse("globex").expect("name");
    layout.create_client_dirs(&other).expect("dirs");
    let theirs_claude = root.join("store/clients/globex/claude");
    std::fs::create_dir_all(root.join("real-home/.ssh")).expect("mkdir");
    std::fs::create_dir_all(root.join("real-home/.cache")).expect("mkdir");
    let projects: Vec<(PathBuf, &str)> = vec![
        // The data and unit directories live elsewhere; the home still holds
        // the proxy's binary.
        (
            root.join("home"),
            "contains the sandboxctl binary the proxy units run",
        ),
        (root.join("real-home"), "contains the sandboxctl binary"),
        (root.join("dotfiles"), "contains the Quadlet unit directory"),
        (
            root.join("dotfiles/config"),
            "contains the Quadlet unit directory",
        ),
        (root.join("store"), "is sandboxctl's data directory"),
        (
            theirs_claude.clone(),
            "is inside sandboxctl's data directory",
        ),
        (root.join("real-home/.ssh"), "is ~/.ssh"),
        (root.join("home/.cache"), "contains sandboxctl's cache"),
    ];
    for (p, want) in projects {
        let err = format!(
            "{:#}",
            apply(
                &layout,
                &client,
                &[],
                &req(std::slice::from_ref(&p), &SandboxOptions::default())
            )
            .expect_err(want)
        );
        assert!(
            err.contains(want),
            "{}: want {want:?} in {err}",
            p.display()
        );
    }
    let mounts: Vec<(String, bool, &str)> = vec![
        (
            format!("{}:/c", root.join("home/.config").display()),
            false,
            "contains the Quadlet unit directory",
        ),
        (
            format!("{}:/c", theirs_claude.display()),
            false,
            "is inside sandboxctl's data directory",
        ),
        (
            format!("{}:/s", root.join("home/.ssh").display()),
            true,
            "is ~/.ssh",
        ),
    ];
    for (m, rw, want) in mounts {
        let opts = if rw {
            SandboxOptions {
                mounts_rw: vec![m.clone()],
                ..Default::default()
            }
        } else {
            SandboxOptions {
                mounts: vec![m.clone()],
                ..Default::default()
            }
        };
        let err = format!(
            "{:#}",
            apply(&layout, &client, &[], &req(&[], &opts)).expect_err(want)
        );
        assert!(err.contains(want), "{m}: want {want:?} in {err}");
    }
    // An ordinary project beside them is fine.
    apply(
        &layout,
        &client,
        &[],
        &req(&[root.join("work/p")], &SandboxOptions::default()),
    )
    .expect("an ordinary project");
}

#[test]
fn host_claude_config_may_be_shared_but_not_mounted() {
    let (tmp, layout) = setup();
    let claude = layout.home_dir.join(".claude");
    std::fs::create_dir_all(&claude).expect("mkdir");
    std::fs::create_dir_all(layout.home_dir.join(".ssh")).expect("mkdir");
    let client = ClientName::parse("acme").expect("name");
    let shared = SandboxOptions {
        claude_config: Some(claude.clone()),
        ..Default::default()
    };
    let s = apply(&layout, &client, &[], &req(&[], &shared)).expect("--claude-config");
    assert_eq!(
        s.claude_config,
        Some(std::fs::canonicalize(&claude).expect("canon"))
    );
    let err = format!(
        "{:#}",
        apply(
            &layout,
            &client,
            &[],
            &req(std::slice::from_ref(&claude), &SandboxOptions::default())
        )
        .expect_err("project")
    );
    assert!(err.contains("is the host's Claude Code config"), "{err}");
    let mount = SandboxOptions {
        mounts: vec![format!("{}:/c", claude.display())],
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        apply(&layout, &client, &[], &req(&[], &mount)).expect_err("mount")
    );
    assert!(err.contains("--mount"), "{err}");
    // Sharing the whole home is not sharing a Claude config.
    let home = SandboxOptions {
        claude_config: Some(layout.home_dir.clone()),
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        apply(&layout, &client, &[], &req(&[], &home)).expect_err("home")
    );
    assert!(
        err.starts_with("Claude config directory") && err.contains(" contains "),
        "{err}"
    );
    drop(tmp);
}

#[test]
fn another_clients_project_cannot_be_mounted() {
    let (tmp, layout) = setup();
    let proj = tmp.path().join("outer/globex-project");
    std::fs::create_dir_all(proj.join("sub")).expect("mkdir");
    let other = ClientName::parse("globex").expect("name");
    let theirs = Settings {
        projects: vec![std::fs::canonicalize(&proj).expect("canon")],
        ..Settings::default()
    };
    let client = ClientName::parse("acme").expect("name");
    let others = [(other, theirs)];
    for opts in [
        SandboxOptions {
            mounts: vec![format!("{}:/ro", proj.join("sub").display())],
            ..Default::default()
        },
        SandboxOptions {
            mounts_rw: vec![format!("{}:/rw", tmp.path().join("outer").display())],
            ..Default::default()
        },
    ] {
        let err = format!(
            "{:#}",
            apply(&layout, &client, &others, &req(&[], &opts)).expect_err("overlap")
        );
        assert!(
            err.contains("overlaps project directory") && err.contains("globex"),
            "{err}"
        );
    }
    // And the other way round: a project another client mounts.
    let mounter = Settings {
        mounts: vec![ExtraMount {
            host: std::fs::canonicalize(&proj).expect("canon"),
            container: "/docs".into(),
            writable: false,
        }],
        ..Settings::default()
    };
    let err = format!(
        "{:#}",
        apply(
            &layout,
            &client,
            &[(ClientName::parse("initech").expect("name"), mounter)],
            &req(&[proj.join("sub")], &SandboxOptions::default())
        )
        .expect_err("overlap")
    );
    assert!(err.contains("--mount") && err.contains("initech"), "{err}");
}

#[test]
fn warns_about_weakening_args() {
    let s = Settings {
        podman_args: vec!["--privileged".into(), "--pids-limit=100".into()],
        ..Settings::default()
    };
    let w = warnings(&ClientName::parse("acme").expect("name"), &s);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("--privileged"));
}

#[test]
fn warns_about_credentials_in_podman_env_args() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env_file = tmp.path().join("vars.env");
    std::fs::write(&env_file, "# comment\nLANG=C\nexport DB_PASSWORD=hunter2\n").expect("write");
    let harmless = tmp.path().join("plain.env");
    std::fs::write(&harmless, "LANG=C\n").expect("write");
    let table: Vec<(Vec<String>, Option<&str>)> = vec![
        (
            vec!["--env=GITHUB_TOKEN=ghp_abc123".into()],
            Some("GITHUB_TOKEN"),
        ),
        (
            vec!["-e=AWS_SECRET_ACCESS_KEY=x".into()],
            Some("AWS_SECRET_ACCESS_KEY"),
        ),
        (vec!["-eOPENAI_APIKEY=x".into()], Some("OPENAI_APIKEY")),
        (vec!["--env".into(), "NPM_AUTH=x".into()], Some("NPM_AUTH")),
        (vec!["-e".into(), "DB_PASSWORD".into()], Some("DB_PASSWORD")),
        (vec!["--env=STRIPE_KEY=x".into()], Some("STRIPE_KEY")),
        (vec!["--env=SSH_PRIVATE=x".into()], Some("SSH_PRIVATE")),
        (
            vec![format!("--env-file={}", env_file.display())],
            Some("DB_PASSWORD"),
        ),
        (
            vec!["--env-file".into(), "/nonexistent/secrets.env".into()],
            Some("secret set acme"),
        ),
        (vec!["--env=LANG=C.UTF-8".into()], None),
        (vec!["--env=KEYBOARD=us".into()], None),
        (vec!["--env=AUTHOR=me".into()], None),
        (vec![format!("--env-file={}", harmless.display())], None),
        (vec!["--pids-limit=100".into(), "TOKEN=x".into()], None),
        (vec!["--env".into()], None),
    ];
    let client = ClientName::parse("acme").expect("name");
    for (args, want) in table {
        let s = Settings {
            podman_args: args.clone(),
            ..Settings::default()
        };
        let w = warnings(&client, &s);
        match want {
            Some(name) => {
                assert_eq!(w.len(), 1, "{args:?}: {w:?}");
                assert!(w[0].contains(name), "{args:?}: {w:?}");
                assert!(w[0].contains("sandboxctl secret set acme"), "{w:?}");
                for secret in ["ghp_abc123", "hunter2"] {
                    assert!(!w[0].contains(secret), "value repeated: {w:?}");
                }
            }
            None => assert!(w.is_empty(), "{args:?}: {w:?}"),
        }
    }
}

/// Forwards are installed units: `enable --reset` keeps them in the settings, so
/// `status` and `disable` still find them.
#[test]
fn reset_keeps_port_forwards() {
    let (_tmp, layout) = setup();
    let client = ClientName::parse("acme").expect("name");
    let fwd = crate::render::ports::PortForward {
        host: 8080,
        container: 3000,
        persist: true,
    };
    let current = Settings {
        image: "localhost/old:1".into(),
        ports: vec![fwd],
        ..Settings::default()
    };
    let others = [(client.clone(), current)];
    let opts = SandboxOptions::default();
    let s = apply(
        &layout,
        &client,
        &others,
        &Request {
            reset: true,
            ..req(&[], &opts)
        },
    )
    .expect("reset");
    assert_eq!(s.image, Settings::default().image, "the rest is reset");
    assert_eq!(s.ports, [fwd]);
}
