//! Benchmark of the egress proxy (issue 5, P6): tunnel throughput against a direct
//! loopback transfer, the time to first byte a tunnel adds per connection (for a
//! one-byte request, and for a TLS `ClientHello`, whose server name the proxy checks
//! before it goes upstream), and the proxy's memory idle and with 100 open tunnels.
//! Everything runs on loopback: an upstream server in this process, the proxy as a
//! child process (this binary with `--serve-proxy`) on a Unix socket as in a real
//! sandbox. The `ClientHello` (a real rustls one) names `bench.test`, which the child
//! proxy resolves to a documentation address and dials as the local upstream.
//!
//! Throughput is the median ratio of 16 pairs of transfers (one direct, one through the
//! tunnel, in alternating order): on a small, noisy machine single transfers move by
//! 20 % or more, and a best-of-N rewards whichever side has the wider spread. The CPU
//! time per GiB of the endpoints and of the proxy is printed too, which shows what the
//! tunnel costs independently of how many cores there are to absorb it.
//!
//!     cargo run --release --example proxy-bench [-- --check]
//!
//! `--check` exits non-zero when the targets (throughput ≥ 80 %, added TTFB ≤ 1 ms) are
//! missed.
//!
//!     cargo run --release --example proxy-bench -- --idle-tunnels 1000
//!
//! instead opens that many idle tunnels at once against the default connection cap and
//! prints the proxy's RSS and descriptors before, with and after them, how many were
//! refused, and how many log lines it took; then the same with the proxy's descriptor
//! limit below what the tunnels need, so that `accept` fails, and what that costs in
//! CPU and log lines.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandboxctl::proxy::{Listen, ProxyOptions, Resolver, SystemResolver};

/// Bytes per throughput transfer; short enough that the pairs take a few seconds.
const TOTAL: u64 = 1 << 30;
const PAIRS: u32 = 16;
const TTFB_CONNECTIONS: u32 = 300;
const TUNNELS: usize = 100;
/// The name the TLS measurement asks for, and the address the child proxy resolves it
/// to (a documentation address, public to the proxy's checks).
const BENCH_NAME: &str = "bench.test";
const BENCH_ADDR: [u8; 4] = [198, 51, 100, 1];
/// Tells the child proxy where the upstream for `BENCH_NAME` is.
const UPSTREAM_ENV: &str = "PROXY_BENCH_UPSTREAM";

/// The system resolver, except that `BENCH_NAME` resolves to `BENCH_ADDR`, which is
/// dialled as the benchmark's upstream.
struct BenchResolver {
    upstream: SocketAddr,
}

