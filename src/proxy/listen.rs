//! The proxy's listening socket: handed over by systemd (socket activation), or bound
//! on a Unix socket path or a TCP address.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// The Unix socket systemd passes as fd 3 (`LISTEN_FDS`/`LISTEN_PID`).
    SystemdSocket,
    /// Bind this Unix socket path (mode 0600; a stale socket file is replaced).
    Unix(PathBuf),
    /// Bind this TCP address.
    Tcp(SocketAddr),
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted connection.
pub(crate) enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Opens `listen`. Must run inside a tokio runtime.
    pub fn open(listen: &Listen) -> anyhow::Result<Listener> {
        match listen {
            Listen::SystemdSocket => {
                let mut fds = listenfd::ListenFd::from_env();
                let std = fds
                    .take_unix_listener(0)
                    .context("the socket passed by systemd is not a Unix stream socket")?
                    .context(
                        "no socket passed by systemd (LISTEN_FDS unset or for another \
                         process); start the proxy through its .socket unit",
                    )?;
                std.set_nonblocking(true)?;
                Ok(Listener::Unix(UnixListener::from_std(std)?))
            }
            Listen::Unix(path) => bind_unix(path),
            Listen::Tcp(addr) => {
                let std = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr}"))?;
                std.set_nonblocking(true)?;
                Ok(Listener::Tcp(TcpListener::from_std(std)?))
            }
        }
    }

    /// The TCP address, for a TCP listener.
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    pub(crate) async fn accept(&self) -> std::io::Result<Accepted> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Accepted::Tcp(s)
            }
            Listener::Unix(l) => Accepted::Unix(l.accept().await?.0),
        })
    }
}

impl Accepted {
    /// Answers `503` and closes, without waiting: the send buffer of a fresh socket
    /// takes the short answer in one non-blocking write, and a client that makes even
    /// that fail just sees the close. (On TCP, a request the client already sent and
    /// the proxy never read makes the close a reset, which may hide the answer; the
    /// sandbox reaches the proxy over a Unix socket, where it cannot.)
    pub(crate) fn refuse_busy(self) {
        const BODY: &str = "sandboxctl proxy: too many open connections, try again later\n";
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = match &self {
            Accepted::Tcp(s) => s.try_write(answer.as_bytes()),
            Accepted::Unix(s) => s.try_write(answer.as_bytes()),
        };
    }
}

fn bind_unix(path: &Path) -> anyhow::Result<Listener> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?,
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    let std = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    // Only the owner may connect (the directory should be 0700 as well).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    std.set_nonblocking(true)?;
    Ok(Listener::Unix(UnixListener::from_std(std)?))
}
