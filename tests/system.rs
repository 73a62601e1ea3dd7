//! System tests: sandboxctl driven exactly as a user drives it, on a real systemd user
//! manager with the Quadlet generator and rootless Podman (issue 4). One test per
//! assertion of the issue, numbered the same way.
//!
//! Built only with `--features system-tests`; run by `tests/run-all.sh` as the test user
//! that `tests/system/setup-host.sh` prepares, with `SANDBOXCTL_BIN` pointing at the
//! binary under test. Missing prerequisites fail the run; nothing is skipped.

#[path = "system/harness.rs"]
mod harness;

#[path = "system/autonomy.rs"]
mod autonomy;
#[path = "system/booted.rs"]
mod booted;
#[path = "system/boundary.rs"]
mod boundary;
#[path = "system/crash.rs"]
mod crash;
#[path = "system/credentials.rs"]
mod credentials;
#[path = "system/doctor.rs"]
mod doctor;
#[path = "system/faults.rs"]
mod faults;
#[path = "system/homegit.rs"]
mod homegit;
#[path = "system/hostexec.rs"]
mod hostexec;
#[path = "system/keyproxy.rs"]
mod keyproxy;
#[path = "system/kube.rs"]
mod kube;
#[path = "system/limits.rs"]
mod limits;
#[path = "system/masks.rs"]
mod masks;
#[path = "system/network.rs"]
mod network;
#[path = "system/packaging.rs"]
mod packaging;
#[path = "system/ports.rs"]
mod ports;
#[path = "system/sessions.rs"]
mod sessions;
#[path = "system/update.rs"]
mod update;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{
    Client, HostTerminal, env, podman, process_exists, sbx, systemctl, unit_property, wait_for,
};

/// The `status --json` object for `client`, checked for the contract's fields.
#[track_caller]
fn status_json(client: &Client) -> serde_json::Value {
    let out = sbx(["status", &client.name, "--json"]).run().success();
    let v = out.json();
    for key in ["client", "active_state", "sub_state", "unit"] {
        assert!(
            v.get(key).is_some(),
            "`status --json` lacks {key:?}:\n{out}"
        );
    }
    assert_eq!(v["client"], client.name.as_str(), "{out}");
    assert_eq!(v["unit"], client.unit().as_str(), "{out}");
    v
}

