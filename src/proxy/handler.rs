//! One request: find the target, decide on the name, resolve, check the addresses,
//! connect, then tunnel (`CONNECT`) or forward (plain HTTP). Every request gets
//! exactly one decision line, written when it is allowed (connected) or refused, and an
//! allowed one a close line once its last byte has gone through.
//!
//! What the client is told on a refusal is a fixed, generic reason ("denied by
//! policy", "policy unavailable", …): the agent is the party the proxy guards against,
//! and the details — the policy file's path and parse errors, what a name resolves to,
//! connect errors — are for the log only.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::activity::ActiveGuard;
use super::addr::{Unlock, forbidden};
use super::config::Config;
use super::idle::stalled;
use super::log::{DecisionRecord, Verdict};
use super::policy::{Decision, Target};
use super::reload::PolicyStore;
use super::resolve::Resolver;
use super::sni::{self, Stopped};
use super::sniff::Head;
use super::sniff::Recorder;

type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection task shares.
pub(crate) struct Shared<R> {
    pub cfg: Config,
    pub store: PolicyStore,
    pub resolver: R,
    /// Numbers the connections, for the log lines' `id`.
    pub next_id: AtomicU64,
}

/// What the handler gets from its connection.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    /// The id of the connection's log lines.
    pub id: String,
    pub head: Head,
    /// The connection's place under the cap; a tunnel keeps it until it closes.
    pub slot: Arc<ActiveGuard>,
    /// Set when the connection was closed for being idle.
    pub timed_out: Arc<AtomicBool>,
}

/// The log lines of a request. The decision line is written by [`Pending::decided`]
/// or, for a request refused or abandoned before that, when dropped; an allowed
/// request's close line is written when dropped. Whatever happens to the request
/// (refused, finished, client gone), its lines come out.
struct Pending {
    rec: DecisionRecord,
    log: super::log::LogSink,
    start: Instant,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    /// The decision line has been written.
    logged: bool,
    timed_out: Arc<AtomicBool>,
}

impl Pending {
    /// The request is allowed and connected: write its decision line now, so that it
    /// is in the log for as long as the tunnel is open (and if the proxy dies).
    fn decided(&mut self) {
        self.rec.decision = Verdict::Allowed;
        self.rec.reason = None;
        self.log.decision(&self.rec);
        self.logged = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.logged {
            self.log.decision(&self.rec);
            return;
        }
        self.rec.bytes_up = self.up.load(Ordering::Relaxed);
        self.rec.bytes_down = self.down.load(Ordering::Relaxed);
        self.rec.duration_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if self.rec.error.is_none() && self.timed_out.load(Ordering::Relaxed) {
            self.rec.error = Some(IDLE.to_owned());
        }
        self.log.close(&self.rec);
    }
}

/// The error a close line carries when the connection went idle.
const IDLE: &str = "idle timeout";

const DENIED: &str = "denied by policy";
const UNAVAILABLE: &str = "policy unavailable, everything is denied";

/// A refused request: status, the reason for the log, and the generic reason the
/// client is told.
struct Refusal {
    status: StatusCode,
    reason: String,
    public: &'static str,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
            public: "bad request",
        }
    }
    fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
            public: DENIED,
        }
    }
    fn policy_unavailable(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
            public: UNAVAILABLE,
        }
    }
    /// A refusal on the key path, with what the agent is told.
    fn key_path(reason: impl Into<String>, public: &'static str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
            public,
        }
    }
    fn bad_gateway(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            reason: reason.into(),
            public: "cannot reach the host",
        }
    }
}

/// Where a request goes once allowed.
struct Route {
    host: String,
    port: u16,
    /// The matching rule has `private = true`.
    private: bool,
    /// The request names an IP literal, so the matching rule names that address.
    literal: bool,
    /// The authority as the request gave it (kept for the upstream `Host` header).
    authority: Authority,
}

