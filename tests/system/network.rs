//! Allowlist mode end to end (issue 5): a sandbox with no network but its client's
//! socket-activated egress proxy. The "remote" host is an HTTP server on the host's
//! loopback, allowed by a rule naming its literal address with `private = true` (no
//! name, not even `localhost`, reaches loopback).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::{Client, sbx, systemctl, wait_for};

/// An HTTP server on 127.0.0.1 that answers every request with its own body.
pub struct Upstream {
    pub port: u16,
    pub body: String,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(tag: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test upstream");
        let port = listener.local_addr().expect("local addr").port();
        let body = format!("sandboxctl-e2e {tag} {}", std::process::id());
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                h.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    b.len()
                );
            }
        });
        Self { port, body, hits }
    }

    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// `curl` inside the sandbox through its proxy (`NO_PROXY` lists 127.0.0.1, which here
/// means the *host's* loopback as the proxy reaches it, so it is cleared).
pub fn curl(c: &Client, url: &str) -> crate::harness::Output {
    c.sh(&format!(
        "env -u NO_PROXY -u no_proxy curl -fsS --max-time 20 {url}"
    ))
}

fn enable_allowlist(c: &Client) {
    let out = c.enable(&["--network", "allowlist"]);
    assert!(out.stdout.contains("network allowlist"), "{out}");
}

/// An allowlist client whose policy allows `up` (a loopback literal, hence `--private`).
pub(crate) fn client_allowing(tag: &str, up: &Upstream) -> Client {
    let c = Client::new(tag);
    enable_allowlist(&c);
    sbx(["allow", &c.name, "--private", &up.authority()])
        .run()
        .success();
    c
}

#[test]
fn n1_allowed_host_through_the_proxy_denied_host_and_no_direct_route() {
    let up = Upstream::start("n1");
    let c = client_allowing("n1", &up);
    c.start();

    // Allowed: the upstream's own body, over plain HTTP and through a CONNECT tunnel.
    let out = curl(&c, &format!("http://{}/plain", up.authority()));
    assert_eq!(out.stdout, up.body, "allowed host over HTTP:\n{out}");
    let out = curl(&c, &format!("-p http://{}/tunnel", up.authority()));
    assert_eq!(out.stdout, up.body, "allowed host through CONNECT:\n{out}");

    // Denied: refused by the proxy, the upstream never sees it.
    let hits = up.hits.load(Ordering::SeqCst);
    let out = curl(&c, "https://denied.example.com/");
    assert!(!out.status.success(), "a denied host must fail:\n{out}");
    assert!(out.stderr.contains("403"), "the proxy refuses it:\n{out}");
    let out = curl(&c, &format!("http://127.0.0.2:{}/literal", up.port));
    assert!(
        !out.status.success(),
        "an unlisted IP literal must fail:\n{out}"
    );
    // A name never reaches loopback, even allowed with `--private`.
    sbx([
        "allow",
        &c.name,
        "--private",
        &format!("localhost:{}", up.port),
    ])
    .run()
    .success();
    let out = curl(&c, &format!("http://localhost:{}/byname", up.port));
    assert!(
        !out.status.success() && out.stderr.contains("403"),
        "a name resolving to loopback must be refused:\n{out}"
    );
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "nothing reached the upstream"
    );

    // No way around the proxy: no interface but loopback, no route, no DNS.
    let out = c.sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '");
    assert_eq!(out.stdout.trim(), "lo", "only loopback:\n{out}");
    let out = c.sh("cat /proc/net/route | tail -n +2");
    assert_eq!(out.stdout.trim(), "", "no route:\n{out}");
    let out = c.sh(&format!(
        "curl -sS --noproxy '*' --max-time 5 http://localhost:{}/direct",
        up.port
    ));
    assert!(
        !out.status.success(),
        "a direct connection must fail:\n{out}"
    );
    let out = c.sh("getent hosts example.com");
    assert!(!out.status.success(), "a DNS lookup must fail:\n{out}");
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "nothing reached the upstream"
    );

    // SSH goes through the proxy with CONNECT: the upstream (not an SSH server, so the
    // handshake fails) is reached although the sandbox has no route.
    let out = c.sh(&format!(
        "ssh -o BatchMode=yes -o ConnectTimeout=10 -p {} 127.0.0.1 true",
        up.port
    ));
    assert!(!out.status.success(), "{out}");
    assert!(
        up.hits.load(Ordering::SeqCst) > hits,
        "ssh did not reach the upstream through the proxy:\n{out}"
    );

    log_has_the_requests(&c, &up);
}

/// Every decision is a JSON line in the proxy's log, and every allowed request's end a
/// close line with the same id.
fn log_has_the_requests(c: &Client, up: &Upstream) {
    let out = sbx(["logs", &c.name, "--network", "-n", "50"])
        .run()
        .success();
    let decisions: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "decision")
        .collect();
    assert!(
        decisions
            .iter()
            .any(|d| d["decision"] == "allowed" && d["host"] == "127.0.0.1"),
        "{out}"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["decision"] == "denied" && d["host"] == "denied.example.com"),
        "{out}"
    );
    assert!(
        decisions.iter().any(|d| d["decision"] == "allowed"
            && d["method"] == "CONNECT"
            && d["port"] == u64::from(up.port)),
        "{out}"
    );
    assert!(
        decisions.iter().all(|d| d["client"] == c.name.as_str()),
        "{out}"
    );
    let closes: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "close")
        .collect();
    assert!(
        closes.iter().any(|cl| cl["bytes_down"].as_u64() > Some(0)
            && decisions
                .iter()
                .any(|d| d["id"] == cl["id"] && d["decision"] == "allowed")),
        "{out}"
    );
}

