//! The egress proxy against local upstream servers on 127.0.0.x and a test resolver
//! that maps names to addresses and records every lookup. Nothing here needs more than
//! loopback: the test resolver dials any address that is not loopback as
//! 127.0.0.<its last byte>, so `198.51.100.2` (a public address to the proxy's checks)
//! or `10.1.2.3` (a private one) reach the upstream on 127.0.0.2 or 127.0.0.3.

// Test helpers outside `#[test]` functions unwrap too (ARCHITECTURE.md, Conventions: tests may).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use sandboxctl::proxy::{Config, Listen, Listener, LogSink, Resolver, Stopped, policy, serve};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// An HTTP server standing in for a remote host.
struct Upstream {
    addr: SocketAddr,
    /// Headers of every request it got.
    requests: Arc<Mutex<Vec<(String, HeaderMap)>>>,
}

impl Upstream {
    async fn start(ip: &str, name: &'static str) -> Upstream {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    seen.lock()
                        .unwrap()
                        .push((req.uri().to_string(), req.headers().clone()));
                    let body = format!("hello from {name} {}", req.uri().path());
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Upstream { addr, requests }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Answers from a fixed table and records each lookup.
#[derive(Clone, Default)]
struct TestResolver {
    table: Arc<HashMap<String, Vec<IpAddr>>>,
    lookups: Arc<Mutex<Vec<String>>>,
    /// Ports dialled as other ports (443, which a test cannot listen on, as an
    /// upstream's).
    ports: Arc<HashMap<u16, u16>>,
}

impl Resolver for TestResolver {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.lookups.lock().unwrap().push(host.to_owned());
        self.table
            .get(host)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such test name"))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let mut addr = stand_in(addr);
        if let Some(&port) = self.ports.get(&addr.port()) {
            addr.set_port(port);
        }
        TcpStream::connect(addr).await
    }
}

/// Where the test resolver really connects for `addr`: loopback as is, anything else
/// on 127.0.0.<last byte>.
fn stand_in(addr: SocketAddr) -> SocketAddr {
    let ip = addr.ip().to_canonical();
    if ip.is_loopback() {
        return addr;
    }
    let last = match ip {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    SocketAddr::from(([127, 0, 0, last], addr.port()))
}

struct Proxy {
    addr: SocketAddr,
    policy: PathBuf,
    lookups: Arc<Mutex<Vec<String>>>,
    logs: Arc<Mutex<Vec<String>>>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(policy_text: &str, dns: &[(&str, &str)]) -> Proxy {
        Self::start_with(policy_text, dns, |_| {})
    }

    /// [`Proxy::start`] with settings changed by `tweak`.
    fn start_with(
        policy_text: &str,
        dns: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
    ) -> Proxy {
        Self::start_dialling(policy_text, dns, &[], tweak)
    }

    /// [`Proxy::start_with`] with ports dialled as others (`(443, upstream_port)`).
    fn start_dialling(
        policy_text: &str,
        dns: &[(&str, &str)],
        ports: &[(u16, u16)],
        tweak: impl FnOnce(&mut Config),
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("network.toml");
        std::fs::write(&policy, policy_text).unwrap();
        let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in dns {
            table
                .entry((*name).to_owned())
                .or_default()
                .push(ip.parse().unwrap());
        }
        let resolver = TestResolver {
            table: Arc::new(table),
            lookups: Arc::default(),
            ports: Arc::new(ports.iter().copied().collect()),
        };
        let lookups = resolver.lookups.clone();
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut cfg = Config::new("acme", &policy);
        cfg.log = LogSink::Memory(logs.clone());
        cfg.header_read_timeout = Duration::from_millis(300);
        cfg.connect_timeout = Duration::from_millis(500);
        tweak(&mut cfg);
        let listener = Listener::open(&Listen::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_tcp_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, cfg, resolver, async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            policy,
            lookups,
            logs,
            _stop: stop,
            _dir: dir,
        }
    }

    fn lookups(&self) -> Vec<String> {
        self.lookups.lock().unwrap().clone()
    }

    /// Sends raw bytes on a new connection and returns all it gets until EOF.
    async fn raw(&self, request: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        read_to_eof(&mut s).await
    }

    /// `GET http://host:port/path` through the proxy.
    async fn get(&self, host: &str, port: u16, path: &str) -> String {
        self.raw(
            format!("GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await
    }

    /// `CONNECT host:port`, then, if the tunnel is up, a GET through it.
    async fn connect(&self, authority: &str) -> String {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await;
        if !head.starts_with("HTTP/1.1 200") {
            return head + &read_to_eof(&mut s).await;
        }
        s.write_all(b"GET /tunnel HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        head + &read_to_eof(&mut s).await
    }

    /// The decision lines written so far, waiting (bounded) until `n` are there.
    async fn decisions(&self, n: usize) -> Vec<serde_json::Value> {
        lines(&self.logs, "decision", n).await
    }

    /// The close lines written so far, waiting (bounded) until `n` are there: a
    /// tunnel's close line is written when it closes, just after the client saw EOF.
    async fn closes(&self, n: usize) -> Vec<serde_json::Value> {
        lines(&self.logs, "close", n).await
    }
}

/// The log lines of one event, waiting (bounded) until there are `n`.
async fn lines(logs: &Mutex<Vec<String>>, event: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let lines = events(logs, event);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} {event} lines: {:?}", logs.lock().unwrap());
}

/// The log lines of one event written so far.
fn events(logs: &Mutex<Vec<String>>, event: &str) -> Vec<serde_json::Value> {
    logs.lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == event)
        .collect()
}

async fn read_to_eof<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(
        res.is_ok(),
        "connection not closed: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(1)) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("(no response)")
}

fn private_rule(host: &str, port: u16) -> String {
    format!("{{ host = \"{host}:{port}\", private = true }}")
}

// --- allowed and denied names --------------------------------------------------------

/// A client that shuts its write side after the request (as `socat` does at the end of
/// its input) still gets the answer.
#[tokio::test]
async fn a_half_closed_client_still_gets_its_answer() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let p = Proxy::start(
        &format!("allow = [{}]", private_rule("ok.test", up.port())),
        &[("ok.test", "198.51.100.2")],
    );
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let port = up.port();
    s.write_all(
        format!("GET http://ok.test:{port}/half HTTP/1.1\r\nHost: ok.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    s.shutdown().await.unwrap();
    let resp = read_to_eof(&mut s).await;
    assert_eq!(status(&resp), "200", "{resp}");
    assert!(resp.ends_with("hello from ok /half"), "{resp}");
}

#[tokio::test]
async fn allowed_name_reaches_the_upstream_over_http_and_connect() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let p = Proxy::start(
        &format!("allow = [{}]", private_rule("ok.test", up.port())),
        &[("ok.test", "198.51.100.2")],
    );

    let resp = p.get("ok.test", up.port(), "/plain").await;
    assert_eq!(status(&resp), "200", "{resp}");
    assert!(resp.ends_with("hello from ok /plain"), "{resp}");

    let resp = p.connect(&format!("ok.test:{}", up.port())).await;
    assert_eq!(status(&resp), "200", "{resp}");
    assert!(resp.ends_with("hello from ok /tunnel"), "{resp}");
    assert_eq!(p.lookups(), ["ok.test", "ok.test"]);

    let lines = p.decisions(2).await;
    let closes = p.closes(2).await;
    for ((line, close), method) in lines.iter().zip(&closes).zip(["GET", "CONNECT"]) {
        assert_eq!(line["decision"], "allowed", "{line}");
        assert_eq!(line["client"], "acme");
        assert_eq!(line["host"], "ok.test");
        assert_eq!(line["port"], up.port());
        assert_eq!(line["method"], method);
        assert_eq!(line["addr"], format!("198.51.100.2:{}", up.port()));
        assert_eq!(close["id"], line["id"], "{close}");
        assert_eq!(close["method"], method);
        assert!(close["bytes_down"].as_u64().unwrap() >= 20, "{close}");
        assert!(close["duration_ms"].is_u64());
        assert!(close.get("error").is_none(), "{close}");
    }
    assert_ne!(lines[0]["id"], lines[1]["id"]);
    // The tunnel took the zero-copy path (splice between the two sockets); a plain
    // request has no tunnel and says nothing about it.
    assert_eq!(closes[1]["copy"], "splice", "{}", closes[1]);
    assert!(closes[0].get("copy").is_none(), "{}", closes[0]);
    // The tunnel carried the GET one way and the response the other.
    assert!(
        closes[1]["bytes_up"].as_u64().unwrap() > 40,
        "{}",
        closes[1]
    );
}

#[tokio::test]
async fn denied_name_is_refused_and_never_resolved() {
    let up = Upstream::start("127.0.0.2", "evil").await;
    let p = Proxy::start(
        &format!(
            "allow = [{}]\ndeny = [\"blocked.test\"]",
            private_rule("blocked.test", up.port())
        ),
        &[
            ("evil.test", "198.51.100.2"),
            ("blocked.test", "198.51.100.2"),
        ],
    );
    for host in ["evil.test", "blocked.test"] {
        let resp = p.connect(&format!("{host}:{}", up.port())).await;
        assert_eq!(status(&resp), "403", "{resp}");
        assert!(resp.contains("refused: denied by policy"), "{resp}");
        assert!(resp.contains("sandboxctl allow acme"), "{resp}");
        assert!(!resp.contains("allowlist"), "{resp}");
        let resp = p.get(host, up.port(), "/").await;
        assert_eq!(status(&resp), "403", "{resp}");
    }
    assert_eq!(p.lookups(), Vec::<String>::new());
    assert_eq!(up.hits(), 0);
    let lines = p.decisions(4).await;
    assert!(lines.iter().all(|l| l["decision"] == "denied"));
    assert_eq!(lines[0]["reason"], "host not in allowlist");
    assert_eq!(lines[2]["reason"], "denied by `blocked.test`");
    // A refused request is over at its decision: no close line.
    assert!(events(&p.logs, "close").is_empty());
}

#[tokio::test]
async fn wildcard_and_port_rules() {
    let up = Upstream::start("127.0.0.2", "wild").await;
    let other = Upstream::start("127.0.0.2", "other-port").await;
    let p = Proxy::start(
        &format!(
            "allow = [{}, \"portless.test\"]",
            private_rule("*.wild.test", up.port())
        ),
        &[
            ("a.wild.test", "198.51.100.2"),
            ("a.b.wild.test", "198.51.100.2"),
            ("wild.test", "198.51.100.2"),
            ("portless.test", "198.51.100.2"),
        ],
    );
    for host in ["a.wild.test", "a.b.wild.test"] {
        let resp = p.connect(&format!("{host}:{}", up.port())).await;
        assert!(resp.ends_with("hello from wild /tunnel"), "{host}: {resp}");
    }
    // Not the suffix itself, not another port, and a rule without port means 443 only.
    for target in [
        format!("wild.test:{}", up.port()),
        format!("a.wild.test:{}", other.port()),
        format!("portless.test:{}", up.port()),
        "portless.test:80".to_owned(),
    ] {
        let resp = p.connect(&target).await;
        assert_eq!(status(&resp), "403", "{target}: {resp}");
    }
    assert_eq!(p.lookups(), ["a.wild.test", "a.b.wild.test"]);
    assert_eq!(other.hits(), 0);
}

#[tokio::test]
async fn deny_beats_allow() {
    let up = Upstream::start("127.0.0.2", "both").await;
    let p = Proxy::start(
        &format!(
            "allow = [{}]\ndeny = [\"x.both.test\"]",
            private_rule("*.both.test", up.port())
        ),
        &[
            ("x.both.test", "198.51.100.2"),
            ("y.both.test", "198.51.100.2"),
        ],
    );
    let resp = p.connect(&format!("x.both.test:{}", up.port())).await;
    assert_eq!(status(&resp), "403", "{resp}");
    let resp = p.connect(&format!("y.both.test:{}", up.port())).await;
    assert!(resp.ends_with("hello from both /tunnel"), "{resp}");
    assert_eq!(p.lookups(), ["y.both.test"]);
}

// --- addresses -----------------------------------------------------------------------

/// Every address range against every kind of rule: `private = true` on a name, on a
/// wildcard and on the literal address, and a name without `private`. Private networks
/// open to any private rule; loopback, link-local and metadata only to a private rule
/// naming the literal address; unspecified never; no rule without `private` opens any.
#[tokio::test]
async fn what_each_kind_of_rule_unlocks_in_each_address_range() {
    // (label, address, opened by a private name or wildcard, by a private literal)
    let table = [
        ("rfc1918", "10.1.2.3", true, true),
        ("cgnat", "100.64.0.3", true, true),
        ("ula", "fd12::3", true, true),
        ("loop", "127.0.0.3", false, true),
        ("loopmapped", "::ffff:127.0.0.3", false, true),
        ("linklocal", "169.254.1.3", false, true),
        ("linklocal6", "fe80::3", false, true),
        ("meta", "169.254.169.254", false, true),
        ("meta6", "fd00:ec2::254", false, true),
        ("ietf", "192.0.0.3", false, true),
        ("unspecified", "0.0.0.3", false, false),
    ];
    let mut ups: HashMap<u8, Upstream> = HashMap::new();
    let mut allow = Vec::new();
    let mut dns = Vec::new();
    let mut cases = Vec::new();
    for (label, ip, by_name, by_literal) in table {
        let addr: IpAddr = ip.parse().unwrap();
        let IpAddr::V4(real) = stand_in(SocketAddr::new(addr, 1)).ip().to_canonical() else {
            unreachable!("{ip} is dialled on 127.0.0.x")
        };
        let last = real.octets()[3];
        if let std::collections::hash_map::Entry::Vacant(e) = ups.entry(last) {
            e.insert(Upstream::start(&format!("127.0.0.{last}"), "internal").await);
        }
        let port = ups[&last].port();
        let literal = match addr {
            IpAddr::V4(_) => ip.to_owned(),
            IpAddr::V6(_) => format!("[{ip}]"),
        };
        allow.extend([
            private_rule(&format!("n.{label}.test"), port),
            private_rule(&format!("*.w.{label}.test"), port),
            private_rule(&literal, port),
            format!("\"p.{label}.test:{port}\""),
        ]);
        for name in ["n", "x.w", "p"] {
            dns.push((format!("{name}.{label}.test"), ip));
        }
        cases.extend([
            (format!("n.{label}.test:{port}"), by_name, "name"),
            (format!("x.w.{label}.test:{port}"), by_name, "wildcard"),
            (format!("{literal}:{port}"), by_literal, "literal"),
            (format!("p.{label}.test:{port}"), false, "no private"),
        ]);
    }
    let dns: Vec<(&str, &str)> = dns.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let p = Proxy::start(&format!("allow = [{}]", allow.join(", ")), &dns);
    for (target, open, kind) in cases {
        let resp = p.connect(&target).await;
        if open {
            assert!(
                resp.ends_with("hello from internal /tunnel"),
                "{target} ({kind} rule) must be open: {resp}"
            );
            continue;
        }
        assert_eq!(status(&resp), "403", "{target} ({kind} rule): {resp}");
        // The client learns nothing about what the name resolves to.
        assert!(resp.contains("refused: denied by policy"), "{resp}");
        assert!(
            !resp.contains("resolves") && !resp.contains("address"),
            "{resp}"
        );
        let denied = p.decisions(1).await.pop().unwrap();
        assert_eq!(denied["decision"], "denied");
        let reason = denied["reason"].as_str().unwrap();
        assert!(reason.contains("resolves to"), "{target}: {reason}");
    }
}

/// A name with several answers is refused if any of them is forbidden, and a public
/// answer passes the address check.
#[tokio::test]
async fn one_forbidden_answer_refuses_the_name() {
    let up = Upstream::start("127.0.0.3", "internal").await;
    let port = up.port();
    let p = Proxy::start(
        &format!(
            "allow = [{}, {}]",
            private_rule("mixed.test", port),
            private_rule("public.test", port)
        ),
        &[
            ("mixed.test", "198.51.100.3"),
            ("mixed.test", "169.254.169.254"),
            ("public.test", "198.51.100.3"),
        ],
    );
    let resp = p.connect(&format!("mixed.test:{port}")).await;
    assert_eq!(status(&resp), "403", "{resp}");
    let reason = p.decisions(1).await[0]["reason"].to_string();
    assert!(reason.contains("cloud metadata"), "{reason}");
    let resp = p.connect(&format!("public.test:{port}")).await;
    assert!(resp.ends_with("hello from internal /tunnel"), "{resp}");
}

#[tokio::test]
async fn literal_ips_are_refused_unless_listed() {
    let up = Upstream::start("127.0.0.4", "literal").await;
    let port = up.port();
    let p = Proxy::start(
        &format!(
            "allow = [{}, \"127.0.0.5:{port}\", \"literal.test:{port}\"]",
            private_rule("127.0.0.4", port)
        ),
        &[("literal.test", "127.0.0.4")],
    );
    // Listed (with private, as it is loopback): served, no DNS.
    let resp = p.connect(&format!("127.0.0.4:{port}")).await;
    assert!(resp.ends_with("hello from literal /tunnel"), "{resp}");
    let resp = p.connect(&format!("[::ffff:127.0.0.4]:{port}")).await;
    assert!(resp.ends_with("hello from literal /tunnel"), "{resp}");
    let resp = p.get("127.0.0.4", port, "/x").await;
    assert!(resp.ends_with("hello from literal /x"), "{resp}");
    // Not listed, even though a listed name resolves to it.
    for target in [
        format!("127.0.0.6:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.4:{}", port.wrapping_add(1).max(1)),
    ] {
        let resp = p.connect(&target).await;
        assert_eq!(status(&resp), "403", "{target}: {resp}");
        assert!(resp.contains("refused: denied by policy"), "{resp}");
        let line = p.decisions(1).await.pop().unwrap();
        assert_eq!(line["reason"], "IP literal not listed", "{line}");
    }
    // Listed without `private`: still refused, it is loopback.
    let resp = p.connect(&format!("127.0.0.5:{port}")).await;
    assert_eq!(status(&resp), "403", "{resp}");
    let line = p.decisions(1).await.pop().unwrap();
    assert!(line["reason"].to_string().contains("loopback"), "{line}");
    // Numeric forms resolvers accept as IPs are not names.
    let resp = p.connect(&format!("127.1:{port}")).await;
    assert_eq!(status(&resp), "400", "{resp}");
    assert_eq!(p.lookups(), Vec::<String>::new());
}

// --- hostile requests ----------------------------------------------------------------

/// Each bad request gets an error and a closed connection, and the proxy still serves
/// the next request.
#[tokio::test]
async fn hostile_requests_get_an_error_and_a_closed_connection() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let port = up.port();
    let p = Proxy::start(
        &format!("allow = [{}]", private_rule("ok.test", port)),
        &[("ok.test", "198.51.100.2")],
    );
    let big = "a".repeat(20 * 1024);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"\x16\x03\x01 GARBAGE\r\n\r\n".to_vec(), "400"),
        ("no version", b"GET http://ok.test/\r\n\r\n".to_vec(), "400"),
        (
            "bad header",
            b"GET http://ok.test/ HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "oversized header",
            format!("GET http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\nX-Big: {big}\r\n\r\n")
                .into_bytes(),
            "431",
        ),
        (
            "CL and TE",
            format!(
                "POST http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 4\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ok.test\r\n\r\n"
            )
            .into_bytes(),
            "400",
        ),
        (
            "TE and CL",
            format!(
                "POST http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ok.test\r\n\r\n"
            )
            .into_bytes(),
            "400",
        ),
        (
            "double CL, same value",
            format!(
                "POST http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 3\r\n\
                 Content-Length: 3\r\n\r\nabcGET /smuggled HTTP/1.1\r\n\r\n"
            )
            .into_bytes(),
            "400",
        ),
        (
            "double CL, different values",
            format!(
                "POST http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 3\r\n\
                 Content-Length: 30\r\n\r\nabc"
            )
            .into_bytes(),
            "400",
        ),
        (
            "https absolute URI",
            b"GET https://ok.test/ HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "CONNECT without port",
            b"CONNECT ok.test HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
            "400",
        ),
    ];
    for (what, request, want) in cases {
        let resp = p.raw(&request).await;
        assert_eq!(status(&resp), want, "{what}: {resp}");
        let ok = p.get("ok.test", port, "/after").await;
        assert!(ok.ends_with("hello from ok /after"), "after {what}: {ok}");
    }
    assert!(
        up.requests
            .lock()
            .unwrap()
            .iter()
            .all(|(uri, _)| uri == "/after"),
        "a smuggled request reached the upstream"
    );
    assert!(p.lookups().iter().all(|n| n == "ok.test"));
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_the_proxy_keeps_serving() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let port = up.port();
    let p = Proxy::start(
        &format!("allow = [{}]", private_rule("ok.test", port)),
        &[("ok.test", "198.51.100.2")],
    );
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(format!("CONNECT ok.test:{port} HTTP/1.1\r\nHost: ok").as_bytes())
            .await
            .unwrap();
        slow.push(s);
    }
    // Meanwhile others are served.
    let ok = p.get("ok.test", port, "/during").await;
    assert!(ok.ends_with("hello from ok /during"), "{ok}");
    // The slow ones are closed by the header timeout (300 ms here), without a tunnel.
    for mut s in slow {
        let got = read_to_eof(&mut s).await;
        assert!(!got.contains(" 200 "), "{got}");
    }
    let ok = p.get("ok.test", port, "/after").await;
    assert!(ok.ends_with("hello from ok /after"), "{ok}");
    let lines = p.decisions(5).await;
    assert!(
        lines
            .iter()
            .filter(|l| l["reason"].as_str().is_some_and(|r| r.contains("timeout")))
            .count()
            == 3,
        "{lines:?}"
    );
}

