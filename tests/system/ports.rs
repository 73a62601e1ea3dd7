//! Port forwards (issue 12, part 6): a server on the sandbox's 127.0.0.1 reached from
//! the host's 127.0.0.1 through `sandboxctl port`, in the modes where the container has
//! no network at all (allowlist, none), listed by `status`, removed by `port --rm` and
//! by `disable`, and kept across a restart of the sandbox.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{Client, env, podman, sbx, wait_for};

/// The port the test server listens on inside the sandbox.
const INSIDE: u16 = 3000;

/// A port nothing listens on now (the kernel's choice, always ≥ 1024).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Writes a unique file into the project and serves the project on the sandbox's
/// 127.0.0.1:INSIDE with python's HTTP server; returns the file's URL path and body.
fn serve(c: &Client) -> (String, String) {
    let body = format!("served from inside {} {}", c.name, std::process::id());
    std::fs::write(c.project.join("pt-body.txt"), &body).expect("write the body");
    podman([
        "exec",
        "-d",
        &c.container(),
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &INSIDE.to_string(),
        "--directory",
        c.project_str(),
    ])
    .run()
    .success();
    wait_for(
        "the HTTP server inside the sandbox",
        Duration::from_secs(20),
        || {
            c.exec(&[
                "curl",
                "-fsS",
                "--noproxy",
                "*",
                &format!("http://127.0.0.1:{INSIDE}/pt-body.txt"),
            ])
            .status
            .success()
            .then_some(())
        },
        || c.diagnostics(),
    );
    ("/pt-body.txt".to_owned(), body)
}

/// A GET on the host's 127.0.0.1:`port`: the whole response, and the time to connect
/// and to the last byte.
fn get(port: u16, path: &str) -> std::io::Result<(String, Duration, Duration)> {
    let start = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let connected = start.elapsed();
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok((
        String::from_utf8_lossy(&out).into_owned(),
        connected,
        start.elapsed(),
    ))
}

#[track_caller]
fn assert_serves(port: u16, path: &str, body: &str) {
    let (response, _, _) = get(port, path)
        .unwrap_or_else(|e| panic!("GET {path} on 127.0.0.1:{port} through the forward: {e}"));
    assert!(
        response.starts_with("HTTP/1.0 200") && response.ends_with(body),
        "the forward did not bring the sandbox's body:\n{response}"
    );
}

#[track_caller]
fn assert_refused(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect_err("nothing may listen on the port any more");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// The local addresses listening on `port`, from `ss -ltnH`.
fn listeners(port: u16) -> Vec<String> {
    let out = crate::harness::Cmd::new("ss").arg("-ltnH").run().success();
    out.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|local| {
            local
                .rsplit_once(':')
                .is_some_and(|(_, p)| p == port.to_string())
        })
        .map(str::to_owned)
        .collect()
}

fn unit_files(c: &Client, host: u16, persist: bool) -> [PathBuf; 2] {
    let dir = if persist {
        env().home.join(".config/systemd/user")
    } else {
        env().runtime_dir.join("systemd/user")
    };
    let stem = format!("sandboxctl-port-{}-{host}", c.name);
    [
        dir.join(format!("{stem}.socket")),
        dir.join(format!("{stem}@.service")),
    ]
}

fn status_ports(c: &Client) -> serde_json::Value {
    let out = sbx(["status", &c.name, "--json"]).run().success();
    out.json()["ports"].clone()
}

