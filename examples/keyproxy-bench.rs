//! Proxy-held keys (issue 16): what the key-adding path costs on loopback. A local TLS
//! stand-in for the provider (test CA), the proxy in-process on its own thread (as in
//! production: one current-thread runtime, serving a Unix socket), and a client that
//! talks either TLS straight to the stand-in or plain HTTP to the proxy's
//! `/anthropic/…` path. Both sides use the same TLS stack, cipher suite, body and
//! chunking, and the direct client reads TLS the way the proxy does
//! ([`keyed::tls_connect`]), so the difference is the proxy alone.
//!
//! Prints the median latency of a small request each way (a new connection each, as
//! the proxy serves one request per connection) and the added time; then, after one
//! untimed transfer each way, the throughput of a streamed body each way (alternating,
//! many short rounds, so a burst of other work spoils few), the median ratio, and the CPU time each thread spent per GiB (which,
//! unlike the ratio, hardly depends on what else the machine runs). `--check` exits 1
//! if the added latency is over 1 ms or the ratio under 0.8.

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
use tokio::net::{TcpStream, UnixStream};

const REQUESTS: usize = 300;
const BIG: usize = 128 << 20;
const ROUNDS: usize = 15;

fn main() {
    let check = std::env::args().any(|a| a == "--check");
    let ca = tls_upstream::TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    keyed::store(dir.path(), "ANTHROPIC_API_KEY", b"sk-bench").unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    spawn_named("stand-in", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let up = tls_upstream::TlsUpstream::start(&ca).await;
            tx.send((up.addr, Cpu::this_thread())).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let (upstream, standin_cpu): (SocketAddr, Cpu) = rx.recv().unwrap();

    let mut keys = Keys::new(
        vec![&keyed::ANTHROPIC],
        dir.path().join(keyed::KEY_DIR),
        Some(&ca_file),
    )
    .unwrap();
    keys.connect_to = Some(upstream);
    // The stand-in's sized answers, allowed as a client would widen the key path.
    keys.extra_paths = vec!["/big*".to_owned()];
    let client_tls = keys.tls.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let policy = dir.path().join("network.toml");
    // The proxy serves on a Unix socket, as it does for a sandbox (whose relay turns
    // the agent's `127.0.0.1:3128` into this socket).
    let sock = dir.path().join("proxy.sock");
    let proxy = sock.clone();
    std::fs::write(&policy, "allow = [\"api.anthropic.com\"]").unwrap();
    spawn_named("proxy", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = Config::new("bench", &policy);
            cfg.log = LogSink::Memory(Arc::default());
            cfg.keys = Some(keys);
            let listener = Listener::open(&Listen::Unix(sock.clone())).unwrap();
            tx.send(Cpu::this_thread()).unwrap();
            serve(listener, cfg, SystemResolver, std::future::pending()).await;
        });
    });
    let proxy_cpu: Cpu = rx.recv().unwrap();
    let client_cpu = Cpu::this_thread();

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
                // The proxy's own way of reading TLS (read-ahead, drained records), so
                // the two sides differ only by the proxy, not by how TLS is read.
                let s = keyed::tls_connect(tls, "api.anthropic.com", tcp)
                    .await
                    .unwrap();
                fetch(s, path, "api.anthropic.com").await
            }
        };
        let proxied = |path: &'static str| {
            let proxy = proxy.clone();
            async move {
                let s = UnixStream::connect(proxy).await.unwrap();
                fetch(s, &format!("/anthropic{path}"), "127.0.0.1:3128").await
            }
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
        // One big transfer each way first: the buffers of both paths grow to their
        // working size (and their pages are touched) before anything is timed.
        assert_eq!(direct(big).await, BIG);
        assert_eq!(proxied(big).await, BIG);
        let parties = [&standin_cpu, &proxy_cpu, &client_cpu];
        let mut ratios = Vec::new();
        let (mut cpu_d, mut cpu_p) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let c0 = parties.map(Cpu::ns);
            let t = Instant::now();
            assert_eq!(direct(big).await, BIG);
            let td = t.elapsed();
            let c1 = parties.map(Cpu::ns);
            let t = Instant::now();
            assert_eq!(proxied(big).await, BIG);
            let tp = t.elapsed();
            let c2 = parties.map(Cpu::ns);
            let gib = |t: Duration| f64::from(u32::try_from(BIG >> 20).unwrap()) / 1024.0 / t.as_secs_f64();
            println!(
                "streamed {} MiB: direct {:.2} GiB/s, through the proxy {:.2} GiB/s",
                BIG >> 20,
                gib(td),
                gib(tp)
            );
            ratios.push(td.as_secs_f64() / tp.as_secs_f64());
            cpu_d.push([0, 1, 2].map(|i| c1[i] - c0[i]));
            cpu_p.push([0, 1, 2].map(|i| c2[i] - c1[i]));
        }
        ratios.sort_by(f64::total_cmp);
        let ratio = ratios[ratios.len() / 2];
        println!("streaming throughput ratio (proxy / direct TLS, median of {ROUNDS}): {ratio:.2}");
        // CPU time each party spent per GiB streamed (median of the rounds): unlike the
        // wall-clock ratio, this does not depend on what else the machine is running.
        let per_gib = |v: &[[u64; 3]], i: usize| {
            let mut x: Vec<u64> = v.iter().map(|c| c[i]).collect();
            x.sort_unstable();
            #[allow(clippy::cast_precision_loss)]
            let ns = x[x.len() / 2] as f64;
            ns / 1e6 * 1024.0 / f64::from(u32::try_from(BIG >> 20).unwrap())
        };
        let line = |v: &[[u64; 3]]| {
            let (s, p, c) = (per_gib(v, 0), per_gib(v, 1), per_gib(v, 2));
            format!("stand-in {s:.0}, proxy {p:.0}, client {c:.0} (total {:.0})", s + p + c)
        };
        println!("CPU ms per GiB, direct TLS: {}", line(&cpu_d));
        println!("CPU ms per GiB, through the proxy: {}", line(&cpu_p));
        println!("load average: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
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

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .unwrap();
}

/// The CPU time of one thread, from `/proc/self/task/TID/schedstat` (nanoseconds on
/// a CPU, user and system together).
struct Cpu(std::path::PathBuf);

impl Cpu {
    /// The calling thread.
    fn this_thread() -> Self {
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        let tid = me.file_name().unwrap().to_owned();
        Self(
            std::path::Path::new("/proc/self/task")
                .join(tid)
                .join("schedstat"),
        )
    }

    fn ns(&self) -> u64 {
        let s = std::fs::read_to_string(&self.0).unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }
}