#[tokio::test]
async fn forwarded_requests_lose_hop_by_hop_headers_and_carry_the_allowed_host() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let port = up.port();
    let p = Proxy::start(
        &format!("allow = [{}]", private_rule("ok.test", port)),
        &[("ok.test", "198.51.100.2")],
    );
    let resp = p
        .raw(
            format!(
                "POST http://ok.test:{port}/post?q=1 HTTP/1.1\r\nHost: evil.test\r\n\
                 Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nProxy-Authorization: Basic eA==\r\n\
                 Proxy-Connection: keep-alive\r\nAuthorization: Bearer end-to-end\r\n\
                 Content-Length: 5\r\n\r\nhello"
            )
            .as_bytes(),
        )
        .await;
    assert!(resp.ends_with("hello from ok /post"), "{resp}");
    let (uri, headers) = up.requests.lock().unwrap()[0].clone();
    assert_eq!(uri, "/post?q=1");
    assert_eq!(headers["host"], format!("ok.test:{port}").as_str());
    assert_eq!(headers["authorization"], "Bearer end-to-end");
    for gone in ["x-secret", "proxy-authorization", "proxy-connection"] {
        assert!(!headers.contains_key(gone), "{gone} forwarded");
    }
    let lines = p.closes(1).await;
    assert_eq!(lines[0]["bytes_up"], 5);
    assert_eq!(lines[0]["status"], 200);
}