/// Serves one request.
pub(crate) async fn handle<R: Resolver>(
    shared: Arc<Shared<R>>,
    ctx: ConnCtx,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut pending = Pending {
        rec: DecisionRecord::denied(
            ctx.id.clone(),
            shared.cfg.client.clone(),
            Some(req.method().as_str().to_owned()),
            "client went away before a decision".to_owned(),
        ),
        log: shared.cfg.log.clone(),
        start: Instant::now(),
        up: Arc::default(),
        down: Arc::default(),
        logged: false,
        timed_out: ctx.timed_out.clone(),
    };
    if let Some(keys) = &shared.cfg.keys
        && let Some((name, path)) = super::keyed::addressed(&req)
    {
        return Ok(keyed(&shared, &ctx, keys, &name, &path, req, pending).await);
    }
    let result = async {
        let (route, check) = decide_and_route(&shared, &ctx.head, &req, &mut pending.rec)?;
        let tcp = resolve_and_connect(&shared, &route, &mut pending.rec).await?;
        Ok::<_, Refusal>((route, check, tcp))
    }
    .await;
    let (route, check, tcp) = match result {
        Ok(ok) => ok,
        Err(refusal) => return Ok(refuse(&shared.cfg.client, pending, refusal)),
    };
    pending.decided();
    if req.method() == Method::CONNECT {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let idle = shared.cfg.idle_timeout;
        tokio::spawn(tunnel(on_upgrade, tcp, check, pending, idle, ctx.slot));
        return Ok(Response::new(empty()));
    }
    Ok(forward(req, tcp, &route, pending).await)
}

fn refuse(client: &str, mut pending: Pending, refusal: Refusal) -> Response<Body> {
    let target = match (&pending.rec.host, pending.rec.port) {
        (Some(h), Some(p)) => format!("{h}:{p} "),
        _ => String::new(),
    };
    if pending.logged {
        // Allowed, then found unusable: the decision stands, the close line says why.
        pending.rec.error = Some(refusal.reason);
    } else {
        pending.rec.decision = Verdict::Denied;
        pending.rec.reason = Some(refusal.reason);
    }
    drop(pending);
    let hint = match refusal.public {
        DENIED => format!(
            " (the user can change this with `sandboxctl allow {client} HOST` or `sandboxctl policy {client}`)"
        ),
        UNAVAILABLE => format!(" (the user can see why with `sandboxctl policy {client}`)"),
        _ => String::new(),
    };
    let body = format!(
        "sandboxctl proxy: {target}refused: {}{hint}\n",
        refusal.public
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *resp.status_mut() = refusal.status;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty() -> Body {
    Empty::new().map_err(|n| match n {}).boxed()
}

/// Everything decided before any DNS lookup: request shape, target, policy. Also what a
/// tunnel's `ClientHello` will be held against.
fn decide_and_route<R>(
    shared: &Shared<R>,
    head: &Head,
    req: &Request<Incoming>,
    rec: &mut DecisionRecord,
) -> Result<(Route, sni::Check), Refusal> {
    if let Some(why) = head.smuggling() {
        return Err(Refusal::bad(format!("request smuggling attempt: {why}")));
    }
    let (authority, default_port) = target_authority(req)?;
    let host = authority.host().to_owned();
    rec.host = Some(host.clone());
    let port = match authority.port_u16() {
        Some(p) => p,
        None if req.method() == Method::CONNECT => {
            return Err(Refusal::bad("CONNECT needs host:port"));
        }
        None => default_port,
    };
    rec.port = Some(port);
    if authority.as_str().contains('@') {
        return Err(Refusal::bad(
            "user information in the target is not allowed",
        ));
    }
    let target = Target::parse(&host).map_err(|e| Refusal::bad(e.to_string()))?;
    let loaded = shared.store.current();
    let policy = match loaded.as_ref() {
        Ok(p) => p,
        Err(e) => {
            return Err(Refusal::policy_unavailable(format!(
                "network policy unusable, denying everything: {e}"
            )));
        }
    };
    match policy.decide(&target, port) {
        Decision::Deny { reason } => Err(Refusal::forbidden(reason)),
        Decision::Allow { rule, private } => {
            rec.rule = Some(rule.clone());
            let route = Route {
                host,
                port,
                private,
                literal: matches!(target, Target::Ip(_)),
                authority,
            };
            let check = sni::Check {
                host: target,
                port,
                rule,
                private,
                policy: loaded.clone(),
                timeout: shared.cfg.header_read_timeout,
            };
            Ok((route, check))
        }
    }
}

/// The authority a request targets and the port to use when it names none.
fn target_authority(req: &Request<Incoming>) -> Result<(Authority, u16), Refusal> {
    let uri: &Uri = req.uri();
    if req.method() == Method::CONNECT {
        return uri
            .authority()
            .cloned()
            .map(|a| (a, 443))
            .ok_or_else(|| Refusal::bad("CONNECT needs host:port"));
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => Ok((a.clone(), 80)),
        (Some(s), _) => Err(Refusal::bad(format!(
            "only http:// URLs are forwarded; use CONNECT for {s}://"
        ))),
        (None, _) => {
            let host = req.headers().get(header::HOST).ok_or_else(|| {
                Refusal::bad("no target: neither an absolute URL nor a Host header")
            })?;
            let a = host
                .to_str()
                .ok()
                .and_then(|h| h.parse::<Authority>().ok())
                .ok_or_else(|| Refusal::bad("invalid Host header"))?;
            Ok((a, 80))
        }
    }
}

async fn resolve_and_connect<R: Resolver>(
    shared: &Shared<R>,
    route: &Route,
    rec: &mut DecisionRecord,
) -> Result<TcpStream, Refusal> {
    let host = route.host.as_str();
    let addrs: Vec<IpAddr> = match Target::parse(host) {
        Ok(Target::Ip(ip)) => vec![ip],
        Ok(Target::Name(name)) => {
            match tokio::time::timeout(shared.cfg.dns_timeout, shared.resolver.lookup(&name)).await
            {
                Ok(Ok(a)) if !a.is_empty() => a,
                Ok(Ok(_)) => return Err(Refusal::bad_gateway("DNS lookup found no address")),
                Ok(Err(e)) => return Err(Refusal::bad_gateway(format!("DNS lookup failed: {e}"))),
                Err(_) => return Err(Refusal::bad_gateway("DNS lookup timed out")),
            }
        }
        Err(e) => return Err(Refusal::bad(e.to_string())),
    };
    for ip in &addrs {
        if let Some(f) = forbidden(*ip)
            && !f.unlocked_by(route.private, route.literal)
        {
            let needs = match f.unlock {
                Unlock::Private => "allowed only by a rule with private = true",
                Unlock::Literal => {
                    "allowed only by a rule naming this address (IP literal) with private = true"
                }
                Unlock::Never => "never allowed",
            };
            return Err(Refusal::forbidden(format!(
                "{host} resolves to {ip}, a {} ({needs})",
                f.reason
            )));
        }
    }
    let mut last_err = String::from("no address");
    for ip in addrs {
        let addr = SocketAddr::new(ip.to_canonical(), route.port);
        match tokio::time::timeout(shared.cfg.connect_timeout, shared.resolver.connect(addr)).await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                rec.addr = Some(addr.to_string());
                return Ok(s);
            }
            Ok(Err(e)) => last_err = format!("{addr}: {e}"),
            Err(_) => last_err = format!("{addr}: timed out"),
        }
    }
    Err(Refusal::bad_gateway(format!("cannot connect: {last_err}")))
}