#[test]
fn n2_policy_changes_apply_without_a_restart() {
    let up = Upstream::start("n2");
    let c = Client::new("n2");
    enable_allowlist(&c);
    c.start();
    let pid = c.host_pid();
    let url = format!("http://{}/", up.authority());
    assert!(!curl(&c, &url).status.success(), "not allowed yet");
    sbx(["allow", &c.name, "--private", &up.authority()])
        .run()
        .success();
    assert_eq!(curl(&c, &url).stdout, up.body, "allowed now");
    sbx(["deny", &c.name, "127.0.0.1"]).run().success();
    let out = curl(&c, &url);
    assert!(!out.status.success(), "deny beats allow:\n{out}");
    assert_eq!(c.host_pid(), pid, "the sandbox was not restarted");
    let out = sbx(["policy", &c.name]).run().success();
    assert!(out.stdout.contains("127.0.0.1"), "{out}");
}

#[test]
fn n3_fails_closed_without_the_proxy_and_socket_activation_brings_it_back() {
    let up = Upstream::start("n3");
    let c = client_allowing("n3", &up);
    c.start();
    let url = format!("http://{}/", up.authority());
    let socket = format!("sandboxctl-proxy@{}.socket", c.name);
    let service = format!("sandboxctl-proxy@{}.service", c.name);
    assert_eq!(curl(&c, &url).stdout, up.body);

    // The proxy process stopped, its socket still listening: the next connection starts
    // it again.
    systemctl(["stop", &service]).run().success();
    assert_eq!(curl(&c, &url).stdout, up.body, "socket activation");
    let active = systemctl(["is-active", &service]).run();
    assert_eq!(active.stdout.trim(), "active", "{active}");

    // Proxy and socket stopped: nothing gets out.
    systemctl(["stop", &socket, &service]).run().success();
    let out = curl(&c, &url);
    assert!(!out.status.success(), "no proxy, no traffic:\n{out}");
    let hits = up.hits.load(Ordering::SeqCst);
    assert!(!curl(&c, &url).status.success());
    assert_eq!(up.hits.load(Ordering::SeqCst), hits);

    // Back on the next connection once the socket listens again.
    systemctl(["start", &socket]).run().success();
    wait_for(
        "traffic after the socket came back",
        Duration::from_secs(20),
        || (curl(&c, &url).stdout == up.body).then_some(()),
        || curl(&c, &url).to_string(),
    );
}

#[test]
fn n4_an_invalid_policy_refuses_everything() {
    let up = Upstream::start("n4");
    let c = client_allowing("n4", &up);
    c.start();
    let url = format!("http://{}/", up.authority());
    assert_eq!(curl(&c, &url).stdout, up.body);
    let policy = c.data_dir().join("config/network.toml");
    let good = std::fs::read_to_string(&policy).expect("policy");
    std::fs::write(&policy, "allow = [ this is not toml\n").expect("break the policy");
    let out = curl(&c, &url);
    assert!(
        !out.status.success(),
        "an invalid policy must refuse:\n{out}"
    );
    std::fs::remove_file(&policy).expect("remove the policy");
    assert!(
        !curl(&c, &url).status.success(),
        "a missing policy must refuse"
    );
    std::fs::write(&policy, good).expect("restore");
    assert_eq!(curl(&c, &url).stdout, up.body, "restored");
}

#[test]
fn n5_one_clients_proxy_is_not_reachable_from_another() {
    let up = Upstream::start("n5");
    let a = Client::new("n5a");
    let b = Client::new("n5b");
    enable_allowlist(&a);
    enable_allowlist(&b);
    sbx(["allow", &a.name, "--private", &up.authority()])
        .run()
        .success();
    a.start();
    b.start();
    let url = format!("http://{}/", up.authority());
    assert_eq!(curl(&a, &url).stdout, up.body, "a may");
    let out = curl(&b, &url);
    assert!(
        !out.status.success(),
        "b's own policy does not allow it:\n{out}"
    );

    // b sees its own socket only; a's socket directory does not exist in b.
    let out = b.sh("ls /run/sandbox-proxy");
    assert_eq!(out.stdout.trim(), "proxy.sock", "{out}");
    let a_dir = format!(
        "/run/user/{}/agent-sandbox/proxy/{}",
        crate::harness::env().uid,
        a.name
    );
    let out = b.sh(&format!(
        "if [ -e {a_dir} ] || [ -e /run/user ]; then echo visible; fi; \
         find / -path /proc -prune -o -name proxy.sock -print 2>/dev/null"
    ));
    assert_eq!(
        out.stdout.trim(),
        "/run/sandbox-proxy/proxy.sock",
        "b sees exactly one proxy socket, its own:\n{out}"
    );
}
