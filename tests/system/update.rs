//! `sandboxctl update` on the real host (issue 15): a client moves to the image its name
//! points to after a build, keeping its data; a busy client is skipped; a new image
//! that does not start is rolled back. Images here are small layers on the test image,
//! built in the test user's store without network.

use std::path::Path;
use std::time::Duration;

use crate::harness::{Client, env, podman, sbx, unit_property, wait_for};

/// Removes the tags and images a test made, after its client is gone.
struct Images {
    names: Vec<String>,
}

impl Drop for Images {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = podman(["rmi", "--force", name]).run();
        }
    }
}

/// Builds `FROM <test image>` plus a file `/etc/sandbox-build` holding `mark`, and
/// `extra` (e.g. a CMD that fails), as `tag`; returns its ID.
fn build(dir: &Path, tag: &str, mark: &str, extra: &str) -> String {
    std::fs::write(dir.join("sandbox-build"), format!("{mark}\n")).expect("write");
    std::fs::write(
        dir.join("Containerfile"),
        format!(
            "FROM {}\nCOPY sandbox-build /etc/sandbox-build\n{extra}\n",
            env().image
        ),
    )
    .expect("write");
    podman(["build", "--quiet", "--tag", tag])
        .arg(dir)
        .timeout(Duration::from_mins(3))
        .run()
        .success();
    let out = podman(["image", "inspect", "--format", "{{.Id}}", tag])
        .run()
        .success();
    out.stdout.trim().to_owned()
}

/// Waits until every tmux session of `c` is idle (the main session's shell has
/// started: on a loaded host `agent-session` takes seconds before it runs the shell,
/// and `update` rightly counts a session still starting as busy).
fn wait_idle(c: &Client) {
    wait_for(
        "the sandbox's sessions to be idle",
        Duration::from_mins(1),
        || {
            let out = sbx(["sessions", &c.name, "--json"]).run();
            let rows = serde_json::from_str::<serde_json::Value>(&out.stdout).ok()?;
            rows.as_array()?
                .iter()
                .all(|r| r["activity"] == "at a shell prompt")
                .then_some(())
        },
        || format!("{}", sbx(["sessions", &c.name]).run()),
    );
}

fn runs(c: &Client) -> String {
    c.exec(&["cat", "/etc/sandbox-build"])
        .success()
        .stdout
        .trim()
        .to_owned()
}

/// With a session running `sleep`, `update` (and `--dry-run`) name the busy session
/// and leave the client on `a`; the session stays.
fn busy_is_skipped(c: &Client, a: &str, b: &str) {
    c.exec(&["tmux", "new-session", "-d", "-s", "busy", "sleep 600"])
        .success();
    let out = sbx(["update", "--dry-run", &c.name]).run().success();
    assert!(
        out.stdout.contains(&format!(
            "{}: would restart: {} → {}",
            c.name,
            &a[..12],
            &b[..12]
        )) && out.stdout.contains("session busy sleep: running"),
        "{out}"
    );
    let out = sbx(["update", &c.name]).run().success();
    assert!(
        out.stdout.contains(&format!(
            "{}: skipped: busy (session busy sleep: running)",
            c.name
        )) && out.stdout.contains("--force"),
        "{out}"
    );
    assert_eq!(runs(c), "a", "a skipped client was restarted:\n{out}");
}

