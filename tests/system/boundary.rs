//! The boundary between a hostile agent and the host's egress proxy: the proxy enforces
//! the policy the CLI edits wherever the data dir is, runs a binary no sandbox can
//! reach, cannot be fed files through its socket directory, and runs sandboxed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Client, Cmd, Output, env, sbx, systemctl, unit_property, wait_for};
use crate::network::{Upstream, curl};

fn proxy_service(c: &Client) -> String {
    format!("sandboxctl-proxy@{}.service", c.name)
}

/// `curl` in the sandbox through its proxy, the client's state under `data`.
fn curl_in(data: &Path, c: &Client, url: &str) -> Output {
    sbx(["exec", &c.name, "--", "sh", "-c"])
        .arg(format!(
            "env -u NO_PROXY -u no_proxy curl -fsS --max-time 20 {url}"
        ))
        .env("AGENT_SANDBOX_DATA", data)
        .run()
}

/// A data directory outside the default location, deleted on drop (after the client's
/// own cleanup has disabled it).
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 1. With `AGENT_SANDBOX_DATA` pointing elsewhere, the proxy enforces the policy that
///    `allow`/`deny` edit there, not whatever lies at the default location.
#[test]
fn bd1_the_proxy_enforces_the_policy_under_agent_sandbox_data() {
    let up = Upstream::start("b1");
    let c = Client::new("b1");
    let data = DataDir(
        env()
            .home
            .join("sbx-system-tests")
            .join(format!("{}-data", c.name)),
    );
    let with_data = |args: &[&str]| sbx(args).env("AGENT_SANDBOX_DATA", &data.0).run();
    let url = format!("http://{}/", up.authority());

    with_data(&[
        "enable",
        &c.name,
        c.project_str(),
        "--agent",
        "shell",
        "--image",
        &env().image,
        "--network",
        "allowlist",
    ])
    .success();
    let policy = data
        .0
        .join("clients")
        .join(&c.name)
        .join("config/network.toml");
    assert!(policy.is_file(), "no policy at {}", policy.display());
    with_data(&["allow", &c.name, "--private", &up.authority()]).success();
    with_data(&["start", &c.name]).success();
    assert_eq!(unit_property(&c.unit(), "ActiveState"), "active");

    let out = curl_in(&data.0, &c, &url);
    assert_eq!(
        out.stdout, up.body,
        "allowed under AGENT_SANDBOX_DATA:\n{out}"
    );

    // A broader policy at the default location must not be what the proxy enforces.
    let default_policy = c.data_dir().join("config/network.toml");
    std::fs::create_dir_all(default_policy.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&policy, &default_policy).expect("stale policy at the default location");
    with_data(&["deny", &c.name, "127.0.0.1"]).success();
    let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    let out = curl_in(&data.0, &c, &url);
    assert!(!out.status.success(), "denied, so refused:\n{out}");
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits,
        "nothing reached the upstream"
    );
    let shown = with_data(&["policy", &c.name]).success();
    assert!(shown.stdout.contains("127.0.0.1"), "{shown}");

    with_data(&["disable", &c.name, "--purge"]).success();
    let dropin = env()
        .home
        .join(".config/systemd/user")
        .join(format!("{}.d", proxy_service(&c)));
    assert!(
        !dropin.exists(),
        "`disable` left the proxy drop-in {}",
        dropin.display()
    );
}

/// 3. The proxy unit runs a copy that no sandbox can reach. Here `enable` runs from a
///    binary inside the project (read-write in the sandbox); the agent replaces it, and
///    the next proxy start still runs sandboxctl, not the agent's program.
#[test]
fn bd3_the_agent_cannot_replace_the_binary_the_proxy_runs() {
    let up = Upstream::start("b3");
    let c = Client::new("b3");
    let in_project = c.project.join("tools-sandboxctl");
    std::fs::copy(&env().bin, &in_project).expect("copy sandboxctl into the project");
    Cmd::new(&in_project)
        .args([
            "enable",
            &c.name,
            c.project_str(),
            "--agent",
            "shell",
            "--image",
            &env().image,
            "--network",
            "allowlist",
        ])
        .run()
        .success();
    sbx(["allow", &c.name, "--private", &up.authority()])
        .run()
        .success();
    c.start();
    let url = format!("http://{}/", up.authority());
    assert_eq!(curl(&c, &url).stdout, up.body, "allowed");

    // The agent replaces the binary that ran `enable`.
    let service = proxy_service(&c);
    let marker = c.project.join("pwned");
    let evil = format!(
        "rm -f {bin} && printf '#!/bin/sh\\necho pwned > {marker}\\n' > {bin} && chmod 755 {bin}",
        bin = in_project.display(),
        marker = marker.display()
    );
    c.sh(&evil).success();

    // The next connection starts the proxy again: it must be sandboxctl's.
    systemctl(["stop", &service]).run().success();
    let out = curl(&c, &url);
    assert_eq!(out.stdout, up.body, "the proxy still works:\n{out}");
    assert!(
        !marker.exists(),
        "the agent's program ran on the host as the proxy"
    );
    let exec = unit_property(&service, "ExecStart");
    let libexec = env().home.join(".local/libexec/sandboxctl/sandboxctl");
    let libexec = libexec.to_str().expect("UTF-8");
    assert!(
        exec.contains(&format!("path={libexec} ")),
        "the proxy does not run the private copy: {exec}"
    );

    // The private copy is not there to see inside, let alone to write.
    let out = c.sh(&format!(
        "ls -ld {libexec} {dir}; echo x > {libexec}",
        dir = Path::new(libexec).parent().expect("dir").display()
    ));
    assert!(!out.status.success(), "the copy is visible inside:\n{out}");
    let copy = std::fs::read(libexec).expect("the private copy");
    assert_eq!(
        copy,
        std::fs::read(&env().bin).expect("the binary under test"),
        "the private copy changed"
    );
}

