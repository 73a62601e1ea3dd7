//! Name resolution and dialing behind a trait, so tests can answer with their own
//! addresses, count lookups (a denied name must never be looked up) and stand in for
//! the private, link-local and metadata addresses the checks are about with servers on
//! loopback.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

/// Resolves an allowed host name to addresses, and connects to one of them once it has
/// passed the address checks.
pub trait Resolver: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;

    /// Connects to `addr` (already checked against the policy).
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }
}

/// The system resolver (getaddrinfo on a blocking thread, via tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}
