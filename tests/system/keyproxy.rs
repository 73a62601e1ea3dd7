//! Proxy-held API keys (issue 16): in a running allowlist sandbox the client's key is
//! in no environment variable, file or process argument, while a request through the
//! provider's base URL reaches the provider (here a local TLS stand-in, trusted
//! through the proxy's test-only CA and address overrides) with the key added.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{Client, env, podman, sbx, systemctl, wait_for};

#[path = "../support/tls_upstream.rs"]
mod tls_upstream;

use tls_upstream::{Seen, TestCa, TlsUpstream};

/// Starts the stand-in on its own thread (it lives as long as the test process).
fn start_upstream(ca: TestCa) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let up = TlsUpstream::start(&ca).await;
            tx.send((up.addr, up.seen.clone())).expect("send");
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the TLS stand-in started")
}

/// The test-only overrides in a drop-in of the client's proxy service; removed on drop.
struct ProxyOverride(std::path::PathBuf);

impl ProxyOverride {
    fn install(c: &Client, ca_pem: &str, addr: SocketAddr) -> Self {
        Self::install_in(c, &c.data_dir().join("config"), ca_pem, addr)
    }

    /// The same with the CA in `config_dir`, the client's config directory.
    fn install_in(
        c: &Client,
        config_dir: &std::path::Path,
        ca_pem: &str,
        addr: SocketAddr,
    ) -> Self {
        // The proxy's unit has a private /tmp and a read-only home: the CA goes into
        // the client's (never mounted) config directory.
        let ca = config_dir.join("kp-test-ca.pem");
        std::fs::write(&ca, ca_pem).expect("write the test CA");
        let dir = env()
            .home
            .join(".config/systemd/user")
            .join(format!("sandboxctl-proxy@{}.service.d", c.name));
        std::fs::create_dir_all(&dir).expect("drop-in dir");
        let file = dir.join("zz-kp-test.conf");
        std::fs::write(
            &file,
            format!(
                "[Service]\nEnvironment=SANDBOXCTL_PROXY_TEST_CA={}\nEnvironment=SANDBOXCTL_PROXY_TEST_PROVIDER_ADDR={addr}\n",
                ca.display()
            ),
        )
        .expect("write the drop-in");
        systemctl(["daemon-reload"]).run().success();
        let _ = systemctl(["stop", &format!("sandboxctl-proxy@{}.service", c.name)]).run();
        Self(file)
    }
}

impl Drop for ProxyOverride {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = systemctl(["daemon-reload"]).run();
    }
}

/// A started client of `agent` whose key (`key_var` = `key`) is held by the proxy, which
/// reaches a TLS stand-in for the provider; `args` are its `--agent-arg`s. Returns the
/// client, what the stand-in has seen, and the proxy override (keep it alive).
fn keyed_client(
    tag: &str,
    agent: &str,
    key_var: &str,
    key: &str,
    args: &[&str],
) -> (Client, Arc<Mutex<Vec<Seen>>>, ProxyOverride) {
    let ca = TestCa::new();
    let ca_pem = ca.ca_pem.clone();
    let (addr, seen) = start_upstream(ca);
    let c = Client::new(tag);
    let mut enable = sbx([
        "enable",
        &c.name,
        c.project_str(),
        "--agent",
        agent,
        "--image",
        &env().image,
    ]);
    for a in args {
        enable = enable.arg(format!("--agent-arg={a}"));
    }
    let out = enable.env(key_var, key).run().success();
    assert!(out.stdout.contains(key_var), "{out}");
    let proxy = ProxyOverride::install(&c, &ca_pem, addr);
    c.start();
    (c, seen, proxy)
}

/// Endpoints the agent does not use get no key: each request is refused (403, naming
/// `--key-path`) before the provider.
fn assert_no_key_path(c: &Client, paths: &[&str]) {
    for path in paths {
        let refused = c.sh(&format!(
            "curl -s -w '\\n%{{http_code}}' -H 'x-api-key: sandboxctl-proxy-held-key' \"$ANTHROPIC_BASE_URL{path}\""
        ));
        assert!(
            refused.stdout.trim_end().ends_with("\n403") && refused.stdout.contains("--key-path"),
            "{path}: {refused}"
        );
    }
}