// --- the policy file -----------------------------------------------------------------

#[tokio::test]
async fn policy_changes_apply_to_the_next_connection() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let port = up.port();
    let p = Proxy::start("", &[("ok.test", "198.51.100.2")]);
    let target = format!("ok.test:{port}");
    assert_eq!(status(&p.connect(&target).await), "403");

    policy::add_allow_private(&p.policy, &[&target]).unwrap();
    let resp = p.connect(&target).await;
    assert!(resp.ends_with("hello from ok /tunnel"), "{resp}");

    policy::add_deny(&p.policy, &["ok.test"]).unwrap();
    assert_eq!(status(&p.connect(&target).await), "403");
    assert_eq!(p.lookups(), ["ok.test"]);
}

#[tokio::test]
async fn invalid_or_missing_policy_denies_everything() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let port = up.port();
    let target = format!("ok.test:{port}");
    let p = Proxy::start(
        &format!("allow = [{}]", private_rule("ok.test", port)),
        &[("ok.test", "198.51.100.2")],
    );
    assert_eq!(status(&p.connect(&target).await), "200");

    for broken in [
        "allow = [",
        "allow = [\"https://ok.test\"]",
        "bundles = [\"everything\"]",
        "allow_all = true",
    ] {
        std::fs::write(&p.policy, format!("{broken}\n# {port}\n")).unwrap();
        let resp = p.connect(&target).await;
        assert_eq!(status(&resp), "403", "{broken}: {resp}");
        // The client learns that there is no policy, not where it is or what is wrong.
        assert!(resp.contains("refused: policy unavailable"), "{resp}");
        assert!(
            !resp.contains("network") && !resp.contains(".toml"),
            "{resp}"
        );
        let denied = p.decisions(1).await.pop().unwrap();
        let reason = denied["reason"].as_str().unwrap();
        assert!(
            reason.contains("network.toml"),
            "the log has the detail: {reason}"
        );
    }
    std::fs::remove_file(&p.policy).unwrap();
    let resp = p.connect(&target).await;
    assert_eq!(status(&resp), "403", "{resp}");
    assert_eq!(p.lookups(), ["ok.test"]);
    assert_eq!(up.hits(), 1);
    let policy_events = p
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(r#""event":"policy""#) && l.contains("denying everything"))
        .count();
    assert_eq!(policy_events, 5);
}

