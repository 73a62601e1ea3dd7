//! Tests of `git_guard`.

use super::config::*;
use super::gitdir::*;
use super::*;

// The planner takes a project as the agent's path; the tests name theirs plainly.
fn plan(project: &Path) -> Result<Plan> {
    super::plan(&AgentPath::new(project))
}

fn volumes(project: &Path) -> Result<Vec<String>> {
    super::volumes(&AgentPath::new(project))
}

fn symlink_on_the_way(project: &Path, path: &Path) -> Result<Option<PathBuf>> {
    super::symlink_on_the_way(&AgentPath::new(project), path)
}

fn git_dir(root: &Path) -> PathBuf {
    let g = root.join(".git");
    fs::create_dir_all(g.join("hooks")).expect("mkdir");
    fs::create_dir_all(g.join("objects")).expect("mkdir");
    fs::write(g.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    fs::write(g.join("config"), "[core]\n\tbare = false\n").expect("config");
    g
}

fn pins(plan: &Plan) -> Vec<(String, bool)> {
    plan.pins
        .iter()
        .map(|p| (p.path.display().to_string(), p.writable))
        .collect()
}

#[test]
fn a_project_without_git_gets_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(plan(tmp.path()).expect("plan"), Plan::default());
}

#[test]
fn pins_config_hooks_and_commondir_and_creates_commondir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path();
    let g = git_dir(p);
    let plan = plan(p).expect("plan");
    let d = |s: &str| g.join(s).display().to_string();
    assert_eq!(
        pins(&plan),
        [
            (g.display().to_string(), true),
            (d("config"), false),
            (d("hooks"), false),
            (d("commondir"), false),
        ]
    );
    assert_eq!(plan.create, [Create::File(g.join("commondir"), b"./\n")]);
    prepare(&plan).expect("prepare");
    assert_eq!(fs::read(g.join("commondir")).expect("commondir"), b"./\n");
    // Nothing existing is overwritten.
    fs::write(g.join("commondir"), "x").expect("write");
    prepare(&plan).expect("again");
    assert_eq!(fs::read(g.join("commondir")).expect("commondir"), b"x");
}

/// What libgit2 (IDEs and other tools use it) sees of a repository after its pins
/// were prepared: the same repository, not a linked worktree, with its own git dir
/// as the common one. A `commondir` of `.` (what older versions wrote, rewritten
/// now) made libgit2 fail to open the repository at all.
#[test]
fn libgit2_sees_the_same_repository_after_the_pins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = fs::canonicalize(tmp.path()).expect("canonical");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&p)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    run(&["init", "-q", "-b", "main"]);
    run(&["commit", "-q", "--allow-empty", "-m", "first"]);
    let before = git2::Repository::open(&p).expect("libgit2 opens it");
    let before = (
        before.path().to_owned(),
        before.commondir().to_owned(),
        before.workdir().map(Path::to_owned),
        before.is_worktree(),
        before.head().expect("HEAD").target(),
    );
    let check = || {
        let repo = git2::Repository::open(&p)
            .unwrap_or_else(|e| panic!("libgit2 cannot open the pinned repository: {e}"));
        let after = (
            repo.path().to_owned(),
            repo.commondir().to_owned(),
            repo.workdir().map(Path::to_owned),
            repo.is_worktree(),
            repo.head().expect("HEAD").target(),
        );
        assert_eq!(after, before);
    };
    prepare(&plan(&p).expect("plan")).expect("prepare");
    assert_eq!(
        fs::read(p.join(".git/commondir")).expect("commondir"),
        COMMONDIR_SELF
    );
    check();
    // A repository an older version pinned is rewritten, and opens again.
    fs::write(p.join(".git/commondir"), OLD_COMMONDIR_SELF).expect("write");
    let plan = plan(&p).expect("plan");
    assert_eq!(plan.create, [Create::Upgrade(p.join(".git/commondir"))]);
    prepare(&plan).expect("prepare");
    check();
}

#[test]
fn missing_hooks_and_config_are_created_so_they_can_be_pinned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let g = tmp.path().join(".git");
    fs::create_dir(&g).expect("mkdir");
    let plan = plan(tmp.path()).expect("plan");
    prepare(&plan).expect("prepare");
    assert!(g.join("hooks").is_dir());
    assert_eq!(fs::read(g.join("config")).expect("config"), b"");
}