/// 6. The socket directory is read-only inside: the agent cannot fill the runtime dir
///    through it, the proxy still works, and `disable --purge` removes the directory.
#[test]
fn bd6_the_socket_directory_is_read_only_inside_and_purged() {
    let up = Upstream::start("b6");
    let c = Client::new("b6");
    c.enable(&["--network", "allowlist"]);
    sbx(["allow", &c.name, "--private", &up.authority()])
        .run()
        .success();
    c.start();
    let url = format!("http://{}/", up.authority());

    let out = c.sh("echo x > /run/sandbox-proxy/filler");
    assert!(!out.status.success(), "wrote into the socket dir:\n{out}");
    let out = c.sh("mkdir /run/sandbox-proxy/d");
    assert!(!out.status.success(), "made a directory there:\n{out}");
    let out = c.sh("rm -f /run/sandbox-proxy/proxy.sock; ls /run/sandbox-proxy");
    assert_eq!(
        out.stdout.trim(),
        "proxy.sock",
        "removed the socket:\n{out}"
    );
    let host_dir = env().runtime_dir.join("agent-sandbox/proxy").join(&c.name);
    let entries: Vec<_> = std::fs::read_dir(&host_dir)
        .expect("the socket dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries, ["proxy.sock"], "{}", host_dir.display());
    assert_eq!(curl(&c, &url).stdout, up.body, "the proxy still works");

    sbx(["disable", &c.name, "--purge"]).run().success();
    assert!(
        !host_dir.exists(),
        "`disable --purge` left {}",
        host_dir.display()
    );
}

/// 7. The proxy runs with its limits and the sandboxing a user manager applies, and
///    still serves (seccomp filter and `MemoryDenyWriteExecute` included).
#[test]
fn bd7_the_proxy_runs_sandboxed_and_limited() {
    let up = Upstream::start("b7");
    let c = Client::new("b7");
    c.enable(&["--network", "allowlist"]);
    sbx(["allow", &c.name, "--private", &up.authority()])
        .run()
        .success();
    c.start();
    let url = format!("http://{}/", up.authority());
    assert_eq!(curl(&c, &url).stdout, up.body, "served");

    let service = proxy_service(&c);
    let pid = wait_for(
        "the proxy's main process",
        Duration::from_secs(10),
        || {
            let pid = unit_property(&service, "MainPID");
            (pid != "0").then_some(pid)
        },
        || {
            systemctl(["status", "--no-pager", &service])
                .run()
                .to_string()
        },
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    for (field, want) in [("NoNewPrivs", "1"), ("Seccomp", "2")] {
        let got = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::trim));
        assert_eq!(got, Some(want), "{field}:\n{status}");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    assert_eq!(
        nofile.split_whitespace().nth(3),
        Some("4096"),
        "soft nofile: {nofile}"
    );
    assert_eq!(unit_property(&service, "MemoryDenyWriteExecute"), "yes");
    assert_eq!(unit_property(&service, "TasksMax"), "128");

    // Still serving after all that, and the score for the record.
    assert_eq!(curl(&c, &url).stdout, up.body, "served again");
    let score = Cmd::new("systemd-analyze")
        .args(["--user", "security", "--no-pager", &service])
        .run();
    if let Some(line) = score
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure"))
    {
        eprintln!("{service}: {}", line.trim());
    }
}

/// #26 part 9: what the agent makes the host log cannot fill the runtime directory or
/// the disk. Without journald, 20 MB on the container's standard output leave podman's
/// file of it within its 8 MiB cap, and a flood of refused requests (a log line each)
/// rotates the proxy's log file in `$XDG_RUNTIME_DIR` at 4 MiB, keeping one old file.
/// Where journald runs, both go to the journal and no such file grows.
#[test]
fn bd8_floods_of_output_and_requests_stay_within_the_log_caps() {
    let c = Client::new("b8");
    c.enable(&["--network", "allowlist"]);
    c.start();
    let journald = Path::new("/run/systemd/journal/socket").exists();

    c.sh("head -c 20000000 /dev/zero | tr '\\0' x | fold -w 1000 >/proc/1/fd/1")
        .success();
    let log = crate::harness::podman([
        "inspect",
        "--format",
        "{{.HostConfig.LogConfig.Type}} {{.HostConfig.LogConfig.Path}}",
        &c.container(),
    ])
    .run()
    .success();
    // With journald the driver has no path.
    let text = log.stdout.trim();
    let (driver, path) = text.split_once(' ').unwrap_or((text, ""));
    if journald {
        assert_eq!(driver, "journald", "{log}");
    } else {
        assert_eq!(driver, "k8s-file", "{log}");
        // In the store, which belongs to the user namespace's root.
        let stat = crate::harness::podman(["unshare", "stat", "-c", "%s", path])
            .run()
            .success();
        let size: u64 = stat.stdout.trim().parse().expect("a size");
        eprintln!("the container's log after 20 MB: {size} bytes");
        assert!(size <= 8 << 20, "the container's log holds {size} bytes");
    }

    // Refused requests with long names: about 450 bytes of log a request.
    let flood = r#"
import socket
label = "x" * 60
for i in range(12000):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/sandbox-proxy/proxy.sock")
    host = "d%d.%s.%s.%s.example" % (i, label, label, label)
    s.sendall(("GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (host, host)).encode())
    s.recv(4096)
    s.close()
"#;
    c.exec(&["python3", "-c", flood]).success();
    let file = env()
        .runtime_dir
        .join(format!("sandboxctl-proxy-{}.log", c.name));
    let old = env()
        .runtime_dir
        .join(format!("sandboxctl-proxy-{}.log.1", c.name));
    if journald {
        assert!(!file.exists() && !old.exists(), "a log file with journald");
        return;
    }
    let sizes = wait_for(
        "the proxy's log rotated",
        Duration::from_secs(30),
        || {
            let now = std::fs::metadata(&file).ok()?.len();
            let before = std::fs::metadata(&old).ok()?.len();
            Some((now, before))
        },
        || {
            let ls = Cmd::new("ls").args(["-l"]).arg(&env().runtime_dir).run();
            format!("{ls}")
        },
    );
    eprintln!("the proxy's log files after the flood: {sizes:?} bytes");
    let cap = 4 << 20;
    assert!(
        sizes.0 <= cap + 4096 && sizes.1 <= cap + 4096 && sizes.1 > cap,
        "log sizes {sizes:?}"
    );
    // The newest lines are in the new file: the proxy goes on logging there.
    let text = std::fs::read_to_string(&file).expect("the proxy's log");
    assert!(
        text.contains("d11999."),
        "the last request is not in the new file"
    );
}

/// #26 part 3, from inside the sandbox: a tunnel allowed on its `CONNECT` carries a TLS
/// hello for another name (a site behind the same shared address): the proxy answers
/// with an alert, not a byte of it reaches the upstream, and its log names both. A hello
/// without a name, to the address the tunnel was allowed on, goes through.
#[test]
fn bd9_a_tunnels_tls_name_must_be_the_one_it_was_allowed_on() {
    use std::io::Read as _;
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The bytes each connection brought, once it ended.
    let received: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = received.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = Vec::new();
                let _ = stream.read_to_end(&mut buf);
                seen.lock().expect("lock").push(buf.len());
            });
        }
    });
    let c = Client::new("b9");
    c.enable(&["--network", "allowlist"]);
    let authority = format!("127.0.0.1:{port}");
    sbx(["allow", &c.name, "--private", &authority])
        .run()
        .success();
    c.start();
    let tunnel = format!(
        r#"
import socket, ssl, sys
s = socket.socket(socket.AF_UNIX)
s.connect("/run/sandbox-proxy/proxy.sock")
s.sendall(b"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 200"), head
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname=sys.argv[1] or None, do_handshake_on_connect=False)
t.settimeout(10)
try:
    t.do_handshake()
    print("handshake done")