/// Carries a tunnel until both sides are done or no byte moved for `idle`; the
/// connection's slot under the cap is held until then.
async fn tunnel(
    on_upgrade: hyper::upgrade::OnUpgrade,
    tcp: TcpStream,
    check: sni::Check,
    mut pending: Pending,
    idle: Duration,
    _slot: Arc<ActiveGuard>,
) {
    let (up, down) = (pending.up.clone(), pending.down.clone());
    let progress = || up.load(Ordering::Relaxed) + down.load(Ordering::Relaxed);
    let zero_copy = AtomicBool::new(false);
    let server_name = OnceLock::new();
    let ends = Ends {
        check: &check,
        up: &pending.up,
        down: &pending.down,
        server_name: &server_name,
    };
    tokio::select! {
        r = carry(on_upgrade, tcp, ends, &zero_copy) => {
            pending.rec.error = r.err();
        }
        () = stalled(idle, progress) => pending.rec.error = Some(IDLE.to_owned()),
    }
    pending.rec.sni = server_name.into_inner();
    pending.rec.copy = Some(if zero_copy.load(Ordering::Relaxed) {
        "splice"
    } else {
        "copy"
    });
}

/// What both ways of carrying a tunnel need besides the two streams.
#[derive(Clone, Copy)]
struct Ends<'a> {
    check: &'a sni::Check,
    up: &'a Arc<AtomicU64>,
    down: &'a Arc<AtomicU64>,
    /// Set to the TLS server name once the first bytes are judged.
    server_name: &'a OnceLock<String>,
}

