//! Proxy-held keys (issue 16): what the key-adding path costs on loopback. A local TLS
//! stand-in for the provider (test CA), the proxy in-process on its own thread (as in
//! production: one current-thread runtime), and a client that talks either TLS
//! straight to the stand-in or plain HTTP to the proxy's `/anthropic/…` path.
//!
//! Prints the median latency of a small request each way (a new connection each, as
//! the proxy serves one request per connection) and the added time, and the throughput
//! of a streamed body each way and their ratio. `--check` exits 1 if the added latency
//! is over 1 ms or the ratio under 0.8.

#![allow(clippy::unwrap_used, clippy::too_many_lines)]

#[path = "../tests/support/tls_upstream.rs"]
mod tls_upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sandboxctl::proxy::keyed::{self, Keys};
use sandboxctl::proxy::{Config, Listen, Listener, LogSink, SystemResolver, serve};
use tokio::net::TcpStream;

const REQUESTS: usize = 300;
const BIG: usize = 256 << 20;
const ROUNDS: usize = 7;

fn main() {
    let check = std::env::args().any(|a| a == "--check");
    let ca = tls_upstream::TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    keyed::store(dir.path(), "ANTHROPIC_API_KEY", b"sk-bench").unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let up = tls_upstream::TlsUpstream::start(&ca).await;
            tx.send(up.addr).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let upstream: SocketAddr = rx.recv().unwrap();

    let mut keys = Keys::new(
        vec![&keyed::ANTHROPIC],
        dir.path().join(keyed::KEY_DIR),
        Some(&ca_file),
    )
    .unwrap();
    keys.connect_to = Some(upstream);
    let client_tls = keys.tls.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let policy = dir.path().join("network.toml");
    std::fs::write(&policy, "allow = [\"api.anthropic.com\"]").unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = Config::new("bench", &policy);
            cfg.log = LogSink::Memory(Arc::default());
            cfg.keys = Some(keys);
            let listener = Listener::open(&Listen::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
            tx.send(listener.local_tcp_addr().unwrap()).unwrap();
            serve(listener, cfg, SystemResolver, std::future::pending()).await;
        });
    });
    let proxy: SocketAddr = rx.recv().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let direct = |path: &'static str| {
            let tls = client_tls.clone();
            async move {
                let tcp = TcpStream::connect(upstream).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let name = pki_types::ServerName::try_from("api.anthropic.com").unwrap();
                let s = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .unwrap();
                fetch(s, path, "api.anthropic.com").await
            }
        };
        let proxied = |path: &'static str| async move {
            let tcp = TcpStream::connect(proxy).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            fetch(tcp, &format!("/anthropic{path}"), "127.0.0.1:3128").await
        };
        // Warm up both paths.
        for _ in 0..20 {
            direct("/small").await;
            proxied("/small").await;
        }
        let (mut d, mut p) = (Vec::new(), Vec::new());
        for _ in 0..REQUESTS {
            let t = Instant::now();
            direct("/small").await;
            d.push(t.elapsed());
            let t = Instant::now();
            proxied("/small").await;
            p.push(t.elapsed());
        }
        let (md, mp) = (median(&mut d), median(&mut p));
        let added = mp.saturating_sub(md);
        println!(
            "latency of one request (new connection each, median of {REQUESTS}): direct TLS {:.3} ms, through the proxy {:.3} ms, added {:.3} ms",
            ms(md),
            ms(mp),
            ms(added)
        );
        let big: &'static str = Box::leak(format!("/big/{BIG}").into_boxed_str());
        let mut ratios = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            assert_eq!(direct(big).await, BIG);
            let td = t.elapsed();
            let t = Instant::now();
            assert_eq!(proxied(big).await, BIG);
            let tp = t.elapsed();
            let gib = |t: Duration| f64::from(u32::try_from(BIG >> 20).unwrap()) / 1024.0 / t.as_secs_f64();
            println!(
                "streamed {} MiB: direct {:.2} GiB/s, through the proxy {:.2} GiB/s",
                BIG >> 20,
                gib(td),
                gib(tp)
            );
            ratios.push(td.as_secs_f64() / tp.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let ratio = ratios[ratios.len() / 2];
        println!("streaming throughput ratio (proxy / direct TLS, median of {ROUNDS}): {ratio:.2}");
        if check && (added > Duration::from_millis(1) || ratio < 0.8) {
            eprintln!("missed: added latency ≤ 1 ms and ratio ≥ 0.8");
            std::process::exit(1);
        }
    });
}

/// One GET on `io`; returns the body's length.
async fn fetch<S>(io: S, path: &str, host: &str) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .header("x-api-key", keyed::PLACEHOLDER)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len();
        }
    }
    n
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