#[test]
fn worktrees_modules_and_worktree_config_are_pinned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let g = git_dir(tmp.path());
    fs::write(g.join("config"), "[extensions]\n\tworktreeConfig = true\n").expect("config");
    let wt = g.join("worktrees/w1");
    fs::create_dir_all(&wt).expect("mkdir");
    fs::write(wt.join("commondir"), "../..\n").expect("commondir");
    let m = g.join("modules/lib/inner");
    fs::create_dir_all(m.join("hooks")).expect("mkdir");
    fs::write(m.join("HEAD"), "x").expect("HEAD");
    fs::write(m.join("config"), "").expect("config");
    let plan = plan(tmp.path()).expect("plan");
    let got = pins(&plan);
    for (path, writable) in [
        (g.join("config.worktree"), false),
        (wt.clone(), true),
        (wt.join("commondir"), false),
        (wt.join("config.worktree"), false),
        (m.clone(), true),
        (m.join("config"), false),
        (m.join("hooks"), false),
        (m.join("commondir"), false),
    ] {
        assert!(
            got.contains(&(path.display().to_string(), writable)),
            "{} missing in {got:?}",
            path.display()
        );
    }
}

/// A submodule git dir whose `HEAD` is a symbolic link (git accepts one naming
/// `refs/…`) is a git dir all the same, found without following the link.
#[test]
fn a_module_with_a_symlinked_head_is_pinned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let g = git_dir(tmp.path());
    let m = g.join("modules/lib");
    fs::create_dir_all(m.join("hooks")).expect("mkdir");
    std::os::unix::fs::symlink("refs/heads/main", m.join("HEAD")).expect("symlink");
    let got = pins(&plan(tmp.path()).expect("plan"));
    assert!(
        got.contains(&(m.join("config").display().to_string(), false)),
        "{got:?}"
    );
}

#[test]
fn a_gitdir_file_is_pinned_and_a_symlinked_git_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path().join("p");
    fs::create_dir(&p).expect("mkdir");
    fs::write(p.join(".git"), "gitdir: /elsewhere/.git/worktrees/p\n").expect("write");
    assert_eq!(
        pins(&plan(&p).expect("plan")),
        [(p.join(".git").display().to_string(), false)]
    );
    fs::remove_file(p.join(".git")).expect("rm");
    std::os::unix::fs::symlink("/tmp", p.join(".git")).expect("symlink");
    let err = format!("{:#}", plan(&p).expect_err("symlink"));
    assert!(
        err.contains("symbolic link") && err.contains("--git-writable-config"),
        "{err}"
    );
    fs::remove_file(p.join(".git")).expect("rm");
    let g = git_dir(&p);
    fs::remove_dir(g.join("hooks")).expect("rm");
    std::os::unix::fs::symlink("/tmp", g.join("hooks")).expect("symlink");
    let err = format!("{:#}", plan(&p).expect_err("symlinked hooks"));
    assert!(err.contains("hooks"), "{err}");
}

