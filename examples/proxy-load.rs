//! Load on the egress proxy (issue 14, part 4): the real `sandboxctl proxy` process, as
//! its unit runs it (a Unix socket, the unit's descriptor limit of 4,096, the default
//! cap of 256 connections), against upstreams in this process on loopback.
//!
//! 1. Ten times, 1,000 connections opened at once, each sending a `CONNECT` before any
//!    answer is read: every one must be answered — exactly the cap tunnelled (`200`,
//!    and each tunnel echoes a byte), the rest refused with `503` — and none may hang.
//!    Every wave after the first proves the slots of the one before came back.
//! 2. Twice, 20,000 sequential connections (a tunnel, a forwarded `GET`, a denied
//!    `CONNECT`, a tunnel, in turn), each checked.
//!
//! The proxy's descriptors (`/proc/PID/fd`) and RSS are read before each round,
//! sampled every few milliseconds during it (the peak), and read after it. The checks:
//! after every round the descriptors are back at the baseline exactly; the RSS is not
//! expected back at the baseline, since the allocator keeps freed memory (after the
//! first wave of 256 tunnels it stays ~2 MiB higher, and creeps up over the next waves
//! as the heap fragments), but it must level off: over the second half of the waves it
//! may grow by at most `RSS_PLATEAU_KIB` in all, and a second round of sequential
//! connections may leave it at most `RSS_PLATEAU_KIB` above the first. Memory kept per
//! connection would grow by megabytes there.
//!
//!     cargo build --release --bin sandboxctl --example proxy-load
//!     target/release/examples/proxy-load [--proxy PATH] [--concurrent N] [--waves N]
//!         [--sequential N] [--rounds N]
//!
//! (`tests/bench/proxy-load.sh` does both.) Exits 1 if a check fails.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

