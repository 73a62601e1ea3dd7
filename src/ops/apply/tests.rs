//! The plan of applying clients, step by step: every failure and every kill undone.

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;

use super::effects::*;
use super::*;
use crate::host::{Cgroups, TemplateUnits, Version, fixed_profile};
use crate::sandbox::settings::{Agent, NetworkMode};

/// Every file and directory under `root`: path, mode, contents.
fn tree(root: &Path) -> Vec<(String, u32, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir") {
            let path = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.push((rel, mode, None));
                stack.push(path);
            } else if meta.is_symlink() {
                let target = std::fs::read_link(&path).expect("read link");
                out.push((rel, 0, Some(target.as_os_str().as_encoded_bytes().to_vec())));
            } else {
                out.push((rel, mode, Some(std::fs::read(&path).expect("read"))));
            }
        }
    }
    out.sort();
    out
}

fn host(quadlet: bool) -> HostProfile {
    let mut h = fixed_profile(
        Version::new(4, 3, 1),
        Version::new(5, 4, 2),
        Cgroups::V2,
        true,
    );
    if !quadlet {
        h.quadlet = None;
        h.quadlet_disabled = true;
    }
    h
}

/// A user manager that has an older unit loaded: a reload is needed.
const ALWAYS: &dyn Fn() -> Result<bool> = &|| Ok(true);

/// What `plan` computes for one client, without reading options.
fn planned(layout: &Layout, host: &HostProfile, settings: Settings) -> Planned {
    let client = ClientName::parse("acme").expect("name");
    let unit = render::unit_file(&Sandbox {
        client: &client,
        settings: &settings,
        layout,
        host,
    })
    .expect("renders");
    let stale_unit = render::all_unit_paths(layout, &client)
        .into_iter()
        .find(|p| *p != unit.path && p.exists());
    Planned {
        client,
        settings,
        unit,
        stale_unit,
        changed: true,
        api_key: None,
        previous: None,
    }
}

fn settings(network: NetworkMode, image: &str) -> Settings {
    Settings {
        agent: Agent::Claude,
        network,
        image: image.to_owned(),
        // A key in the settings: no login is copied from this machine's home.
        secrets: vec!["ANTHROPIC_API_KEY".into()],
        ..Settings::default()
    }
}

/// A home under `tmp` with the new binary to install, and (if `existing`) a client
/// enabled before with other settings, on a host without a Quadlet generator.
fn home_for_steps(tmp: &Path, existing: bool) -> (PathBuf, Layout, PathBuf) {
    let root = tmp.join("home");
    let layout = Layout::under(&root);
    // The change lock creates the data directory before anything else.
    std::fs::create_dir_all(&layout.data_dir).expect("data dir");
    let exe = tmp.join("sandboxctl-v2");
    std::fs::write(&exe, "new binary").expect("exe");
    if existing {
        let ok = || Ok(());
        let old_exe = tmp.join("sandboxctl-v1");
        std::fs::write(&old_exe, "old binary").expect("exe");
        let old_host = host(false);
        let old = [planned(
            &layout,
            &old_host,
            settings(NetworkMode::Allowlist, "localhost/old:1"),
        )];
        effects(&layout, &old_host, &old, &old_exe, &ok, ALWAYS, &ok)
            .expect("plan")
            .apply()
            .expect("first enable");
    }
    (root, layout, exe)
}

