//! Tests of `journal`.

use super::*;

fn tree(root: &Path) -> Vec<(String, u32, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).expect("meta");
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            if m.is_dir() {
                out.push((rel, m.permissions().mode(), None));
                stack.push(p);
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).expect("link");
                out.push((rel, 0, Some(t.display().to_string().into_bytes())));
            } else {
                out.push((
                    rel,
                    m.permissions().mode(),
                    Some(fs::read(&p).expect("read")),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn recovery_puts_back_files_links_and_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    // Where a plan writes: a root recovery restores below.
    let work = layout.clients_dir();
    fs::create_dir_all(work.join("old")).expect("mkdir");
    fs::write(work.join("kept"), "old bytes").expect("write");
    fs::set_permissions(work.join("kept"), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::write(work.join("gone"), "will be removed").expect("write");
    std::os::unix::fs::symlink("old", work.join("link")).expect("symlink");
    // Large enough to be kept by a hard link next to it, not a copy.
    let big = vec![7u8; usize::try_from(LINK_ABOVE + 1).expect("size")];
    fs::write(work.join("big"), &big).expect("write");
    let before = tree(&work);

    let j = Journal::begin(&layout).expect("begin");
    j.record(&[
        Touch::Path(work.join("kept")),
        Touch::Path(work.join("new")),
        Touch::Path(work.join("gone")),
        Touch::Path(work.join("link")),
        Touch::Path(work.join("big")),
        Touch::Dir(work.join("a/b")),
        Touch::Tree(work.join("client")),
    ])
    .expect("record");
    // The "command" changes all of it, then dies (the log stays).
    crate::base::atomic::write(&work.join("kept"), b"new bytes", 0o600).expect("write");
    fs::write(work.join("new"), "created").expect("write");
    fs::remove_file(work.join("gone")).expect("rm");
    fs::remove_file(work.join("link")).expect("rm");
    std::os::unix::fs::symlink("elsewhere", work.join("link")).expect("symlink");
    fs::create_dir_all(work.join("a/b")).expect("mkdir");
    fs::create_dir_all(work.join("client/home/x")).expect("mkdir");
    fs::write(work.join("client/home/x/f"), "agent data").expect("write");
    fs::write(work.join(".sandboxctl-abc.tmp"), "half").expect("write");
    crate::base::atomic::write(&work.join("big"), b"replaced", 0o644).expect("write");
    assert!(
        fs::read_dir(&work)
            .expect("list")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(LINK_PREFIX)),
        "a large file is kept by a link next to it"
    );
    std::mem::forget(j);
    assert_ne!(tree(&work), before);

    recover(&layout).expect("recover");
    assert_eq!(tree(&work), before);
    assert!(!layout.data_dir.join(".journal").exists());
    // Nothing to do the second time.
    recover(&layout).expect("recover again");
}

#[test]
fn a_finished_plan_leaves_no_log_and_a_torn_entry_is_not_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let j = Journal::begin(&layout).expect("begin");
    j.record(&[Touch::Path(tmp.path().join("f"))])
        .expect("record");
    j.finish().expect("finish");
    assert!(!layout.data_dir.join(".journal").exists());

    // A kill inside an atomic write leaves only a temporary file: no entry.
    let j = Journal::begin(&layout).expect("begin");
    fs::write(j.dir.join(".sandboxctl-x.tmp"), "{\"Pa").expect("write");
    std::mem::forget(j);
    recover(&layout).expect("recover");
    assert!(!layout.data_dir.join(".journal").exists());
}

/// Writes entry `n` of a log by hand, as something other than a plan could.
fn write_entry(layout: &Layout, n: usize, entry: &Entry) {
    let dir = journal_dir(layout);
    fs::create_dir_all(&dir).expect("mkdir");
    let text = serde_json::to_vec(entry).expect("encode");
    fs::write(dir.join(format!("{n:04}.json")), text).expect("write");
}

/// A record that restores outside sandboxctl's directories and the clients' projects
/// (through `..` or an absolute path), or from a saved copy that is not the log's
/// own, refuses the whole log in one line naming it: nothing is undone, not even
/// the good record before it, and the log stays for the user to look at.
#[test]
fn a_record_outside_the_roots_is_refused_and_nothing_is_undone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let outside = tmp.path().join("outside");
    let unit = layout.unit_dir.join("agent-acme.container");
    let file = |data: PathBuf| Before::File { data, mode: 0o644 };
    let cases = [
        Entry::Path {
            path: layout.data_dir.join("../outside/victim"),
            before: Before::Absent,
        },
        Entry::Path {
            path: outside.join("victim"),
            before: file("0001.data".into()),
        },
        Entry::Path {
            path: PathBuf::from("relative/victim"),
            before: Before::Absent,
        },
        Entry::Path {
            path: unit.clone(),
            before: file("../../outside/victim".into()),
        },
        Entry::Path {
            path: unit.clone(),
            before: file(outside.join("victim")),
        },
        Entry::Path {
            path: unit.clone(),
            before: file(layout.unit_dir.join(format!("{LINK_PREFIX}0000"))),
        },
        Entry::Dirs {
            missing: vec![layout.unit_dir.join("../../outside/empty")],
        },
        Entry::Dirs {
            missing: vec![outside.join("empty")],
        },
        Entry::Tree {
            path: outside.clone(),
        },
        Entry::Tree {
            path: layout.clients_dir().join("../../outside"),
        },
        Entry::Tree {
            path: layout.data_dir.clone(),
        },
    ];
    for crafted in cases {
        let shown = format!("{crafted:?}");
        fs::create_dir_all(outside.join("empty")).expect("mkdir");
        fs::write(outside.join("victim"), "precious").expect("write");
        fs::create_dir_all(&layout.unit_dir).expect("mkdir");
        fs::write(&unit, "the unit as the command left it").expect("write");
        // A good record first: the unit did not exist before.
        write_entry(
            &layout,
            0,
            &Entry::Path {
                path: unit.clone(),
                before: Before::Absent,
            },
        );
        write_entry(&layout, 1, &crafted);
        fs::write(journal_dir(&layout).join("0001.data"), "planted").expect("write");

        let err =
            recover_with(&layout, &|| Ok(())).expect_err(&format!("recovery accepted {shown}"));
        let msg = format!("{err:#}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("refusing to undo"), "{msg}");
        assert!(msg.contains("0001.json"), "{msg}");
        assert!(msg.contains("nothing was undone"), "{msg}");
        assert_eq!(
            fs::read_to_string(outside.join("victim")).expect("victim"),
            "precious",
            "{shown}"
        );
        assert!(outside.join("empty").is_dir(), "{shown}");
        assert_eq!(
            fs::read_to_string(&unit).expect("unit"),
            "the unit as the command left it",
            "{shown}"
        );
        assert!(pending(&layout), "{shown}");
        fs::remove_dir_all(journal_dir(&layout)).expect("rm");
    }
}

/// A client's projects are where its git pins are written: a record below one is
/// restored.
#[test]
fn a_record_in_a_clients_project_is_restored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let project = tmp.path().join("project");
    fs::create_dir_all(project.join(".git")).expect("mkdir");
    let client = ClientName::parse("acme").expect("name");
    layout.create_client_dirs(&client).expect("dirs");
    let settings = crate::sandbox::settings::Settings {
        projects: vec![project.clone()],
        ..crate::sandbox::settings::Settings::default()
    };
    settings
        .save(&layout.settings_path(&client), &client)
        .expect("save");
    let pin = project.join(".git/commondir");
    fs::write(&pin, ".\n").expect("write");
    write_entry(
        &layout,
        0,
        &Entry::Path {
            path: pin.clone(),
            before: Before::Absent,
        },
    );
    recover_with(&layout, &|| Ok(())).expect("recover");
    assert!(!pin.exists());
    assert!(!pending(&layout));
}
