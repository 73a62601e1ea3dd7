//! The per-client egress proxy: the only way out of a client's sandbox. It speaks
//! HTTP/1.1 `CONNECT` and plain-HTTP forwarding (hyper parses every request), decides
//! on the requested *name* before any DNS lookup, refuses private, loopback,
//! link-local and metadata answers unless the rule allows them, and logs a JSON line
//! per decision and per closed connection. Any doubt — unreadable or invalid policy,
//! malformed request — means no connection (fail closed). A tunnel's TLS server name
//! (SNI) is held against the name its `CONNECT` was allowed on. The client inside the
//! sandbox is assumed hostile: connections are capped, idle ones closed, repeating
//! log lines rate-limited, and refusals tell it nothing about the host.
//!
//! `sandboxctl proxy` calls [`run`]; tests call [`serve`] with their own listener and
//! resolver.

mod activity;
mod addr;
pub mod client_hello;
mod config;
mod handler;
mod idle;
pub mod keyed;
mod listen;
pub mod log;
pub mod policy;
mod reload;
mod resolve;
mod server;
mod sni;
mod sniff;
mod splice;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

pub use addr::{Forbidden, Unlock, forbidden};
pub use listen::{Listen, Listener};
pub use log::LogSink;
pub use resolve::{Resolver, SystemResolver};
pub use server::{Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Stopped, serve};

/// How long a socket-activated proxy waits without any connection before it exits
/// (systemd starts it again on the next connection).
pub const DEFAULT_IDLE_EXIT: Duration = Duration::from_mins(5);

/// What `sandboxctl proxy` passes in.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The client whose sandbox this proxy serves.
    pub client: String,
    /// The client's policy file (`…/clients/<client>/config/network.toml`).
    pub policy_path: PathBuf,
    pub listen: Listen,
    /// Exit after this long without connections; only useful with socket activation.
    pub idle_exit: Option<Duration>,
    /// See [`Config::max_connections`].
    pub max_connections: usize,
    /// See [`Config::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`Config::keys`].
    pub keys: Option<keyed::Keys>,
}

impl ProxyOptions {
    /// Options with the idle exit on for [`Listen::SystemdSocket`] and off otherwise
    /// (a proxy that binds its own socket would not come back).
    pub fn new(client: impl Into<String>, policy_path: impl Into<PathBuf>, listen: Listen) -> Self {
        let idle_exit = (listen == Listen::SystemdSocket).then_some(DEFAULT_IDLE_EXIT);
        Self {
            client: client.into(),
            policy_path: policy_path.into(),
            listen,
            idle_exit,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keys: None,
        }
    }
}

/// Runs the proxy until SIGTERM or SIGINT (or the idle exit).
pub fn run(opts: ProxyOptions) -> anyhow::Result<()> {
    run_with(opts, SystemResolver)
}

/// [`run`] with another resolver (the benchmark's, which sends a test name to its
/// local upstream).
pub fn run_with<R: Resolver>(opts: ProxyOptions, resolver: R) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the proxy's runtime")?;
    rt.block_on(async move {
        let listener = Listener::open(&opts.listen)?;
        let mut cfg = Config::new(opts.client, opts.policy_path);
        cfg.idle_exit = opts.idle_exit;
        cfg.max_connections = opts.max_connections;
        cfg.idle_timeout = opts.idle_timeout;
        cfg.keys = opts.keys;
        let shutdown = shutdown_signal()?;
        serve(listener, cfg, resolver, shutdown).await;
        Ok(())
    })
}

fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
