//! Resource limits on the real host (issue 15): where the user's manager has the cgroup
//! v2 controllers delegated, `--memory` and `--pids` bound the sandbox and leave another
//! client running; anywhere else (this test machine and its booted lane: cgroup v1)
//! `enable` refuses them with the reason and the drop-in that delegates the controllers,
//! writing nothing, and `doctor` says so.

use std::time::Duration;

use crate::harness::{Client, env, podman, sbx, unit_property, wait_for};

/// What this host gives the user's manager: cgroup v2, and the delegated controllers.
fn delegation() -> (bool, Vec<String>) {
    let v2 = rustix::fs::statfs("/sys/fs/cgroup").is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast, clippy::cast_lossless)]
        let kind = s.f_type as i64;
        kind == 0x6367_7270
    });
    let uid = env().uid;
    let controllers = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    ))
    .unwrap_or_default();
    (
        v2,
        controllers.split_whitespace().map(str::to_owned).collect(),
    )
}

fn enforceable() -> bool {
    let (v2, controllers) = delegation();
    v2 && ["memory", "pids", "cpu"]
        .iter()
        .all(|c| controllers.iter().any(|h| h == c))
}

/// Where the limits cannot apply, `enable` refuses them in one line saying why and how
/// to delegate, and leaves no unit and no client behind; `doctor` reports it. A client
/// without limits still works, and `status --json` says it has none.
#[test]
fn ul_refused_where_the_controllers_are_not_delegated() {
    let (v2, controllers) = delegation();
    eprintln!("cgroup v2: {v2}; delegated to the user's manager: {controllers:?}");
    if enforceable() {
        // Covered by ul_limits_bound_… on such a host.
        return ul_limits_bound_memory_and_pids_and_spare_the_other_client();
    }
    let c = Client::new("ul1");
    let out = sbx([
        "enable",
        &c.name,
        c.project_str(),
        "--agent",
        "shell",
        "--image",
        &env().image,
        "--memory",
        "512m",
        "--pids",
        "256",
    ])
    .run()
    .failure();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{out}");
    for want in [
        "cannot apply --memory, --pids",
        "Delegate=cpu cpuset io memory pids",
        "/etc/systemd/system/user@.service.d/delegate.conf",
    ] {
        assert!(out.stderr.contains(want), "{want}:\n{out}");
    }
    assert!(!c.unit_file().exists(), "a unit was written:\n{out}");
    assert!(
        !c.data_dir().join("config/sandbox.toml").exists(),
        "settings were written:\n{out}"
    );
    assert_eq!(unit_property(&c.unit(), "LoadState"), "not-found");

    let doctor = sbx(["doctor"]).run();
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["warn", "cgroups"]))
        .unwrap_or_else(|| panic!("no cgroups warning:\n{doctor}"));
    assert!(line.contains("enable refuses --memory"), "{line}");

    c.enable(&[]);
    let v = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(v["limits"], serde_json::json!({}), "{v}");
}