#[test]
fn kp_key_is_added_by_the_proxy_and_is_nowhere_inside() {
    let (k1, k2) = (
        "sk-ant-kp-".to_owned(),
        format!("{}-held-outside", std::process::id()),
    );
    let key = format!("{k1}{k2}");
    let (c, seen, _override) = keyed_client("kp", "claude", "ANTHROPIC_API_KEY", &key, &[]);
    let status = sbx(["status", &c.name]).run().success();
    assert!(
        status.stdout.contains("API key: key held by the proxy"),
        "{status}"
    );

    // The agent's session has the base URL and a placeholder, not the key.
    let agent_env = wait_for(
        "the agent session's environment",
        Duration::from_secs(30),
        || {
            let out = c.sh(
                "pid=$(tmux display -p -t main '#{pane_pid}') && tr '\\0' '\\n' < /proc/$pid/environ",
            );
            (out.status.success() && out.stdout.contains("ANTHROPIC_BASE_URL=")).then_some(out)
        },
        || c.diagnostics(),
    );
    assert!(
        agent_env
            .stdout
            .contains("ANTHROPIC_BASE_URL=http://127.0.0.1:3128/anthropic"),
        "{agent_env}"
    );
    assert!(
        agent_env
            .stdout
            .contains("ANTHROPIC_API_KEY=sandboxctl-proxy-held-key"),
        "{agent_env}"
    );

    // No process environment or argument, no secret file, nothing in the home holds it.
    // The key is given in two halves so that no command line here contains it.
    let search = c.sh(&format!(
        "k1='{k1}'; k2='{k2}';         printf '%s%s\\n' \"$k1\" \"$k2\" | grep -rlsF -f - /proc/[0-9]*/environ /proc/[0-9]*/cmdline /run/secrets \"$HOME\"; \
         ls /run/secrets 2>/dev/null; echo searched"
    ));
    assert!(search.stdout.contains("searched"), "{search}");
    let found: Vec<&str> = search
        .stdout
        .lines()
        .filter(|l| *l != "searched" && !l.is_empty())
        .collect();
    assert!(
        found.is_empty(),
        "the key (or a mounted key file) is inside the sandbox: {found:?}\n{search}"
    );

    // A request through the base URL reaches the provider with the key.
    let reply = c.sh(
        "curl -sS --max-time 20 -H 'x-api-key: sandboxctl-proxy-held-key' \
         -H 'content-type: application/json' -d '{}' \"$ANTHROPIC_BASE_URL/v1/messages\"",
    );
    assert_eq!(
        reply.stdout.trim(),
        "ok /v1/messages",
        "{reply}\n{}",
        c.diagnostics()
    );
    assert_no_key_path(
        &c,
        &["/v1/files", "/v1/messages/batches", "/v1/organizations/me"],
    );
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0]
            .headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap_or("")),
        Some(key.as_str())
    );
    assert_eq!(
        seen[0]
            .headers
            .get("host")
            .map(hyper::http::HeaderValue::as_bytes),
        Some(&b"api.anthropic.com"[..])
    );
    // Another name on the key path is refused.
    let refused =
        c.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3128/openai/v1/models");
    assert_eq!(refused.stdout.trim(), "403", "{refused}");
}