/// The proxy's connection cap (`sandboxctl proxy`'s default, what the units run).
const CAP: usize = 256;
/// The units' `LimitNOFILE=`.
const PROXY_NOFILE: u32 = 4096;
/// How much the RSS may still grow once it should have levelled off (see above).
const RSS_PLATEAU_KIB: u64 = 512;
/// How long an answer may take before the connection counts as hung.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut proxy_bin = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?
        .join("sandboxctl");
    let (mut concurrent, mut waves) = (1000_usize, 10_usize);
    let (mut sequential, mut rounds) = (20_000_usize, 2_usize);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--proxy" => proxy_bin = PathBuf::from(value()?),
            "--concurrent" => concurrent = value()?.parse()?,
            "--waves" => waves = value()?.parse::<usize>()?.max(2),
            "--sequential" => sequential = value()?.parse()?,
            "--rounds" => rounds = value()?.parse::<usize>()?.max(2),
            _ => bail!("unknown argument {a}"),
        }
    }
    // This process holds every client socket of a wave and the upstream's side of
    // each tunnel.
    raise_nofile(u64::try_from(concurrent)? * 2 + 256)?;

    let upstream = start_upstream()?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("network.toml");
    std::fs::write(
        &policy,
        format!("allow = [{{ host = \"{upstream}\", private = true }}]\n"),
    )?;
    let sock = dir.path().join("proxy.sock");
    let log = dir.path().join("proxy.log");
    let mut proxy = ProxyChild::start(&proxy_bin, dir.path(), &policy, &sock, &log)?;
    println!(
        "sandboxctl proxy under load ({}; cap {CAP}, LimitNOFILE {PROXY_NOFILE}, loopback)",
        proxy_bin.display()
    );
    println!("{:<44} {:>15} {:>15} {:>15}", "", "before", "peak", "after");

    let mut ok = true;
    let mut baseline_fds = None;
    let mut after_rss = Vec::new();
    for round in 1..=waves {
        let (before, peak, after, summary) = proxy.measure(|| wave(&sock, upstream, concurrent))?;
        let base = *baseline_fds.get_or_insert(before.fds);
        report(
            &format!("{concurrent} at once, {round}"),
            &summary,
            before,
            peak,
            after,
        );
        ok &= fds_back(base, after);
        ok &= summary.failed == 0 && summary.open == CAP.min(concurrent);
        after_rss.push(after.rss_kib);
    }
    ok &= levelled_off("waves", &after_rss[waves / 2 - 1..]);
    after_rss.clear();
    for round in 1..=rounds {
        let (before, peak, after, summary) =
            proxy.measure(|| one_after_another(&sock, upstream, sequential))?;
        report(
            &format!("{sequential} one after another, {round}"),
            &summary,
            before,
            peak,
            after,
        );
        ok &= fds_back(baseline_fds.unwrap_or(before.fds), after);
        ok &= summary.failed == 0;
        after_rss.push(after.rss_kib);
    }
    ok &= levelled_off("sequential rounds", &after_rss);
    proxy.stop();
    print_log_counts(&log)?;
    println!("  result: {}", if ok { "held" } else { "FAILED" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// What a phase saw from the client side.
#[derive(Default)]
struct Summary {
    /// Tunnels opened (`200`) and checked by an echo.
    open: usize,
    /// Answered `503`.
    refused: usize,
    /// Forwarded requests answered by the upstream; `CONNECT`s denied with `403`.
    forwarded: usize,
    denied: usize,
    /// No answer in time, a wrong answer, or a tunnel that did not echo.
    failed: usize,
    took: Duration,
}

/// Prints a round's line.
fn report(what: &str, s: &Summary, before: Usage, peak: Usage, after: Usage) {
    let cell = |u: Usage| format!("{} fd {:>5} KiB", u.fds, u.rss_kib);
    println!(
        "  {what:<42} {:>15} {:>15} {:>15}",
        cell(before),
        cell(peak),
        cell(after)
    );
    println!(
        "    in {:.2} s: {} tunnels, {} refused 503, {} forwarded, {} denied 403, {} failed or hung",
        s.took.as_secs_f64(),
        s.open,
        s.refused,
        s.forwarded,
        s.denied,
        s.failed
    );
}

fn fds_back(base: usize, after: Usage) -> bool {
    let back = after.fds == base;
    if !back {
        println!("    descriptors NOT back to {base}: {}", after.fds);
    }
    back
}

/// Whether the RSS after each of these rounds grew by at most `RSS_PLATEAU_KIB` in all.
fn levelled_off(what: &str, after_rss: &[u64]) -> bool {
    let (first, last) = (after_rss[0], after_rss[after_rss.len() - 1]);
    let ok = last <= first + RSS_PLATEAU_KIB;
    println!(
        "  RSS after the last {} {what}: {first} -> {last} KiB (at most +{RSS_PLATEAU_KIB}): {}",
        after_rss.len(),
        if ok { "levelled off" } else { "STILL GROWING" }
    );
    ok
}

/// `n` connections at once: all connect and send their `CONNECT` before any answer is
/// read; then every answer is read, and each tunnel echoes a byte. All are closed at
/// the end.
fn wave(sock: &Path, upstream: SocketAddr, n: usize) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let mut s = Summary::default();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = UnixStream::connect(sock).context("connecting to the proxy")?;
        // Past the cap the proxy may already have answered 503 and closed: the write
        // then fails, and the answer waits to be read.
        let _ = write!(c, "CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
        conns.push(c);
    }
    let mut tunnels = Vec::new();
    for mut c in conns {
        c.set_read_timeout(Some(ANSWER_WITHIN))?;
        match read_head(&mut c) {
            Ok(h) if h.starts_with("HTTP/1.1 200") => tunnels.push(c),
            Ok(h) if h.starts_with("HTTP/1.1 503") => s.refused += 1,
            _ => s.failed += 1,
        }
    }
    for c in &mut tunnels {
        if echo(c).is_ok() {
            s.open += 1;
        } else {
            s.failed += 1;
        }
    }
    s.took = start.elapsed();
    Ok(s)
}

/// `n` connections one after another, in turn a tunnel, a forwarded `GET`, a denied
/// `CONNECT` and a tunnel, each checked and closed before the next.
fn one_after_another(sock: &Path, upstream: SocketAddr, n: usize) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let mut s = Summary::default();
    for i in 0..n {
        let mut c = UnixStream::connect(sock).context("connecting to the proxy")?;
        c.set_read_timeout(Some(ANSWER_WITHIN))?;
        let ok = match i % 4 {
            0 | 3 => {
                write!(c, "CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n")?;
                let ok = read_head(&mut c).is_ok_and(|h| h.starts_with("HTTP/1.1 200"))
                    && echo(&mut c).is_ok();
                s.open += usize::from(ok);
                ok
            }
            1 => {
                write!(
                    c,
                    "GET http://{upstream}/load HTTP/1.1\r\nHost: {upstream}\r\n\r\n"
                )?;
                let mut answer = String::new();
                let ok = c.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.1 200")
                    && answer.ends_with("load ok\n");
                s.forwarded += usize::from(ok);
                ok
            }
            _ => {
                write!(
                    c,
                    "CONNECT denied.invalid:443 HTTP/1.1\r\nHost: denied.invalid:443\r\n\r\n"
                )?;
                let ok = read_head(&mut c).is_ok_and(|h| h.starts_with("HTTP/1.1 403"));
                s.denied += usize::from(ok);
                ok
            }
        };
        s.failed += usize::from(!ok);
    }
    s.took = start.elapsed();
    Ok(s)
}