// --- resource limits and audit -------------------------------------------------------

/// `CONNECT` on a connected stream; the response head.
async fn open_tunnel<S>(s: &mut S, authority: &str) -> String
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(s).await
}

/// Reads until `want` has arrived (bounded), returning what was read.
async fn read_until<S: AsyncRead + Unpin>(s: &mut S, want: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before {want:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The cap holds: past it, connections get a quick 503 and are closed, one log line
/// says so (not one per connection), the tunnels inside the cap keep working, and a
/// tunnel that closes frees its place.
#[tokio::test]
async fn connections_past_the_cap_are_refused_quickly_and_quietly() {
    const CAP: usize = 20;
    const EXTRA: usize = 50;
    let up = Upstream::start("127.0.0.2", "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("network.toml");
    std::fs::write(&policy, format!("allow = [\"ok.test:{}\"]", up.port())).unwrap();
    let sock = dir.path().join("proxy.sock");
    let listener = Listener::open(&Listen::Unix(sock.clone())).unwrap();
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut cfg = Config::new("acme", &policy);
    cfg.log = LogSink::Memory(logs.clone());
    cfg.max_connections = CAP;
    let resolver = TestResolver {
        table: Arc::new(HashMap::from([(
            "ok.test".to_owned(),
            vec!["198.51.100.2".parse().unwrap()],
        )])),
        ..TestResolver::default()
    };
    tokio::spawn(serve(listener, cfg, resolver, std::future::pending()));
    let target = format!("ok.test:{}", up.port());

    let mut tunnels = Vec::new();
    for _ in 0..CAP {
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let head = open_tunnel(&mut s, &target).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tunnels.push(s);
    }
    let start = std::time::Instant::now();
    for i in 0..EXTRA {
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let resp = read_to_eof(&mut s).await;
        assert_eq!(status(&resp), "503", "extra connection {i}: {resp}");
        assert!(resp.contains("too many open connections"), "{resp}");
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{EXTRA} refusals took {took:?}"
    );
    let limit_lines = events(&logs, "connection_limit");
    assert_eq!(limit_lines.len(), 1, "{limit_lines:?}");
    assert_eq!(limit_lines[0]["max_connections"], CAP);
    assert_eq!(
        events(&logs, "decision").len(),
        CAP,
        "refusals at the cap are not decisions"
    );

    // The tunnels inside the cap still carry traffic.
    let s = &mut tunnels[CAP - 1];
    s.write_all(b"GET /inside HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    read_until(s, "hello from ok /inside").await;

    // Closing one frees its place.
    drop(tunnels.pop());
    let mut served = false;
    for _ in 0..100 {
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        if open_tunnel(&mut s, &target)
            .await
            .starts_with("HTTP/1.1 200")
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no place freed after a tunnel closed");
}

#[tokio::test]
async fn decision_is_logged_while_the_tunnel_is_open_and_close_when_it_ends() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let port = up.port();
    let p = Proxy::start(
        &format!("allow = [\"ok.test:{port}\"]"),
        &[("ok.test", "198.51.100.2")],
    );
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let head = open_tunnel(&mut s, &format!("ok.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let decision = p.decisions(1).await.remove(0);
    assert_eq!(decision["decision"], "allowed");
    assert_eq!(decision["method"], "CONNECT");
    assert_eq!(decision["host"], "ok.test");
    assert_eq!(decision["addr"], format!("198.51.100.2:{port}"));
    assert!(decision["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(decision.get("bytes_up").is_none());
    s.write_all(b"GET /open HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, "hello from ok /open").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(events(&p.logs, "close").is_empty(), "closed too early");

    drop(s);
    let close = p.closes(1).await.remove(0);
    assert_eq!(close["id"], decision["id"]);
    assert!(close["bytes_up"].as_u64().unwrap() > 30, "{close}");
    assert!(close["bytes_down"].as_u64().unwrap() > 20, "{close}");
}

#[tokio::test]
async fn idle_tunnels_are_closed_and_busy_ones_are_not() {
    let up = Upstream::start("127.0.0.2", "ok").await;
    let port = up.port();
    let timeout = Duration::from_millis(300);
    let p = Proxy::start_with(
        &format!("allow = [\"ok.test:{port}\"]"),
        &[("ok.test", "198.51.100.2")],
        |cfg| cfg.idle_timeout = timeout,
    );
    let target = format!("ok.test:{port}");
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    assert!(
        open_tunnel(&mut idle, &target)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut busy = TcpStream::connect(p.addr).await.unwrap();
    assert!(
        open_tunnel(&mut busy, &target)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let opened = std::time::Instant::now();

    // A request every 100 ms for over three timeouts keeps the busy one open.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy.write_all(format!("GET /busy{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_until(&mut busy, &format!("hello from ok /busy{i}")).await;
    }
    // The idle one was closed after the timeout.
    let rest = read_to_eof(&mut idle).await;
    assert_eq!(rest, "", "the idle tunnel got data");
    let close = p.closes(1).await.remove(0);
    assert_eq!(close["error"], "idle timeout", "{close}");
    let ms = close["duration_ms"].as_u64().unwrap();
    assert!((300..1000).contains(&ms), "closed after {ms} ms");
    assert!(opened.elapsed() > timeout * 3);
    assert_eq!(
        events(&p.logs, "close").len(),
        1,
        "the busy tunnel was closed"
    );
}

/// A plain-HTTP request whose body stops coming (to an upstream that waits for it) is
/// closed after the idle timeout instead of holding its place forever.
#[tokio::test]
async fn a_stalled_request_body_is_closed() {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // An upstream that reads whatever comes and never answers.
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    let p = Proxy::start_with(
        &format!("allow = [\"ok.test:{port}\"]"),
        &[("ok.test", "198.51.100.2")],
        |cfg| cfg.idle_timeout = Duration::from_millis(300),
    );
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        format!("POST http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 100\r\n\r\nhello")
            .as_bytes(),
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let resp = read_to_eof(&mut s).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "held for {took:?}: {resp}");
    let close = p.closes(1).await.remove(0);
    assert_eq!(close["error"], "idle timeout", "{close}");
    assert_eq!(close["bytes_up"], 5, "{close}");
}

// --- listeners and lifecycle ---------------------------------------------------------

#[tokio::test]
async fn unix_listener_is_private_and_idle_exit_stops_the_proxy() {
    use std::os::unix::fs::PermissionsExt as _;
    let up = Upstream::start("127.0.0.2", "unix").await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("network.toml");
    std::fs::write(
        &policy,
        format!("allow = [{}]", private_rule("ok.test", up.port())),
    )
    .unwrap();
    let sock = dir.path().join("proxy.sock");
    let listener = Listener::open(&Listen::Unix(sock.clone())).unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut cfg = Config::new("acme", &policy);
    cfg.log = LogSink::Memory(Arc::default());
    cfg.idle_exit = Some(Duration::from_millis(300));
    let resolver = TestResolver {
        table: Arc::new(HashMap::from([(
            "ok.test".to_owned(),
            vec!["198.51.100.2".parse().unwrap()],
        )])),
        ..TestResolver::default()
    };
    let server = tokio::spawn(serve(listener, cfg, resolver, std::future::pending()));

    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(format!("CONNECT ok.test:{} HTTP/1.1\r\n\r\n", up.port()).as_bytes())
        .await
        .unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    // An open tunnel keeps the proxy up past the idle period.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!server.is_finished());
    s.write_all(b"GET /unix HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_eof(&mut s).await.ends_with("hello from unix /unix"));
    drop(s);
    let stopped = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the proxy did not exit when idle")
        .unwrap();
    assert_eq!(stopped, Stopped::Idle);
}

#[test]
fn shutdown_future_stops_the_proxy() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let listener = Listener::open(&Listen::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        let mut cfg = Config::new("acme", dir.path().join("missing.toml"));
        cfg.log = LogSink::Memory(Arc::default());
        let stopped = serve(listener, cfg, TestResolver::default(), async {}).await;
        assert_eq!(stopped, Stopped::Shutdown);
    });
}

// Proxy-held API keys: the agent asks the forwarder for `/<provider>/…` with a
// placeholder; the proxy adds the key and talks TLS to a local stand-in for the
// provider's host (certificate from a test CA).

use crate::support::tls_upstream;

use sandboxctl::proxy::keyed::{self, Keys};
use tls_upstream::{TestCa, TlsUpstream};

const KEY: &str = "sk-ant-api03-REAL-KEY-never-inside";

/// A proxy that adds keys for `providers`, trusting `ca` and reaching the providers at
/// `upstream`; `key` is stored for each provider when given.
fn keyed_proxy(
    providers: Vec<&'static keyed::Provider>,
    ca_pem: &str,
    upstream: SocketAddr,
    key: Option<&str>,
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    if let Some(k) = key {
        for p in &providers {
            keyed::store(dir.path(), p.key_var, k.as_bytes()).unwrap();
        }
    }
    let mut keys = Keys::new(providers, dir.path().join(keyed::KEY_DIR), Some(&ca)).unwrap();
    keys.connect_to = Some(upstream);
    // The stand-in's streaming path, as a client widens the key path (`--key-path`).
    keys.extra_paths = vec!["/stream".to_owned()];
    let policy = "allow = [\"api.anthropic.com\", \"api.openai.com\"]";
    let proxy = Proxy::start_with(policy, &[], |cfg| cfg.keys = Some(keys));
    (proxy, dir)
}

#[tokio::test]
async fn the_proxy_adds_the_key_upstream_and_the_agent_never_sees_it() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca).await;
    let (proxy, _dir) = keyed_proxy(vec![&keyed::ANTHROPIC], &ca.ca_pem, up.addr, Some(KEY));
    let resp = proxy
        .raw(
            format!(
                "POST /anthropic/v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\
                 x-api-key: {}\r\nAuthorization: Bearer also-not-the-key\r\n\
                 Content-Length: 2\r\n\r\n{{}}",
                keyed::PLACEHOLDER
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(status(&resp), "200", "{resp}");
    assert!(resp.contains("\r\nok /v1/messages?beta=true\r\n"), "{resp}");
    assert!(
        !resp.contains(KEY),
        "the key came back to the agent: {resp}"
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h.get_all("x-api-key").iter().collect::<Vec<_>>(), [KEY]);
    assert!(h.get("authorization").is_none(), "{h:?}");
    assert_eq!(h.get("host").unwrap(), "api.anthropic.com");
    assert_eq!(seen[0].body, b"{}");
    let d = &proxy.decisions(1).await[0];
    assert_eq!(d["decision"], "allowed");
    assert_eq!(d["host"], "api.anthropic.com");
    assert_eq!(d["port"], 443);
    assert_eq!(d["rule"], "proxy-held key (anthropic)");
    let c = &proxy.closes(1).await[0];
    assert_eq!(c["bytes_up"], 2);
    assert_eq!(c["status"], 200);
    assert!(c["bytes_down"].as_u64().unwrap() > 0);
    for line in proxy.logs.lock().unwrap().iter() {
        assert!(!line.contains(KEY), "the key is in the log: {line}");
    }
}

#[tokio::test]
async fn openai_gets_a_bearer_token_from_an_absolute_form_request() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca).await;
    let (proxy, _dir) = keyed_proxy(vec![&keyed::OPENAI], &ca.ca_pem, up.addr, Some("sk-o"));
    let resp = proxy
        .raw(
            b"GET http://127.0.0.1:3128/openai/v1/models HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\
              Authorization: Bearer sandboxctl-proxy-held-key\r\n\r\n",
        )
        .await;
    assert_eq!(status(&resp), "200", "{resp}");
    assert!(resp.contains("\r\nok /v1/models\r\n"), "{resp}");
    let seen = up.seen();
    let auth: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auth, ["Bearer sk-o"]);
    assert_eq!(seen[0].headers.get("host").unwrap(), "api.openai.com");
}

#[tokio::test]
async fn other_providers_and_hosts_on_the_key_path_are_refused_and_logged() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca).await;
    let (proxy, _dir) = keyed_proxy(vec![&keyed::ANTHROPIC], &ca.ca_pem, up.addr, Some(KEY));
    for path in [
        "/openai/v1/models",
        "/evil.example/steal",
        "/api.anthropic.com@evil.example/x",
        "/",
    ] {
        let resp = proxy
            .raw(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n").as_bytes())
            .await;
        assert_eq!(status(&resp), "403", "{path}: {resp}");
        assert!(!resp.contains(KEY));
    }
    assert!(up.seen().is_empty(), "the upstream was reached");
    let ds = proxy.decisions(4).await;
    assert!(ds.iter().all(|d| d["decision"] == "denied"), "{ds:?}");
    assert_eq!(ds[0]["host"], "openai");
    assert!(
        ds[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no provider of this client's agent"),
        "{ds:?}"
    );
    assert_eq!(ds[1]["host"], "evil.example");
}

#[tokio::test]
async fn no_stored_key_or_an_untrusted_host_gets_no_key() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca).await;
    // No key stored: refused before any connection.
    let (proxy, _dir) = keyed_proxy(vec![&keyed::ANTHROPIC], &ca.ca_pem, up.addr, None);
    let resp = proxy
        .raw(b"GET /anthropic/v1/models HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n")
        .await;
    assert_eq!(status(&resp), "403", "{resp}");
    assert!(resp.contains("no API key is held"), "{resp}");
    // A server whose certificate the proxy does not trust never gets the key.
    let other = TestCa::new();
    let (proxy, _dir2) = keyed_proxy(vec![&keyed::ANTHROPIC], &other.ca_pem, up.addr, Some(KEY));
    let resp = proxy
        .raw(b"GET /anthropic/v1/models HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n")
        .await;
    assert_eq!(status(&resp), "502", "{resp}");
    assert!(
        up.seen().is_empty(),
        "a request reached an untrusted server"
    );
    let d = &proxy.decisions(1).await[0];
    assert!(d["reason"].as_str().unwrap().contains("TLS"), "{d}");
}

#[tokio::test]
async fn server_sent_events_stream_through_chunk_by_chunk() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca).await;
    let (proxy, _dir) = keyed_proxy(vec![&keyed::ANTHROPIC], &ca.ca_pem, up.addr, Some(KEY));
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /anthropic/stream HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n")
        .await
        .unwrap();
    // The first event arrives while the upstream holds back the second.
    let first = read_until(&mut s, "event: one").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.contains("event: two"));
    up.release();
    let rest = read_to_eof(&mut s).await;
    assert!(rest.contains("event: two"), "{rest}");
}

