//! Tests of `handler`.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::super::client_hello::build::hello;
use super::super::policy;
use super::tunnel::*;
use super::*;
use std::sync::OnceLock;
use std::time::Duration;

fn check() -> sni::Check {
    let policy = policy::parse(r#"allow = ["ok.example"]"#).unwrap();
    sni::Check {
        host: Target::parse("ok.example").unwrap(),
        port: 443,
        rule: "ok.example".to_owned(),
        private: false,
        policy: Arc::new(Ok(policy)),
        timeout: Duration::from_secs(5),
    }
}

/// The tunnel through the proxy's buffers (used when hyper does not hand back the
/// client's socket) holds the `ClientHello` against the `CONNECT` as the spliced one
/// does: another name gets an alert and the upstream nothing; the right one goes
/// through, and the tunnel carries bytes both ways.
#[tokio::test]
async fn the_copying_tunnel_checks_the_server_name_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let check = check();
    for (name, allowed) in [("other.example", false), ("ok.example", true)] {
        let (up, down) = (Arc::default(), Arc::default());
        let server_name = OnceLock::new();
        let ends = Ends {
            check: &check,
            up: &up,
            down: &down,
            server_name: &server_name,
        };
        let (mut agent, proxy_side) = tokio::io::duplex(64 << 10);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let first = hello(name);
        let talk = async {
            agent.write_all(&first).await.unwrap();
            if allowed {
                let mut got = vec![0; first.len()];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, first);
                server.write_all(b"pong").await.unwrap();
                server.shutdown().await.unwrap();
                agent.shutdown().await.unwrap();
            }
            let mut back = Vec::new();
            agent.read_to_end(&mut back).await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            (back, rest)
        };
        let (carried, (back, rest)) = tokio::join!(copied(proxy_side, tcp, ends), talk);
        assert_eq!(server_name.get().map(String::as_str), Some(name));
        assert!(rest.is_empty(), "{rest:?}");
        if allowed {
            carried.unwrap();
            assert_eq!(back, b"pong");
            assert_eq!(up.load(Ordering::Relaxed), first.len() as u64);
            assert_eq!(down.load(Ordering::Relaxed), 4);
        } else {
            assert!(carried.unwrap_err().contains("other.example"));
            assert_eq!(back, sni::Alert::AccessDenied.record());
            assert_eq!(up.load(Ordering::Relaxed), 0);
        }
    }
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic abc"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("accept", "*/*"),
        ("authorization", "Bearer end-to-end"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    strip_hop_by_hop(&mut h);
    let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["accept", "authorization"]);
}
