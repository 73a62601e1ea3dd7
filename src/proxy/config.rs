//! A running proxy's settings.

use std::path::PathBuf;
use std::time::Duration;

use super::log::LogSink;

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
    /// Most connections (tunnels included) open at once; one more is answered `503`
    /// and closed. A spliced tunnel holds 6 descriptors (client and upstream sockets,
    /// a pipe per direction), a forwarded request 3 at most (client, upstream, a DNS
    /// socket while it resolves), so the default 256 needs about 1,540 of the unit's
    /// 4,096 (`LimitNOFILE=`), leaving room for the listener, the runtime and refusals.
    pub max_connections: usize,
    /// A connection or tunnel on which no byte moved either way for this long is
    /// closed (abandoned tunnels, stalled request bodies, silent upstreams).
    pub idle_timeout: Duration,
    pub log: LogSink,
    /// Proxy-held API keys: the providers whose key this proxy adds (none if `None`).
    pub keys: Option<super::keyed::Keys>,
}

/// Default of [`Config::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of [`Config::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_mins(10);
impl Config {
    /// Defaults: 10 s header timeout, 16 KiB heads, 5 s DNS, 10 s connect, no idle exit,
    /// 256 connections, 10 min idle timeout, log to stderr.
    pub fn new(client: impl Into<String>, policy_path: impl Into<PathBuf>) -> Self {
        Self {
            client: client.into(),
            policy_path: policy_path.into(),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            dns_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            idle_exit: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            log: LogSink::Stderr,
            keys: None,
        }
    }
}
