//! `sandboxctl doctor` on the real host: a healthy client passes, and each problem broken
//! on purpose (a corrupt policy, no generator, no user manager) is named with its fix and
//! fails the command. `--live` checks a running sandbox's isolation.

use crate::harness::{Client, Output, sbx};

/// The doctor line for `area` / `check` (e.g. `client acme` / `policy`).
fn line<'a>(out: &'a Output, area: &str, check: &str) -> &'a str {
    let mut in_area = false;
    for l in out.stdout.lines() {
        if !l.starts_with(' ') {
            in_area = l == area;
            continue;
        }
        // `  OUTCOME NAME             FOUND`: the name is columns 8 to 24.
        if in_area && l.get(8..24).map(str::trim) == Some(check) {
            return l;
        }
    }
    panic!("no `{check}` check under `{area}`:\n{out}");
}

fn outcome<'a>(out: &'a Output, area: &str, check: &str) -> &'a str {
    line(out, area, check)
        .split_whitespace()
        .next()
        .expect("an outcome")
}

#[test]
fn d1_healthy_client_passes_and_a_corrupt_policy_is_named() {
    let c = Client::new("d1");
    c.enable(&["--network", "allowlist"]);
    let area = format!("client {}", c.name);
    let out = sbx(["doctor"]).run().success();
    for check in [
        "unit file",
        "unit",
        "proxy socket",
        "proxy drop-in",
        "policy",
    ] {
        let l = line(&out, &area, check);
        assert!(l.trim_start().starts_with("ok"), "{check}: {l}\n{out}");
    }
    for check in [
        "podman",
        "quadlet",
        "storage",
        "storage space",
        "user manager",
        "image",
        "proxy units",
    ] {
        // In the plain-service lane Quadlet is not used, which doctor notes as a warning.
        let want = if check == "quadlet" && crate::harness::env().plain {
            "warn"
        } else {
            "ok"
        };
        assert_eq!(outcome(&out, "host", check), want, "{check}:\n{out}");
    }

    let policy = c.data_dir().join("config/network.toml");
    std::fs::write(&policy, "allow = [\n").expect("corrupt the policy");
    let out = sbx(["doctor"]).run().failure();
    assert_eq!(outcome(&out, &area, "policy"), "FAIL", "{out}");
    let l = line(&out, &area, "policy");
    assert!(l.contains("network.toml"), "names the file: {l}");
    assert!(
        out.stdout.contains("fix: fix "),
        "says how to fix it:\n{out}"
    );
    assert!(
        out.stderr.contains("doctor: 1 of") && out.stderr.contains("checks failed"),
        "{out}"
    );

    let out = sbx(["doctor", "--json"]).run().failure();
    let v = out.json();
    assert_eq!(v["failed"], 1, "{out}");
    assert!(
        v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["name"] == "policy" && c["outcome"] == "fail"),
        "{out}"
    );
}

#[test]
fn d2_missing_generator_and_unreachable_user_manager_are_named() {
    let out = sbx(["doctor"])
        .env("SANDBOXCTL_QUADLET", "/nonexistent/quadlet")
        .run()
        .failure();
    assert_eq!(outcome(&out, "host", "quadlet"), "FAIL", "{out}");
    assert!(out.stdout.contains("install Podman 4.4"), "{out}");

    let out = sbx(["doctor"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .run()
        .failure();
    assert_eq!(outcome(&out, "host", "user manager"), "FAIL", "{out}");
    assert!(
        line(&out, "host", "user manager").contains("/nonexistent/bus"),
        "{out}"
    );
}

#[test]
fn d3_live_checks_a_running_sandbox() {
    let c = Client::new("d3");
    c.enable(&["--network", "allowlist"]);
    let other = Client::new("d3o");
    other.enable(&["--network", "allowlist"]);
    // Not started: --live starts it.
    let out = sbx(["doctor", "--live", &c.name]).run().success();
    let area = format!("live {}", c.name);
    for check in [
        "container",
        "capabilities",
        "no_new_privs",
        "seccomp",
        "read-only root",
        "network",
        "other clients",
        "proxy",
        "denied host",
    ] {
        assert_eq!(outcome(&out, &area, check), "ok", "{check}:\n{out}");
    }
    assert!(line(&out, &area, "denied host").contains("403"), "{out}");

    // The same check fails for a sandbox that can reach another client's data.
    let theirs = other.data_dir().join("history");
    let theirs = theirs.to_str().expect("UTF-8");
    let _ = sbx(["stop", &c.name]).run();
    let enabled = sbx([
        "enable",
        &c.name,
        "--mount",
        &format!("{theirs}:/mnt/theirs"),
    ])
    .run();
    if enabled.status.success() {
        let out = sbx(["doctor", "--live", &c.name]).run().failure();
        assert_eq!(outcome(&out, &area, "other clients"), "FAIL", "{out}");
    } else {
        // The mount guard refuses it first, which is just as good.
        assert!(
            enabled.stderr.contains(&other.name) || enabled.stderr.contains("client"),
            "{enabled}"
        );
    }
}
