//! A local HTTPS server standing in for a provider's API host (api.anthropic.com,
//! api.openai.com), with a certificate from a test CA made on the spot. Shared by the
//! proxy tests and the system tests (included with `#[path]`).

#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// A test CA and a server certificate for the provider hosts.
pub struct TestCa {
    /// The CA certificate, PEM (what the proxy is told to trust).
    pub ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        Self::for_names(&["api.anthropic.com", "api.openai.com"])
    }

    /// A CA whose server certificate names `names` (wildcards allowed).
    pub fn for_names(names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "sandboxctl test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            cert_der: leaf.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// A server configuration presenting the server certificate.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![pki_types::CertificateDer::from(self.cert_der.clone())],
                pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .unwrap()
    }

    /// A client configuration trusting this CA only.
    pub fn client_config(&self) -> rustls::ClientConfig {
        use pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for c in pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

/// What the upstream got: path with query, headers, body.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// What the stand-in answers to every Messages API request: the agent shows it.
pub const MESSAGES_ANSWER: &str = "STANDIN-ANSWER-FROM-THE-API";

/// A Messages API request (a JSON body with `messages`): whether it asks for a stream.
fn messages_request(body: &[u8]) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("messages")?;
    Some(v.get("stream").and_then(serde_json::Value::as_bool) == Some(true))
}

/// A Messages API answer of one text block, [`MESSAGES_ANSWER`], as server-sent events
/// or as one JSON message: its content type and text.
fn messages_answer(stream: bool) -> (&'static str, String) {
    use serde_json::json;
    use std::fmt::Write as _;
    let usage = json!({"input_tokens": 1, "output_tokens": 1});
    if !stream {
        let message = json!({
            "id": "msg_standin", "type": "message", "role": "assistant",
            "model": "claude-standin", "stop_reason": "end_turn", "stop_sequence": null,
            "content": [{"type": "text", "text": MESSAGES_ANSWER}], "usage": usage,
        });
        return ("application/json", message.to_string());
    }
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_standin", "type": "message", "role": "assistant",
            "model": "claude-standin", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": usage}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": MESSAGES_ANSWER}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 1}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let mut text = String::new();
    for (name, data) in events {
        let _ = write!(text, "event: {name}\ndata: {data}\n\n");
    }
    ("text/event-stream", text)
}

/// The HTTPS upstream. A Messages API request (`/v1/messages…` with a JSON body that has
/// `messages`) gets a one-block answer; `/stream` answers with two events, the second one only after
/// [`TlsUpstream::release`]; `/big/N` with N bytes; anything else with `ok <path>`.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
}

struct ChanBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

impl TlsUpstream {
    pub async fn start(ca: &TestCa) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let (seen2, release2) = (seen.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let (seen, release) = (seen2.clone(), release2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, release) = (seen.clone(), release.clone());
                        async move { Ok::<_, Infallible>(answer(req, &seen, release).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            release,
        }
    }

    /// Lets `/stream` send its second event.
    pub fn release(&self) {
        self.release.notify_one();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    release: Arc<Notify>,
) -> Response<ChanBody> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers,
        body,
    });
    let (tx, rx) = mpsc::channel(4);
    if path.starts_with("/v1/messages")
        && let Some(stream) = messages_request(&seen.lock().unwrap().last().unwrap().body)
    {
        let (content_type, text) = messages_answer(stream);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from(text)).await;
        });
        let mut r = Response::new(ChanBody(rx));
        r.headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        return r;
    }
    if path == "/stream" {
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"event: one\n\n")).await;
            release.notified().await;
            let _ = tx.send(Bytes::from_static(b"event: two\n\n")).await;
        });
        let mut r = Response::new(ChanBody(rx));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return r;
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let mut left: usize = n.parse().unwrap();
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            while left > 0 {
                let n = left.min(chunk.len());
                if tx.send(chunk.slice(..n)).await.is_err() {
                    return;
                }
                left -= n;
            }
        });
        return Response::new(ChanBody(rx));
    }
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from(format!("ok {path}"))).await;
    });
    Response::new(ChanBody(rx))
}