/// `enable` again with the same settings changes nothing: no step runs, nothing is
/// journaled and systemd is reloaded only when it says it still has an older unit
/// loaded; a changed file reloads whatever systemd says.
#[test]
fn an_unchanged_enable_writes_nothing_and_reloads_only_when_needed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, layout, exe) = home_for_steps(tmp.path(), false);
    let ok = || Ok(());
    let h = host(true);
    let new = [planned(
        &layout,
        &h,
        settings(NetworkMode::Allowlist, "localhost/x:1"),
    )];
    let reloads = Cell::new(0);
    let reload = || {
        reloads.set(reloads.get() + 1);
        Ok(())
    };
    let fresh = || Ok(false);
    let apply = |needs: &dyn Fn() -> Result<bool>| {
        effects(&layout, &h, &new, &exe, &reload, needs, &ok)
            .expect("plan")
            .journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"))
            .apply()
            .expect("applies");
    };
    apply(&fresh);
    assert_eq!(reloads.get(), 1, "a new client reloads");
    let before = tree(&root);
    let journal = layout.data_dir.join(".journal");
    std::fs::create_dir_all(&journal).expect("journal dir");
    for (needs, want) in [(&fresh as &dyn Fn() -> Result<bool>, 0), (ALWAYS, 1)] {
        reloads.set(0);
        let mut plan = effects(&layout, &h, &new, &exe, &reload, needs, &ok).expect("plan");
        // Stopped before its last step, the log holds every entry it wrote.
        plan.die_at(plan.len() - 1);
        let plan = plan.journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"));
        plan.apply().expect_err("died");
        let entries: Vec<_> = std::fs::read_dir(&journal)
            .expect("log")
            .flatten()
            .collect();
        assert_eq!(entries.len(), want, "entries: {entries:?}");
        assert_eq!(reloads.get(), want);
        std::fs::remove_dir_all(&journal).expect("clear the log");
        assert_eq!(tree(&root), before, "an unchanged enable changed files");
    }
    std::fs::write(layout.settings_path(&new[0].client), "changed").expect("write");
    reloads.set(0);
    apply(&fresh);
    assert_eq!(reloads.get(), 1, "a rewritten settings file reloads");
}

/// A failure at any step of `enable` leaves every file as it was, reloads again
/// once systemd had reloaded, and says nothing was changed: for a new client, and
/// for one that moves from a plain service to a Quadlet unit with new settings.
#[test]
fn a_failure_at_any_step_undoes_every_effect() {
    for existing in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, layout, exe) = home_for_steps(tmp.path(), existing);
        let ok = || Ok(());
        let new_host = host(true);
        let new = [planned(
            &layout,
            &new_host,
            settings(NetworkMode::Allowlist, "localhost/new:2"),
        )];
        assert_eq!(new[0].stale_unit.is_some(), existing);
        let before = tree(&root);
        let reloads = Cell::new(0);
        let reload = || {
            reloads.set(reloads.get() + 1);
            Ok(())
        };
        let plan = effects(&layout, &new_host, &new, &exe, &reload, ALWAYS, &ok).expect("plan");
        let steps: Vec<String> = plan.describe().into_iter().map(str::to_owned).collect();
        let reload_at = steps
            .iter()
            .position(|s| s.starts_with("reload"))
            .expect("a reload step");
        assert!(steps.len() >= 8, "{steps:?}");
        for (n, step) in steps.iter().enumerate() {
            reloads.set(0);
            let mut plan =
                effects(&layout, &new_host, &new, &exe, &reload, ALWAYS, &ok).expect("plan");
            plan.fail_at(n);
            let err = format!("{:#}", plan.apply().expect_err("injected failure"));
            assert!(
                err.starts_with("nothing was changed: injected failure"),
                "step {n} ({step}): {err}",
            );
            let after = tree(&root);
            let changed: Vec<String> = after
                .iter()
                .filter(|e| !before.contains(e))
                .chain(before.iter().filter(|e| !after.contains(e)))
                .map(|(p, m, c)| {
                    format!("{p} {m:o} {:?}", c.as_deref().map(String::from_utf8_lossy))
                })
                .collect();
            assert!(
                changed.is_empty(),
                "step {n} ({step}) left changes behind: {changed:?}",
            );
            let want = if n > reload_at { 2 } else { 0 };
            assert_eq!(reloads.get(), want, "step {n} ({step})");
        }
        effects(&layout, &new_host, &new, &exe, &reload, ALWAYS, &ok)
            .expect("plan")
            .apply()
            .expect("applies without a failure");
        let after = tree(&root);
        assert_ne!(after, before);
        assert!(new[0].unit.path.exists());
        assert!(!render::plain_unit_path(&layout, &new[0].client).exists());
        assert!(
            !after.iter().any(|(p, _, _)| p.contains("before-enable")),
            "the binary's backup is gone once applied: {after:?}"
        );
    }
}

