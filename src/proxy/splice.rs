//! The tunnel's data path on Linux: bytes move socket → pipe → socket with `splice(2)`,
//! without being copied through the proxy's memory. Each direction has its own pipe; a
//! direction ends at its reader's EOF by shutting down the writer's sending side, so
//! half-closed connections behave as they would end to end.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::{Interest, Ready};
use tokio::net::{TcpStream, UnixStream};

/// How much one `splice` call moves at most, and the pipe capacity asked for (an
/// unprivileged process gets up to /proc/sys/fs/pipe-max-size, 1 MiB by default;
/// splice moves no more than the pipe holds either way). Pipe pages are only held while
/// data is in flight.
const CHUNK: usize = 1 << 20;

/// The send buffer asked for on the client's Unix socket. Unix sockets have no
/// autotuning, and their default (`net.core.wmem_default`, about 208 KiB) makes the
/// reader and the proxy wake each other for every few pages; the kernel caps the value
/// at `net.core.wmem_max`.
const CLIENT_SEND_BUFFER: usize = 4 << 20;

/// A tokio socket that splice can read from and write to.
pub(crate) trait SpliceSocket: AsFd + Send + Sync {
    /// Whether the kernel sizes this socket's buffers itself (TCP autotuning), so that
    /// setting a size would only cap it.
    const AUTOTUNED: bool;

    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

macro_rules! splice_socket {
    ($t:ty, $autotuned:expr) => {
        impl SpliceSocket for $t {
            const AUTOTUNED: bool = $autotuned;

            fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
                <$t>::ready(self, interest)
            }
            fn try_io<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                <$t>::try_io(self, interest, f)
            }
        }
    };
}
splice_socket!(TcpStream, true);
splice_socket!(UnixStream, false);

/// Moves bytes both ways until both directions have ended; counts each direction.
/// Upstream to client starts at once; client to upstream once `first` has succeeded
/// (the caller reads, checks and forwards the client's first bytes there). If `first`
/// fails, the tunnel ends at once with its error.
pub(crate) async fn tunnel<A: SpliceSocket, B: SpliceSocket, E>(
    client: &A,
    upstream: &B,
    first: impl Future<Output = Result<(), E>> + Unpin,
    up: &Arc<AtomicU64>,
    down: &Arc<AtomicU64>,
) -> Result<io::Result<()>, E> {
    // A bigger send buffer towards a Unix-socket client means fewer wake-ups per byte
    // for the three processes a tunnel involves. A TCP socket is left alone: a fixed
    // size would switch its autotuning off, and with the stock net.core.rmem_max
    // (208 KiB) cap a long-distance download far below what autotuning reaches.
    if !A::AUTOTUNED {
        let _ =
            rustix::net::sockopt::set_socket_send_buffer_size(client.as_fd(), CLIENT_SEND_BUFFER);
    }
    gated(
        first,
        |()| pump(client, upstream, up),
        pump(upstream, client, down),
    )
    .await
}

/// Runs `down` from the start and `up` (given what `first` returned) once `first` has
/// succeeded, until both have ended; `up`'s error is reported before `down`'s. An error
/// of `first` ends it at once, `down` being dropped wherever it was, and so does an
/// error of `down` while `first` is still waiting (a tunnel that cannot carry bytes down,
/// say for want of descriptors for its pipe, is not kept open for its client's first
/// bytes). `first` is dropped as soon as it is done: boxed, its memory is not held for
/// the tunnel's life.
pub(crate) async fn gated<T, E, U: Future<Output = io::Result<()>>>(
    mut first: impl Future<Output = Result<T, E>> + Unpin,
    up: impl FnOnce(T) -> U,
    down: impl Future<Output = io::Result<()>>,
) -> Result<io::Result<()>, E> {
    tokio::pin!(down);
    let mut down_ended = None;
    let checked = loop {
        tokio::select! {
            r = &mut first => break r?,
            r = &mut down, if down_ended.is_none() => match r {
                Ok(()) => down_ended = Some(Ok(())),
                Err(e) => return Ok(Err(e)),
            },
        }
    };
    drop(first);
    let (a, b) = if let Some(b) = down_ended {
        (up(checked).await, b)
    } else {
        tokio::join!(up(checked), down)
    };
    Ok(a.and(b))
}