/// 1. `enable` writes the unit and reloads the manager over D-Bus, so the generator has
///    produced `agent-<client>.service` when it returns; `sandboxctl start` and plain
///    `systemctl --user start` both bring it to active; `status`/`list --json` report it.
#[test]
fn t1_enable_reload_generates_service_and_start_brings_it_up() {
    let env = env();
    let c = Client::new("t1");
    let out = c.enable(&[]);

    assert!(
        c.unit_file().is_file(),
        "no unit file at {}:\n{out}",
        c.unit_file().display()
    );
    let unit_text = std::fs::read_to_string(c.unit_file()).expect("read the unit file");
    assert!(
        unit_text.contains(&env.image),
        "the unit does not name the image:\n{unit_text}"
    );
    // No daemon-reload here: `enable` must have made the manager reload (and so run the
    // generator) before it returned.
    let generated = env.loaded_unit_file(&c.unit());
    assert!(
        generated.is_file(),
        "the Quadlet generator produced no {} after `enable`:\n{out}",
        generated.display()
    );
    assert_eq!(unit_property(&c.unit(), "LoadState"), "loaded", "{out}");
    assert_eq!(unit_property(&c.unit(), "ActiveState"), "inactive");
    for dir in ["claude", "codex", "config", "history"] {
        let d = c.data_dir().join(dir);
        let meta = std::fs::metadata(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        assert!(meta.is_dir(), "{} is not a directory", d.display());
        assert_eq!(
            meta.mode() & 0o777,
            0o700,
            "{} must be mode 0700",
            d.display()
        );
    }

    // `sandboxctl start` waits for the job (JobRemoved `done`), so no polling here.
    let out = c.start();
    assert_eq!(unit_property(&c.unit(), "SubState"), "running", "{out}");
    let running = podman([
        "container",
        "inspect",
        "--format",
        "{{.State.Running}}",
        &c.container(),
    ])
    .run();
    assert_eq!(running.stdout.trim(), "true", "{running}");
    let v = status_json(&c);
    assert_eq!(v["active_state"], "active", "{v}");
    assert_eq!(v["sub_state"], "running", "{v}");

    let list = sbx(["list", "--json"]).run().success();
    let arr = list.json();
    let entry = arr
        .as_array()
        .unwrap_or_else(|| panic!("`list --json` is not an array:\n{list}"))
        .iter()
        .find(|e| e["client"] == c.name.as_str())
        .unwrap_or_else(|| panic!("`list --json` does not list {}:\n{list}", c.name))
        .clone();
    assert_eq!(entry["active_state"], "active", "{list}");
    assert_eq!(entry["unit"], c.unit().as_str(), "{list}");

    sbx(["stop", &c.name]).run().success();
    assert_eq!(unit_property(&c.unit(), "ActiveState"), "inactive");
    assert_eq!(status_json(&c)["active_state"], "inactive");

    // The service is an ordinary user service: plain systemctl starts it too (systemctl
    // waits for the job and exits 0 only when its result is `done`).
    systemctl(["start", &c.unit()]).run().success();
    assert_eq!(
        unit_property(&c.unit(), "ActiveState"),
        "active",
        "{}",
        c.diagnostics()
    );
    assert_eq!(status_json(&c)["active_state"], "active");
}

/// 2. `attach` through a pseudo-terminal lands in the tmux session in the container; a
///    marker started there survives the attaching terminal being killed, and a second
///    `attach` shows the same session.
#[test]
fn t2_attach_survives_a_killed_terminal_and_resumes() {
    let c = Client::new("t2");
    c.enable(&[]);
    c.start();
    let bin = env().bin.to_str().expect("UTF-8 binary path").to_owned();
    let attach = format!("{bin} attach {}", c.name);

    let term = HostTerminal::start(&attach);
    let attach_pid = term.pane_pid();
    term.wait_for_shell(&c);
    let token = format!("ok-$((1000+234))-{}", std::process::id());
    let shown = format!("ok-1234-{}", std::process::id());
    term.type_line(&format!("echo {token}; sleep 4242"));
    term.wait_for_line(&shown, Duration::from_secs(10));
    // The attach landed inside the container: the marker runs there.
    wait_for(
        "the marker `sleep 4242` in the container",
        Duration::from_secs(10),
        || {
            c.exec(&["pgrep", "-f", "sleep 4242"])
                .status
                .success()
                .then_some(())
        },
        || format!("{}", c.exec(&["ps", "-ef"])),
    );
    // ... and in the tmux session that attach names by default.
    let sessions = c.exec(&["tmux", "list-sessions", "-F", "#{session_name}"]);
    assert!(
        sessions.stdout.lines().any(|l| l == "main"),
        "no tmux session `main` in the container:\n{sessions}"
    );

    term.kill();
    wait_for(
        "the attaching process to go away with its terminal",
        Duration::from_secs(20),
        || (!process_exists(attach_pid)).then_some(()),
        || format!("pid {attach_pid} still exists"),
    );
    let still = c.exec(&["pgrep", "-f", "sleep 4242"]);
    assert!(
        still.status.success(),
        "the marker died with the terminal:\n{still}"
    );
    assert_eq!(unit_property(&c.unit(), "ActiveState"), "active");

    // Resume = attach: the second terminal shows the first one's session.
    let term2 = HostTerminal::start(&attach);
    let screen = term2.wait_for_line(&shown, Duration::from_secs(30));
    assert!(
        screen.contains("sleep 4242"),
        "second attach shows another screen:\n{screen}"
    );
    term2.kill();
    let still = c.exec(&["pgrep", "-f", "sleep 4242"]);
    assert!(
        still.status.success(),
        "the marker died with the second terminal:\n{still}"
    );
}

/// 3. A file written in the project from inside belongs to the host user; `restart`
///    (a new container) keeps what is in the client's dirs.
#[test]
fn t3_project_files_owned_by_user_and_restart_keeps_client_dirs() {
    let env = env();
    let c = Client::new("t3");
    c.enable(&[]);
    c.start();

    let inside = c.project.join("written-inside.txt");
    c.sh(&format!("echo hello > '{}'", inside.display()))
        .success();
    let meta = std::fs::metadata(&inside).unwrap_or_else(|e| panic!("{}: {e}", inside.display()));
    assert_eq!(
        meta.uid(),
        env.uid,
        "a file written inside is not owned by the host user"
    );
    assert_eq!(std::fs::read_to_string(&inside).expect("read"), "hello\n");

    // Where the client's own dirs are mounted inside, from podman's view of the mounts.
    let mounts = podman([
        "container",
        "inspect",
        "--format",
        "{{json .Mounts}}",
        &c.container(),
    ])
    .run()
    .success();
    let mounts = mounts.json();
    let mut targets = Vec::new();
    for dir in ["claude", "codex", "history"] {
        let source = c.data_dir().join(dir);
        let dest = mounts
            .as_array()
            .expect("mounts array")
            .iter()
            .find(|m| m["Source"].as_str().map(Path::new) == Some(source.as_path()))
            .and_then(|m| m["Destination"].as_str())
            .unwrap_or_else(|| {
                panic!(
                    "{} is not mounted in the container: {mounts}",
                    source.display()
                )
            })
            .to_owned();
        targets.push((dir, source, dest));
    }
    for (dir, _, dest) in &targets {
        c.sh(&format!("echo kept-{dir} > '{dest}/sbx-test-{dir}'"))
            .success();
    }
    let settings_before = dir_snapshot(&c.data_dir().join("config"));
    let id_before = c.container_id().expect("a container before restart");

    sbx(["restart", &c.name]).run().success();
    assert_eq!(
        unit_property(&c.unit(), "ActiveState"),
        "active",
        "{}",
        c.diagnostics()
    );
    let id_after = c.container_id().expect("a container after restart");
    assert_ne!(
        id_before, id_after,
        "`restart` did not make a new container"
    );

    for (dir, source, dest) in &targets {
        let out = c.exec(&["cat", &format!("{dest}/sbx-test-{dir}")]);
        assert_eq!(
            out.stdout,
            format!("kept-{dir}\n"),
            "lost after restart:\n{out}"
        );
        let host = source.join(format!("sbx-test-{dir}"));
        assert_eq!(
            std::fs::read_to_string(&host).ok().as_deref(),
            Some(&*format!("kept-{dir}\n"))
        );
    }
    assert_eq!(
        settings_before,
        dir_snapshot(&c.data_dir().join("config")),
        "settings changed"
    );
    let out = c.exec(&["cat", inside.to_str().expect("UTF-8")]);
    assert_eq!(
        out.stdout, "hello\n",
        "project file not visible after restart:\n{out}"
    );
}

/// Names and contents of the files in `dir` (one level).
fn dir_snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A field of `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::trim))
}

/// 4. Inside the running sandbox: no capabilities, no new privileges, seccomp filter,
///    read-only root, container root is not host root, only the project and `--mount-rw`
///    writable, `--mount` read-only, no podman/docker socket, `--network none` has only
///    loopback.
#[test]
fn t4_sandbox_is_locked_down() {
    let mut c = Client::new("t4");
    let ro = c.scratch_dir("ro");
    let rw = c.scratch_dir("rw");
    std::fs::write(ro.join("ro-file"), "read me\n").expect("write");
    let readonly_spec = format!("{}:/mnt/sbx-ro", ro.display());
    let writable_spec = format!("{}:/mnt/sbx-rw", rw.display());
    c.enable(&[
        "--network",
        "none",
        "--mount",
        &readonly_spec,
        "--mount-rw",
        &writable_spec,
    ]);
    c.start();

    // Both an exec'd process and the container's PID 1.
    for pid in ["self", "1"] {
        let out = c.exec(&["cat", &format!("/proc/{pid}/status")]).success();
        assert_eq!(
            status_field(&out.stdout, "CapEff"),
            Some("0000000000000000"),
            "{out}"
        );
        assert_eq!(
            status_field(&out.stdout, "CapPrm"),
            Some("0000000000000000"),
            "{out}"
        );
        assert_eq!(
            status_field(&out.stdout, "CapBnd"),
            Some("0000000000000000"),
            "{out}"
        );
        assert_eq!(status_field(&out.stdout, "NoNewPrivs"), Some("1"), "{out}");
        assert_eq!(status_field(&out.stdout, "Seccomp"), Some("2"), "{out}");
    }

    // Root filesystem read-only: mounted ro and refusing writes.
    let mountinfo = c.exec(&["cat", "/proc/self/mountinfo"]).success().stdout;
    let root_opts = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .map_or_else(
            || panic!("no / in mountinfo:\n{mountinfo}"),
            |f| f[5].to_owned(),
        );
    assert!(
        root_opts.split(',').any(|o| o == "ro"),
        "/ is mounted {root_opts}"
    );

    let project = c.project_str().to_owned();
    for (path, writable) in [
        (format!("{project}/w"), true),
        ("/mnt/sbx-rw/w".to_owned(), true),
        ("/mnt/sbx-ro/w".to_owned(), false),
        ("/w".to_owned(), false),
        ("/etc/w".to_owned(), false),
        ("/usr/w".to_owned(), false),
        ("/usr/local/bin/w".to_owned(), false),
        ("/opt/w".to_owned(), false),
        ("/var/lib/w".to_owned(), false),
    ] {
        let out = c.sh(&format!("echo x > '{path}'"));
        assert_eq!(out.status.success(), writable, "writing {path}:\n{out}");
    }
    assert_eq!(
        std::fs::read_to_string(rw.join("w")).ok().as_deref(),
        Some("x\n")
    );
    assert!(!ro.join("w").exists());
    assert_eq!(
        c.exec(&["cat", "/mnt/sbx-ro/ro-file"]).success().stdout,
        "read me\n"
    );

    let unexpected =
        unexpected_writable_mounts(&mountinfo, &[&project, "/mnt/sbx-rw"], &c.data_dir());
    assert!(
        unexpected.is_empty(),
        "unexpected writable mounts:\n{}",
        unexpected.join("\n")
    );

    assert_container_root_is_not_host_root(c.host_pid());
    assert_no_engine_socket(&c);
    // --network none: only loopback.
    let dev = c.exec(&["cat", "/proc/net/dev"]).success();
    let ifaces: BTreeSet<_> = dev
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, BTreeSet::from(["lo"]), "{dev}");
}

/// Container uid 0 is not host uid 0: the uid map read from the host (where ids are
/// relative to our own namespace) maps nothing to host root.
fn assert_container_root_is_not_host_root(pid: u32) {
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("read uid_map");
    let ranges: Vec<[u64; 3]> = uid_map
        .lines()
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            [f[0], f[1], f[2]]
        })
        .collect();
    // Each line: first id inside, first id on the host, count.
    assert!(
        ranges.iter().all(|r| r[1] > 0),
        "host uid 0 is mapped into the container: {uid_map}"
    );
    assert!(
        ranges.iter().any(|r| r[0] == 0),
        "container uid 0 is not mapped at all? {uid_map}"
    );
}

/// No podman or docker socket (or host variable pointing at one) inside.
fn assert_no_engine_socket(c: &Client) {
    let sockets = c
        .sh("find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type s -print 2>/dev/null; \
             ls -l /run/podman /var/run/docker.sock /run/docker.sock /run/user/*/podman 2>/dev/null; \
             env | grep -E '^(DOCKER_HOST|CONTAINER_HOST)=' ; true")
        .success();
    let seen = sockets.stdout.to_lowercase();
    assert!(
        !seen.contains("podman") && !seen.contains("docker"),
        "an engine socket is reachable:\n{sockets}"
    );
}

/// The lines of `mountinfo` for writable mounts backed by real storage that are neither
/// in `allowed`, nor the client's own data dirs, nor podman's per-container files
/// (tmpfs scratch and kernel filesystems aside).
fn unexpected_writable_mounts(mountinfo: &str, allowed: &[&str], data_dir: &Path) -> Vec<String> {
    const KERNEL: [&str; 9] = [
        "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs", "shm",
    ];
    const PODMAN_FILES: [&str; 4] = [
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/run/.containerenv",
    ];
    let data_dir = data_dir.to_str().expect("UTF-8 data dir");
    let mut unexpected = Vec::new();
    for line in mountinfo.lines() {
        let f: Vec<_> = line.split_whitespace().collect();
        let sep = f
            .iter()
            .position(|x| *x == "-")
            .expect("mountinfo separator");
        let (root, mount_point, opts, fstype) = (f[3], f[4], f[5], f[sep + 1]);
        if KERNEL.contains(&fstype) || !opts.split(',').any(|o| o == "rw") {
            continue;
        }
        // `root` is the source's path as its file system sees it: `data_dir` itself on an
        // ordinary host, behind the root directory's own path where the system runs from a
        // directory tree (the booted lane's nspawn container).
        let from_data_dir = root.match_indices(data_dir).any(|(i, _)| {
            let rest = &root[i + data_dir.len()..];
            rest.is_empty() || rest.starts_with('/')
        });
        let ours =
            allowed.contains(&mount_point) || PODMAN_FILES.contains(&mount_point) || from_data_dir;
        if !ours {
            unexpected.push(line.to_owned());
        }
    }
    unexpected
}

/// 5. Two clients side by side see neither the other's project, data dirs nor processes,
///    and do not share a network namespace (checked with the `open` network, where each
///    has a real interface; without a network they are apart trivially).
#[test]
fn t5_two_clients_are_isolated_from_each_other() {
    let a = Client::new("t5a");
    let b = Client::new("t5b");
    for c in [&a, &b] {
        std::fs::write(c.project.join("secret-file"), &c.name).expect("write");
    }
    a.enable(&["--network", "open"]);
    b.enable(&["--network", "open"]);
    a.start();
    b.start();
    b.sh("nohup sleep 5151 >/dev/null 2>&1 &").success();
    wait_for(
        "the marker in b",
        Duration::from_secs(10),
        || {
            b.exec(&["pgrep", "-f", "sleep 5151"])
                .status
                .success()
                .then_some(())
        },
        String::new,
    );

    for (me, other) in [(&a, &b), (&b, &a)] {
        let other_project = other.project_str();
        let other_data = other.data_dir();
        let probe = me.sh(&format!(
            "ls -d '{other_project}' '{}' 2>&1; cat '{other_project}/secret-file' 2>&1; true",
            other_data.display(),
        ));
        assert!(
            !probe.stdout.contains(&format!("\n{}", other.name))
                && !probe.stdout.starts_with(&other.name),
            "{} sees {}'s project:\n{probe}",
            me.name,
            other.name
        );
        assert_eq!(
            me.sh(&format!("test -e '{other_project}'")).status.code(),
            Some(1),
            "{}",
            me.name
        );
        assert_eq!(
            me.sh(&format!("test -e '{}'", other_data.display()))
                .status
                .code(),
            Some(1)
        );
        let mountinfo = me.exec(&["cat", "/proc/self/mountinfo"]).success().stdout;
        assert!(
            !mountinfo.contains(&other.name),
            "{}'s mounts mention {}:\n{mountinfo}",
            me.name,
            other.name
        );
        // Its own project is there (the probe above would pass trivially otherwise).
        me.sh(&format!("test -e '{}'", me.project_str())).success();
    }
    let seen_by_a = a.exec(&["ps", "-eo", "args"]).success();
    assert!(
        !seen_by_a.stdout.contains("sleep 5151"),
        "a sees b's processes:\n{seen_by_a}"
    );
    assert!(
        b.exec(&["ps", "-eo", "args"])
            .success()
            .stdout
            .contains("sleep 5151")
    );

    // The open network gives each its own interface besides loopback.
    for c in [&a, &b] {
        let ifaces = c
            .sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
            .success()
            .stdout;
        assert!(
            ifaces.lines().any(|i| i != "lo"),
            "{} has no interface but loopback with --network open:\n{ifaces}",
            c.name
        );
    }
    let ns = |c: &Client, kind: &str| {
        c.exec(&["readlink", &format!("/proc/1/ns/{kind}")])
            .success()
            .stdout
    };
    assert_ne!(
        ns(&a, "net"),
        ns(&b, "net"),
        "a and b share a network namespace"
    );
    assert_ne!(
        ns(&a, "pid"),
        ns(&b, "pid"),
        "a and b share a pid namespace"
    );
    let host_net = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    assert_ne!(
        ns(&a, "net").trim(),
        host_net.to_string_lossy(),
        "a uses the host network namespace"
    );
}

/// `sandboxctl start NAME`, which must fail, and within seconds rather than hang.
#[track_caller]
fn start_fails_fast(name: &str) -> harness::Output {
    let out = sbx(["start", name])
        .timeout(Duration::from_mins(1))
        .run()
        .failure();
    assert!(
        out.elapsed < Duration::from_secs(20),
        "`start` took {:?}:\n{out}",
        out.elapsed
    );
    out
}

/// 6. A start that cannot succeed fails within seconds with the reason, instead of
///    hanging: an image that does not exist (pulls disabled), and a unit whose container
///    cannot be created (a `--mount` source that vanished after `enable`), where the
///    reason comes from the unit's last log lines.
#[test]
fn t6_failing_start_reports_quickly_with_logs() {
    let image_client = Client::new("t6i");
    let image = format!("localhost/sbx-no-such-image-{}:latest", std::process::id());
    sbx([
        "enable",
        &image_client.name,
        image_client.project_str(),
        "--agent",
        "shell",
        "--image",
        &image,
        "--podman-arg=--pull=never",
    ])
    .run()
    .success();
    let out = start_fails_fast(&image_client.name);
    assert!(
        out.stderr.contains(&image),
        "the error does not name the missing image:\n{out}"
    );
    assert_ne!(
        unit_property(&image_client.unit(), "ActiveState"),
        "active",
        "{out}"
    );

    let mut c = Client::new("t6m");
    let gone = c.scratch_dir("gone");
    let spec = format!("{}:/mnt/sbx-gone", gone.display());
    c.enable(&["--mount", &spec]);
    // One good start and stop first: Podman prints the container's ID on create and on
    // remove, and the unit logs them before the failing start's own lines.
    c.start();
    sbx(["stop", &c.name]).run().success();
    std::fs::remove_dir(&gone).expect("remove the mount source");
    let out = start_fails_fast(&c.name);
    assert!(
        out.stderr.contains(&c.unit()),
        "the error does not name the unit:\n{out}"
    );
    // podman's own error, as logged by the unit: it names the missing source.
    assert!(
        out.stderr.contains(gone.to_str().expect("UTF-8")),
        "the error does not carry the unit's log lines (podman's error names the path):\n{out}"
    );
    // The container IDs are not what the user needs to read.
    let ids: Vec<&str> = out
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert!(ids.is_empty(), "container IDs quoted as log lines:\n{out}");
    assert_ne!(unit_property(&c.unit(), "ActiveState"), "active", "{out}");
    let status = status_json(&c);
    assert_ne!(status["active_state"], "active", "{status}");
}

/// Quick start/stop cycles: systemd's start limit (5 starts in 10 s) would refuse the
/// sixth start, but a start the user asks for clears the limit first.
#[test]
fn t6s_seven_quick_start_stop_cycles_all_succeed() {
    let c = Client::new("t6s");
    c.enable(&[]);
    let began = Instant::now();
    for cycle in 1..=7 {
        let out = sbx(["start", &c.name]).run();
        assert!(
            out.status.success(),
            "start {cycle} of 7 failed after {:?}:\n{out}\n{}",
            began.elapsed(),
            c.diagnostics()
        );
        if cycle == 6 {
            // Otherwise systemd's limit was never reached and this proves nothing.
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "six starts took {:?}, longer than systemd's 10 s start-limit interval",
                began.elapsed()
            );
        }
        sbx(["stop", &c.name]).run().success();
    }
    assert_eq!(unit_property(&c.unit(), "Result"), "success");
}

/// A sandbox that exits right after starting is restarted by `Restart=on-failure` until
/// systemd's start limit stops it: the unit ends `failed`, and `status` names the crash
/// loop. Clearing the limit on a start the user asks for does not make automatic
/// restarts endless. (systemd's `Result` keeps the last exit's reason here, not
/// `start-limit-hit`: `NRestarts` is what tells.)
#[test]
fn t6c_crash_loop_still_ends_failed_at_the_start_limit() {
    let c = Client::new("t6c");
    c.enable(&["--podman-arg=--entrypoint=/bin/false"]);
    // The start itself may be reported done (the container did start) or failed (it
    // was already restarting); either way the loop must end.
    let _ = sbx(["start", &c.name])
        .timeout(Duration::from_mins(2))
        .run();
    let restarts = wait_for(
        "the crash loop to end at the start limit",
        Duration::from_mins(1),
        || {
            // `failed` also shows for a moment between two restarts: the loop has ended
            // when the unit stays failed with the same count.
            let settled = || -> Option<u32> {
                let restarts: u32 = unit_property(&c.unit(), "NRestarts").parse().ok()?;
                (unit_property(&c.unit(), "ActiveState") == "failed" && restarts > 0)
                    .then_some(restarts)
            };
            let first = settled()?;
            std::thread::sleep(Duration::from_secs(2));
            (settled()? == first).then_some(first)
        },
        || c.diagnostics(),
    );
    assert!(restarts >= 4, "only {restarts} restarts before the limit");
    let out = sbx(["status", &c.name]).run().success();
    assert!(
        out.stdout.contains(&format!(
            "{} failed {} times in a row: systemd restarted it {restarts} times, then stopped at its start limit (a crash loop)",
            c.unit(),
            restarts + 1
        )),
        "`status` does not name the crash loop:\n{out}"
    );
    let v = status_json(&c);
    assert_eq!(v["active_state"], "failed", "{v}");
    assert_eq!(v["failure"]["restarts"], restarts, "{v}");
}

/// 7. Killing the container's main process: systemd starts the sandbox again.
#[test]
fn t7_killed_container_is_restarted_by_systemd() {
    let c = Client::new("t7");
    c.enable(&[]);
    c.start();
    let restarts_before: u32 = unit_property(&c.unit(), "NRestarts")
        .parse()
        .expect("NRestarts");
    let pid = c.host_pid();
    let id_before = c.container_id();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));

    wait_for(
        "systemd to restart the sandbox",
        Duration::from_mins(1),
        || {
            let restarts: u32 = unit_property(&c.unit(), "NRestarts").parse().ok()?;
            let active = unit_property(&c.unit(), "ActiveState") == "active";
            let id = c.container_id();
            (restarts > restarts_before && active && id.is_some() && id != id_before).then_some(())
        },
        || c.diagnostics(),
    );
    let new_pid = c.host_pid();
    assert_ne!(new_pid, pid);
    c.exec(&["true"]).success();
}

/// 8. `disable` stops the unit and removes its file; `--purge` removes the data; no
///    container is left behind.
#[test]
fn t8_disable_removes_unit_and_container_and_purge_removes_data() {
    let env = env();
    let keep = Client::new("t8k");
    let purge = Client::new("t8p");
    for c in [&keep, &purge] {
        c.enable(&[]);
        c.start();
        std::fs::write(c.data_dir().join("history/sbx-test"), "h\n").expect("write history");
    }

    let out = sbx(["disable", &keep.name]).run().success();
    assert!(!keep.unit_file().exists(), "unit file still there:\n{out}");
    assert!(
        !env.loaded_unit_file(&keep.unit()).exists(),
        "generated unit still there after reload"
    );
    let load = unit_property(&keep.unit(), "LoadState");
    assert_eq!(load, "not-found", "{out}");
    assert_ne!(unit_property(&keep.unit(), "ActiveState"), "active");
    assert_no_container(&keep);
    assert!(
        keep.data_dir().join("history/sbx-test").is_file(),
        "`disable` without --purge deleted data"
    );
    assert!(keep.project.exists(), "the project must never be deleted");

    let out = sbx(["disable", &purge.name, "--purge"]).run().success();
    assert!(!purge.unit_file().exists(), "unit file still there:\n{out}");
    assert_eq!(unit_property(&purge.unit(), "LoadState"), "not-found");
    assert_no_container(&purge);
    assert!(
        !purge.data_dir().exists(),
        "--purge left {}:\n{out}",
        purge.data_dir().display()
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains(purge.data_dir().to_str().expect("UTF-8")),
        "--purge must name what it deletes:\n{out}"
    );
    assert!(
        purge.project.exists(),
        "--purge must not delete the project"
    );
    let list = sbx(["list", "--json"]).run().success();
    assert!(
        !list
            .json()
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["client"] == purge.name.as_str()),
        "a purged client is still listed:\n{list}"
    );
}

#[track_caller]
fn assert_no_container(c: &Client) {
    let out = podman(["ps", "-a", "--format", "{{.Names}}"])
        .run()
        .success();
    assert!(
        !out.stdout.lines().any(|n| n == c.container()),
        "container left behind:\n{out}"
    );
}

/// 9. One client moves between the two kinds of unit, as when the host gains or loses
///    its Quadlet generator: a Quadlet unit, then a plain service, then a Quadlet unit
///    again. Each time the user manager loads the unit from the new file, the old file
///    is gone, and the sandbox starts.
#[test]
fn t9_client_switches_between_quadlet_unit_and_plain_service() {
    let env = env();
    let c = Client::new("t9");
    let plain_file = env.home.join(".config/systemd/user").join(c.unit());
    let container_file = env.unit_dir().join(format!("agent-{}.container", c.name));
    let wants = env
        .home
        .join(".config/systemd/user/default.target.wants")
        .join(c.unit());
    // "" lets sandboxctl find the generator the user manager runs, whatever the lane.
    for (step, quadlet) in [("Quadlet", ""), ("plain", "none"), ("Quadlet again", "")] {
        let out = sbx([
            "enable",
            &c.name,
            c.project_str(),
            "--agent",
            "shell",
            "--image",
            &env.image,
        ])
        .env("SANDBOXCTL_QUADLET", quadlet)
        .run()
        .success();
        let plain = quadlet == "none";
        assert_eq!(plain_file.exists(), plain, "{step}: {out}");
        assert_eq!(container_file.exists(), !plain, "{step}: {out}");
        assert_eq!(wants.symlink_metadata().is_ok(), plain, "{step}: {out}");
        let fragment = unit_property(&c.unit(), "FragmentPath");
        let want = if plain {
            plain_file.clone()
        } else {
            env.generator_dir().join(c.unit())
        };
        assert_eq!(Path::new(&fragment), want, "{step}: {out}");
        assert_eq!(unit_property(&c.unit(), "LoadState"), "loaded", "{step}");
        c.start();
        assert!(c.container_id().is_some(), "{step}: no container");
        sbx(["stop", &c.name]).run().success();
    }
}