/// With `AGENT_SANDBOX_DATA`, the proxy serves the client of that data dir: where the
/// default data dir holds a client of the same name with another key, the key the
/// provider sees is the one stored under `AGENT_SANDBOX_DATA`.
#[test]
fn kp2_the_proxy_reads_the_client_of_its_own_data_dir() {
    let pid = std::process::id();
    let (default_key, alt_key) = (
        format!("sk-ant-kp2-{pid}-default-dir"),
        format!("sk-ant-kp2-{pid}-alt-dir"),
    );
    let ca = TestCa::new();
    let ca_pem = ca.ca_pem.clone();
    let (addr, seen) = start_upstream(ca);
    let mut c = Client::new("kp2");
    let alt = c.scratch_dir("alt-data");
    let alt_str = alt.to_str().expect("UTF-8").to_owned();
    let enable = |key: &str| {
        sbx([
            "enable",
            &c.name,
            c.project_str(),
            "--agent",
            "claude",
            "--image",
            &env().image,
        ])
        .env("ANTHROPIC_API_KEY", key)
    };
    // A client of this name in the default data dir, with its own key, left disabled.
    enable(&default_key).run().success();
    sbx(["disable", &c.name]).run().success();
    // The same name under AGENT_SANDBOX_DATA, enabled and started from there.
    enable(&alt_key)
        .env("AGENT_SANDBOX_DATA", &alt_str)
        .run()
        .success();
    let _override = ProxyOverride::install_in(
        &c,
        &alt.join("clients").join(&c.name).join("config"),
        &ca_pem,
        addr,
    );
    sbx(["start", &c.name])
        .env("AGENT_SANDBOX_DATA", &alt_str)
        .run()
        .success();
    // Into the container directly: the CLI would look the client up in the default
    // data dir, where this name is another client.
    let reply = podman(["exec", &c.container(), "sh", "-c"])
        .arg(
            "curl -sS --max-time 20 -H 'x-api-key: sandboxctl-proxy-held-key' \
             -H 'content-type: application/json' -d '{}' \"$ANTHROPIC_BASE_URL/v1/messages\"",
        )
        .run();
    let seen = seen.lock().expect("seen").clone();
    let keys: Vec<&str> = seen
        .iter()
        .filter_map(|s| s.headers.get("x-api-key")?.to_str().ok())
        .collect();
    assert_eq!(keys, [alt_key.as_str()], "{reply}\n{}", c.diagnostics());
    let disabled = sbx(["disable", &c.name, "--purge"])
        .env("AGENT_SANDBOX_DATA", &alt_str)
        .run();
    assert!(disabled.status.success(), "{disabled}");
}

/// The real agent, started by its unit with a task in its arguments and its key held by
/// the proxy, reaches the provider (the TLS stand-in) only through the proxy's key path:
/// the stand-in sees `path_prefix` requests carrying the key (in `header`, after
/// `scheme`), which only that path adds. An agent that went around it (a CONNECT to the
/// provider, or no base URL) would reach no stand-in and fail this.
fn agent_uses_the_keyed_path(
    tag: &str,
    agent: &str,
    key_var: &str,
    args: &[&str],
    path_prefix: &str,
    header: &str,
    scheme: &str,
) {
    let key = format!("sk-{tag}-{}-held-by-the-proxy", std::process::id());
    let (c, seen, _override) = keyed_client(tag, agent, key_var, &key, args);
    let want = format!("{scheme}{key}");
    let requests = wait_for(
        &format!("{agent} to call {path_prefix} through the key path"),
        Duration::from_mins(2),
        || {
            let seen = seen.lock().expect("seen").clone();
            seen.iter()
                .any(|s| s.path.starts_with(path_prefix))
                .then_some(seen)
        },
        || {
            let screen = c.exec(&["tmux", "capture-pane", "-p", "-t", "main"]);
            format!("--- screen ---\n{}\n{}", screen.stdout, c.diagnostics())
        },
    );
    for s in requests.iter().filter(|s| s.path.starts_with(path_prefix)) {
        assert_eq!(
            s.headers.get(header).and_then(|v| v.to_str().ok()),
            Some(want.as_str()),
            "{agent} request {} without the key the proxy adds",
            s.path
        );
    }
}

/// Codex with its key held by the proxy: `codex exec` sends `/v1/responses` with the key
/// (it reads its API's address only from its config, given by the image's agent-session).
#[test]
fn kp3_codex_reaches_its_api_through_the_key_path() {
    agent_uses_the_keyed_path(
        "kp3",
        "codex",
        "OPENAI_API_KEY",
        &["exec", "--skip-git-repo-check", "say hello"],
        "/v1/responses",
        "authorization",
        "Bearer ",
    );
}

/// Claude Code with its key held by the proxy: `claude -p` sends `/v1/messages` with it.
#[test]
fn kp4_claude_code_reaches_its_api_through_the_key_path() {
    agent_uses_the_keyed_path(
        "kp4",
        "claude",
        "ANTHROPIC_API_KEY",
        &["-p", "say hello"],
        "/v1/messages",
        "x-api-key",
        "",
    );
}

