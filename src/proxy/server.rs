//! The accept loop: one task per connection, each connection served by hyper with
//! tight limits (one request, header size, header read timeout), shutdown on a signal
//! and exit after an idle period (systemd socket activation starts it again).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::handler::{self, Shared};
use super::listen::{Accepted, Listener};
use super::log::{DecisionRecord, LogSink};
use super::reload::PolicyStore;
use super::resolve::Resolver;
use super::sniff::{Head, Recorder};

/// Settings of a running proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// The client this proxy serves (for the log and messages).
    pub client: String,
    /// The policy file, re-read when it changes.
    pub policy_path: PathBuf,
    /// A client must send the whole request head within this time (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head accepted (start line and headers).
    pub max_header_bytes: usize,
    pub dns_timeout: Duration,
    pub connect_timeout: Duration,
    /// Exit after this long without any connection.
    pub idle_exit: Option<Duration>,
    pub log: LogSink,
}

impl Config {
    /// Defaults: 10 s header timeout, 16 KiB heads, 5 s DNS, 10 s connect, no idle exit,
    /// log to stderr.
    pub fn new(client: impl Into<String>, policy_path: impl Into<PathBuf>) -> Self {
        Self {
            client: client.into(),
            policy_path: policy_path.into(),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            dns_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            idle_exit: None,
            log: LogSink::Stderr,
        }
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Shutdown,
    Idle,
}

/// Counts live connections and tunnels, for the idle exit.
#[derive(Clone)]
pub(crate) struct Activity(Arc<watch::Sender<usize>>);

pub(crate) struct ActiveGuard(Activity);

impl Activity {
    fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    pub(crate) fn guard(&self) -> ActiveGuard {
        self.0.send_modify(|n| *n += 1);
        ActiveGuard(self.clone())
    }

    /// Resolves once nothing has been active for `idle`.
    async fn idle(&self, idle: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            if *rx.borrow_and_update() == 0 {
                tokio::select! {
                    () = tokio::time::sleep(idle) => return,
                    r = rx.changed() => if r.is_err() { return },
                }
            } else if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
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
        activity: activity.clone(),
    });
    shared.cfg.log.event(
        "start",
        &serde_json::json!({ "client": shared.cfg.client, "policy": shared.cfg.policy_path }),
    );
    // Load (and log) the policy now, so a broken file shows up at start.
    let _ = shared.store.current();
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
                    let guard = activity.guard();
                    let shared = shared.clone();
                    match conn {
                        Accepted::Tcp(s) => tokio::spawn(connection(shared, s, guard)),
                        Accepted::Unix(s) => tokio::spawn(connection(shared, s, guard)),
                    };
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving, back off.
                    shared.cfg.log.event(
                        "accept_error",
                        &serde_json::json!({ "client": shared.cfg.client, "error": e.to_string() }),
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
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

async fn connection<R, S>(shared: Arc<Shared<R>>, io: S, _guard: ActiveGuard)
where
    R: Resolver,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = Head::default();
    let served = Arc::new(AtomicBool::new(false));
    let max = shared.cfg.max_header_bytes;
    let io = TokioIo::new(Recorder::new(io, head.clone(), max + 1));
    let svc = {
        let shared = shared.clone();
        let served = served.clone();
        service_fn(move |req| {
            served.store(true, Ordering::Relaxed);
            handler::handle(shared.clone(), head.clone(), req)
        })
    };
    let result = http1::Builder::new()
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
        .with_upgrades()
        .await;
    // Errors after a request was handled are logged by that request's record.
    if let Err(e) = result
        && !served.load(Ordering::Relaxed)
    {
        shared.cfg.log.decision(&DecisionRecord::denied(
            shared.cfg.client.clone(),
            None,
            format!("bad request: {e}"),
        ));
    }
}