#[test]
fn submodule_git_files_are_pinned_and_unpinned_projects_are_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path();
    let g = git_dir(p);
    fs::write(
        p.join(".gitmodules"),
        "[submodule \"lib\"]\n\tpath = lib\n\turl = x\n[submodule \"up\"]\n\tpath = ../up\n",
    )
    .expect("write");
    fs::create_dir_all(p.join("lib")).expect("mkdir");
    fs::create_dir_all(g.join("modules/lib/hooks")).expect("mkdir");
    fs::write(g.join("modules/lib/HEAD"), "x").expect("HEAD");
    fs::write(p.join("lib/.git"), "gitdir: ../.git/modules/lib\n").expect("write");
    let got = pins(&plan(p).expect("plan"));
    assert!(
        got.contains(&(p.join("lib/.git").display().to_string(), false)),
        "{got:?}"
    );
    assert!(
        got.contains(&(g.join("modules/lib/config").display().to_string(), false)),
        "{got:?}"
    );
    assert!(!got.iter().any(|(path, _)| path.contains("/up")), "{got:?}");

    let s = crate::sandbox::settings::Settings {
        projects: vec![p.to_owned()],
        ..crate::sandbox::settings::Settings::default()
    };
    let unit = volumes(p)
        .expect("volumes")
        .iter()
        .map(|v| format!("Volume={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(unpinned(&s, &unit).is_empty());
    // A worktree added after the unit was written is not pinned by it.
    fs::create_dir_all(g.join("worktrees/late")).expect("mkdir");
    assert_eq!(unpinned(&s, &unit), [p.to_owned()]);
    // A pinned path that is gone is named (the start would fail); what `prepare`
    // creates is not.
    assert!(!missing_pins(&s, &unit).is_empty());
    prepare(&plan(p).expect("plan")).expect("prepare");
    assert!(missing_pins(&s, &unit).is_empty());
    fs::remove_file(p.join("lib/.git")).expect("rm");
    assert_eq!(missing_pins(&s, &unit), [p.join("lib/.git")]);
}

/// The agent writes `.gitmodules` with `path = link` and a link `link -> ../globex`,
/// another repository of the user's: nothing of globex is pinned or created, and the
/// warning names the link.
#[test]
fn a_submodule_path_through_a_symlink_pins_and_creates_nothing_there() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(tmp.path()).expect("canonical");
    let acme = root.join("acme");
    let globex = root.join("globex");
    let acme_git = git_dir(&acme);
    let globex_git = globex.join(".git");
    fs::create_dir_all(globex_git.join("objects")).expect("mkdir");
    fs::write(globex_git.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    fs::write(
        acme.join(".gitmodules"),
        "[submodule \"x\"]\n\tpath = link\n\turl = x\n",
    )
    .expect("write");
    std::os::unix::fs::symlink("../globex", acme.join("link")).expect("symlink");

    let plan = plan(&acme).expect("plan");
    for path in plan.pins.iter().map(|p| &p.path) {
        assert!(
            path.starts_with(&acme_git),
            "pinned outside acme's git dir: {}",
            path.display()
        );
    }
    prepare(&plan).expect("prepare");
    let mut globex_files: Vec<String> = fs::read_dir(&globex_git)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    globex_files.sort();
    assert_eq!(globex_files, ["HEAD", "objects"], "files created in globex");
    let w = warnings(&plan);
    assert!(
        w.iter()
            .any(|l| l.contains(&acme.join("link").display().to_string())
                && l.contains("symbolic link")),
        "{w:?}"
    );
}

/// A linked worktree inside the project (where `attach --worktree` puts them): its
/// `.git` file is pinned read-only, so the agent cannot point it at a git dir of its
/// own; one outside the project or through a link is not.
#[test]
fn a_worktrees_git_file_in_the_project_is_pinned_read_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = fs::canonicalize(tmp.path()).expect("canonical");
    let g = git_dir(&p);
    let wt = p.join(".worktrees/feat");
    fs::create_dir_all(&wt).expect("mkdir");
    fs::write(
        wt.join(".git"),
        format!("gitdir: {}\n", g.join("worktrees/feat").display()),
    )
    .expect(".git");
    fs::create_dir_all(g.join("worktrees/feat")).expect("mkdir");
    fs::write(
        g.join("worktrees/feat/gitdir"),
        format!("{}\n", wt.join(".git").display()),
    )
    .expect("gitdir");
    // Relative, as `worktree.useRelativePaths` writes it.
    let rel = p.join("rel");
    fs::create_dir_all(&rel).expect("mkdir");
    fs::write(rel.join(".git"), "gitdir: ../.git/worktrees/rel\n").expect(".git");
    fs::create_dir_all(g.join("worktrees/rel")).expect("mkdir");
    fs::write(g.join("worktrees/rel/gitdir"), "../../../rel/.git\n").expect("gitdir");
    // Outside the project, and through a link: not pinned.
    fs::create_dir_all(g.join("worktrees/out")).expect("mkdir");
    fs::write(g.join("worktrees/out/gitdir"), "/tmp/x/.git\n").expect("gitdir");
    std::os::unix::fs::symlink(&wt, p.join("lnk")).expect("symlink");
    fs::create_dir_all(g.join("worktrees/lnk")).expect("mkdir");
    fs::write(
        g.join("worktrees/lnk/gitdir"),
        format!("{}\n", p.join("lnk/.git").display()),
    )
    .expect("gitdir");

    let plan = plan(&p).expect("plan");
    let got = pins(&plan);
    for file in [wt.join(".git"), rel.join(".git")] {
        assert!(
            got.contains(&(file.display().to_string(), false)),
            "{} not pinned: {got:?}",
            file.display()
        );
    }
    assert_eq!(
        got.iter()
            .filter(|(path, _)| path.ends_with("/.git"))
            .count(),
        3,
        "{got:?}"
    );
    let unit = volumes(&p)
        .expect("volumes")
        .iter()
        .map(|v| format!("Volume={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(pinned_read_only(&unit, &wt.join(".git")));
    assert!(!pinned_read_only(&unit, &p.join("lnk/.git")));
    // The directories above a pin are pinned too, so they cannot be moved aside with
    // the pin in them; parents come before children.
    for dir in [p.join(".worktrees"), wt.clone(), g.join("worktrees")] {
        assert!(
            got.contains(&(dir.display().to_string(), true)),
            "{} not pinned: {got:?}",
            dir.display()
        );
    }
    for (i, pin) in plan.pins.iter().enumerate() {
        assert!(
            !plan.pins[..i].iter().any(|q| q.path.starts_with(&pin.path)),
            "{} comes after something below it",
            pin.path.display()
        );
    }
}

/// A git dir the plan would otherwise reach through a link is refused as a whole.
#[test]
fn no_pin_or_created_path_goes_through_a_symlink() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(tmp.path()).expect("canonical");
    let p = root.join("p");
    git_dir(&p);
    let outside = root.join("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    assert_eq!(
        symlink_on_the_way(&p, &p.join(".git/config")).expect("walk"),
        None
    );
    std::os::unix::fs::symlink(&outside, p.join(".git/lnk")).expect("symlink");
    assert_eq!(
        symlink_on_the_way(&p, &p.join(".git/lnk/config")).expect("walk"),
        Some(p.join(".git/lnk"))
    );
    assert_eq!(
        symlink_on_the_way(&p, &outside).expect("walk"),
        Some(outside.clone())
    );
    assert_eq!(
        symlink_on_the_way(&p, &p.join("a/../../outside")).expect("walk"),
        Some(p.join("a/../../outside"))
    );
}

#[test]
fn hooks_paths_and_includes_inside_the_project_are_pinned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path();
    let g = git_dir(p);
    fs::write(
        g.join("config"),
        "[core]\n\thooksPath = .husky/_\n[include]\n\tpath = ../.gitconfig.shared\n[includeIf \"onbranch:x\"]\n\tpath = /etc/gitconfig.x\n",
    )
    .expect("config");
    let plan = plan(p).expect("plan");
    let got = pins(&plan);
    assert!(
        got.contains(&(p.join(".husky/_").display().to_string(), false)),
        "{got:?}"
    );
    assert!(
        got.contains(&(p.join(".gitconfig.shared").display().to_string(), false)),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|(path, _)| path.starts_with("/etc")),
        "{got:?}"
    );
    // Missing, so created (empty) before they are mounted.
    assert!(plan.create.contains(&Create::Dir(p.join(".husky/_"))));
    assert!(
        plan.create
            .contains(&Create::File(p.join(".gitconfig.shared"), b""))
    );
    // Not through a symlink: it could point anywhere on the host.
    fs::create_dir(p.join("elsewhere")).expect("mkdir");
    std::os::unix::fs::symlink(p.join("elsewhere"), p.join(".husky")).expect("symlink");
    let err = format!("{:#}", self::plan(p).expect_err("symlink"));
    assert!(
        err.contains("symbolic link") && err.contains(".husky"),
        "{err}"
    );
    assert_eq!(
        config_values(
            "[core]\n\tHooksPath = \"a b\"\n[x]\nhookspath = c\n",
            "core",
            "hookspath"
        ),
        ["a b"]
    );
}

#[test]
fn risky_keys_are_named() {
    let text = "[core]\n\tfsmonitor = touch /tmp/x\n\tbare = false\n[alias]\n\tst = status\n\tx = !sh -c id\n[filter \"lfs\"]\n\tsmudge = evil\n[remote \"origin\"]\n\turl = /x\n";
    assert_eq!(
        risky_config_keys(text),
        ["core.fsmonitor", "alias.x", "filter.smudge"]
    );
    assert!(risky_config_keys("[core]\n\tbare = false\n").is_empty());
}

#[test]
fn enable_warns_about_a_risky_config_it_pins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let g = git_dir(tmp.path());
    assert!(warnings(&plan(tmp.path()).expect("plan")).is_empty());
    fs::write(g.join("config"), "[core]\n\tsshCommand = ssh -i k\n").expect("config");
    let w = warnings(&plan(tmp.path()).expect("plan"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("core.sshcommand") && w[0].contains(&g.join("config").display().to_string()),
        "{w:?}"
    );
}
