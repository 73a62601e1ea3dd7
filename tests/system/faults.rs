//! Faults on the real user manager (issue 14, part 3): the egress proxy killed in the
//! middle of a tunnel, the container's processes and its conmon killed, the image gone
//! at start, and (booted lane only) the user manager restarted under a running sandbox.
//! Each test says what must hold afterwards; data is compared byte for byte.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{
    Client, Cmd, Output, env, fill_up, podman, sbx, small_fs, systemctl, unique_name,
    unit_property, wait_for,
};
use crate::network::{Upstream, client_allowing, curl};

/// An upstream whose answer to `GET /hold` never ends: it sends a head announcing a
/// megabyte, one line, and then holds the connection until the other side closes.
struct HoldingUpstream {
    port: u16,
    /// Connections accepted, and those the other side closed.
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

const HOLD_LINE: &str = "holding the tunnel open";

impl HoldingUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the holding upstream");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let mut s = &stream;
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{HOLD_LINE}\n"
                    );
                    let _ = stream.set_read_timeout(Some(Duration::from_mins(2)));
                    let mut rest = Vec::new();
                    if (&stream).read_to_end(&mut rest).is_ok() {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self {
            port,
            accepted,
            closed,
        }
    }

    fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn main_pid(unit: &str) -> u32 {
    unit_property(unit, "MainPID").parse().unwrap_or(0)
}

fn kill9(pid: u32, what: &str) {
    assert!(pid > 1, "no pid for {what}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {what} ({pid}): {e}"));
}