impl Ends<'_> {
    /// Notes a refusal of the first bytes; returns the tunnel's error and the alert to
    /// send the client, if any.
    fn refused(self, r: sni::Refused) -> (String, Option<[u8; 7]>) {
        if let Some(name) = r.server_name {
            let _ = self.server_name.set(name);
        }
        (r.reason, r.alert.map(sni::Alert::record))
    }

    fn passed(self, p: &sni::Passed) {
        if let Some(name) = &p.server_name {
            let _ = self.server_name.set(name.clone());
        }
        self.up.fetch_add(p.bytes.len() as u64, Ordering::Relaxed);
    }
}

async fn carry(
    on_upgrade: hyper::upgrade::OnUpgrade,
    tcp: TcpStream,
    ends: Ends<'_>,
    zero_copy: &AtomicBool,
) -> Result<(), String> {
    let upgraded = on_upgrade
        .await
        .map_err(|e| format!("upgrade failed: {e}"))?;
    // The client's own socket, when it can be had: then bytes move with splice(2).
    let upgraded = match upgraded.downcast::<TokioIo<Recorder<tokio::net::UnixStream>>>() {
        Ok(parts) => {
            let client = parts.io.into_inner().into_inner();
            zero_copy.store(true, Ordering::Relaxed);
            return spliced(&client, tcp, &parts.read_buf, ends).await;
        }
        Err(u) => u,
    };
    let upgraded = match upgraded.downcast::<TokioIo<Recorder<TcpStream>>>() {
        Ok(parts) => {
            let client = parts.io.into_inner().into_inner();
            zero_copy.store(true, Ordering::Relaxed);
            return spliced(&client, tcp, &parts.read_buf, ends).await;
        }
        Err(u) => u,
    };
    copied(TokioIo::new(upgraded), tcp, ends).await
}

/// The zero-copy tunnel: the client's first bytes — what it sent after its `CONNECT`
/// head (already read by hyper) and what follows until they can be judged — are
/// checked and forwarded, then splice moves the rest both ways.
async fn spliced<C: super::splice::SpliceSocket>(
    client: &C,
    tcp: TcpStream,
    early: &[u8],
    ends: Ends<'_>,
) -> Result<(), String> {
    use super::splice;
    let first = Box::pin(async {
        let passed = sni::first_flight(ends.check, early, &mut Spliced(client)).await?;
        splice::write_all(&tcp, &passed.bytes)
            .await
            .map_err(Stopped::Io)?;
        ends.passed(&passed);
        Ok(())
    });
    match splice::tunnel(client, &tcp, first, ends.up, ends.down).await {
        Ok(r) => r.map_err(|e| format!("tunnel: {e}")),
        Err(Stopped::Io(e)) => Err(format!("tunnel: {e}")),
        Err(Stopped::Refused(r)) => {
            let (error, alert) = ends.refused(r);
            if let Some(alert) = alert {
                // The client may be gone already; the refusal stands either way.
                let _ = splice::write_all(client, &alert).await;
            }
            Err(error)
        }
    }
}

/// The client's socket as the first bytes are read from it.
struct Spliced<'a, C>(&'a C);

impl<C: super::splice::SpliceSocket> sni::Source for Spliced<'_, C> {
    async fn readable(&mut self) -> std::io::Result<()> {
        self.0.ready(tokio::io::Interest::READABLE).await.map(drop)
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        super::splice::read(self.0, buf).await
    }
}

impl<C: AsyncRead + Send> sni::Source for tokio::io::ReadHalf<C> {
    /// A stream cannot be asked without reading: the buffer is made at once.
    async fn readable(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        tokio::io::AsyncReadExt::read(self, buf).await
    }
}