/// Allowlist mode (no network in the container): the host's curl-equivalent gets the
/// body of a server inside; only 127.0.0.1 listens; status and `port` list it; the
/// units are in the runtime unit directory; `port --rm` closes it and removes them.
#[test]
fn pt1_forward_into_an_allowlist_sandbox_and_remove_it() {
    let c = Client::new("pt1");
    c.enable(&[]);
    c.start();
    let (path, body) = serve(&c);
    let host = free_port();
    let out = sbx([
        "port",
        &c.name,
        &INSIDE.to_string(),
        "--host-port",
        &host.to_string(),
    ])
    .run()
    .success();
    assert!(
        out.stdout.contains(&format!(
            "forwarding 127.0.0.1:{host} on the host to port {INSIDE}"
        )),
        "{out}"
    );

    assert_serves(host, &path, &body);
    assert_eq!(
        listeners(host),
        [format!("127.0.0.1:{host}")],
        "loopback only"
    );

    // Not persistent: in the runtime unit directory, nothing in ~/.config.
    for f in unit_files(&c, host, false) {
        assert!(f.is_file(), "{} missing", f.display());
    }
    for f in unit_files(&c, host, true) {
        assert!(!f.exists(), "{} should not exist", f.display());
    }

    let ports = status_ports(&c);
    assert_eq!(ports[0]["host_port"], host, "{ports}");
    assert_eq!(ports[0]["container_port"], INSIDE, "{ports}");
    assert_eq!(ports[0]["host_address"], "127.0.0.1", "{ports}");
    assert_eq!(ports[0]["persist"], false, "{ports}");
    assert_eq!(ports[0]["state"], "listening", "{ports}");
    let line = format!("127.0.0.1:{host} → port {INSIDE} (until logout): listening");
    let text = sbx(["status", &c.name]).run().success();
    assert!(text.stdout.contains(&line), "{text}");
    let list = sbx(["port", &c.name]).run().success();
    assert_eq!(list.stdout.trim(), line, "{list}");

    // A client that half-closes after its request still gets the whole answer.
    let addr = SocketAddr::from(([127, 0, 0, 1], host));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert!(answer.ends_with(&body), "after a half-close:\n{answer}");

    // Several connections at once, each its own relay.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (p, b) = (path.clone(), body.clone());
            std::thread::spawn(move || assert_serves(host, &p, &b))
        })
        .collect();
    for t in threads {
        t.join().expect("a parallel GET");
    }

    sbx(["port", &c.name, &INSIDE.to_string(), "--rm"])
        .run()
        .success();
    assert_refused(host);
    assert!(listeners(host).is_empty());
    for f in unit_files(&c, host, false) {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    assert_eq!(status_ports(&c), serde_json::json!([]));
    let again = sbx(["port", &c.name, &INSIDE.to_string(), "--rm"])
        .run()
        .failure();
    assert!(
        again.stderr.contains("has no forward to port 3000"),
        "{again}"
    );
}

/// `--network none` and `--persist`: the units are in ~/.config/systemd/user, linked
/// from sockets.target.wants; the forward works again after `restart` (a new
/// container); `disable` stops and removes it.
#[test]
fn pt2_persistent_forward_survives_restart_and_disable_removes_it() {
    let c = Client::new("pt2");
    c.enable(&["--network", "none"]);
    c.start();
    let host = free_port();
    sbx([
        "port",
        &c.name,
        &INSIDE.to_string(),
        "--host-port",
        &host.to_string(),
        "--persist",
    ])
    .run()
    .success();
    let files = unit_files(&c, host, true);
    for f in &files {
        assert!(f.is_file(), "{} missing", f.display());
    }
    let link = env()
        .home
        .join(".config/systemd/user/sockets.target.wants")
        .join(files[0].file_name().expect("name"));
    assert_eq!(std::fs::read_link(&link).expect("the wants link"), files[0]);
    for f in unit_files(&c, host, false) {
        assert!(!f.exists(), "{} should not exist", f.display());
    }
    assert_eq!(status_ports(&c)[0]["persist"], true);

    let (path, body) = serve(&c);
    assert_serves(host, &path, &body);

    let old = c.container_id();
    sbx(["restart", &c.name]).run().success();
    assert_ne!(c.container_id(), old, "restart makes a new container");
    let (path, body) = serve(&c);
    assert_serves(host, &path, &body);
    assert_eq!(listeners(host), [format!("127.0.0.1:{host}")]);

    // Made non-persistent again: the units move to the runtime directory.
    sbx([
        "port",
        &c.name,
        &INSIDE.to_string(),
        "--host-port",
        &host.to_string(),
    ])
    .run()
    .success();
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the wants link stays"
    );
    let runtime = unit_files(&c, host, false);
    for (old, new) in files.iter().zip(&runtime) {
        assert!(!old.exists(), "{} stays", old.display());
        assert!(new.is_file(), "{} missing", new.display());
    }
    assert_eq!(status_ports(&c)[0]["persist"], false);
    assert_serves(host, &path, &body);

    let out = sbx(["disable", &c.name]).run().success();
    assert!(
        out.stdout.contains(&runtime[0].display().to_string()),
        "{out}"
    );
    assert_refused(host);
    for f in files.iter().chain(&runtime).chain([&link]) {
        assert!(
            std::fs::symlink_metadata(f).is_err(),
            "{} left behind",
            f.display()
        );
    }
    let settings = std::fs::read_to_string(c.data_dir().join("config/sandbox.toml"))
        .expect("settings kept without --purge");
    assert!(!settings.contains("[[ports]]"), "{settings}");
}