/// A: the client runs it. B built on its name: a busy session makes `update` skip the
/// client (and `--dry-run` says what would change); `update --force` runs B with the
/// client's data intact. C (its command exits 1) on the name: `update` fails,
/// naming the client and C, and the client runs B again.
#[test]
fn up_update_rolls_forward_and_back() {
    let mut images = Images { names: Vec::new() };
    let mut c = Client::new("up1");
    let dir = c.scratch_dir("build");
    let tag = format!("localhost/agent-sandbox:upd-{}", c.name);
    images.names.push(tag.clone());
    images.names.push(format!("{tag}-previous"));

    let a = build(&dir, &tag, "a", "");
    images.names.push(a.clone());
    c.enable_cmd(&tag).run().success();
    c.start();
    wait_idle(&c);
    assert_eq!(runs(&c), "a");
    c.sh("echo kept > \"$HOME/upd-marker\"").success();

    let out = sbx(["update", &c.name]).run().success();
    assert!(
        out.stdout
            .contains(&format!("{}: up to date ({})", c.name, &a[..12])),
        "{out}"
    );

    let b = build(&dir, &tag, "b", "");
    images.names.push(b.clone());
    busy_is_skipped(&c, &a, &b);
    let out = sbx(["update", "--force", &c.name])
        .timeout(Duration::from_mins(3))
        .run()
        .success();
    eprintln!("{out}");
    assert!(
        out.stdout.contains("restarting anyway (--force)")
            && out
                .stdout
                .contains(&format!("{}: updated: {} → {}", c.name, &a[..12], &b[..12])),
        "{out}"
    );
    assert_eq!(runs(&c), "b");
    assert_eq!(
        c.sh("cat \"$HOME/upd-marker\"").success().stdout,
        "kept\n",
        "the client's data did not survive the update"
    );
    // The old image keeps a name, so it is not pruned while it may be needed.
    let previous = podman(["image", "inspect", "--format", "{{.Id}}"])
        .arg(format!("{tag}-previous"))
        .run()
        .success();
    assert_eq!(previous.stdout.trim(), a);
    wait_idle(&c);

    let broken = build(&dir, &tag, "c", "CMD [\"/bin/false\"]");
    images.names.push(broken.clone());
    let out = sbx(["update", &c.name])
        .timeout(Duration::from_mins(3))
        .run()
        .failure();
    eprintln!("{out}");
    let line = format!(
        "sandboxctl: {}: the new image {} ({tag}) did not come up",
        c.name,
        &broken[..12]
    );
    assert!(
        out.stderr.contains(&line)
            && out
                .stderr
                .contains(&format!("rolled back to {}, which runs again", &b[..12])),
        "{out}\n{}",
        c.diagnostics()
    );
    assert_eq!(unit_property(&c.unit(), "ActiveState"), "active", "{out}");
    assert_eq!(runs(&c), "b", "not rolled back:\n{out}");
    assert_eq!(c.sh("cat \"$HOME/upd-marker\"").success().stdout, "kept\n");
    let pinned_name = rolled_back_alone(&c, &tag, &broken, &b);
    images.names.push(pinned_name.clone());

    // A good image on the name: the next update moves the client there and ends the pin.
    wait_idle(&c);
    let d = build(&dir, &tag, "d", "");
    images.names.push(d.clone());
    let out = sbx(["update", &c.name])
        .timeout(Duration::from_mins(3))
        .run()
        .success();
    assert!(
        out.stdout.contains("trying") && out.stdout.contains("updated"),
        "{out}"
    );
    assert_eq!(runs(&c), "d");
    let status = sbx(["status", &c.name, "--json"]).run().success().json();
    assert!(status["image_pin"].is_null(), "{status}");
    let gone = podman(["image", "exists", &pinned_name]).run();
    assert!(!gone.status.success(), "the pinned name is left: {gone}");
    drop(c);
}

/// After a failed update: the rollback is the client's alone. The name every client
/// shares stays on the broken image (a client's agent can make its own restart fail),
/// the client's settings pin the old image's ID, and that image keeps a name of this
/// client's, which is returned.
fn rolled_back_alone(c: &Client, tag: &str, broken: &str, old: &str) -> String {
    let id_of = |name: &str| {
        podman(["image", "inspect", "--format", "{{.Id}}", name])
            .run()
            .success()
            .stdout
            .trim()
            .to_owned()
    };
    assert_eq!(id_of(tag), broken, "the shared name was moved back");
    let pinned_name = format!("{tag}-pinned-{}", c.name);
    assert_eq!(id_of(&pinned_name), old);
    let status = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(
        status["image_pin"],
        old.trim_start_matches("sha256:"),
        "{status}"
    );
    let out = sbx(["update", "--dry-run", &c.name]).run().success();
    assert!(out.stdout.contains("would restart"), "{out}");
    pinned_name
}