except ssl.SSLError as e:
    print("tls error:", e.reason)
except Exception as e:
    print("error:", type(e).__name__)
"#
    );
    let refused = c
        .exec(&["python3", "-c", &tunnel, "evil.example"])
        .success();
    assert!(
        refused.stdout.contains("TLSV1_ALERT_ACCESS_DENIED"),
        "{refused}"
    );
    let log = wait_for(
        "the refusal in the proxy's log",
        Duration::from_secs(20),
        || {
            let out = sbx(["logs", &c.name, "--network", "-n", "50"]).run();
            out.stdout
                .lines()
                .find(|l| l.contains("TLS refused") && l.contains("evil.example"))
                .map(str::to_owned)
        },
        || format!("{}", sbx(["logs", &c.name, "--network", "-n", "20"]).run()),
    );
    assert!(log.contains("127.0.0.1"), "{log}");

    // No name, to the address: the hello goes upstream (which speaks no TLS).
    let passed = c.exec(&["python3", "-c", &tunnel, ""]).success();
    assert!(!passed.stdout.contains("ACCESS_DENIED"), "{passed}");
    let counts = wait_for(
        "the upstream got the nameless hello",
        Duration::from_secs(20),
        || {
            let r = received.lock().expect("lock").clone();
            r.iter().any(|n| *n > 0).then_some(r)
        },
        || format!("{:?}", received.lock().map(|r| r.clone())),
    );
    assert_eq!(
        counts.iter().filter(|n| **n > 0).count(),
        1,
        "bytes of the refused hello reached the upstream: {counts:?}"
    );
}