/// Reads what the socket has (at least one byte, or 0 at its end).
pub(crate) async fn read<S: SpliceSocket>(sock: &S, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        sock.ready(Interest::READABLE).await?;
        match sock.try_io(Interest::READABLE, || {
            rustix::io::read(sock.as_fd(), &mut *buf).map_err(io::Error::from)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
    }
}

/// Writes all of `bytes`.
pub(crate) async fn write_all<S: SpliceSocket>(sock: &S, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        sock.ready(Interest::WRITABLE).await?;
        match sock.try_io(Interest::WRITABLE, || {
            rustix::io::write(sock.as_fd(), bytes).map_err(io::Error::from)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).map_err(io::Error::from)?;
    let _ = rustix::pipe::fcntl_setpipe_size(&w, CHUNK);
    Ok((r, w))
}

fn flags() -> SpliceFlags {
    SpliceFlags::MOVE | SpliceFlags::NONBLOCK
}

/// One direction: `from` → pipe → `to`, until `from` reaches EOF.
async fn pump<F: SpliceSocket, T: SpliceSocket>(
    from: &F,
    to: &T,
    count: &AtomicU64,
) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe()?;
    loop {
        from.ready(Interest::READABLE).await?;
        // The pipe is empty here, so EAGAIN can only mean `from` has nothing to read.
        let n = match from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, &pipe_w, None, CHUNK, flags()).map_err(io::Error::from)
        }) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.ready(Interest::WRITABLE).await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe_r, None, to.as_fd(), None, left, flags()).map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    // EOF from `from`: pass it on, so the other end sees the half-close.
    match rustix::net::shutdown(to.as_fd(), rustix::net::Shutdown::Write) {
        Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn moves_bytes_both_ways_and_passes_half_closes_on() {
        let (client_far, client) = UnixStream::pair().expect("pair");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream = TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let (u, d) = (up.clone(), down.clone());
        let task = tokio::spawn(async move {
            tunnel(
                &client,
                &upstream,
                Box::pin(async { Ok::<_, ()>(()) }),
                &u,
                &d,
            )
            .await
        });

        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut far_r, mut far_w) = client_far.into_split();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            far_w.write_all(&sent).await.expect("write");
            far_w.shutdown().await.expect("half-close");
        });
        let mut got = Vec::new();
        server
            .read_to_end(&mut got)
            .await
            .expect("server reads to EOF");
        assert_eq!(got, payload, "client to server, intact");
        writer.await.expect("writer");
        server.write_all(b"answer").await.expect("answer");
        server.shutdown().await.expect("server half-close");
        let mut answer = Vec::new();
        far_r
            .read_to_end(&mut answer)
            .await
            .expect("client reads to EOF");
        assert_eq!(answer, b"answer");
        task.await.expect("join").expect("gate").expect("tunnel");
        assert_eq!(up.load(Ordering::Relaxed), 3_000_000);
        assert_eq!(down.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn the_way_down_runs_while_the_first_bytes_are_awaited() {
        let order = std::sync::Mutex::new(Vec::new());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ended = gated(
            Box::pin(async {
                rx.await.expect("sent");
                Ok::<_, ()>(7)
            }),
            |n| {
                let order = &order;
                async move {
                    order.lock().expect("lock").push(format!("up {n}"));
                    Ok(())
                }
            },
            async {
                order.lock().expect("lock").push("down".to_owned());
                tx.send(()).expect("send");
                Ok(())
            },
        )
        .await;
        assert!(matches!(ended, Ok(Ok(()))));
        assert_eq!(*order.lock().expect("lock"), ["down", "up 7"]);
        // A refusal ends it at once: the way up never starts, the way down is dropped.
        let refused = gated(
            std::future::ready(Err::<(), _>("refused")),
            |()| async { unreachable!("the way up started") },
            std::future::pending(),
        )
        .await;
        assert_eq!(refused.err(), Some("refused"));
        // An error on the way down does not wait for the first bytes.
        let broken = gated(
            Box::pin(std::future::pending::<Result<(), ()>>()),
            |()| async { unreachable!("the way up started") },
            async { Err(io::Error::other("no pipe")) },
        )
        .await;
        assert!(matches!(broken, Ok(Err(e)) if e.to_string() == "no pipe"));
    }
}
