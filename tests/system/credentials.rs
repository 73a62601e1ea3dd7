//! Credentials per client (issue 6): API keys as Podman secrets that reach the agent's
//! environment and nothing else, `secret set|list|rm`, and the copy of a host Claude login into one client's own store (the shared
//! `--claude-config` is in `hostexec.rs`).

use std::path::Path;

use crate::harness::{Client, Cmd, env, podman, sbx, systemctl, wait_for};

fn sentinel(tag: &str) -> String {
    format!("sk-sentinel-{tag}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

/// `sandboxctl enable` for a codex client with `OPENAI_API_KEY` in its environment.
fn enable_codex_with_key(c: &Client, key: &str) -> crate::harness::Output {
    sbx([
        "enable",
        &c.name,
        c.project_str(),
        "--agent",
        "codex",
        "--image",
        &env().image,
        "--network",
        "none",
    ])
    .env("OPENAI_API_KEY", key)
    .run()
    .success()
}

/// `sandboxctl enable` of a claude client without network (not yet run).
fn enable_claude(c: &Client) -> Cmd {
    sbx([
        "enable",
        &c.name,
        c.project_str(),
        "--agent",
        "claude",
        "--image",
        &env().image,
        "--network",
        "none",
    ])
}

/// The value of `var` in the environment of the agent's tmux session.
fn agent_env(c: &Client, var: &str) -> String {
    let out = wait_for(
        &format!("{var} in {}'s agent environment", c.name),
        std::time::Duration::from_secs(30),
        || {
            let out = c.sh(&format!(
                "pid=$(tmux display -p -t main '#{{pane_pid}}') && tr '\\0' '\\n' < /proc/$pid/environ | sed -n 's/^{var}=//p'"
            ));
            (out.status.success() && !out.stdout.trim().is_empty()).then_some(out)
        },
        || c.diagnostics(),
    );
    out.stdout.trim().to_owned()
}

/// Every place a key must not be, as text.
fn leak_sites(c: &Client) -> Vec<(String, String)> {
    let mut sites = Vec::new();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    sites.push(("unit file".to_owned(), read(&c.unit_file())));
    sites.push((
        "generated service".to_owned(),
        read(&env().loaded_unit_file(&c.unit())),
    ));
    sites.push((
        "systemctl --user show".to_owned(),
        systemctl(["show", &c.unit()]).run().stdout,
    ));
    sites.push((
        "systemctl --user cat".to_owned(),
        systemctl(["cat", &c.unit()]).run().stdout,
    ));
    sites.push((
        "podman inspect".to_owned(),
        podman(["inspect", &c.container()]).run().stdout,
    ));
    for f in ["config/sandbox.toml", "config/network.toml"] {
        sites.push((f.to_owned(), read(&c.data_dir().join(f))));
    }
    // The host's view of sandboxctl, podman and conmon processes.
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let dir = entry.path();
        let comm = read(&dir.join("comm"));
        if !["sandboxctl", "podman", "conmon"].contains(&comm.trim()) {
            continue;
        }
        for f in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(dir.join(f)) {
                sites.push((
                    format!("{}/{f} ({})", dir.display(), comm.trim()),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    sites
}

#[test]
fn c1_api_key_reaches_the_agent_and_nothing_else() {
    let key_a = sentinel("a");
    let key_b = sentinel("b");
    let a = Client::new("c1a");
    let b = Client::new("c1b");
    let out = enable_codex_with_key(&a, &key_a);
    assert!(
        out.stdout.contains("OPENAI_API_KEY"),
        "enable says it stored the key:\n{out}"
    );
    enable_codex_with_key(&b, &key_b);
    a.start();
    b.start();

    assert_eq!(
        agent_env(&a, "OPENAI_API_KEY"),
        key_a,
        "a's agent has a's key"
    );
    assert_eq!(
        agent_env(&b, "OPENAI_API_KEY"),
        key_b,
        "b's agent has b's key"
    );

    // A `sandboxctl exec` (which becomes `podman exec`) runs while we look, so a podman
    // process is among those checked, beside the containers' conmons.
    let mut busy = std::process::Command::new(&env().bin)
        .args(["exec", &a.name, "--", "sleep", "5"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("run sandboxctl exec");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let sites: Vec<(String, String)> = leak_sites(&a).into_iter().chain(leak_sites(&b)).collect();
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(
        sites.iter().any(|(s, _)| s.contains("(podman)"))
            && sites.iter().any(|(s, _)| s.contains("(conmon)")),
        "podman and conmon processes were checked: {:?}",
        sites.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    for (site, text) in &sites {
        assert!(!text.contains(&key_a), "a's key leaked into {site}");
        assert!(!text.contains(&key_b), "b's key leaked into {site}");
    }
    // Each sandbox holds its own key only.
    let out = b.sh("cat /run/secrets/* 2>/dev/null; env");
    assert!(
        !out.stdout.contains(&key_a),
        "a's key is visible in b:\n{out}"
    );
    let out = a.sh("cat /run/secrets/* 2>/dev/null; env");
    assert!(
        !out.stdout.contains(&key_b),
        "b's key is visible in a:\n{out}"
    );

    // A changed key in the environment replaces the secret on the next enable.
    let key_a2 = sentinel("a2");
    enable_codex_with_key(&a, &key_a2);
    sbx(["restart", &a.name]).run().success();
    assert_eq!(
        agent_env(&a, "OPENAI_API_KEY"),
        key_a2,
        "the new key after a restart"
    );

    // Names only, and `disable --purge` removes them.
    let out = sbx(["secret", "list", &a.name]).run().success();
    assert_eq!(out.stdout.trim(), "OPENAI_API_KEY", "{out}");
    sbx(["disable", &a.name, "--purge"]).run().success();
    let out = podman(["secret", "ls", "--format", "{{.Name}}"])
        .run()
        .success();
    assert!(
        !out.stdout.contains(&format!("agent-{}.", a.name)),
        "purged client's secrets remain:\n{out}"
    );
}

#[test]
fn c2_secret_set_reads_stdin_and_refuses_bad_input() {
    let c = Client::new("c2");
    c.enable(&["--network", "none"]);
    let set = |name: &str, printf: &str| {
        Cmd::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '{printf}' | \"$0\" secret set {} {name}",
                c.name
            ))
            .arg(&env().bin)
            .run()
    };
    let token = sentinel("gh");
    set("GH_TOKEN", &format!("{token}\\n")).success();
    let out = sbx(["secret", "list", &c.name]).run().success();
    assert_eq!(out.stdout.trim(), "GH_TOKEN", "{out}");
    c.start();
    assert_eq!(agent_env(&c, "GH_TOKEN"), token);
    for (site, text) in leak_sites(&c) {
        assert!(!text.contains(&token), "the token leaked into {site}");
    }

    for (name, printf, why) in [
        ("EMPTY", "", "empty"),
        ("NEWLINE", "a\\nb", "line break"),
        ("NUL", "a\\000b", "NUL"),
        ("1BAD", "x", "invalid secret name"),
        ("A-B", "x", "invalid secret name"),
    ] {
        let out = set(name, printf);
        assert!(!out.status.success(), "{name} accepted:\n{out}");
        assert!(out.stderr.contains(why), "{name}: want {why:?}:\n{out}");
        assert_eq!(out.stderr.lines().count(), 1, "one line:\n{out}");
    }
    let out = sbx(["secret", "list", &c.name]).run().success();
    assert_eq!(out.stdout.trim(), "GH_TOKEN", "nothing else stored:\n{out}");
    let out = Cmd::new("sh")
        .arg("-c")
        .arg("printf x | \"$0\" secret set ghost-client-x TOKEN")
        .arg(&env().bin)
        .run();
    assert!(
        !out.status.success() && out.stderr.contains("unknown client"),
        "{out}"
    );

    sbx(["secret", "rm", &c.name, "GH_TOKEN"]).run().success();
    let out = sbx(["secret", "list", &c.name]).run().success();
    assert_eq!(out.stdout.trim(), "", "{out}");
}

#[test]
fn c4_host_login_is_copied_once_into_one_client_only() {
    let host_dir = env().home.join(".claude");
    let creds = host_dir.join(".credentials.json");
    assert!(
        !creds.exists(),
        "the test user must not have a Claude login of its own ({})",
        creds.display()
    );
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    let login = format!(
        "{{\"claudeAiOauth\": {{\"refreshToken\": \"{}\"}}}}",
        sentinel("oauth")
    );
    std::fs::write(&creds, &login).expect("login");
    let _cleanup = RemoveOnDrop(host_dir.clone());
    let before = std::fs::read(&creds).expect("read");

    let a = Client::new("c4a");
    let out = enable_claude(&a).run().success();
    assert!(out.stdout.contains("copied your Claude login"), "{out}");
    let copied = a.data_dir().join("claude/.credentials.json");
    assert_eq!(std::fs::read_to_string(&copied).expect("copied"), login);
    let state = std::fs::read_to_string(a.data_dir().join("claude/.claude.json")).expect("state");
    assert!(state.contains("hasCompletedOnboarding"), "{state}");
    assert_eq!(
        std::fs::read(&creds).expect("host"),
        before,
        "host file untouched"
    );

    // A second client enabled with an API key gets no copy.
    let b = Client::new("c4b");
    let out = enable_claude(&b)
        .env("ANTHROPIC_API_KEY", sentinel("b"))
        .run()
        .success();
    assert!(!out.stdout.contains("copied"), "{out}");
    assert!(!b.data_dir().join("claude/.credentials.json").exists());

    // Re-enabling `a` keeps its own (possibly refreshed) login.
    std::fs::write(&copied, "refreshed-in-sandbox").expect("refresh");
    sbx(["enable", &a.name]).run().success();
    assert_eq!(
        std::fs::read_to_string(&copied).expect("kept"),
        "refreshed-in-sandbox"
    );
    assert_eq!(
        std::fs::read(&creds).expect("host"),
        before,
        "host file untouched"
    );
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