/// On a host with the controllers delegated: the limits reach the container's cgroup, a
/// process that exceeds the memory limit is killed and the sandbox stays up (or systemd
/// brings it back), a fork bomb stops at the pid limit, and another client keeps
/// running throughout. Refused (`ul_refused_…`) where they cannot apply.
#[test]
fn ul_limits_bound_memory_and_pids_and_spare_the_other_client() {
    if !enforceable() {
        // ul_refused_… proves the refusal on such a host; nothing can be bounded here.
        return ul_refused_where_the_controllers_are_not_delegated();
    }
    let other = Client::new("ul2o");
    other.enable(&[]);
    other.start();
    let c = Client::new("ul2");
    c.enable(&["--memory", "256m", "--pids", "128", "--cpus", "1"]);
    c.start();
    let v = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(
        v["limits"],
        serde_json::json!({"memory": "256m", "cpus": "1", "pids": 128}),
        "{v}"
    );
    let memory_max = c.exec(&["cat", "/sys/fs/cgroup/memory.max"]).success();
    assert_eq!(memory_max.stdout.trim(), "268435456", "{memory_max}");
    let pids_max = c.exec(&["cat", "/sys/fs/cgroup/pids.max"]).success();
    assert_eq!(pids_max.stdout.trim(), "128", "{pids_max}");

    // `tail` keeps its whole (newline-free) input: 1 GiB against 256 MiB.
    let hog = c.sh("head -c 1g /dev/zero | tail -c 1g > /dev/null");
    assert!(!hog.status.success(), "the memory hog survived:\n{hog}");
    wait_for(
        "the limited sandbox to be active again",
        Duration::from_mins(1),
        || (unit_property(&c.unit(), "ActiveState") == "active").then_some(()),
        || c.diagnostics(),
    );

    // 300 sleepers against a limit of 128 tasks: the shell cannot fork them all.
    let bomb = c.sh("n=0; while [ $n -lt 300 ]; do sleep 60 & n=$((n+1)); done; wait");
    assert!(
        !bomb.status.success() || bomb.stderr.contains("fork"),
        "300 processes started under a limit of 128:\n{bomb}"
    );
    let count = c.sh("ls /proc | grep -c '^[0-9]'").success();
    let n: u32 = count.stdout.trim().parse().unwrap_or(0);
    assert!(n <= 128, "{n} processes under a limit of 128");
    let _ = c.sh("pkill sleep");
    assert_eq!(unit_property(&other.unit(), "ActiveState"), "active");
    other.exec(&["true"]).success();
}

/// `status CLIENT` names the image the sandbox runs (ID, agent versions); once the image
/// name points to a rebuilt image it says a newer one waits, and a restart runs it.
/// The rebuild is offline: one `LABEL` layer on top of the test image.
#[test]
fn ul_status_shows_the_running_image_and_a_newer_one() {
    let mut c = Client::new("ul3");
    let tag = format!("localhost/sbx-{}:img", c.name);
    podman(["tag", &env().image, &tag]).run().success();
    let id = |image: &str| {
        podman(["image", "inspect", "--format", "{{.Id}}", image])
            .run()
            .success()
            .stdout
            .trim()
            .to_owned()
    };
    let first = id(&tag);
    c.enable_cmd(&tag).run().success();
    c.start();
    let state = |c: &Client| {
        sbx(["status", &c.name, "--json"]).run().success().json()["image_state"].clone()
    };
    let s = state(&c);
    assert_eq!(s["id"], format!("sha256:{first}"), "{s}");
    assert_eq!(s["newer_image"], false, "{s}");
    assert_ne!(s["claude_version"], "unknown", "{s}");
    let old_codex = s["codex_version"].clone();

    let dir = c.scratch_dir("build");
    std::fs::write(
        dir.join("Containerfile"),
        format!("FROM {tag}\nLABEL io.sandboxctl.codex.version=9.9.9-ul3\n"),
    )
    .expect("write Containerfile");
    podman([
        "build",
        "--pull=never",
        "-t",
        &tag,
        dir.to_str().expect("UTF-8"),
    ])
    .timeout(Duration::from_mins(2))
    .run()
    .success();
    let second = id(&tag);
    assert_ne!(first, second);
    let s = state(&c);
    assert_eq!(s["id"], format!("sha256:{first}"), "still the old one: {s}");
    assert_eq!(s["newer_image"], true, "{s}");
    assert_eq!(s["codex_version"], old_codex, "{s}");
    let text = sbx(["status", &c.name]).run().success();
    assert!(
        text.stdout.contains("a newer image has this name"),
        "{text}"
    );

    sbx(["restart", &c.name]).run().success();
    let s = state(&c);
    assert_eq!(s["id"], format!("sha256:{second}"), "{s}");
    assert_eq!(s["newer_image"], false, "{s}");
    assert_eq!(s["codex_version"], "9.9.9-ul3", "{s}");

    let name = c.name.clone();
    drop(c);
    let _ = sbx(["disable", &name, "--purge"]).run();
    // By name only: the first image is the shared test image itself (its ID has
    // `SANDBOXCTL_TEST_IMAGE`'s name too), which must stay. Removing the tag removes
    // the rebuilt image, which has no other name.
    podman(["rmi", &tag]).run().success();
    assert_eq!(
        id(&env().image),
        first,
        "the shared test image must be untouched"
    );
}
