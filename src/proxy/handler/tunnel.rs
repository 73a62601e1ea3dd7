//! A `CONNECT` tunnel once allowed: its first bytes checked (the TLS name), then the
//! bytes carried both ways, by `splice(2)` where it can.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::proxy::activity::ActiveGuard;
use crate::proxy::idle::stalled;
use crate::proxy::sni::{self, Stopped};
use crate::proxy::sniff::Recorder;

#[allow(clippy::wildcard_imports)]
use super::*;

/// Carries a tunnel until both sides are done or no byte moved for `idle`; the
/// connection's slot under the cap is held until then.
pub(crate) async fn tunnel(
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
pub(crate) struct Ends<'a> {
    pub(crate) check: &'a sni::Check,
    pub(crate) up: &'a Arc<AtomicU64>,
    pub(crate) down: &'a Arc<AtomicU64>,
    /// Set to the TLS server name once the first bytes are judged.
    pub(crate) server_name: &'a OnceLock<String>,
}

impl Ends<'_> {
    /// Notes a refusal of the first bytes; returns the tunnel's error and the alert to
    /// send the client, if any.
    pub(crate) fn refused(self, r: sni::Refused) -> (String, Option<[u8; 7]>) {
        if let Some(name) = r.server_name {
            let _ = self.server_name.set(name);
        }
        (r.reason, r.alert.map(sni::Alert::record))
    }

    pub(crate) fn passed(self, p: &sni::Passed) {
        if let Some(name) = &p.server_name {
            let _ = self.server_name.set(name.clone());
        }
        self.up.fetch_add(p.bytes.len() as u64, Ordering::Relaxed);
    }
}

pub(crate) async fn carry(
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
pub(crate) async fn spliced<C: crate::proxy::splice::SpliceSocket>(
    client: &C,
    tcp: TcpStream,
    early: &[u8],
    ends: Ends<'_>,
) -> Result<(), String> {
    use crate::proxy::splice;
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
pub(crate) struct Spliced<'a, C>(&'a C);

impl<C: crate::proxy::splice::SpliceSocket> sni::Source for Spliced<'_, C> {
    async fn readable(&mut self) -> std::io::Result<()> {
        self.0.ready(tokio::io::Interest::READABLE).await.map(drop)
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        crate::proxy::splice::read(self.0, buf).await
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
pub(crate) async fn copied<C>(client: C, tcp: TcpStream, ends: Ends<'_>) -> Result<(), String>
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
    match crate::proxy::splice::gated(first, up, down).await {
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
