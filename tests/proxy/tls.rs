//! A tunnel's TLS server name against the name its `CONNECT` was allowed on, tried the
//! way an agent would: a real rustls client, or a `ClientHello` taken from one and then
//! changed, through the real proxy to a TLS front end on loopback whose one certificate
//! names several sites, as a CDN's shared address serves them. Port 443 is dialled as
//! the front end's port.

use std::io::{Read as _, Write as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use rustls::AlertDescription;
use tokio::io::{AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::support::tls_upstream::TestCa;

/// The names on the front end's certificate.
const NAMES: &[&str] = &["ok.test", "other.test", "wild.test", "*.wild.test"];

/// What one connection to the front end carried.
#[derive(Default)]
struct Seen {
    received: Arc<Mutex<Vec<u8>>>,
    sent: Arc<Mutex<Vec<u8>>>,
    /// The server name of a completed handshake.
    sni: Mutex<Option<String>>,
    ended: AtomicBool,
}

/// A stream that keeps a copy of what it reads and what it writes.
struct Tap<S> {
    inner: S,
    reads: Arc<Mutex<Vec<u8>>>,
    writes: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.reads.lock().unwrap().extend(new);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.writes.lock().unwrap().extend(&buf[..n]);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TLS front end: answers `hello from NAME PATH`, NAME being the server name of the
/// handshake.
struct Front {
    ca: TestCa,
    port: u16,
    conns: Arc<Mutex<Vec<Arc<Seen>>>>,
}

impl Front {
    async fn start() -> Front {
        let ca = TestCa::for_names(NAMES);
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()));
        let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Arc<Seen>>>> = Arc::default();
        let all = conns.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = Arc::new(Seen::default());
                all.lock().unwrap().push(seen.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tap = Tap {
                        inner: tcp,
                        reads: seen.received.clone(),
                        writes: seen.sent.clone(),
                    };
                    if let Ok(tls) = acceptor.accept(tap).await {
                        let name = tls.get_ref().1.server_name().map(str::to_owned);
                        seen.sni.lock().unwrap().clone_from(&name);
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let name = name.clone().unwrap_or_else(|| "(none)".to_owned());
                            let body = format!("hello from {name} {}", req.uri().path());
                            async move {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                    seen.ended.store(true, Ordering::SeqCst);
                });
            }
        });
        Front { ca, port, conns }
    }

    /// A proxy with `policy`, every name of the tests resolving to the front end's
    /// address and port 443 dialled as the front end's port.
    fn proxy(&self, policy: &str) -> Proxy {
        let dns: Vec<(&str, &str)> = [
            "ok.test",
            "other.test",
            "wild.test",
            "a.wild.test",
            "b.wild.test",
            "bad.wild.test",
        ]
        .iter()
        .map(|n| (*n, "198.51.100.2"))
        .collect();
        Proxy::start_dialling(policy, &dns, &[(443, self.port)], |_| {})
    }

    /// The connections so far, once `n` of them have ended (bounded wait).
    async fn ended(&self, n: usize) -> Vec<Arc<Seen>> {
        for _ in 0..500 {
            let conns = self.conns.lock().unwrap().clone();
            if conns
                .iter()
                .filter(|c| c.ended.load(Ordering::SeqCst))
                .count()
                >= n
            {
                return conns;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} connections to the front end ended");
    }
}

/// A tunnel through `p` to `authority`, once the proxy has said 200.
async fn tunnel(p: &Proxy, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let head = open_tunnel(&mut s, authority).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// A TLS client trusting the front end; without SNI when `sni` is `None` (the
/// certificate is then checked against `ok.test`).
async fn handshake<S>(
    ca: &TestCa,
    sni: Option<&str>,
    stream: S,
) -> io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut cfg = ca.client_config();
    cfg.enable_sni = sni.is_some();
    let name = pki_types::ServerName::try_from(sni.unwrap_or("ok.test").to_owned()).unwrap();
    let connect = TlsConnector::from(Arc::new(cfg)).connect(name, stream);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .expect("the handshake hung")
}

/// `GET path` on a TLS stream; the answer's body.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(tls: &mut S, path: &str) -> String {
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let resp = read_to_eof(tls).await;
    resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// HTTPS through a tunnel to `authority`, naming `sni`: the body, or the handshake's
/// error.
async fn https_get(
    p: &Proxy,
    ca: &TestCa,
    authority: &str,
    sni: Option<&str>,
    path: &str,
) -> io::Result<String> {
    let mut tls = handshake(ca, sni, tunnel(p, authority).await).await?;
    Ok(get(&mut tls, path).await)
}

