//! The accept loop: one task per connection up to a cap, each connection served by
//! hyper with tight limits (one request, header size, header read timeout, idle
//! timeout), shutdown on a signal and exit after an idle period (systemd socket
//! activation starts it again).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::activity::{ActiveGuard, Activity};
pub use super::config::{Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use super::handler::{self, ConnCtx, Shared};
use super::idle::{Backoff, stalled};
use super::listen::{Accepted, Listener};
use super::log::{DecisionRecord, RateLimit};
use super::reload::PolicyStore;
use super::resolve::Resolver;
use super::sniff::{Head, Recorder};

/// At most one log line per this interval for each repeating condition (connection
/// cap reached, accept failing).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Shutdown,
    Idle,
}

/// Serves connections from `listener` until `shutdown` resolves or, with
/// [`Config::idle_exit`], nothing happened for that long.
pub async fn serve<R: Resolver>(
    listener: Listener,
    cfg: Config,
    resolver: R,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let activity = Activity::new();
    let idle_exit = cfg.idle_exit;
    let shared = Arc::new(Shared {
        store: PolicyStore::new(cfg.policy_path.clone(), cfg.client.clone(), cfg.log.clone()),
        cfg,
        resolver,
        next_id: AtomicU64::new(0),
    });
    shared.cfg.log.event(
        "start",
        &serde_json::json!({
            "client": shared.cfg.client,
            "policy": shared.cfg.policy_path,
            "max_connections": shared.cfg.max_connections,
            "idle_timeout_s": shared.cfg.idle_timeout.as_secs_f64(),
        }),
    );
    // Load (and log) the policy now, so a broken file shows up at start.
    let _ = shared.store.current();
    let mut full_log = RateLimit::new(LOG_EVERY);
    let mut error_log = RateLimit::new(LOG_EVERY);
    let mut backoff = Backoff::new();
    tokio::pin!(shutdown);
    let stopped = loop {
        let idle = async {
            match idle_exit {
                Some(d) => activity.idle(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break Stopped::Shutdown,
            () = idle => break Stopped::Idle,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff.succeeded();
                    let Some(guard) = activity.try_guard(shared.cfg.max_connections) else {
                        // At the cap: answer and close at once rather than stop
                        // accepting. A client gets a clear 503 instead of hanging in
                        // the backlog until some tunnel ends, possibly minutes later;
                        // the refusal costs a descriptor for one non-blocking write,
                        // and its log line is rate-limited, so a client retrying in
                        // a loop costs neither descriptors nor log.
                        conn.refuse_busy();
                        if let Some(suppressed) = full_log.check(Instant::now()) {
                            shared.cfg.log.event(
                                "connection_limit",
                                &serde_json::json!({
                                    "client": shared.cfg.client,
                                    "max_connections": shared.cfg.max_connections,
                                    "refused_since_last_line": suppressed + 1,
                                }),
                            );
                        }
                        continue;
                    };
                    let shared = shared.clone();
                    match conn {
                        Accepted::Tcp(s) => tokio::spawn(connection(shared, s, guard)),
                        Accepted::Unix(s) => tokio::spawn(connection(shared, s, guard)),
                    };
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving, back off
                    // (the failing connection stays queued and would fail again at
                    // once), and say so at most once per interval.
                    if let Some(suppressed) = error_log.check(Instant::now()) {
                        shared.cfg.log.event(
                            "accept_error",
                            &serde_json::json!({
                                "client": shared.cfg.client,
                                "error": e.to_string(),
                                "suppressed": suppressed,
                            }),
                        );
                    }
                    tokio::time::sleep(backoff.failed()).await;
                }
            },
        }
    };
    shared.cfg.log.event(
        "stop",
        &serde_json::json!({ "client": shared.cfg.client, "why": format!("{stopped:?}").to_lowercase() }),
    );
    stopped
}

async fn connection<R, S>(shared: Arc<Shared<R>>, io: S, guard: ActiveGuard)
where
    R: Resolver,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let ctx = ConnCtx {
        id: format!("{}-{n}", std::process::id()),
        head: Head::default(),
        slot: Arc::new(guard),
        timed_out: Arc::default(),
    };
    let served = Arc::new(AtomicBool::new(false));
    let max = shared.cfg.max_header_bytes;
    let progress = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Recorder::new(
        io,
        ctx.head.clone(),
        max + 1,
        progress.clone(),
    ));
    let svc = {
        let shared = shared.clone();
        let served = served.clone();
        let ctx = ctx.clone();
        service_fn(move |req| {
            served.store(true, Ordering::Relaxed);
            handler::handle(shared.clone(), ctx.clone(), req)
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.cfg.header_read_timeout)
        .max_header_size(max)
        .max_headers(100)
        // A client may shut its write side once the request is sent (socat does at the
        // end of its input); the answer must still reach it.
        .half_close(true)
        // One request per connection: every request gets a fresh upstream connection
        // and its own head check, and nothing can be pipelined behind it.
        .keep_alive(false)
        .serve_connection(io, svc)
        .with_upgrades();
    // No byte either way for the idle timeout (a stalled request body, an upstream
    // that never answers): drop the connection. The request's record notes why. Once a
    // tunnel is up this future has ended and the tunnel watches itself.
    let stalled = async {
        stalled(shared.cfg.idle_timeout, || progress.load(Ordering::Relaxed)).await;
        ctx.timed_out.store(true, Ordering::Relaxed);
    };
    let result = tokio::select! {
        r = conn => r,
        () = stalled => return,
    };
    // Errors after a request was handled are logged by that request's record.
    if let Err(e) = result
        && !served.load(Ordering::Relaxed)
    {
        shared.cfg.log.decision(&DecisionRecord::denied(
            ctx.id.clone(),
            shared.cfg.client.clone(),
            None,
            format!("bad request: {e}"),
        ));
    }
}
