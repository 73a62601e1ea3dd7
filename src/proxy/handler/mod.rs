//! One request: find the target, decide on the name, resolve, check the addresses,
//! connect, then tunnel (`CONNECT`) or forward (plain HTTP). Every request gets
//! exactly one decision line, written when it is allowed (connected) or refused, and an
//! allowed one a close line once its last byte has gone through.
//!
//! What the client is told on a refusal is a fixed, generic reason ("denied by
//! policy", "policy unavailable", …): the agent is the party the proxy guards against,
//! and the details — the policy file's path and parse errors, what a name resolves to,
//! connect errors — are for the log only.

pub(crate) mod forward;
#[cfg(test)]
mod tests;
pub(crate) mod tunnel;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::activity::ActiveGuard;
use super::addr::{Unlock, forbidden};
use super::config::Config;
use super::log::{DecisionRecord, Verdict};
use super::policy::{Decision, Target};
use super::reload::PolicyStore;
use super::resolve::Resolver;
use super::sni::{self};
use super::sniff::Head;

use forward::{forward, keyed};
use tunnel::tunnel;

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
pub(crate) struct Pending {
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
pub(crate) const IDLE: &str = "idle timeout";

pub(crate) const DENIED: &str = "denied by policy";

pub(crate) const UNAVAILABLE: &str = "policy unavailable, everything is denied";

/// A refused request: status, the reason for the log, and the generic reason the
/// client is told.
pub(crate) struct Refusal {
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
pub(crate) struct Route {
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
pub(crate) struct Counted {
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