/// The response head, read byte by byte so no tunnel data is consumed.
fn read_head(c: &mut UnixStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b)?;
        head.push(b[0]);
        ensure!(head.len() < 16 << 10, "response head too long");
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Sends the upstream's echo command and a byte through a tunnel and reads it back.
fn echo(c: &mut UnixStream) -> anyhow::Result<()> {
    c.write_all(b"Ex")?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b)?;
    ensure!(&b == b"x", "the tunnel did not echo");
    Ok(())
}

/// An upstream on 127.0.0.1, a thread per connection: `E` then echo until EOF; a
/// request starting `GET ` gets a short HTTP answer.
fn start_upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let spawned = std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let mut first = [0u8; 1];
                    if s.read_exact(&mut first).is_err() {
                        return;
                    }
                    if first[0] == b'E' {
                        let Ok(mut r) = s.try_clone() else { return };
                        let _ = std::io::copy(&mut r, &mut s);
                        return;
                    }
                    // A forwarded request: read its head, answer, close.
                    let mut head = vec![first[0]];
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut b).is_ok() {
                        head.push(b[0]);
                    }
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nload ok\n",
                    );
                });
            if spawned.is_err() {
                eprintln!("upstream: cannot start a thread");
            }
        }
    });
    Ok(addr)
}

fn raise_nofile(want: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    ensure!(
        hard >= want,
        "this needs {want} descriptors, the hard limit is {hard}: raise it (ulimit -Hn)"
    );
    if limit.current.is_some_and(|c| c < want) {
        limit.current = Some(want);
        setrlimit(Resource::Nofile, limit).context("cannot raise RLIMIT_NOFILE")?;
    }
    Ok(())
}

fn print_log_counts(log: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log)?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines() {
        let v = serde_json::from_str::<serde_json::Value>(line).ok();
        let event = v.as_ref().and_then(|v| v["event"].as_str()).map_or(
            "(not JSON)".to_owned(),
            |e| match v.as_ref().map(|v| &v["decision"]) {
                Some(serde_json::Value::String(d)) => format!("{e} {d}"),
                _ => e.to_owned(),
            },
        );
        *counts.entry(event).or_default() += 1;
    }
    let list: Vec<String> = counts.iter().map(|(e, n)| format!("{e} {n}")).collect();
    println!(
        "  proxy log: {} lines: {}",
        text.lines().count(),
        list.join(", ")
    );
    Ok(())
}

#[derive(Clone, Copy, Default)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

struct ProxyChild(Child);

impl ProxyChild {
    /// `sandboxctl proxy` on a Unix socket, with the unit's descriptor limit.
    fn start(
        bin: &Path,
        home: &Path,
        policy: &Path,
        sock: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let child = Command::new("prlimit")
            .arg(format!("--nofile={PROXY_NOFILE}:{PROXY_NOFILE}"))
            .arg("--")
            .arg(bin)
            .args(["proxy", "--client", "load", "--policy"])
            .arg(policy)
            .arg("--listen-unix")
            .arg(sock)
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut proxy = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(sock).is_err() {
            if let Some(status) = proxy.0.try_wait()? {
                bail!(
                    "the proxy exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            ensure!(Instant::now() < deadline, "the proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The probe connection's task and log line settle before the baseline.
        std::thread::sleep(Duration::from_millis(300));
        Ok(proxy)
    }

    /// Runs `phase` while sampling the proxy; returns its usage before, the peak, and
    /// after (once the descriptors settle, at most 5 s), with the phase's result.
    fn measure<T>(
        &self,
        phase: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<(Usage, Usage, Usage, T)> {
        let pid = self.0.id();
        let before = usage(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = Usage::default();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(u) = usage(pid) {
                        peak.fds = peak.fds.max(u.fds);
                        peak.rss_kib = peak.rss_kib.max(u.rss_kib);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            })
        };
        let result = phase();
        stop.store(true, Ordering::Relaxed);
        let peak = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
        let result = result?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut after = usage(pid)?;
        while after.fds != before.fds && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            after = usage(pid)?;
        }
        Ok((before, peak, after, result))
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn usage(pid: u32) -> anyhow::Result<Usage> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let status = std::fs::File::open(format!("/proc/{pid}/status"))?;
    for line in BufReader::new(status).lines() {
        let line = line?;
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let rss_kib = v.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(Usage { rss_kib, fds });
        }
    }
    bail!("no VmRSS for the proxy")
}