/// The tunnel through the proxy's buffers, for a connection whose socket hyper does not
/// hand back; the first bytes are checked the same way.
async fn copied<C>(client: C, tcp: TcpStream, ends: Ends<'_>) -> Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    use tokio::io::{AsyncWriteExt as _, BufReader};
    let upstream = Counted {
        inner: tcp,
        written: ends.up.clone(),
        read: ends.down.clone(),
    };
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (from_upstream, mut to_upstream) = tokio::io::split(upstream);
    let first = Box::pin(async {
        let passed = sni::first_flight(ends.check, &[], &mut from_client).await?;
        // `Counted` counts these bytes as they go.
        to_upstream
            .write_all(&passed.bytes)
            .await
            .map_err(Stopped::Io)?;
        if let Some(name) = passed.server_name {
            let _ = ends.server_name.set(name);
        }
        Ok((from_client, to_upstream))
    });
    let up = |(from_client, mut to_upstream): (_, tokio::io::WriteHalf<Counted>)| async move {
        let mut from_client = BufReader::with_capacity(64 << 10, from_client);
        tokio::io::copy_buf(&mut from_client, &mut to_upstream).await?;
        to_upstream.shutdown().await
    };
    let down = async {
        let mut from_upstream = BufReader::with_capacity(64 << 10, from_upstream);
        tokio::io::copy_buf(&mut from_upstream, &mut to_client).await?;
        to_client.shutdown().await
    };
    match super::splice::gated(first, up, down).await {
        Ok(r) => r.map_err(|e| format!("tunnel: {e}")),
        Err(Stopped::Io(e)) => Err(format!("tunnel: {e}")),
        Err(Stopped::Refused(r)) => {
            let (error, alert) = ends.refused(r);
            if let Some(alert) = alert {
                let _ = to_client.write_all(&alert).await;
            }
            Err(error)
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    tcp: TcpStream,
    route: &Route,
    pending: Pending,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // The upstream sees the name that was allowed, never a different Host header
    // (which a shared front end could route to another site).
    let host_header = match route.authority.port_u16() {
        Some(80) | None => route.authority.host().to_owned(),
        Some(p) => format!("{}:{p}", route.authority.host()),
    };
    match HeaderValue::from_str(&host_header) {
        Ok(v) => {
            headers.insert(header::HOST, v);
        }
        Err(_) => return refuse("", pending, Refusal::bad("invalid host")),
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut out = Request::new(counted(body, &pending.up));
    *out.method_mut() = parts.method;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;
    match path.parse::<Uri>() {
        Ok(u) => *out.uri_mut() = u,
        Err(_) => return refuse("", pending, Refusal::bad("invalid path")),
    }
    exchange(out, tcp, pending).await
}

/// TCP (to the test override or the provider's checked addresses), then TLS with the
/// provider's name checked against the trust store.
async fn keyed_connect<R: Resolver>(
    shared: &Shared<R>,
    keys: &super::keyed::Keys,
    p: &super::keyed::Provider,
    rec: &mut DecisionRecord,
) -> Result<super::keyed::UpstreamTls, Refusal> {
    let tcp = if let Some(addr) = keys.connect_to {
        match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                rec.addr = Some(addr.to_string());
                s
            }
            Ok(Err(e)) => return Err(Refusal::bad_gateway(format!("{addr}: {e}"))),
            Err(_) => return Err(Refusal::bad_gateway(format!("{addr}: timed out"))),
        }
    } else {
        let route = Route {
            host: p.host.to_owned(),
            port: 443,
            private: false,
            literal: false,
            authority: Authority::from_static(p.host),
        };
        resolve_and_connect(shared, &route, rec).await?
    };
    let tls = super::keyed::tls_connect(keys.tls.clone(), p.host, tcp);
    match tokio::time::timeout(shared.cfg.connect_timeout, tls).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Refusal::bad_gateway(format!("TLS: {e}"))),
        Err(_) => Err(Refusal::bad_gateway("TLS handshake timed out")),
    }
}

/// The request body, counting its bytes as they go up.
fn counted(body: Incoming, up: &Arc<AtomicU64>) -> Body {
    let up = up.clone();
    body.map_frame(move |f| {
        if let Some(d) = f.data_ref() {
            up.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        f
    })
    .boxed()
}

/// Sends `out` on `io` (TCP or TLS) and streams the answer back frame by frame; the
/// request's close line is written once the answer is through.
async fn exchange<S>(out: Request<Body>, io: S, mut pending: Pending) -> Response<Body>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => return upstream_failed(pending, &e),
    };
    tokio::spawn(conn);
    let resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return upstream_failed(pending, &e),
    };
    pending.rec.status = Some(resp.status().as_u16());
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let down = pending.down.clone();
    let body = body
        .map_frame(move |f| {
            // The record travels with the body and is written when it is dropped,
            // i.e. once the response has been sent (or the client went away).
            let _ = &pending;
            if let Some(d) = f.data_ref() {
                down.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            f
        })
        .boxed();
    Response::from_parts(parts, body)
}

