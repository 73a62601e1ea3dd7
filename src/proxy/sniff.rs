//! Keeps a copy of the raw request head so the proxy can refuse request-smuggling
//! shapes that hyper accepts and normalises away before the request reaches us: hyper
//! drops a repeated `Content-Length` of the same value and drops `Content-Length` when
//! `Transfer-Encoding` is present. The proxy serves one request per connection, so the
//! head is simply the first bytes of the connection; it is parsed with `httparse`
//! (the parser hyper itself uses).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes of the request head, shared between the connection's IO and its service.
#[derive(Clone, Default)]
pub(crate) struct Head(Arc<Mutex<Vec<u8>>>);

/// IO wrapper recording everything read until the end of the head (`\r\n\r\n`) or
/// until `cap` bytes; afterwards a plain pass-through. It also counts the bytes moved
/// each way in `progress`, which the connection's idle timer watches.
pub(crate) struct Recorder<S> {
    inner: S,
    head: Head,
    cap: usize,
    done: bool,
    progress: Arc<AtomicU64>,
}

impl<S> Recorder<S> {
    pub(crate) fn new(inner: S, head: Head, cap: usize, progress: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            head,
            cap,
            done: false,
            progress,
        }
    }

    /// The wrapped stream (for the tunnel's zero-copy path).
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        if !self.done && matches!(res, Poll::Ready(Ok(()))) {
            let new = &buf.filled()[before..];
            let mut head = match self.head.0.lock() {
                Ok(h) => h,
                Err(p) => p.into_inner(),
            };
            let start = head.len().saturating_sub(3);
            let room = self.cap.saturating_sub(head.len());
            head.extend_from_slice(&new[..new.len().min(room)]);
            let complete = head[start..].windows(4).any(|w| w == b"\r\n\r\n");
            let full = head.len() >= self.cap;
            drop(head);
            self.done = complete || full || new.is_empty();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            self.progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Head {
    /// Why the recorded head looks like a smuggling attempt, if it does.
    pub(crate) fn smuggling(&self) -> Option<&'static str> {
        let head = match self.0.lock() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        smuggling(&head)
    }
}

fn smuggling(head: &[u8]) -> Option<&'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    // hyper already accepted this head; if it does not parse here something is off.
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Some("request head could not be checked"),
    }
    let mut cl = 0;
    let mut te = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            cl += 1;
            if h.value.contains(&b',') {
                return Some("Content-Length with several values");
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te += 1;
        }
    }
    match (cl, te) {
        (c, t) if c > 0 && t > 0 => Some("both Content-Length and Transfer-Encoding"),
        (c, _) if c > 1 => Some("Content-Length given more than once"),
        (_, t) if t > 1 => Some("Transfer-Encoding given more than once"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_shapes() {
        let ok = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(smuggling(ok), None);
        let ok_te = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(smuggling(ok_te), None);
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(smuggling(bad).is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn recorder_keeps_the_head_only() {
        use tokio::io::AsyncReadExt as _;
        let data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODYBODY".to_vec();
        let head = Head::default();
        let mut r = Recorder::new(&data[..], head.clone(), 1024, Arc::default());
        let mut buf = [0u8; 5];
        let mut all = Vec::new();
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(all, data);
        let recorded = head.0.lock().unwrap().clone();
        assert!(recorded.starts_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(recorded.len() < data.len());
    }
}
