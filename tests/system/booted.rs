//! What only a booted host shows: systemd as PID 1 with journald, logind and linger, and
//! Podman with its own Quadlet (issue "Every host a user has", part 4). These run in the
//! booted Debian 13 lane (`tests/boot/run.sh`), which runs them by name with `--ignored`
//! at the right moment (the reboot pair around a reboot, the no-network check with
//! `network-online.target` stopped). On any other host they are ignored, never passed;
//! run there by hand they fail at the first check of the host.

use std::time::{Duration, Instant};

use crate::harness::{Client, Cmd, env, podman, sbx, systemctl, unit_property, wait_for};
use crate::network::{Upstream, client_allowing, curl};

/// Panics unless this is the booted lane's host: systemd is PID 1 and journald runs.
#[track_caller]
pub(crate) fn booted_host() {
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    assert_eq!(
        init.trim(),
        "systemd",
        "this test needs a host booted with systemd as PID 1 (run it through tests/boot/run.sh)"
    );
    assert!(
        std::path::Path::new("/run/systemd/journal/socket").exists(),
        "this test needs journald (run it through tests/boot/run.sh)"
    );
}

fn user_name() -> String {
    std::env::var("USER").expect("USER is set by the lane")
}

/// `sandboxctl logs CLIENT` and `logs --network` read the journal (there is no log file
/// on such a host), and a failed start quotes the unit's last journal lines.
#[test]
#[ignore = "booted lane only"]
fn b1_logs_and_failed_starts_read_the_journal() {
    booted_host();
    let up = Upstream::start("b1");
    let c = client_allowing("b1", &up);
    c.start();
    let log_file = env().runtime_dir.join(format!("{}.log", c.container()));
    let unit_text = std::fs::read_to_string(c.unit_file()).expect("read the unit");
    assert!(
        !unit_text.contains("StandardOutput=append:"),
        "a unit on a host with journald must log to the journal:\n{unit_text}"
    );

    let out = sbx(["logs", &c.name, "-n", "50"]).run().success();
    assert!(
        out.stdout.contains(&c.unit()) && !out.stdout.contains("==> podman logs"),
        "`logs` must show the unit's journal (systemd's lines name the unit), not the file fallback:\n{out}"
    );

    let denied = format!("denied-{}.example.com", std::process::id());
    let refused = curl(&c, &format!("https://{denied}/"));
    assert!(!refused.status.success(), "{refused}");
    assert_eq!(
        curl(&c, &format!("http://{}/b1", up.authority())).stdout,
        up.body
    );
    // journald may take a moment to hand the proxy's lines to readers.
    let shown = wait_for(
        "the proxy's decisions in `logs --network`",
        Duration::from_secs(15),
        || {
            let out = sbx(["logs", &c.name, "--network", "-n", "100"]).run();
            (out.status.success() && out.stdout.contains(&denied)).then_some(out)
        },
        || {
            sbx(["logs", &c.name, "--network", "-n", "100"])
                .run()
                .to_string()
        },
    );
    let line = shown
        .stdout
        .lines()
        .find(|l| l.contains(&denied))
        .expect("found above");
    // One JSON object a line, as without journald (no journal prefix).
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("a decision is one JSON object ({e}): {line}\n{shown}"));
    assert_eq!(v["client"], c.name.as_str(), "{line}");
    assert_eq!(v["decision"], "denied", "{line}");
    let file = env()
        .runtime_dir
        .join(format!("sandboxctl-proxy-{}.log", c.name));
    assert!(
        !file.exists() && !log_file.exists(),
        "no log files where journald runs ({} / {})",
        file.display(),
        log_file.display()
    );

    // A start that fails: the mount source vanished after `enable`.
    let mut f = Client::new("b1f");
    let gone = f.scratch_dir("gone");
    f.enable(&["--mount", &format!("{}:/mnt/gone", gone.display())]);
    std::fs::remove_dir(&gone).expect("remove the mount source");
    let out = sbx(["start", &f.name])
        .timeout(Duration::from_mins(1))
        .run()
        .failure();
    assert!(
        out.stderr.contains(gone.to_str().expect("UTF-8")),
        "the failed start must quote the unit's journal (podman names the missing path):\n{out}"
    );
    let unit_log = env().runtime_dir.join(format!("{}.log", f.container()));
    assert!(
        !unit_log.exists(),
        "the lines must come from the journal, yet {} exists",
        unit_log.display()
    );
}

