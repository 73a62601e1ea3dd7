//! Name resolution behind a trait, so tests can answer with their own addresses and
//! count lookups (a denied name must never be looked up).

use std::future::Future;
use std::io;
use std::net::IpAddr;

/// Resolves an allowed host name to addresses.
pub trait Resolver: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;
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