impl Resolver for BenchResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        if host == BENCH_NAME {
            return Ok(vec![IpAddr::from(BENCH_ADDR)]);
        }
        SystemResolver.lookup(host).await
    }

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        if addr.ip() == IpAddr::from(BENCH_ADDR) {
            return tokio::net::TcpStream::connect(self.upstream).await;
        }
        tokio::net::TcpStream::connect(addr).await
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-proxy") {
        // `--serve-proxy POLICY SOCKET|--systemd-socket [MAX_CONNECTIONS]`: the proxy
        // alone, also handy to try socket activation (`systemd-socket-activate -l PATH …`).
        let listen = match args[3].as_str() {
            "--systemd-socket" => Listen::SystemdSocket,
            path => Listen::Unix(PathBuf::from(path)),
        };
        let mut opts = ProxyOptions::new("bench", &args[2], listen);
        opts.idle_exit = opts.idle_exit.map(|_| Duration::from_secs(2));
        if let Some(max) = args.get(4) {
            opts.max_connections = max.parse()?;
        }
        return match std::env::var(UPSTREAM_ENV) {
            Ok(upstream) => sandboxctl::proxy::run_with(
                opts,
                BenchResolver {
                    upstream: upstream.parse()?,
                },
            ),
            Err(_) => sandboxctl::proxy::run(opts),
        };
    }
    if let Some(i) = args.iter().position(|a| a == "--idle-tunnels") {
        let n: usize = args.get(i + 1).map_or(Ok(1000), |v| v.parse())?;
        return idle_tunnels(n);
    }
    let check = args.iter().any(|a| a == "--check");

    let upstream = start_upstream()?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("network.toml");
    let port = upstream.port();
    std::fs::write(
        &policy,
        format!("allow = [{{ host = \"{upstream}\", private = true }}, \"{BENCH_NAME}:{port}\"]\n"),
    )?;
    let sock = dir.path().join("proxy.sock");
    let mut proxy = ProxyChild::start_with(
        &policy,
        &sock,
        &dir.path().join("proxy.log"),
        None,
        Some(upstream),
    )?;
    let idle_rss = proxy.rss_kib()?;

    let throughput = Throughput::measure(&proxy, &sock, upstream)?;

    let ttfb = Ttfb::measure(&sock, upstream)?;

    // 100 tunnels open at once, each having carried 64 KiB each way.
    let mut tunnels = Vec::new();
    for _ in 0..TUNNELS {
        let mut s = open_tunnel(&sock, upstream)?;
        s.write_all(b"E")?;
        tunnels.push(s);
    }
    let chunk = vec![7u8; 64 << 10];
    for s in &mut tunnels {
        s.write_all(&chunk)?;
    }
    let mut back = vec![0u8; chunk.len()];
    for s in &mut tunnels {
        s.read_exact(&mut back)?;
    }
    let busy_rss = proxy.rss_kib()?;
    drop(tunnels);
    std::thread::sleep(Duration::from_millis(300));
    let after_rss = proxy.rss_kib()?;
    proxy.stop();

    println!(
        "proxy benchmark (loopback, {} CPUs)",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    throughput.print();
    ttfb.print();
    println!("  proxy RSS idle             {idle_rss:8} KiB");
    println!("  proxy RSS, {TUNNELS} tunnels      {busy_rss:8} KiB");
    println!("  proxy RSS after they close {after_rss:8} KiB");
    let ok = throughput.ratio >= 0.8 && ttfb.met();
    println!("  targets {}", if ok { "met" } else { "MISSED" });
    if check && !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// Transfer rates from pairs of one direct and one tunnelled transfer, in alternating
/// order so that drifts of the machine hit both sides of a pair alike; the medians
/// keep a single disturbed transfer from deciding the result.
struct Throughput {
    direct: f64,
    tunnel: f64,
    /// Median of the pairs' tunnel/direct ratios, and the lowest and highest.
    ratio: f64,
    lowest: f64,
    highest: f64,
    direct_cpu: CpuUse,
    tunnel_cpu: CpuUse,
}

impl Throughput {
    fn measure(proxy: &ProxyChild, sock: &Path, upstream: SocketAddr) -> anyhow::Result<Self> {
        // Each transfer's rate, and the CPU it took added to `cpu`.
        let timed = |cpu: &mut CpuUse, tunnelled: bool| -> anyhow::Result<f64> {
            let before = CpuUse::now(proxy)?;
            let rate = if tunnelled {
                throughput(&mut open_tunnel(sock, upstream)?)?
            } else {
                throughput(&mut TcpStream::connect(upstream)?)?
            };
            cpu.add(&before, &CpuUse::now(proxy)?);
            Ok(rate)
        };
        let (mut direct_cpu, mut tunnel_cpu) = (CpuUse::default(), CpuUse::default());
        let mut pairs = Vec::new();
        for i in 0..PAIRS {
            if i % 2 == 0 {
                let d = timed(&mut direct_cpu, false)?;
                pairs.push((d, timed(&mut tunnel_cpu, true)?));
            } else {
                let t = timed(&mut tunnel_cpu, true)?;
                pairs.push((timed(&mut direct_cpu, false)?, t));
            }
        }
        let mut ratios: Vec<f64> = pairs.iter().map(|(d, t)| t / d).collect();
        let ratio = median(&mut ratios);
        Ok(Self {
            direct: median(&mut pairs.iter().map(|p| p.0).collect::<Vec<_>>()),
            tunnel: median(&mut pairs.iter().map(|p| p.1).collect::<Vec<_>>()),
            ratio,
            lowest: ratios[0],
            highest: ratios[ratios.len() - 1],
            direct_cpu,
            tunnel_cpu,
        })
    }

    fn print(&self) {
        let transfer_gib = f64::from(u32::try_from(TOTAL >> 20).unwrap_or(u32::MAX)) / 1024.0;
        let per_gib = |ms: f64| ms / (f64::from(PAIRS) * transfer_gib);
        println!(
            "  throughput, {PAIRS} pairs of {} MiB transfers (medians):",
            TOTAL >> 20
        );
        println!("  throughput direct          {:8.0} MiB/s", self.direct);
        println!("  throughput through tunnel  {:8.0} MiB/s", self.tunnel);
        println!(
            "  throughput ratio           {:8.2}   (target >= 0.80; pairs {:.2}-{:.2})",
            self.ratio, self.lowest, self.highest
        );
        println!(
            "  CPU per GiB, direct        {:8.0} ms   (client and server)",
            per_gib(self.direct_cpu.endpoints_ms)
        );
        println!(
            "  CPU per GiB, tunnel        {:8.0} ms   (client and server) + {:.0} ms (proxy)",
            per_gib(self.tunnel_cpu.endpoints_ms),
            per_gib(self.tunnel_cpu.proxy_ms)
        );
    }
}

/// Time to first byte over sequential connections, direct and through a tunnel, mean
/// of each: a one-byte request to an IP literal, and a `ClientHello` to a name, which
/// the proxy reads and checks before it goes upstream.
struct Ttfb {
    direct: Duration,
    tunnel: Duration,
    hello_len: usize,
    direct_tls: Duration,
    tunnel_tls: Duration,
}

impl Ttfb {
    fn measure(sock: &Path, upstream: SocketAddr) -> anyhow::Result<Self> {
        let hello = client_hello()?;
        let target = format!("{BENCH_NAME}:{}", upstream.port());
        let mut t = [Duration::ZERO; 4];
        for _ in 0..TTFB_CONNECTIONS {
            let start = Instant::now();
            first_byte(&mut TcpStream::connect(upstream)?, b"F")?;
            t[0] += start.elapsed();
            let start = Instant::now();
            first_byte(&mut open_tunnel(sock, upstream)?, b"F")?;
            t[1] += start.elapsed();
            let start = Instant::now();
            first_byte(&mut TcpStream::connect(upstream)?, &hello)?;
            t[2] += start.elapsed();
            let start = Instant::now();
            first_byte(&mut open_tunnel_to(sock, &target)?, &hello)?;
            t[3] += start.elapsed();
        }
        let [direct, tunnel, direct_tls, tunnel_tls] = t.map(|d| d / TTFB_CONNECTIONS);
        Ok(Self {
            direct,
            tunnel,
            hello_len: hello.len(),
            direct_tls,
            tunnel_tls,
        })
    }

    fn added(&self) -> Duration {
        self.tunnel.saturating_sub(self.direct)
    }

    fn added_tls(&self) -> Duration {
        self.tunnel_tls.saturating_sub(self.direct_tls)
    }

    fn met(&self) -> bool {
        self.added() <= Duration::from_millis(1) && self.added_tls() <= Duration::from_millis(1)
    }

    fn print(&self) {
        println!(
            "  TTFB direct                {:8.3} ms   (mean of {TTFB_CONNECTIONS})",
            ms(self.direct)
        );
        println!("  TTFB through tunnel        {:8.3} ms", ms(self.tunnel));
        println!(
            "  TTFB added per connection  {:8.3} ms   (target <= 1 ms)",
            ms(self.added())
        );
        println!(
            "  TTFB ratio                 {:8.2}",
            self.tunnel.as_secs_f64() / self.direct.as_secs_f64()
        );
        println!(
            "  TTFB ClientHello direct    {:8.3} ms   ({} bytes, naming {BENCH_NAME})",
            ms(self.direct_tls),
            self.hello_len
        );
        println!(
            "  TTFB ClientHello tunnel    {:8.3} ms",
            ms(self.tunnel_tls)
        );
        println!(
            "  TTFB ClientHello added     {:8.3} ms   (target <= 1 ms)",
            ms(self.added_tls())
        );
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

/// CPU time (user + system) of this process (client and server) and of the proxy.
#[derive(Default)]
struct CpuUse {
    endpoints_ms: f64,
    proxy_ms: f64,
}

impl CpuUse {
    fn now(proxy: &ProxyChild) -> anyhow::Result<Self> {
        Ok(Self {
            endpoints_ms: cpu_ms(std::process::id())?,
            proxy_ms: cpu_ms(proxy.0.id())?,
        })
    }

    fn add(&mut self, before: &Self, after: &Self) {
        self.endpoints_ms += after.endpoints_ms - before.endpoints_ms;
        self.proxy_ms += after.proxy_ms - before.proxy_ms;
    }
}

/// utime + stime of a process from /proc/PID/stat, in ms (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    anyhow::ensure!(fields.len() > 12, "unexpected /proc/{pid}/stat");
    let ticks: u32 = fields[11].parse::<u32>()? + fields[12].parse::<u32>()?;
    Ok(f64::from(ticks) * 10.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An upstream on 127.0.0.1: after one command byte, `T` sends `TOTAL` bytes, `F`
/// sends one byte, `E` echoes until EOF; a TLS handshake record is read whole and
/// answered with one byte, as a server's first answer to a `ClientHello`.
fn start_upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut cmd = [0u8; 1];
                if s.read_exact(&mut cmd).is_err() {
                    return;
                }
                match cmd[0] {
                    b'T' => {
                        let buf = vec![0x5a_u8; 256 << 10];
                        let mut left = TOTAL;
                        while left > 0 {
                            let n =
                                usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                            left -= n as u64;
                        }
                    }
                    b'F' => {
                        let _ = s.write_all(b"!");
                    }
                    0x16 => {
                        let mut header = [0u8; 4];
                        if s.read_exact(&mut header).is_err() {
                            return;
                        }
                        let len = u16::from_be_bytes([header[2], header[3]]);
                        let mut record = vec![0u8; usize::from(len)];
                        if s.read_exact(&mut record).is_ok() {
                            let _ = s.write_all(b"!");
                        }
                    }
                    _ => {
                        let mut r = s.try_clone().expect("clone");
                        let _ = std::io::copy(&mut r, &mut s);
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// `CONNECT` through the proxy's Unix socket; returns the stream once the tunnel is up.
fn open_tunnel(sock: &Path, upstream: SocketAddr) -> anyhow::Result<UnixStream> {
    open_tunnel_to(sock, &upstream.to_string())
}

/// [`open_tunnel`] to `host:port`.
fn open_tunnel_to(sock: &Path, target: &str) -> anyhow::Result<UnixStream> {
    let mut s = UnixStream::connect(sock)?;
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")?;
    // Read the response head byte by byte so no tunnel data is consumed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b)?;
        head.push(b[0]);
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "tunnel refused: {}",
        String::from_utf8_lossy(&head)
    );
    Ok(s)
}

/// MiB/s of a `T` transfer.
fn throughput<S: Read + Write>(s: &mut S) -> anyhow::Result<f64> {
    let start = Instant::now();
    s.write_all(b"T")?;
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    anyhow::ensure!(got == TOTAL, "short transfer: {got} bytes");
    // Whole MiB are plenty of precision for a rate.
    let mib = u32::try_from(got >> 20).unwrap_or(u32::MAX);
    Ok(f64::from(mib) / start.elapsed().as_secs_f64())
}

/// Sends `request` and waits for the first byte of the answer.
fn first_byte<S: Read + Write>(s: &mut S, request: &[u8]) -> anyhow::Result<()> {
    s.write_all(request)?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(())
}

/// The first flight of a rustls client (as in the proxy's TLS tests) for `BENCH_NAME`.
fn client_hello() -> anyhow::Result<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = pki_types::ServerName::try_from(BENCH_NAME)?;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello)?;
    Ok(hello)
}

/// `--idle-tunnels N`: see the module documentation.
fn idle_tunnels(n: usize) -> anyhow::Result<()> {
    let upstream = start_upstream()?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("network.toml");
    std::fs::write(
        &policy,
        format!("allow = [{{ host = \"{upstream}\", private = true }}]\n"),
    )?;
    println!(
        "proxy under {n} idle tunnels (loopback; default cap {})",
        sandboxctl::proxy::DEFAULT_MAX_CONNECTIONS
    );

    let sock = dir.path().join("proxy.sock");
    let log = dir.path().join("proxy.log");
    let mut proxy = ProxyChild::start(&policy, &sock, &log)?;
    let before = proxy.usage()?;
    let start = Instant::now();
    let (tunnels, refused, failed) = open_idle(&sock, upstream, n, Duration::from_secs(5))?;
    let opening = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let with = proxy.usage()?;
    let open = tunnels.len();
    drop(tunnels);
    std::thread::sleep(Duration::from_millis(500));
    let after = proxy.usage()?;
    proxy.stop();
    println!("                         RSS KiB   descriptors");
    for (what, u) in [
        ("before", before),
        ("with the tunnels", with),
        ("after they close", after),
    ] {
        println!("  {what:<22} {:8}   {:8}", u.rss_kib, u.fds);
    }
    println!(
        "  tunnels open {open}, refused with 503 {refused}, other failures {failed}, in {:.2} s",
        opening.as_secs_f64()
    );
    print_log_counts(&log)?;

    // The same with the proxy's descriptor limit below what the tunnels need (and the
    // cap above it): accept fails with EMFILE while the tunnels stay open.
    let limit = 200;
    let sock = dir.path().join("proxy-low.sock");
    let log = dir.path().join("proxy-low.log");
    let mut proxy = ProxyChild::start_with(&policy, &sock, &log, Some((1000, limit)), None)?;
    let (tunnels, refused, failed) = open_idle(&sock, upstream, 60, Duration::from_millis(300))?;
    std::thread::sleep(Duration::from_millis(300));
    let closed = tunnels.iter().filter(|t| closed_by_peer(t)).count();
    let cpu_before = cpu_ms(proxy.0.id())?;
    let hold = Duration::from_secs(5);
    // Knock while the limit is reached: each try queues a connection accept cannot take.
    let knock_until = Instant::now() + hold;
    let mut knocks = 0;
    let mut knocking = Vec::new();
    while Instant::now() < knock_until {
        if let Ok(s) = UnixStream::connect(&sock) {
            knocking.push(s);
            knocks += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_ms(proxy.0.id())? - cpu_before;
    let during = proxy.usage()?;
    let tunnels_len = tunnels.len();
    drop(tunnels);
    drop(knocking);
    proxy.stop();
    println!(
        "descriptor limit {limit}, cap 1000: 60 tunnels tried, {} opened ({closed} of them \
         closed at once by the proxy), {refused} refused, {failed} unanswered; then \
         {knocks} connections knocked for {} s",
        tunnels_len,
        hold.as_secs()
    );
    println!(
        "  proxy CPU during the {} s: {cpu:.0} ms; descriptors {}, RSS {} KiB",
        hold.as_secs(),
        during.fds,
        during.rss_kib
    );
    print_log_counts(&log)?;
    Ok(())
}

/// Whether the proxy has closed this tunnel (EOF on a non-blocking read).
fn closed_by_peer(s: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).is_ok() && matches!((&*s).read(&mut b), Ok(0))
}

/// Opens `n` tunnels and keeps them idle; returns them with the number refused (503)
/// and the number that failed otherwise (no answer within `wait`, closed, error).
fn open_idle(
    sock: &Path,
    upstream: SocketAddr,
    n: usize,
    wait: Duration,
) -> anyhow::Result<(Vec<UnixStream>, usize, usize)> {
    let mut open = Vec::new();
    let (mut refused, mut failed) = (0, 0);
    for _ in 0..n {
        let Ok(mut s) = UnixStream::connect(sock) else {
            failed += 1;
            continue;
        };
        s.set_read_timeout(Some(wait))?;
        let _ = write!(s, "CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
        let mut head = [0u8; 12];
        match s.read_exact(&mut head) {
            Ok(()) if head.starts_with(b"HTTP/1.1 200") => {
                let mut rest = [0u8; 1];
                // The rest of the (empty-bodied) head.
                let mut tail = Vec::new();
                while !tail.ends_with(b"\r\n\r\n") && s.read_exact(&mut rest).is_ok() {
                    tail.push(rest[0]);
                }
                open.push(s);
            }
            Ok(()) if head.starts_with(b"HTTP/1.1 503") => refused += 1,
            _ => failed += 1,
        }
    }
    Ok((open, refused, failed))
}

fn print_log_counts(log: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log)?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines() {
        let event = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["event"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "(not JSON)".to_owned());
        *counts.entry(event).or_default() += 1;
    }
    let list: Vec<String> = counts.iter().map(|(e, n)| format!("{e} {n}")).collect();
    println!("  log lines {}: {}", text.lines().count(), list.join(", "));
    Ok(())
}

#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

struct ProxyChild(Child);

impl ProxyChild {
    fn start(policy: &Path, sock: &Path, log: &Path) -> anyhow::Result<Self> {
        Self::start_with(policy, sock, log, None, None)
    }

    /// With `limits`: the connection cap and the descriptor limit (through `prlimit`);
    /// with `upstream`: where the proxy dials `BENCH_NAME`.
    fn start_with(
        policy: &Path,
        sock: &Path,
        log: &Path,
        limits: Option<(usize, u32)>,
        upstream: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = match limits {
            Some((_, nofile)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={nofile}")).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.arg("--serve-proxy").arg(policy).arg(sock);
        if let Some((max, _)) = limits {
            cmd.arg(max.to_string());
        }
        if let Some(upstream) = upstream {
            cmd.env(UPSTREAM_ENV, upstream.to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(sock).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the probe connection's log line settle before the idle reading.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Self(child))
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        Ok(Usage {
            rss_kib: self.rss_kib()?,
            fds: std::fs::read_dir(format!("/proc/{}/fd", self.0.id()))?.count(),
        })
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::File::open(format!("/proc/{}/status", self.0.id()))?;
        for line in BufReader::new(status).lines() {
            let line = line?;
            if let Some(v) = line.strip_prefix("VmRSS:") {
                return Ok(v.trim().trim_end_matches("kB").trim().parse()?);
            }
        }
        anyhow::bail!("no VmRSS for the proxy")
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