/// `enable` says that linger is on (the lane turned it on with `loginctl enable-linger`),
/// i.e. that the sandboxes start at boot.
#[test]
#[ignore = "booted lane only"]
fn b2_enable_reports_linger() {
    booted_host();
    let user = user_name();
    assert!(
        std::path::Path::new("/var/lib/systemd/linger")
            .join(&user)
            .exists(),
        "the lane turns linger on for {user} before the tests"
    );
    let c = Client::new("b2");
    let out = c.enable(&[]);
    let want = format!(
        "linger is on for {user}: the sandboxes start at boot and keep running when you log out"
    );
    assert!(
        out.stdout.lines().any(|l| l == want),
        "`enable` must say linger is on:\n{out}"
    );
}

/// The units rendered on this host carry only the adaptations it needs: systemd is PID 1
/// (no `DefaultDependencies=false` for it: an `open` client keeps Quadlet's wait for the
/// network), Podman ≥ 4.4 (no cid clean-up), journald (no log file); `--cgroups=disabled`
/// only where cgroups are v1, as they still are inside nspawn on a v1 machine. Both units
/// start as rendered.
#[test]
#[ignore = "booted lane only"]
fn b3_units_carry_only_the_adaptations_this_host_needs() {
    booted_host();
    let open = Client::new("b3o");
    let render = sbx(["render", &open.name, open.project_str(), "--agent", "shell"])
        .run()
        .success();
    assert!(
        render.stdout.contains("systemd is PID 1") && render.stdout.contains("journald present"),
        "`render` must detect the booted host:\n{render}"
    );
    let v2 = rustix::fs::statfs("/sys/fs/cgroup").is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast, clippy::cast_lossless)]
        let kind = s.f_type as i64;
        kind == 0x6367_7270
    });
    let allowlist = Client::new("b3a");
    open.enable(&["--network", "open"]);
    allowlist.enable(&["--network", "allowlist"]);
    for (c, mode) in [(&open, "open"), (&allowlist, "allowlist")] {
        let unit = std::fs::read_to_string(c.unit_file()).expect("read the unit");
        for absent in ["%N.cid", "StandardOutput=append:", "systemd is not PID 1"] {
            assert!(
                !unit.contains(absent),
                "{absent} is an adaptation this host does not need ({mode}):\n{unit}"
            );
        }
        assert_eq!(
            unit.contains("--cgroups=disabled"),
            !v2,
            "--cgroups=disabled belongs in the unit exactly when cgroups are v1 (v2 here: {v2}):\n{unit}"
        );
        if mode == "open" {
            assert!(
                !unit.contains("DefaultDependencies=false"),
                "an open client waits for the network where systemd is PID 1:\n{unit}"
            );
        }
    }
    open.start();
    allowlist.start();
}

/// P9: from `sandboxctl start` to the agent's tmux session answering, on this host
/// (median of five starts of an allowlist client; printed for the lane's log).
#[test]
#[ignore = "booted lane only"]
fn b4_p9_start_to_tmux_ready() {
    booted_host();
    let c = Client::new("b4");
    c.enable(&[]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        sbx(["start", &c.name]).run().success();
        wait_for_tmux(&c, "the tmux session main");
        times.push(t0.elapsed());
        sbx(["stop", &c.name]).run().success();
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "P9 start -> tmux ready (booted Debian 13, median of {}): {:.0} ms (all: {:?})",
        times.len(),
        median.as_secs_f64() * 1000.0,
        times
            .iter()
            .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
    );
    assert!(
        median < Duration::from_secs(15),
        "P9 {median:?} is far beyond a usable start"
    );
}