/// The proxy's JSON lines, as `sandboxctl logs --network` shows them.
fn proxy_lines(c: &Client) -> Vec<serde_json::Value> {
    let out = sbx(["logs", &c.name, "--network", "-n", "500"]).run();
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The egress proxy killed with SIGKILL while the agent holds a tunnel through it: the
/// tunnel closes at once (both ends), the tunnel's decision line is in the log, and the
/// next connection from inside is served by a new proxy process on the socket systemd
/// kept listening.
#[test]
fn lf1_killed_proxy_closes_the_tunnel_and_a_fresh_one_serves_the_next() {
    let hold = HoldingUpstream::start();
    let up = Upstream::start("lf1");
    let c = client_allowing("lf1", &up);
    sbx(["allow", &c.name, "--private", &hold.authority()])
        .run()
        .success();
    c.start();
    let service = format!("sandboxctl-proxy@{}.service", c.name);
    let socket = format!("sandboxctl-proxy@{}.socket", c.name);

    // A tunnel (curl -p: CONNECT through the forwarder) left open in the background.
    let out = c.sh(&format!(
        "(env -u NO_PROXY -u no_proxy curl -sS -N -p --max-time 100 http://{}/hold \
         >/tmp/lf1.out 2>/tmp/lf1.err; echo $? >/tmp/lf1.rc) >/dev/null 2>&1 </dev/null &",
        hold.authority()
    ));
    assert!(out.status.success(), "{out}");
    wait_for(
        "the tunnel to carry the upstream's first line",
        Duration::from_secs(20),
        || {
            c.exec(&["cat", "/tmp/lf1.out"])
                .stdout
                .contains(HOLD_LINE)
                .then_some(())
        },
        || {
            c.sh("cat /tmp/lf1.out /tmp/lf1.err /tmp/lf1.rc")
                .to_string()
        },
    );
    assert_eq!(hold.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(hold.closed.load(Ordering::SeqCst), 0, "closed too early");
    let killed = main_pid(&service);
    assert!(
        c.exec(&["test", "-e", "/tmp/lf1.rc"]).status.code() == Some(1),
        "curl ended before the kill"
    );

    kill9(killed, &service);
    let t = Instant::now();
    let rc = wait_for(
        "curl inside to see its tunnel close",
        Duration::from_secs(30),
        || {
            let out = c.exec(&["cat", "/tmp/lf1.rc"]);
            out.status.success().then(|| out.stdout.trim().to_owned())
        },
        || c.sh("cat /tmp/lf1.out /tmp/lf1.err").to_string(),
    );
    let closed_in = t.elapsed();
    assert_ne!(rc, "0", "a cut tunnel must be an error for the client");
    wait_for(
        "the upstream to see its side of the tunnel closed",
        Duration::from_secs(10),
        || (hold.closed.load(Ordering::SeqCst) == 1).then_some(()),
        || "still open".to_owned(),
    );
    eprintln!("lf1: the tunnel closed {closed_in:?} after the kill (curl exit {rc})");

    // The decision for the tunnel was logged before the proxy died.
    let lines = proxy_lines(&c);
    assert!(
        lines.iter().any(|l| l["event"] == "decision"
            && l["decision"] == "allowed"
            && l["method"] == "CONNECT"
            && l["port"] == u64::from(hold.port)
            && l["id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&format!("{killed}-")))),
        "no decision line of the killed proxy ({killed}) for the tunnel:\n{lines:#?}"
    );

    // The socket stayed with systemd; the next connection gets a new proxy.
    assert_eq!(
        systemctl(["is-active", &socket]).run().stdout.trim(),
        "active",
        "the proxy's socket must outlive the proxy"
    );
    assert_eq!(
        curl(&c, &format!("http://{}/after-kill", up.authority())).stdout,
        up.body,
        "the next connection after the kill"
    );
    let fresh = main_pid(&service);
    assert!(
        fresh != 0 && fresh != killed,
        "no new proxy: MainPID {fresh}"
    );
    let lines = proxy_lines(&c);
    assert!(
        lines.iter().any(|l| l["event"] == "decision"
            && l["decision"] == "allowed"
            && l["id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&format!("{fresh}-")))),
        "the new proxy ({fresh}) did not log the next connection:\n{lines:#?}"
    );
}

/// Every file under `dir` with its bytes (symlinks as their target), sorted.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in entries.flatten() {
            let p = e.path();
            let kind = e.file_type().expect("file type");
            if kind.is_dir() {
                todo.push(p);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&p).expect("readlink");
                out.push((p, target.into_os_string().into_encoded_bytes()));
            } else {
                let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// The project and the client's data that the sandbox must never lose: the project
/// tree, the client's settings and policy, and marker files in its home and history.
fn snapshot(c: &Client) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = tree(&c.project);
    all.extend(tree(&c.data_dir().join("config")));
    for marker in ["history/lf-marker", "home/lf-marker"] {
        let p = c.data_dir().join(marker);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        all.push((p, bytes));
    }
    all
}

/// Waits until the unit has restarted the sandbox after a fault: a restart counted, a new
/// container running, its tmux session answering.
#[track_caller]
fn wait_back(c: &Client, what: &str, restarts_before: u32, id_before: Option<&str>) -> Duration {
    let t = Instant::now();
    wait_for(
        &format!("the sandbox back after {what}"),
        Duration::from_mins(2),
        || {
            let restarts: u32 = unit_property(&c.unit(), "NRestarts").parse().ok()?;
            let active = unit_property(&c.unit(), "ActiveState") == "active";
            let id = c.container_id();
            (restarts > restarts_before && active && id.is_some() && id.as_deref() != id_before)
                .then_some(())?;
            podman(["exec", &c.container(), "tmux", "has-session", "-t", "main"])
                .run()
                .status
                .success()
                .then_some(())
        },
        || c.diagnostics(),
    );
    t.elapsed()
}

/// What a fault is called, and how to inflict it.
type Fault<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// The container killed three ways — `podman kill`, its tmux server killed inside, its
/// conmon killed on the host — and each time systemd (`Restart=on-failure`) brings the
/// sandbox back with the project and the client's data unchanged.
#[test]
fn lf2_killed_container_tmux_and_conmon_come_back_with_data_intact() {
    let c = Client::new("lf2");
    c.enable(&[]);
    std::fs::create_dir_all(c.project.join("src/deep")).expect("mkdir");
    std::fs::write(c.project.join("README"), "project file\n").expect("write");
    let mut rng = fastrand::Rng::with_seed(14);
    let blob: Vec<u8> = std::iter::repeat_with(|| rng.u8(..))
        .take(1 << 20)
        .collect();
    std::fs::write(c.project.join("src/deep/blob.bin"), &blob).expect("write");
    std::os::unix::fs::symlink("deep/blob.bin", c.project.join("src/link")).expect("symlink");
    std::fs::write(c.data_dir().join("history/lf-marker"), "history\n").expect("write");
    std::fs::create_dir_all(c.data_dir().join("home")).expect("mkdir home");
    std::fs::write(c.data_dir().join("home/lf-marker"), "home\n").expect("write");
    c.start();
    // Something the agent wrote, too.
    c.sh(&format!(
        "printf 'written inside\\n' > '{}/inside.txt'",
        c.project_str()
    ))
    .success();
    let before = snapshot(&c);

    let faults: [Fault; 3] = [
        (
            "podman kill",
            Box::new(|| {
                podman(["kill", &c.container()]).run().success();
            }),
        ),
        (
            "the tmux server killed inside",
            Box::new(|| {
                // The server renames itself (`tmux: server`), its command line stays
                // `tmux -D …`. The exec may end with the container: its status does not
                // matter, `wait_back` tells whether the kill happened.
                let _ = c.exec(&["pkill", "-KILL", "-f", "^tmux -D"]);
            }),
        ),
        (
            "conmon killed",
            Box::new(|| {
                let out = podman([
                    "container",
                    "inspect",
                    "--format",
                    "{{.State.ConmonPid}}",
                    &c.container(),
                ])
                .run()
                .success();
                let pid: u32 = out.stdout.trim().parse().expect("conmon pid");
                kill9(pid, "conmon");
            }),
        ),
    ];
    for (what, fault) in &faults {
        let restarts: u32 = unit_property(&c.unit(), "NRestarts")
            .parse()
            .expect("NRestarts");
        let id = c.container_id();
        fault();
        let took = wait_back(&c, what, restarts, id.as_deref());
        eprintln!("lf2: back {took:?} after {what}");
        assert!(
            before == snapshot(&c),
            "the project or the client's data changed after {what}"
        );
        let out = c.exec(&["cat", &format!("{}/inside.txt", c.project_str())]);
        assert_eq!(out.stdout, "written inside\n", "after {what}:\n{out}");
    }
}

/// An image tag of the test image's that this test removes (never the shared image
/// itself); untagged again on drop.
struct OwnTag(String);

impl OwnTag {
    fn new() -> Self {
        let tag = format!("localhost/agent-sandbox:{}", unique_name("lf3"));
        podman(["tag", &env().image, &tag]).run().success();
        Self(tag)
    }

    /// Removes this name only. (`podman untag NAME` without a second argument removes
    /// every name of the image, the shared one included: always name what goes.)
    fn remove(&self) {
        podman(["untag", &self.0, &self.0]).run().success();
        assert!(
            podman(["image", "exists", &env().image])
                .run()
                .status
                .success(),
            "removing {} removed {} too",
            self.0,
            env().image
        );
        assert!(
            !podman(["image", "exists", &self.0]).run().status.success(),
            "{} still exists",
            self.0
        );
    }
}

impl Drop for OwnTag {
    fn drop(&mut self) {
        if podman(["image", "exists", &self.0]).run().status.success() {
            let _ = podman(["untag", &self.0, &self.0]).run();
        }
    }
}

/// Runs a command that must fail, and within seconds rather than at a timeout.
fn fails_within_seconds(cmd: Cmd) -> Output {
    let out = cmd.timeout(Duration::from_mins(1)).run().failure();
    assert!(
        out.elapsed < Duration::from_secs(30),
        "it took {:?}:\n{out}",
        out.elapsed
    );
    out
}

/// The client's image gone from the store: `start` fails within seconds naming the
/// image, and `status` says the image is missing and what to do; with the image back,
/// `start` works again.
#[test]
fn lf3_missing_image_gives_a_clear_error_in_start_and_status() {
    let tag = OwnTag::new();
    let c = Client::new("lf3");
    c.enable_cmd(&tag.0).run().success();
    c.start();
    sbx(["stop", &c.name]).run().success();
    tag.remove();

    let out = fails_within_seconds(sbx(["start", &c.name]));
    assert!(
        out.stderr.contains(&tag.0),
        "the error does not name the image:\n{out}"
    );
    assert_ne!(unit_property(&c.unit(), "ActiveState"), "active");

    let out = sbx(["status", &c.name]).run().success();
    let want = format!("{}: image {} is not in Podman's store", c.name, tag.0);
    assert!(
        out.stdout.lines().any(|l| l.starts_with(&want)),
        "`status` does not say the image is missing:\n{out}"
    );
    let v = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(v["image_missing"], true, "{v}");

    // systemd retries the start (`Restart=on-failure`), but no longer forever: the image
    // is a `localhost/` one, never pulled, so each try fails at once and systemd's start
    // limit (5 starts in 10 s) ends the retries. (With a pull, each try took ~3 s of
    // pull retries and the limit was never reached.) While a retry is pending the unit
    // is `activating` (`auto-restart`); `failed` means systemd gave up. (systemd 252
    // says `Result=start-limit-hit`, 257 keeps `exit-code`.)
    wait_for(
        "systemd to give up on the missing image",
        Duration::from_mins(1),
        || (unit_property(&c.unit(), "ActiveState") == "failed").then_some(()),
        || {
            format!(
                "{} {}, NRestarts {}\n{}",
                unit_property(&c.unit(), "ActiveState"),
                unit_property(&c.unit(), "Result"),
                unit_property(&c.unit(), "NRestarts"),
                c.diagnostics()
            )
        },
    );
    sbx(["stop", &c.name]).run().success();
    podman(["tag", &env().image, &tag.0]).run().success();
    c.start();
    let v = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(v["image_missing"], false, "{v}");
}

/// A Podman store of its own on the test user's 1 MiB file system, seeing the real store's
/// images read-only (`additionalimagestores`), for the user manager's units and for
/// this process's commands through `CONTAINERS_STORAGE_CONF`. Undone on drop.
struct SmallStore {
    conf: PathBuf,
    graph: PathBuf,
}

impl SmallStore {
    fn new(name: &str) -> Self {
        let real = podman(["info", "--format", "{{.Store.GraphRoot}}"])
            .run()
            .success()
            .stdout
            .trim()
            .to_owned();
        let graph = small_fs().join(name);
        let conf = env()
            .home
            .join(format!("sbx-system-tests/{name}-storage.conf"));
        std::fs::create_dir_all(conf.parent().expect("a parent")).expect("conf dir");
        // Rootless Podman takes the store's path from `rootless_storage_path`.
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\nrootless_storage_path = \"{}\"\n\
                 runroot = \"{}\"\n[storage.options]\nadditionalimagestores = [\"{real}\"]\n",
                graph.display(),
                env().runtime_dir.join(format!("{name}-run")).display()
            ),
        )
        .expect("write the storage conf");
        let store = Self { conf, graph };
        systemctl(["set-environment", &store.env()]).run().success();
        // The store's own files (database, records), before the file system fills.
        let out = store.podman(["info", "--format", "{{.Store.GraphRoot}}"]);
        assert_eq!(out.trim(), store.graph.to_str().expect("UTF-8"));
        store
    }

    fn env(&self) -> String {
        format!("CONTAINERS_STORAGE_CONF={}", self.conf.display())
    }

    fn podman<const N: usize>(&self, args: [&str; N]) -> String {
        podman(args)
            .env("CONTAINERS_STORAGE_CONF", &self.conf)
            .run()
            .success()
            .stdout
    }
}

impl Drop for SmallStore {
    fn drop(&mut self) {
        let _ = systemctl(["unset-environment", "CONTAINERS_STORAGE_CONF"]).run();
        // Podman's overlay driver bind-mounts its `overlay/` dir onto itself in the
        // rootless user namespace (the one its pause process keeps) and unmounts it when
        // the process ends cleanly. The unit's podman, killed by `stop` during one of
        // systemd's retries, or two podmans racing on that mount, leave it mounted, and
        // `rm` then fails with EBUSY. Unmount whatever is mounted below the store first.
        let mountinfo = podman(["unshare", "cat", "/proc/self/mountinfo"]).run();
        let mut below: Vec<&str> = mountinfo
            .stdout
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.graph))
            .collect();
        below.sort_unstable_by(|a, b| b.cmp(a));
        if !below.is_empty() {
            let out = podman(["unshare", "umount"]).args(&below).run();
            if !out.status.success() {
                eprintln!("unmounting in the small store failed:\n{out}");
            }
        }
        // Files of the container's user namespace are removed from inside it, by a
        // podman on the real store (one on this store would make its lock files again).
        let out = podman(["unshare", "rm", "-rf"]).arg(&self.graph).run();
        if !out.status.success() {
            eprintln!("removing the small store failed:\n{out}");
        }
        let _ = std::fs::remove_file(&self.conf);
    }
}

/// What is in `dir` and which processes run, for a test that expected `dir` gone.
fn leftovers(dir: &Path) -> String {
    let find = Cmd::new("find").arg(dir).arg("-ls").run();
    let ps = Cmd::new("ps").args(["-eo", "pid,ppid,lstart,args"]).run();
    format!(
        "{}\n{}\nprocesses:\n{}",
        find.stdout, find.stderr, ps.stdout
    )
}

/// Podman's store full when a sandbox starts: `start` fails within seconds and says
/// first that the store is full, where, and how to free space; `status` and `doctor`
/// say the same; with room again, `start` works and `status` no longer says so.
#[test]
fn lf5_full_podman_storage_gives_a_clear_error_in_start_status_and_doctor() {
    let c = Client::new("lf5");
    c.enable(&["--network", "none"]);
    let store = SmallStore::new(&c.name);
    let graph = store.graph.to_str().expect("UTF-8").to_owned();
    let filler = fill_up(&small_fs(), &format!("{}-filler", c.name));
    let with_store = |args: &[&str]| sbx(args).env("CONTAINERS_STORAGE_CONF", &store.conf);

    let out = fails_within_seconds(with_store(&["start", &c.name]));
    let want = format!("sandboxctl: Podman's storage {graph} is full (");
    assert!(
        out.stderr.starts_with(&want),
        "the error does not lead with the full store:\n{out}"
    );
    assert!(
        out.stderr.contains("podman system prune"),
        "no fix named:\n{out}"
    );
    assert_ne!(unit_property(&c.unit(), "ActiveState"), "active");

    let out = with_store(&["status", &c.name]).run().success();
    let want = format!("{}: Podman's storage {graph} is full (", c.name);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&want) && l.contains("cannot start")),
        "`status` does not say the store is full:\n{out}"
    );
    let v = with_store(&["status", &c.name, "--json"])
        .run()
        .success()
        .json();
    assert_eq!(v["storage_full"]["graph_root"], graph.as_str(), "{v}");
    let out = with_store(&["doctor"]).run().failure();
    assert!(
        out.stdout.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.starts_with(&["FAIL", "storage", "space"]) && l.contains(&graph)
        }),
        "`doctor` does not fail the storage space check:\n{out}"
    );

    // Room again: stop systemd's retries and free the space. The start then runs on the
    // real store: Podman 5 copies the image's layers into a store it uses with another
    // ID mapping, more than the 1 MiB here holds (Podman 4.3 starts on it).
    sbx(["stop", &c.name]).run().success();
    std::fs::remove_file(&filler).expect("remove the filler");
    let store_dir = store.graph.clone();
    drop(store);
    assert!(
        !store_dir.exists(),
        "the small store is left behind:\n{}",
        leftovers(&store_dir)
    );
    sbx(["start", &c.name]).run().success();
    assert_eq!(unit_property(&c.unit(), "ActiveState"), "active");
    let v = sbx(["status", &c.name, "--json"]).run().success().json();
    assert!(v.get("storage_full").is_none(), "{v}");
    sbx(["stop", &c.name]).run().success();
}