/// A forward to a port where nothing listens inside closes the connection (no hang),
/// and the host port is refused to a second forward.
#[test]
fn pt3_nothing_listening_inside_and_a_taken_host_port() {
    let c = Client::new("pt3");
    c.enable(&[]);
    c.start();
    let host = free_port();
    sbx(["port", &c.name, "3999", "--host-port", &host.to_string()])
        .run()
        .success();
    let (response, _, total) = get(host, "/").expect("connects");
    assert!(response.is_empty(), "{response}");
    assert!(total < Duration::from_secs(10), "{total:?}");
    let out = sbx(["port", &c.name, "4000", "--host-port", &host.to_string()])
        .run()
        .failure();
    assert!(
        out.stderr.contains(&format!(
            "host port {host} already forwards to port 3999 of {}",
            c.name
        )),
        "{out}"
    );
}

/// The cost of a forward per connection: a GET through it from the host against the
/// same GET inside the sandbox (curl's `time_connect` and `time_total`), medians of 15.
#[test]
fn pt4_latency_per_connection() {
    let c = Client::new("pt4");
    c.enable(&[]);
    c.start();
    let (path, body) = serve(&c);
    let host = free_port();
    sbx([
        "port",
        &c.name,
        &INSIDE.to_string(),
        "--host-port",
        &host.to_string(),
    ])
    .run()
    .success();
    assert_serves(host, &path, &body);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut connect, mut total) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let (r, con, all) = get(host, &path).expect("GET");
        assert!(r.ends_with(&body), "{r}");
        connect.push(con.as_secs_f64() * 1000.0);
        total.push(all.as_secs_f64() * 1000.0);
    }
    let inside = c.sh(&format!(
        "for i in $(seq 15); do curl -s --noproxy '*' -o /dev/null -w '%{{time_connect}} %{{time_total}}\\n' \
         http://127.0.0.1:{INSIDE}{path}; done"
    ));
    let (mut in_connect, mut in_total) = (Vec::new(), Vec::new());
    for line in inside.stdout.lines() {
        let mut f = line
            .split_whitespace()
            .map(|x| x.parse::<f64>().expect("a time"));
        in_connect.push(f.next().expect("connect") * 1000.0);
        in_total.push(f.next().expect("total") * 1000.0);
    }
    assert_eq!(in_total.len(), 15, "{inside}");
    let (fc, ft, ic, it) = (
        median(connect),
        median(total),
        median(in_connect),
        median(in_total),
    );
    eprintln!(
        "pt4: through the forward connect {fc:.2} ms, total {ft:.1} ms; inside connect {ic:.2} ms, total {it:.1} ms; added per connection {:.1} ms",
        ft - it
    );
    // A relay per connection is a podman exec: tens to hundreds of ms, never seconds.
    assert!(ft < 2000.0, "{ft} ms per GET through the forward");
}

/// `--network open` works the same; a connection while the sandbox is stopped is closed
/// at once; a forward whose runtime units went away (as at logout) shows as `gone` and
/// the same `port` command sets it up again.
#[test]
fn pt5_open_network_stopped_sandbox_and_a_forward_set_up_again() {
    let c = Client::new("pt5");
    c.enable(&["--network", "open"]);
    c.start();
    let (path, body) = serve(&c);
    let host = free_port();
    let add = || {
        sbx([
            "port",
            &c.name,
            &INSIDE.to_string(),
            "--host-port",
            &host.to_string(),
        ])
        .run()
        .success()
    };
    add();
    assert_serves(host, &path, &body);

    // What a logout does to the runtime unit directory.
    let socket = format!("sandboxctl-port-{}-{host}.socket", c.name);
    crate::harness::systemctl(["stop", &socket]).run().success();
    for f in unit_files(&c, host, false) {
        std::fs::remove_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    crate::harness::systemctl(["daemon-reload"]).run().success();
    assert_refused(host);
    assert_eq!(status_ports(&c)[0]["state"], "gone");
    let list = sbx(["port", &c.name]).run().success();
    assert!(
        list.stdout.contains("sets it up again")
            && list.stdout.contains(&format!(
                "`sandboxctl port {} {INSIDE} --host-port {host}`",
                c.name
            )),
        "{list}"
    );
    add();
    assert_eq!(status_ports(&c)[0]["state"], "listening");
    assert_serves(host, &path, &body);

    // The socket still accepts; the relay cannot start, so the connection is closed
    // (or reset, as the request was not read) at once, without an answer.
    sbx(["stop", &c.name]).run().success();
    let start = Instant::now();
    match get(host, &path) {
        Ok((response, _, _)) => assert!(response.is_empty(), "{response}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
