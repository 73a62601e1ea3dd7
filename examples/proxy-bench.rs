//! Benchmark of the egress proxy (issue 5, P6): tunnel throughput against a direct
//! loopback transfer, the time to first byte a tunnel adds per connection, and the
//! proxy's memory idle and with 100 open tunnels. Everything runs on loopback: an
//! upstream server in this process, the proxy as a child process (this binary with
//! `--serve-proxy`) on a Unix socket as in a real sandbox.
//!
//!     cargo run --release --example proxy-bench [-- --check]
//!
//! `--check` exits non-zero when the targets (throughput ≥ 80 %, added TTFB ≤ 1 ms) are
//! missed.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandboxctl::proxy::{Listen, ProxyOptions};

const TOTAL: u64 = 2 << 30;
const RUNS: usize = 3;
const TTFB_CONNECTIONS: u32 = 300;
const TUNNELS: usize = 100;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-proxy") {
        // `--serve-proxy POLICY SOCKET|--systemd-socket`: the proxy alone, also handy to
        // try socket activation (`systemd-socket-activate -l PATH …`).
        let listen = match args[3].as_str() {
            "--systemd-socket" => Listen::SystemdSocket,
            path => Listen::Unix(PathBuf::from(path)),
        };
        let mut opts = ProxyOptions::new("bench", &args[2], listen);
        opts.idle_exit = opts.idle_exit.map(|_| Duration::from_secs(2));
        return sandboxctl::proxy::run(opts);
    }
    let check = args.iter().any(|a| a == "--check");

    let upstream = start_upstream()?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("network.toml");
    std::fs::write(
        &policy,
        format!("allow = [{{ host = \"{upstream}\", private = true }}]\n"),
    )?;
    let sock = dir.path().join("proxy.sock");
    let mut proxy = ProxyChild::start(&policy, &sock, &dir.path().join("proxy.log"))?;
    let idle_rss = proxy.rss_kib()?;

    // Throughput: alternate direct and tunnelled transfers, keep the best of each.
    let mut direct = 0f64;
    let mut tunnel = 0f64;
    for _ in 0..RUNS {
        direct = direct.max(throughput(&mut TcpStream::connect(upstream)?)?);
        tunnel = tunnel.max(throughput(&mut open_tunnel(&sock, upstream)?)?);
    }

    // Time to first byte, sequential connections, mean of each.
    let mut direct_ttfb = Duration::ZERO;
    let mut tunnel_ttfb = Duration::ZERO;
    for _ in 0..TTFB_CONNECTIONS {
        let t = Instant::now();
        first_byte(&mut TcpStream::connect(upstream)?)?;
        direct_ttfb += t.elapsed();
        let t = Instant::now();
        first_byte(&mut open_tunnel(&sock, upstream)?)?;
        tunnel_ttfb += t.elapsed();
    }
    let direct_ttfb = direct_ttfb / TTFB_CONNECTIONS;
    let tunnel_ttfb = tunnel_ttfb / TTFB_CONNECTIONS;
    let added = tunnel_ttfb.saturating_sub(direct_ttfb);

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

    let ratio = tunnel / direct;
    println!(
        "proxy benchmark (loopback, {} MiB per transfer, best of {RUNS})",
        TOTAL >> 20
    );
    println!("  throughput direct          {direct:8.0} MiB/s");
    println!("  throughput through tunnel  {tunnel:8.0} MiB/s");
    println!("  throughput ratio           {ratio:8.2}   (target >= 0.80)");
    println!(
        "  TTFB direct                {:8.3} ms   (mean of {TTFB_CONNECTIONS})",
        ms(direct_ttfb)
    );
    println!("  TTFB through tunnel        {:8.3} ms", ms(tunnel_ttfb));
    println!(
        "  TTFB added per connection  {:8.3} ms   (target <= 1 ms)",
        ms(added)
    );
    println!(
        "  TTFB ratio                 {:8.2}",
        tunnel_ttfb.as_secs_f64() / direct_ttfb.as_secs_f64()
    );
    println!("  proxy RSS idle             {idle_rss:8} KiB");
    println!("  proxy RSS, {TUNNELS} tunnels      {busy_rss:8} KiB");
    println!("  proxy RSS after they close {after_rss:8} KiB");
    let ok = ratio >= 0.8 && added <= Duration::from_millis(1);
    println!("  targets {}", if ok { "met" } else { "MISSED" });
    if check && !ok {
        std::process::exit(1);
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An upstream on 127.0.0.1: after one command byte, `T` sends `TOTAL` bytes, `F`
/// sends one byte, `E` echoes until EOF.
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
    let mut s = UnixStream::connect(sock)?;
    write!(s, "CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n")?;
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

fn first_byte<S: Read + Write>(s: &mut S) -> anyhow::Result<()> {
    s.write_all(b"F")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(())
}

struct ProxyChild(Child);

impl ProxyChild {
    fn start(policy: &Path, sock: &Path, log: &Path) -> anyhow::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .arg("--serve-proxy")
            .arg(policy)
            .arg(sock)
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