/// The alert a handshake error reports having received.
fn alert(e: &io::Error) -> Option<AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

/// The refused tunnel's close line, after checking that the front end got no byte.
async fn refused(p: &Proxy, front: &Front) -> serde_json::Value {
    let seen = front.ended(1).await;
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].received.lock().unwrap().is_empty(),
        "the front end got bytes"
    );
    assert_eq!(*seen[0].sni.lock().unwrap(), None);
    let close = p.closes(1).await.remove(0);
    assert_eq!(close["bytes_up"], 0, "{close}");
    let error = close["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("TLS refused: "), "{close}");
    // The CONNECT itself was allowed, on its rule.
    let decision = p.decisions(1).await.remove(0);
    assert_eq!(decision["decision"], "allowed", "{decision}");
    assert_eq!(decision["id"], close["id"]);
    close
}

/// (a) The attack: a tunnel to an allowed name, then a `ClientHello` naming another site
/// behind the same address. Refused with an alert before a byte reaches the front end;
/// the close line names both.
#[tokio::test]
async fn a_server_name_other_than_the_connect_host_is_refused() {
    let front = Front::start().await;
    let p = front.proxy(r#"allow = ["ok.test"]"#);
    let got = https_get(&p, &front.ca, "ok.test:443", Some("other.test"), "/a").await;
    let e = got.expect_err("a tunnel allowed for ok.test reached other.test");
    assert_eq!(alert(&e), Some(AlertDescription::AccessDenied), "{e}");
    let close = refused(&p, &front).await;
    assert_eq!(close["host"], "ok.test");
    assert_eq!(close["sni"], "other.test");
    let error = close["error"].as_str().unwrap();
    assert!(
        error.contains("other.test") && error.contains("ok.test"),
        "{error}"
    );
}

/// (b) The allowed name: the handshake and the request go through, and every byte
/// arrives as it was sent, both ways.
#[tokio::test]
async fn the_allowed_name_goes_through_byte_for_byte() {
    let front = Front::start().await;
    let p = front.proxy(r#"allow = ["ok.test"]"#);
    let (sent, received) = (Arc::default(), Arc::default());
    let tap = Tap {
        inner: tunnel(&p, "ok.test:443").await,
        reads: Arc::clone(&received),
        writes: Arc::clone(&sent),
    };
    let mut tls = handshake(&front.ca, Some("ok.test"), tap).await.unwrap();
    assert_eq!(get(&mut tls, "/b").await, "hello from ok.test /b");
    drop(tls);
    let close = p.closes(1).await.remove(0);
    let seen = front.ended(1).await;
    assert_eq!(*seen[0].sni.lock().unwrap(), Some("ok.test".to_owned()));
    let (sent, received) = (sent.lock().unwrap(), received.lock().unwrap());
    assert!(sent.len() > 200, "{}", sent.len());
    assert!(
        *seen[0].received.lock().unwrap() == *sent,
        "client to front end changed"
    );
    assert!(
        *seen[0].sent.lock().unwrap() == *received,
        "front end to client changed"
    );
    assert_eq!(close["sni"], "ok.test", "{close}");
    assert!(close.get("error").is_none(), "{close}");
    assert_eq!(close["copy"], "splice", "{close}");
    assert_eq!(close["bytes_up"], sent.len(), "{close}");
    assert_eq!(close["bytes_down"], received.len(), "{close}");
}

/// (c) A `ClientHello` without a server name leaves the choice of site to the front end:
/// refused.
#[tokio::test]
async fn a_hello_without_a_server_name_is_refused() {
    let front = Front::start().await;
    let p = front.proxy(r#"allow = ["ok.test"]"#);
    let e = https_get(&p, &front.ca, "ok.test:443", None, "/c")
        .await
        .expect_err("a hello without SNI went through");
    assert_eq!(alert(&e), Some(AlertDescription::AccessDenied), "{e}");
    let close = refused(&p, &front).await;
    assert!(
        close["error"].as_str().unwrap().contains("no server name"),
        "{close}"
    );
    assert!(close.get("sni").is_none(), "{close}");
}

/// The first flight of a rustls client naming `sni`, and the connection to go on with.
fn first_flight(ca: &TestCa, sni: &str) -> (rustls::ClientConnection, Vec<u8>) {
    let name = pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(ca.client_config()), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert_eq!(hello[0], 0x16, "not a handshake record");
    (conn, hello)
}

/// A one-record `ClientHello` with one more extension at the end of its list.
fn with_extension(hello: &[u8], kind: u16, data: &[u8]) -> Vec<u8> {
    let mut h = hello.to_vec();
    // record header 5, handshake header 4, version 2, random 32, then the session id.
    let mut at = 5 + 4 + 2 + 32;
    at += 1 + usize::from(h[at]);
    at += 2 + usize::from(u16::from_be_bytes([h[at], h[at + 1]]));
    at += 1 + usize::from(h[at]);
    let added = 4 + data.len();
    let grow = |h: &mut Vec<u8>, range: std::ops::Range<usize>| {
        let mut n = 0usize;
        for &b in &h[range.clone()] {
            n = (n << 8) | usize::from(b);
        }
        let bytes = (n + added).to_be_bytes();
        h[range.clone()].copy_from_slice(&bytes[bytes.len() - range.len()..]);
    };
    grow(&mut h, 3..5);
    grow(&mut h, 6..9);
    grow(&mut h, at..at + 2);
    h.extend(kind.to_be_bytes());
    h.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
    h.extend(data);
    h
}

/// What the proxy sends back on a tunnel: everything until it closes.
async fn answer(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the tunnel was not closed")
        .unwrap();
    out
}

/// (d) Encrypted Client Hello carries the real name encrypted to the front end, the
/// outer hello a harmless one: refused, whatever the outer name.
#[tokio::test]
async fn an_encrypted_client_hello_is_refused() {
    let front = Front::start().await;
    let p = front.proxy(r#"allow = ["ok.test"]"#);
    let (_, hello) = first_flight(&front.ca, "ok.test");
    let mut s = tunnel(&p, "ok.test:443").await;
    s.write_all(&with_extension(&hello, 0xfe0d, &[0; 64]))
        .await
        .unwrap();
    assert_eq!(
        answer(&mut s).await,
        [0x15, 3, 3, 0, 2, 2, 49],
        "access_denied"
    );
    let close = refused(&p, &front).await;
    assert!(close["error"].as_str().unwrap().contains("ECH"), "{close}");
    assert_eq!(close["sni"], "ok.test");
}

/// Completes a handshake begun with [`first_flight`] by hand, then sends `GET path`;
/// the body of the answer.
async fn finish(conn: &mut rustls::ClientConnection, s: &mut TcpStream, path: &str) -> String {
    let mut buf = vec![0u8; 64 << 10];
    let mut plain = Vec::new();
    let mut asked = false;
    loop {
        while conn.wants_write() {
            let mut out = Vec::new();
            conn.write_tls(&mut out).unwrap();
            s.write_all(&out).await.unwrap();
        }
        if !conn.is_handshaking() && !asked {
            write!(
                conn.writer(),
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            asked = true;
            continue;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        if n == 0 {
            break;
        }
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            conn.read_tls(&mut rd).unwrap();
            let state = conn
                .process_new_packets()
                .unwrap_or_else(|e| panic!("TLS: {e}"));
            let mut more = vec![0; state.plaintext_bytes_to_read()];
            conn.reader().read_exact(&mut more).unwrap();
            plain.extend(more);
        }
    }
    let resp = String::from_utf8_lossy(&plain).into_owned();
    resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// The records of a one-record handshake message re-cut into records of `size` bytes.
fn recut(hello: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in hello[5..].chunks(size) {
        out.extend(&hello[..3]);
        out.extend(u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend(chunk);
    }
    out
}

/// (e) A `ClientHello` in many records, sent in pieces that cut through record headers,
/// some of it with the `CONNECT` head itself: read whole, judged, and passed on as
/// sent, so the front end completes the handshake.
#[tokio::test]
async fn a_hello_in_many_records_and_writes_is_read_whole() {
    let front = Front::start().await;
    let p = front.proxy(r#"allow = ["ok.test"]"#);
    for (case, early) in [("pieces", 0), ("with the CONNECT head", 30)] {
        let (mut conn, hello) = first_flight(&front.ca, "ok.test");
        let split = recut(&hello, 40);
        assert!(
            split.len() >= hello.len() + 5 * 4,
            "{case}: {} bytes, too few records",
            hello.len()
        );
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let head = b"CONNECT ok.test:443 HTTP/1.1\r\nHost: ok.test:443\r\n\r\n";
        s.write_all(&[&head[..], &split[..early]].concat())
            .await
            .unwrap();
        assert!(
            read_head(&mut s).await.starts_with("HTTP/1.1 200"),
            "{case}"
        );
        for piece in split[early..].chunks(61) {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let body = finish(&mut conn, &mut s, "/e").await;
        assert_eq!(body, "hello from ok.test /e", "{case}");
        let n = front.conns.lock().unwrap().len();
        let seen = front.ended(n).await;
        let got = seen[n - 1].received.lock().unwrap().clone();
        assert!(
            got.starts_with(&split),
            "{case}: the hello was changed on the way"
        );
    }
    let closes = p.closes(2).await;
    assert!(closes.iter().all(|c| c["sni"] == "ok.test"), "{closes:?}");
}

/// (f) Under a wildcard rule any name below it may be named, the `CONNECT` host's
/// sibling too; not the suffix itself, not a denied name, not one that another rule
/// allows.
#[tokio::test]
async fn under_a_wildcard_the_rule_decides() {
    let front = Front::start().await;
    let p = front.proxy(
        r#"allow = ["*.wild.test", "ok.test"]
           deny = ["bad.wild.test"]"#,
    );
    for sni in ["a.wild.test", "b.wild.test"] {
        let body = https_get(&p, &front.ca, "a.wild.test:443", Some(sni), "/f").await;
        assert_eq!(body.unwrap(), format!("hello from {sni} /f"));
    }
    for sni in ["wild.test", "bad.wild.test", "ok.test"] {
        let e = https_get(&p, &front.ca, "a.wild.test:443", Some(sni), "/f")
            .await
            .expect_err(sni);
        assert_eq!(
            alert(&e),
            Some(AlertDescription::AccessDenied),
            "{sni}: {e}"
        );
    }
    let closes = p.closes(5).await;
    let errors: Vec<&str> = closes.iter().filter_map(|c| c["error"].as_str()).collect();
    assert_eq!(errors.len(), 3, "{closes:?}");
    assert!(
        errors.iter().all(|e| e.contains("*.wild.test")),
        "{errors:?}"
    );
    let served: Vec<Option<String>> = front
        .ended(5)
        .await
        .iter()
        .map(|c| c.sni.lock().unwrap().clone())
        .collect();
    let named: Vec<&str> = served.iter().flatten().map(String::as_str).collect();
    assert_eq!(named, ["a.wild.test", "b.wild.test"], "{served:?}");
}

/// TLS is checked on any port, not only 443.
#[tokio::test]
async fn tls_on_another_port_is_checked_too() {
    let front = Front::start().await;
    let p = front.proxy(&format!(r#"allow = ["ok.test:{}"]"#, front.port));
    let authority = format!("ok.test:{}", front.port);
    let e = https_get(&p, &front.ca, &authority, Some("other.test"), "/g")
        .await
        .expect_err("other.test reached on another port");
    assert_eq!(alert(&e), Some(AlertDescription::AccessDenied), "{e}");
    let body = https_get(&p, &front.ca, &authority, Some("ok.test"), "/g").await;
    assert_eq!(body.unwrap(), "hello from ok.test /g");
}

/// On port 443 a tunnel must carry TLS: plain HTTP there could name any site in its
/// `Host` header.
#[tokio::test]
async fn anything_but_tls_on_port_443_is_refused() {
    let front = Front::start().await;
    let p = front.proxy(r#"allow = ["ok.test"]"#);
    let mut s = tunnel(&p, "ok.test:443").await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        answer(&mut s).await,
        b"",
        "no alert for a client not speaking TLS"
    );
    let close = refused(&p, &front).await;
    assert!(
        close["error"]
            .as_str()
            .unwrap()
            .contains("does not start with a ClientHello"),
        "{close}"
    );
}

/// Elsewhere the proxy waits for the client's first bytes without holding up the
/// upstream's: a server that speaks first (SSH, SMTP) is heard, and the plain bytes
/// that answer it pass.
#[tokio::test]
async fn a_server_that_speaks_first_is_heard_before_the_client_sends() {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                s.write_all(b"220 banner\r\n").await.unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
            });
        }
    });
    let p = Proxy::start(
        &format!(r#"allow = ["ok.test:{port}"]"#),
        &[("ok.test", "198.51.100.2")],
    );
    let mut s = tunnel(&p, &format!("ok.test:{port}")).await;
    read_until(&mut s, "220 banner\r\n").await;
    s.write_all(b"EHLO sandbox\r\n").await.unwrap();
    read_until(&mut s, "EHLO sandbox\r\n").await;
    drop(s);
    let close = p.closes(1).await.remove(0);
    assert!(close.get("error").is_none(), "{close}");
    assert!(close.get("sni").is_none(), "{close}");
}