/// A failed `enable` that found the private binary already up to date leaves no
/// backup of it behind (the backup is then a second name of the same file).
#[test]
fn a_failure_with_the_binary_unchanged_leaves_no_backup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, layout, exe) = home_for_steps(tmp.path(), false);
    let ok = || Ok(());
    let host = host(true);
    let new = [planned(
        &layout,
        &host,
        settings(NetworkMode::Allowlist, "localhost/new:2"),
    )];
    effects(&layout, &host, &new, &exe, &ok, ALWAYS, &ok)
        .expect("plan")
        .apply()
        .expect("first enable");
    let mut plan = effects(&layout, &host, &new, &exe, &ok, ALWAYS, &ok).expect("plan");
    let last = plan.len() - 1;
    plan.fail_at(last);
    plan.apply().expect_err("injected failure");
    let left: Vec<_> = std::fs::read_dir(&layout.libexec_dir)
        .expect("libexec")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("sandboxctl")]);
}

/// A command killed before any step, or after the last, leaves an undo log on
/// disk; the next command's recovery puts every file back as it was, and enabling
/// again then applies the whole plan.
#[test]
fn a_kill_at_any_step_is_undone_by_the_next_command() {
    for existing in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, layout, exe) = home_for_steps(tmp.path(), existing);
        let ok = || Ok(());
        let new_host = host(true);
        let new = [planned(
            &layout,
            &new_host,
            settings(NetworkMode::Allowlist, "localhost/new:2"),
        )];
        let before = tree(&root);
        let reloads = Cell::new(0);
        let reload = || {
            reloads.set(reloads.get() + 1);
            Ok(())
        };
        let plan = effects(&layout, &new_host, &new, &exe, &ok, ALWAYS, &ok).expect("plan");
        let count = plan.len();
        let reload_at = plan
            .describe()
            .iter()
            .position(|s| s.starts_with("reload"))
            .expect("a reload step");
        drop(plan);
        for n in 0..=count {
            let mut plan = effects(&layout, &new_host, &new, &exe, &ok, ALWAYS, &ok)
                .expect("plan")
                .journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"));
            plan.die_at(n);
            plan.apply().expect_err("died");
            assert!(crate::txn::journal::pending(&layout), "step {n}");
            reloads.set(0);
            crate::txn::journal::recover_with(&layout, &reload).expect("recover");
            assert_eq!(tree(&root), before, "step {n} of {count} is not undone");
            assert!(!crate::txn::journal::pending(&layout));
            // The reload step's entry is there once the plan reached it.
            assert_eq!(reloads.get() > 0, n >= reload_at, "step {n} of {count}");
        }
        effects(&layout, &new_host, &new, &exe, &ok, ALWAYS, &ok)
            .expect("plan")
            .journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"))
            .apply()
            .expect("enable again");
        assert_ne!(tree(&root), before);
        assert!(new[0].unit.path.exists());
        assert!(!crate::txn::journal::pending(&layout));
    }
}