/// The first attach as a person does it (real Claude Code, key held by the proxy): no
/// trust question, no "use this API key?" question, no onboarding; the typed prompt
/// gets the stand-in API's answer on the screen.
#[test]
fn kp5_the_first_attach_asks_nothing_and_the_prompt_gets_an_answer() {
    let key = format!("sk-ant-kp5-{}-held-by-the-proxy", std::process::id());
    let (c, seen, _override) = keyed_client("kp5", "claude", "ANTHROPIC_API_KEY", &key, &[]);
    let bin = env().bin.to_str().expect("UTF-8 binary path").to_owned();
    let term = crate::harness::HostTerminal::start(&format!("{bin} attach {}", c.name));
    // Claude Code's prompt line, with nothing in front of it.
    let screen = wait_for(
        "Claude Code's prompt on the attached terminal",
        Duration::from_mins(1),
        || {
            let screen = term.screen();
            screen
                .lines()
                .any(|l| l.trim() == "❯" || l.trim() == ">")
                .then_some(screen)
        },
        || format!("--- screen ---\n{}\n{}", term.screen(), c.diagnostics()),
    );
    for question in [
        "trust",
        "Do you want to use this API key",
        "Choose the text style",
    ] {
        assert!(!screen.contains(question), "asked {question:?}:\n{screen}");
    }
    // What the agent itself shows as its permission mode, for autonomy ask.
    let status = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(status["agent_mode"], "manual mode on", "{status}\n{screen}");
    term.type_line("say hello");
    wait_for(
        "the stand-in API's answer on the attached terminal",
        Duration::from_mins(1),
        || {
            term.screen()
                .contains(tls_upstream::MESSAGES_ANSWER)
                .then_some(())
        },
        || {
            format!(
                "--- screen ---\n{}\n{:?}",
                term.screen(),
                seen.lock()
                    .expect("seen")
                    .iter()
                    .map(|s| s.path.clone())
                    .collect::<Vec<_>>()
            )
        },
    );
    let seen = seen.lock().expect("seen").clone();
    assert!(
        seen.iter().any(|s| s.path.starts_with("/v1/messages")
            && s.headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(key.as_str())),
        "no Messages request with the key"
    );
}

/// Codex with its key held by the proxy starts signed in (its prompt, no sign-in
/// chooser), and `status` shows the mode Codex itself shows: none in its header for
/// `ask` (its default look), `permissions: YOLO mode` for `auto`.
#[test]
fn kp6_codex_starts_signed_in_and_status_shows_its_mode() {
    let key = format!("sk-kp6-{}-held-by-the-proxy", std::process::id());
    let (c, _seen, _override) = keyed_client("kp6", "codex", "OPENAI_API_KEY", &key, &[]);
    let screen = || {
        c.exec(&["tmux", "capture-pane", "-p", "-t", "main"])
            .stdout
            .clone()
    };
    let prompt = |screen: &str| screen.lines().any(|l| l.trim_start().starts_with('›'));
    let shown = wait_for(
        "Codex's prompt in the main pane",
        Duration::from_mins(1),
        || Some(screen()).filter(|s| prompt(s)),
        || format!("--- screen ---\n{}\n{}", screen(), c.diagnostics()),
    );
    assert!(!shown.contains("Sign in"), "asked to sign in:\n{shown}");
    let status = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(status["autonomy"], "ask", "{status}");
    assert!(status["agent_mode"].is_null(), "{status}\n{shown}");
    sbx(["enable", &c.name, "--autonomy", "auto", "--now"])
        .run()
        .success();
    let status = wait_for(
        "status showing the mode Codex shows for auto",
        Duration::from_mins(1),
        || {
            let status = sbx(["status", &c.name, "--json"]).run().success().json();
            (status["agent_mode"] == "permissions: YOLO mode").then_some(status)
        },
        || format!("--- screen ---\n{}\n{}", screen(), c.diagnostics()),
    );
    assert_eq!(status["autonomy"], "auto", "{status}");
}