/// The client that lives through the booted lane's user-manager restart.
fn restart_client() -> Client {
    Client::named("boot-um-restart".to_owned())
}

const RESTART_MARK: &str = "written before the user manager restarted";

/// Before `systemctl restart user@UID` (run by the booted lane as root): a running
/// allowlist client with data in its project and its history.
#[test]
#[ignore = "booted lane only"]
fn lf4_user_manager_restart_1_before() {
    crate::booted::booted_host();
    let c = restart_client();
    c.enable(&[]);
    c.start();
    let out = c.sh(&format!(
        "echo '{RESTART_MARK}' >'{0}/marker' && echo '{RESTART_MARK}' >\"$HOME/.history/marker\"",
        c.project_str()
    ));
    assert!(out.status.success(), "{out}");
    std::fs::write(
        env().home.join("sbx-system-tests/lf4-container-id"),
        c.container_id().expect("a container"),
    )
    .expect("write the container id");
    // The lane restarts the user manager and runs the second half, which purges it.
    std::mem::forget(c);
}

/// After the user manager restarted: the sandbox runs again (a new container, since the
/// manager stopped every unit), its tmux session answers, the data is there, and the
/// proxy serves it.
#[test]
#[ignore = "booted lane only"]
fn lf4_user_manager_restart_2_after() {
    crate::booted::booted_host();
    let c = restart_client();
    wait_for(
        "the sandbox to run again after the user manager restarted",
        Duration::from_mins(1),
        || (unit_property(&c.unit(), "ActiveState") == "active").then_some(()),
        || c.diagnostics(),
    );
    let id_file = env().home.join("sbx-system-tests/lf4-container-id");
    let before = std::fs::read_to_string(&id_file).expect("the container id from before");
    let _ = std::fs::remove_file(&id_file);
    assert_ne!(
        c.container_id().as_deref(),
        Some(before.trim()),
        "the same container: the user manager did not restart"
    );
    wait_for(
        "the tmux session main",
        Duration::from_secs(30),
        || {
            podman(["exec", &c.container(), "tmux", "has-session", "-t", "main"])
                .run()
                .status
                .success()
                .then_some(())
        },
        || c.diagnostics(),
    );
    let project = std::fs::read_to_string(c.project.join("marker")).unwrap_or_default();
    assert_eq!(project.trim(), RESTART_MARK, "the project file");
    let out = c.sh("cat \"$HOME/.history/marker\"");
    assert_eq!(out.stdout.trim(), RESTART_MARK, "the client's data:\n{out}");
    let up = Upstream::start("lf4");
    sbx(["allow", &c.name, "--private", &up.authority()])
        .run()
        .success();
    assert_eq!(
        curl(&c, &format!("http://{}/lf4", up.authority())).stdout,
        up.body,
        "the proxy after the restart"
    );
}