/// With `network-online.target` not reached (the lane stops it), an allowlist client
/// needs no network: `start` and `restart` complete in seconds and its proxy works, while
/// an `open` client still waits for the network as Quadlet makes it.
#[test]
#[ignore = "booted lane only"]
fn b5_sandbox_without_network_starts_at_once() {
    booted_host();
    let state = Cmd::new("systemctl")
        .args(["is-active", "network-online.target"])
        .run();
    assert_ne!(
        state.stdout.trim(),
        "active",
        "the lane stops network-online.target before this test:\n{state}"
    );
    // A previous start may have let Quadlet's user-side wait finish; make it wait again.
    let _ = systemctl(["stop", "podman-user-wait-network-online.service"]).run();

    let open = Client::new("b5o");
    open.enable(&["--network", "open"]);
    systemctl(["start", "--no-block", &open.unit()])
        .run()
        .success();
    std::thread::sleep(Duration::from_secs(5));
    assert_ne!(
        unit_property(&open.unit(), "ActiveState"),
        "active",
        "an open client waits for network-online.target"
    );
    let jobs = systemctl(["list-jobs", "--no-legend", "--plain"])
        .run()
        .success();
    assert!(
        jobs.stdout.contains(&open.unit()),
        "the open client's start job must be waiting:\n{jobs}"
    );
    systemctl(["stop", &open.unit()]).run().success();

    let up = Upstream::start("b5");
    let c = client_allowing("b5", &up);
    for verb in ["start", "restart"] {
        let run = std::panic::AssertUnwindSafe(|| {
            sbx([verb, &c.name]).timeout(Duration::from_secs(30)).run()
        });
        let out = std::panic::catch_unwind(run).unwrap_or_else(|_| {
            panic!(
                "`{verb}` of an allowlist client did not complete within 30 s without network-online.target; what the user manager waits for:\n{}",
                systemctl(["list-jobs", "--no-pager"]).run()
            )
        });
        let out = out.success();
        assert!(
            out.elapsed < Duration::from_secs(15),
            "`{verb}` of an allowlist client without network-online took {:?}:\n{out}",
            out.elapsed
        );
        assert_eq!(
            unit_property(&c.unit(), "ActiveState"),
            "active",
            "{}",
            c.diagnostics()
        );
        assert_eq!(
            curl(&c, &format!("http://{}/b5", up.authority())).stdout,
            up.body,
            "the proxy works without network-online"
        );
    }
}

/// The client that survives the lane's reboot.
fn reboot_client() -> Client {
    Client::named("boot-reboot".to_owned())
}

const REBOOT_MARK: &str = "written before the reboot";

/// Before the reboot: a running client with data in its project and its history dir.
#[test]
#[ignore = "booted lane only"]
fn b6_reboot_1_before() {
    booted_host();
    let c = reboot_client();
    c.enable(&[]);
    c.start();
    let out = c.sh(&format!(
        "echo '{REBOOT_MARK}' >'{0}/marker' && echo '{REBOOT_MARK}' >\"$HOME/.history/marker\"",
        c.project_str()
    ));
    assert!(out.status.success(), "{out}");
    // The lane reboots and runs the second half; it purges the client.
    std::mem::forget(c);
}

/// After the reboot, with nobody logged in: the sandbox runs again (linger started the
/// user manager at boot, which started the unit), its tmux session answers and the data
/// written before is there.
#[test]
#[ignore = "booted lane only"]
fn b6_reboot_2_after() {
    booted_host();
    let c = reboot_client();
    // Linger gives the user's manager a session of class "manager"; a login would add
    // one of class "user".
    let sessions = Cmd::new("loginctl")
        .args(["list-sessions", "--json=short"])
        .run()
        .success();
    let logins: Vec<_> = sessions
        .json()
        .as_array()
        .expect("a JSON array of sessions")
        .iter()
        .filter(|s| s["class"].as_str().is_some_and(|c| c.starts_with("user")))
        .cloned()
        .collect();
    assert!(
        logins.is_empty(),
        "nobody may be logged in for this check:\n{sessions}"
    );
    wait_for(
        "the sandbox to be running after the reboot",
        Duration::from_mins(1),
        || (unit_property(&c.unit(), "ActiveState") == "active").then_some(()),
        || c.diagnostics(),
    );
    wait_for_tmux(&c, "the tmux session main after the reboot");
    let project = std::fs::read_to_string(c.project.join("marker")).unwrap_or_default();
    assert_eq!(project.trim(), REBOOT_MARK, "the project file");
    let out = c.sh("cat \"$HOME/.history/marker\"");
    assert_eq!(out.stdout.trim(), REBOOT_MARK, "the client's data:\n{out}");
}

/// Waits up to 30 s until the sandbox's tmux session `main` answers.
#[track_caller]
fn wait_for_tmux(c: &Client, what: &str) {
    wait_for(
        what,
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
}
