//! Plain-HTTP forwarding and the keyed path: one request sent upstream (with the key the
//! proxy holds added), its answer returned, bytes counted both ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::proxy::log::DecisionRecord;
use crate::proxy::policy::{Decision, Target};
use crate::proxy::resolve::Resolver;

#[allow(clippy::wildcard_imports)]
use super::*;

pub(crate) async fn forward(
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
pub(crate) async fn keyed_connect<R: Resolver>(
    shared: &Shared<R>,
    keys: &crate::proxy::keyed::Keys,
    p: &crate::proxy::keyed::Provider,
    rec: &mut DecisionRecord,
) -> Result<crate::proxy::keyed::UpstreamTls, Refusal> {
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
    let tls = crate::proxy::keyed::tls_connect(keys.tls.clone(), p.host, tcp);
    match tokio::time::timeout(shared.cfg.connect_timeout, tls).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Refusal::bad_gateway(format!("TLS: {e}"))),
        Err(_) => Err(Refusal::bad_gateway("TLS handshake timed out")),
    }
}

/// The request body, counting its bytes as they go up.
pub(crate) fn counted(body: Incoming, up: &Arc<AtomicU64>) -> Body {
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
pub(crate) async fn exchange<S>(out: Request<Body>, io: S, mut pending: Pending) -> Response<Body>
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
pub(crate) async fn keyed<R: Resolver>(
    shared: &Shared<R>,
    ctx: &ConnCtx,
    keys: &crate::proxy::keyed::Keys,
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
    if !crate::proxy::keyed::path_allowed(p, &keys.extra_paths, path) {
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
    if let Err(e) = crate::proxy::keyed::upstream_headers(&mut headers, p, &key) {
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