/// An undo that fails is named in the error, with the failure that caused it, and
/// the other undos still run.
#[test]
fn a_failed_undo_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let exe = tmp.path().join("exe");
    std::fs::write(&exe, "binary").expect("exe");
    let h = host(true);
    let new = [planned(
        &layout,
        &h,
        settings(NetworkMode::None, "localhost/x:1"),
    )];
    let ok = || Ok(());
    let unit = new[0].unit.path.clone();
    let fail_check = || -> Result<()> {
        // Something put a directory where the unit was: its undo cannot remove it.
        std::fs::remove_file(&unit).expect("remove unit");
        std::fs::create_dir_all(unit.join("in-the-way")).expect("mkdir");
        bail!("systemd has no agent-acme.service")
    };
    let err = effects(&layout, &h, &new, &exe, &ok, ALWAYS, &fail_check)
        .expect("plan")
        .apply()
        .expect_err("fails");
    let err = format!("{err:#}");
    assert!(
        err.starts_with("some changes could not be undone; could not remove "),
        "{err}"
    );
    assert!(err.contains("agent-acme.container"), "{err}");
    assert!(err.ends_with("systemd has no agent-acme.service"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert!(
        !layout.client_dir(&new[0].client).exists(),
        "the rest was undone"
    );
}

fn booted_host(booted: bool) -> HostProfile {
    fixed_profile(
        Version::new(5, 4, 2),
        Version::new(5, 4, 2),
        Cgroups::V2,
        booted,
    )
}

#[test]
fn linger_note_says_whether_sandboxes_start_at_boot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = crate::host::user::name().expect("the test runs as a user with a name");
    let off = linger_note(&booted_host(true), dir.path()).expect("a booted host gets a note");
    assert_eq!(
        off,
        format!(
            "linger is off for {user}: the sandboxes start when you log in and stop when your last session ends; `loginctl enable-linger {user}` makes them start at boot"
        )
    );
    std::fs::write(dir.path().join(&user), b"").expect("linger file");
    let on = linger_note(&booted_host(true), dir.path()).expect("a booted host gets a note");
    assert_eq!(
        on,
        format!(
            "linger is on for {user}: the sandboxes start at boot and keep running when you log out"
        )
    );
}

#[test]
fn no_linger_note_where_systemd_is_not_the_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(linger_note(&booted_host(false), dir.path()), None);
}

/// With the package's units, `enable` writes no template unit and no copy of
/// sandboxctl, removes the per-user ones an earlier `enable` wrote (they would shadow
/// the package's), and the client's drop-in runs the packaged binary.
#[test]
fn packaged_units_leave_no_template_or_binary_in_the_home() {
    use crate::units::proxy::{SERVICE_FILE, SOCKET_FILE, binary_path, dropin_path};
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("home");
    std::fs::create_dir(&root).expect("home");
    let layout = Layout::under(&root);
    let exe = tmp.path().join("sandboxctl");
    std::fs::write(&exe, "binary").expect("exe");
    let ok = || Ok(());

    // Before the package: per-user copies.
    let per_user = host(true);
    let first = [planned(
        &layout,
        &per_user,
        settings(NetworkMode::Allowlist, "localhost/a:1"),
    )];
    effects(&layout, &per_user, &first, &exe, &ok, ALWAYS, &ok)
        .expect("plan")
        .apply()
        .expect("per-user enable");
    assert!(layout.systemd_user_dir.join(SERVICE_FILE).is_file());
    assert!(binary_path(&layout).is_file());

    let mut packaged = host(true);
    packaged.template_units = TemplateUnits::Packaged {
        dir: PathBuf::from("/usr/lib/systemd/user"),
        binary: PathBuf::from("/usr/bin/sandboxctl"),
    };
    let second = [planned(
        &layout,
        &packaged,
        settings(NetworkMode::Allowlist, "localhost/a:2"),
    )];
    effects(&layout, &packaged, &second, &exe, &ok, ALWAYS, &ok)
        .expect("plan")
        .apply()
        .expect("packaged enable");
    for f in [SOCKET_FILE, SERVICE_FILE] {
        assert!(!layout.systemd_user_dir.join(f).exists(), "{f} left");
    }
    assert!(!binary_path(&layout).exists(), "the binary copy left");
    let client = ClientName::parse("acme").expect("name");
    let dropin = std::fs::read_to_string(dropin_path(&layout, &client)).expect("drop-in");
    assert!(
        dropin.contains("ExecStart=\"/usr/bin/sandboxctl\" proxy"),
        "{dropin}"
    );
}