/// A request on the key-adding path (`/<provider>/…` to the forwarder): only the
/// client's providers, TLS to the provider's host, the agent's credential headers
/// replaced by the real key.
async fn keyed<R: Resolver>(
    shared: &Shared<R>,
    ctx: &ConnCtx,
    keys: &super::keyed::Keys,
    name: &str,
    path: &str,
    req: Request<Incoming>,
    mut pending: Pending,
) -> Response<Body> {
    let client = shared.cfg.client.as_str();
    if let Some(why) = ctx.head.smuggling() {
        return refuse(
            client,
            pending,
            Refusal::bad(format!("request smuggling attempt: {why}")),
        );
    }
    let Some(p) = keys.provider(name) else {
        pending.rec.host = Some(name.chars().take(100).collect());
        return refuse(
            client,
            pending,
            Refusal::key_path(
                format!(
                    "key path /{}/ names no provider of this client's agent; no key is added",
                    name.chars().take(100).collect::<String>()
                ),
                "not a provider of this sandbox's agent",
            ),
        );
    };
    pending.rec.host = Some(p.host.to_owned());
    pending.rec.port = Some(443);
    if !super::keyed::path_allowed(p, &keys.extra_paths, path) {
        return refuse(
            client,
            pending,
            Refusal::key_path(
                format!(
                    "key path: {} is not an API path of the agent's; no key is added (`sandboxctl enable CLIENT --key-path PATH` allows one)",
                    crate::base::escape::display(&path.chars().take(200).collect::<String>())
                ),
                "this API path does not get the key held for this sandbox; the user can allow it with `sandboxctl enable CLIENT --key-path PATH`",
            ),
        );
    }
    // The policy still decides whether the provider's host may be reached at all.
    let verdict = match (shared.store.current().as_ref(), Target::parse(p.host)) {
        (Ok(policy), Ok(target)) => policy.decide(&target, 443),
        (Err(e), _) => {
            let r = Refusal::policy_unavailable(format!(
                "network policy unusable, denying everything: {e}"
            ));
            return refuse(client, pending, r);
        }
        (_, Err(e)) => return refuse(client, pending, Refusal::bad(e.to_string())),
    };
    if let Decision::Deny { reason } = verdict {
        return refuse(client, pending, Refusal::forbidden(reason));
    }
    pending.rec.rule = Some(format!("proxy-held key ({})", p.name));
    let key = match keys.key(p) {
        Ok(k) => k,
        Err(e) => {
            return refuse(
                client,
                pending,
                Refusal::key_path(
                    format!("no key held for {}: {e:#}", p.key_var),
                    "no API key is held for this client",
                ),
            );
        }
    };
    let tls = match keyed_connect(shared, keys, p, &mut pending.rec).await {
        Ok(s) => s,
        Err(r) => return refuse(client, pending, r),
    };
    pending.decided();
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if let Err(e) = super::keyed::upstream_headers(&mut headers, p, &key) {
        return refuse(client, pending, Refusal::bad_gateway(format!("{e:#}")));
    }
    let mut out = Request::new(counted(body, &pending.up));
    *out.method_mut() = parts.method;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;
    match path.parse::<Uri>() {
        Ok(u) => *out.uri_mut() = u,
        Err(_) => return refuse(client, pending, Refusal::bad("invalid path")),
    }
    exchange(out, tls, pending).await
}

fn upstream_failed(mut pending: Pending, e: &hyper::Error) -> Response<Body> {
    // Allowed, but the upstream failed: keep the decision, note the error.
    pending.rec.error = Some(format!("upstream: {e}"));
    drop(pending);
    let mut resp = Response::new(
        Full::new(Bytes::from_static(b"sandboxctl proxy: upstream error\n"))
            .map_err(|n| match n {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

/// Removes the headers that describe one hop (RFC 9110 §7.6.1), including those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The upstream side of a tunnel, counting bytes each way as they pass, so the
/// counts are right even when the tunnel ends with an error.
struct Counted {
    inner: TcpStream,
    written: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
