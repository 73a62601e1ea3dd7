//! Crash safety on the real user manager (issue 14, part 3): `enable` and `disable`
//! killed with SIGKILL at every step (`SANDBOXCTL_TEST_KILL_AT_STEP`), and two changes
//! of one client made at once.
//!
//! After a killed `enable`, the next command finds its undo log and puts everything
//! back: files, directories, and the unit the user manager has loaded are byte for byte
//! what they were (fully old); `enable` again gives exactly what an uninterrupted
//! `enable` gives (fully new). A killed `disable` is finished by running it again.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};

use crate::harness::{Client, Cmd, Output, env, fill_up, sbx, small_fs, unit_property};

const KILL_AT_STEP: &str = "SANDBOXCTL_TEST_KILL_AT_STEP";

/// Every file, link and directory of sandboxctl's state for this user, with modes and
/// contents, and what the user manager has loaded for `unit`.
#[derive(PartialEq, Eq)]
struct State(Vec<String>);

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.0 {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

fn state(unit: &str) -> State {
    let env = env();
    let mut lines = Vec::new();
    for root in [
        env.data_root(),
        env.unit_dir(),
        env.home.join(".config/systemd/user"),
        env.home.join(".local/libexec/sandboxctl"),
    ] {
        walk(&root, &root, &mut lines);
    }
    // The generated service, with ExecStart's words sorted: the generator does not
    // always write the options in the same order.
    let loaded = std::fs::read_to_string(env.loaded_unit_file(unit)).unwrap_or_default();
    for line in loaded.lines() {
        if let Some(exec) = line.strip_prefix("ExecStart=") {
            let mut words: Vec<&str> = exec.split(' ').collect();
            words.sort_unstable();
            lines.push(format!("loaded ExecStart: {}", words.join(" ")));
        } else {
            lines.push(format!("loaded: {line}"));
        }
    }
    lines.push(format!("{unit}: {}", unit_property(unit, "LoadState")));
    State(lines)
}

/// `left == right`, shown as the lines each has that the other lacks.
#[track_caller]
fn assert_same(left: &State, right: &State, what: &str) {
    if left == right {
        return;
    }
    let only = |a: &State, b: &State| -> Vec<String> {
        a.0.iter().filter(|l| !b.0.contains(l)).cloned().collect()
    };
    panic!(
        "{what}\nonly now:\n{}\nonly expected:\n{}",
        only(left, right).join("\n"),
        only(right, left).join("\n")
    );
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = list.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).expect("under root").display();
        let rel = format!("{}/{rel}", root.display());
        // The change lock's file stays once made; it holds nothing.
        if path == env().data_root().join(".lock") {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).expect("link");
            out.push(format!("{rel} -> {}", target.display()));
        } else if meta.is_dir() {
            out.push(format!("{rel}/ {:o}", meta.mode() & 0o7777));
            walk(root, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.push(format!(
                "{rel} {:o} {} bytes {:016x}",
                meta.mode() & 0o7777,
                bytes.len(),
                fnv(&bytes)
            ));
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn enable_cmd(c: &Client, extra: &[&str]) -> Cmd {
    c.enable_cmd(&env().image).args(extra)
}

/// Whether `out` is a command killed by SIGKILL (else it must have succeeded).
#[track_caller]
fn killed(out: &Output) -> bool {
    if out.status.success() {
        return false;
    }
    assert_eq!(
        out.status.signal(),
        Some(9),
        "not killed by the test hook:\n{out}"
    );
    true
}

/// Runs `command` killed at checkpoint 0, 1, 2, … until it runs to the end; after each
/// kill, `check(n, out)`. Returns how many kills there were.
fn kill_at_each_step(command: impl Fn() -> Cmd, mut check: impl FnMut(usize, &Output)) -> usize {
    for n in 0.. {
        let out = command().env(KILL_AT_STEP, n.to_string()).run();
        if !killed(&out) {
            assert!(n > 5, "only {n} checkpoints reached:\n{out}");
            return n;
        }
        check(n, &out);
    }
    unreachable!()
}

/// A new client's `enable`, killed at each step: the next command (`status`) undoes it
/// and says so, leaving no trace of the client; `enable` again makes exactly what an
/// uninterrupted one makes.
#[test]
fn cr1_enable_of_a_new_client_killed_at_every_step() {
    let c = Client::new("cr1");
    let unit = c.unit();
    let flags = ["--network", "allowlist", "--git-name", "Crash Test"];
    // The shared template units exist after the first enable on this host; make them
    // so that the states compared below differ only by this client.
    enable_cmd(&c, &flags).run().success();
    let new = state(&unit);
    sbx(["disable", &c.name, "--purge"]).run().success();
    let old = state(&unit);
    assert_ne!(old, new);
    let kills = kill_at_each_step(
        || enable_cmd(&c, &flags),
        |n, _| {
            let out = sbx(["status", &c.name]).run().failure();
            assert!(
                out.stderr.contains("an earlier command was interrupted"),
                "step {n}: no recovery:\n{out}"
            );
            assert!(
                out.stderr.contains(&format!("unknown client {}", c.name)),
                "step {n}:\n{out}"
            );
            assert_same(&state(&unit), &old, &format!("step {n}: not fully old"));
            enable_cmd(&c, &flags).run().success();
            assert_same(
                &state(&unit),
                &new,
                &format!("step {n}: enable again is not fully new"),
            );
            sbx(["disable", &c.name, "--purge"]).run().success();
            assert_same(&state(&unit), &old, &format!("step {n}: disable --purge"));
        },
    );
    eprintln!("cr1: enable killed at each of {kills} steps, each undone");
}

/// An existing client's `enable` with other settings (another network mode, a mount,
/// a git name), killed at each step: undone to the old settings, old unit and old
/// loaded service.
#[test]
fn cr2_enable_changing_a_client_killed_at_every_step() {
    let mut c = Client::new("cr2");
    let mount = c.scratch_dir("mount");
    let spec = format!("{}:/mnt/cr2", mount.display());
    let unit = c.unit();
    let old_flags = ["--network", "none"];
    let new_flags = [
        "--network",
        "allowlist",
        "--mount",
        &spec,
        "--git-name",
        "Crash Test",
    ];
    let reset = || enable_cmd(&c, &old_flags).arg("--reset");
    enable_cmd(&c, &new_flags).run().success();
    let new = state(&unit);
    sbx(["disable", &c.name, "--purge"]).run().success();
    reset().run().success();
    let old = state(&unit);
    assert_ne!(old, new);
    let kills = kill_at_each_step(
        || enable_cmd(&c, &new_flags),
        |n, out| {
            let status = sbx(["status", &c.name]).run().success();
            assert!(
                status.stderr.contains("an earlier command was interrupted"),
                "step {n}: no recovery:\n{out}\n{status}"
            );
            assert_same(&state(&unit), &old, &format!("step {n}: not fully old"));
            enable_cmd(&c, &new_flags).run().success();
            assert_same(
                &state(&unit),
                &new,
                &format!("step {n}: enable again is not fully new"),
            );
            // Back to the old client for the next kill.
            sbx(["disable", &c.name, "--purge"]).run().success();
            reset().run().success();
            assert_same(&state(&unit), &old, &format!("step {n}: reset"));
        },
    );
    eprintln!("cr2: enable killed at each of {kills} steps, each undone");
}

/// `disable --purge` killed at each step: running it again finishes it, to the same
/// state an uninterrupted one leaves.
#[test]
fn cr3_disable_killed_at_every_step_is_finished_by_disable() {
    let c = Client::new("cr3");
    let unit = c.unit();
    let flags = ["--network", "allowlist"];
    enable_cmd(&c, &flags).run().success();
    c.start();
    sbx(["disable", &c.name, "--purge"]).run().success();
    let gone = state(&unit);
    let kills = kill_at_each_step(
        || {
            enable_cmd(&c, &flags).run().success();
            c.start();
            sbx(["disable", &c.name, "--purge"])
        },
        |n, _| {
            sbx(["disable", &c.name, "--purge"]).run().success();
            assert_same(&state(&unit), &gone, &format!("step {n}: disable again"));
        },
    );
    eprintln!("cr3: disable killed at each of {kills} steps, each finished");
}

/// Two changes of one client started together end as if made one after the other:
/// each keeps the other's change (no lost update).
#[test]
fn cr4_concurrent_changes_of_one_client_serialize() {
    let mut c = Client::new("cr4");
    let mount = c.scratch_dir("mount");
    let spec = format!("{}:/mnt/cr4", mount.display());
    enable_cmd(&c, &["--network", "allowlist"]).run().success();
    let settings = c.data_dir().join("config/sandbox.toml");
    let policy = c.data_dir().join("config/network.toml");
    for round in 0..4 {
        let name = format!("Round {round}");
        let hosts = [format!("a{round}.example"), format!("b{round}.example")];
        let running: Vec<std::thread::JoinHandle<Output>> = [
            enable_cmd(&c, &["--mount", &spec]),
            enable_cmd(&c, &["--git-name", &name]),
            sbx(["allow", &c.name, &hosts[0]]),
            sbx(["allow", &c.name, &hosts[1]]),
        ]
        .into_iter()
        .map(|cmd| std::thread::spawn(move || cmd.run()))
        .collect();
        for r in running {
            let out = r.join().expect("join");
            assert!(out.status.success(), "round {round}:\n{out}");
        }
        let text = std::fs::read_to_string(&settings).expect("settings");
        assert!(
            text.contains("/mnt/cr4"),
            "round {round}: mount lost:\n{text}"
        );
        assert!(
            text.contains(&name),
            "round {round}: git name lost:\n{text}"
        );
        let text = std::fs::read_to_string(&policy).expect("policy");
        for h in &hosts {
            assert!(
                text.contains(h.as_str()),
                "round {round}: {h} lost:\n{text}"
            );
        }
        // The next round starts without the mount.
        enable_cmd(&c, &["--network", "allowlist"])
            .arg("--reset")
            .run()
            .success();
    }
}

/// The client's files under `data` and the unit dirs, for "nothing changed" checks.
fn tree_with(data: &Path, unit: &str) -> State {
    let mut lines = Vec::new();
    walk(data, data, &mut lines);
    lines.extend(state(unit).0);
    State(lines)
}

/// A full disk under the data directory: `enable` fails with one line naming the
/// file it could not write, and leaves everything as it was; once there is room
/// again, `enable` works.
#[test]
fn cr5_a_full_disk_changes_nothing() {
    let small = small_fs();
    let c = Client::new("cr5");
    let data = small.join(&c.name);
    std::fs::create_dir(&data).expect("data dir");
    let filler = fill_up(&small, &format!("{}-filler", c.name));
    let enable = || enable_cmd(&c, &["--network", "allowlist"]).env("AGENT_SANDBOX_DATA", &data);
    let before = tree_with(&data, &c.unit());
    let out = enable().run().failure();
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "not one line:\n{out}");
    assert!(
        out.stderr.starts_with("sandboxctl: nothing was changed: ")
            && out.stderr.contains("No space left on device"),
        "{out}"
    );
    assert!(out.stderr.contains(data.to_str().expect("UTF-8")), "{out}");
    assert_same(
        &tree_with(&data, &c.unit()),
        &before,
        "a full disk changed files",
    );
    std::fs::remove_file(&filler).expect("remove the filler");
    enable().run().success();
    sbx(["disable", &c.name, "--purge"])
        .env("AGENT_SANDBOX_DATA", &data)
        .run()
        .success();
    let _ = std::fs::remove_dir_all(&data);
}

/// A unit directory the user made read-only: `enable` says which directory it cannot
/// write and changes nothing.
#[test]
fn cr6_a_unit_directory_that_is_not_writable_changes_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let c = Client::new("cr6");
    // The directory the unit goes to on this lane (created by an earlier enable).
    let dir = c.unit_file().parent().expect("unit dir").to_path_buf();
    std::fs::create_dir_all(&dir).expect("unit dir");
    let mode = std::fs::metadata(&dir).expect("meta").permissions().mode();
    let before = state(&c.unit());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let out = enable_cmd(&c, &["--network", "none"]).run();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod back");
    let out = out.failure();
    assert_eq!(out.stderr.lines().count(), 1, "not one line:\n{out}");
    assert!(
        out.stderr.contains("Permission denied")
            && out.stderr.contains(dir.to_str().expect("UTF-8")),
        "{out}"
    );
    assert_same(
        &state(&c.unit()),
        &before,
        "a read-only unit dir changed files",
    );
}