/// The agent sends the held key's requests to endpoints it does not use (files,
/// batches, stored responses, admin): refused with a clear body, the upstream never
/// reached; a path the client added (`--key-path`) is served.
#[tokio::test]
async fn the_key_goes_only_to_the_agents_api_paths() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca).await;
    let (proxy, _dir) = keyed_proxy(
        vec![&keyed::ANTHROPIC, &keyed::OPENAI],
        &ca.ca_pem,
        up.addr,
        Some(KEY),
    );
    for path in [
        "/anthropic/v1/files",
        "/anthropic/v1/messages/batches",
        "/anthropic/v1/organizations/me",
        "/anthropic/v1/messages/../files",
        "/openai/v1/responses/resp_1",
        "/openai/v1/files",
        "/openai/v1/organization/admin_api_keys",
    ] {
        let resp = proxy
            .raw(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n").as_bytes())
            .await;
        assert_eq!(status(&resp), "403", "{path}: {resp}");
        assert!(resp.contains("--key-path"), "{path}: {resp}");
    }
    assert!(
        up.seen().is_empty(),
        "the upstream was reached: {:?}",
        up.seen().len()
    );
    // The stream's second event needs no wait (the permit is kept until asked for).
    up.release();
    let resp = proxy
        .raw(b"GET /anthropic/stream HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status(&resp), "200", "{resp}");
}

#[tokio::test]
async fn the_policy_still_decides_whether_the_provider_may_be_reached() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca).await;
    let (proxy, _dir) = keyed_proxy(vec![&keyed::ANTHROPIC], &ca.ca_pem, up.addr, Some(KEY));
    std::fs::write(&proxy.policy, "deny = [\"api.anthropic.com\"]").unwrap();
    let resp = proxy
        .raw(b"GET /anthropic/v1/models HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n")
        .await;
    assert_eq!(status(&resp), "403", "{resp}");
    assert!(up.seen().is_empty(), "the upstream was reached");
    let d = &proxy.decisions(1).await[0];
    assert_eq!(d["decision"], "denied");
    assert_eq!(d["host"], "api.anthropic.com");
}

mod tls;
