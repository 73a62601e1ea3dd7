//! Keeping the agent from writing what git on the host executes. A project is mounted
//! read-write and its files are the user's, so without this an agent could set
//! `core.fsmonitor`, `core.hooksPath`, an alias or a filter driver in `.git/config`, or
//! drop a script into `.git/hooks/`, and git on the host would run it at the user's
//! next `git status` or commit.
//!
//! For each git directory of a project (its `.git`, the admin dirs of linked worktrees
//! in `.git/worktrees/`, submodule git dirs in `.git/modules/`) the unit gets extra bind
//! mounts over the project mount, each at its own host path:
//!
//! - the git dir itself, read-write: a mount point cannot be renamed or removed (EBUSY),
//!   so the agent cannot move it aside and `git init` a new one in its place;
//! - `config`, `hooks/` and `config.worktree` (where the config turns that file on),
//!   read-only;
//! - `commondir`, read-only. Git takes config and hooks from the directory this file
//!   names, so the agent must not be able to create it. A mount needs an existing file,
//!   so `enable` writes one that names the git dir itself (`.`), which git reads as "no
//!   other common dir". The same for a missing `config` (empty) or `hooks/` (empty dir).
//!
//! Everything else in the git dir stays writable, so the agent can commit, branch,
//! fetch and push. The mounts are computed when the unit is written (`enable`).
//!
//! The project is the agent's to write, so the planner sees it only as an [`AgentPath`]:
//! it looks at what is there without following a link, reads git files bounded, and
//! types a path a git file names as the project's only once it lies there by name.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use std::io::Read as _;

use anyhow::{Context, Result, bail};

use crate::base::agent_file::{AgentPath, Kind};

/// One bind mount of a path over itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub path: PathBuf,
    pub writable: bool,
}

/// Something `enable` creates in a git dir so that it can be mounted read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Create {
    File(PathBuf, &'static [u8]),
    Dir(PathBuf),
    /// A `commondir` an older sandboxctl wrote as `.`, rewritten as [`COMMONDIR_SELF`]:
    /// the same to git, and one that libgit2 opens.
    Upgrade(PathBuf),
}

/// The `commondir` that names the git dir itself. Git reads `.` and `./` alike, but
/// libgit2 (1.9.7, measured; IDEs and other tools use it) fails to open a repository
/// whose `commondir` is `.` ("could not find repository") and opens one with `./` as
/// the same, non-worktree repository.
pub const COMMONDIR_SELF: &[u8] = b"./\n";

/// What sandboxctl wrote as [`COMMONDIR_SELF`] before.
const OLD_COMMONDIR_SELF: &str = ".\n";

impl Create {
    /// The path it creates or rewrites.
    pub fn path(&self) -> &Path {
        match self {
            Self::File(p, _) | Self::Dir(p) | Self::Upgrade(p) => p,
        }
    }
}

/// The mounts that protect one project, and what has to exist for them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub pins: Vec<Pin>,
    pub create: Vec<Create>,
    /// Git dirs left unpinned because a symbolic link leads to them, each in a warning.
    pub skipped: Vec<String>,
}

/// How deep submodule git dirs (`modules/a/modules/b`) are followed.
const MAX_DEPTH: usize = 4;

/// Inspects `project` (an absolute, canonical directory) and plans its pins. Reads only.
pub fn plan(project: &AgentPath) -> Result<Plan> {
    let mut plan = Plan::default();
    let dotgit = project.join(".git");
    match kind(&dotgit)? {
        Kind::Missing => {}
        Kind::Dir => {
            plan_gitdir(project, &dotgit, 0, &mut plan)?;
            // A relative `core.hooksPath` in your own git config names a directory of
            // every work tree: inside this project, the agent could write it.
            for text in global_configs() {
                for v in config_values(&text, "core", "hookspath") {
                    pin_named(project, project, &v, Kind::Dir, &mut plan)?;
                }
            }
        }
        Kind::File => {
            // A linked worktree or a submodule: `.git` names the git dir. Pinning the
            // file keeps the agent from pointing it elsewhere; a git dir outside the
            // project is not mounted at all, so the agent cannot write it.
            pin_gitdir_file(project, &dotgit, &mut plan)?;
        }
        Kind::Other => unreachable!("kind() refuses it"),
        Kind::Symlink => bail!(
            "{} is a symbolic link: the agent could replace it with a repository whose config git on the host runs; make it a directory, or allow it with --git-writable-config",
            dotgit.display()
        ),
    }
    plan_submodules(project, &mut plan)?;
    // Every path a pin mounts or `prepare` creates lies in the project and is reached
    // without a symbolic link: a mount follows one, so a link would pin (and `prepare`
    // would write into) whatever it names, another client's repository say.
    let created = plan.create.iter().map(Create::path);
    for path in plan.pins.iter().map(|p| p.path.as_path()).chain(created) {
        if let Some(link) = symlink_on_the_way(project, path)? {
            bail!(
                "{} is reached through the symbolic link {}; sandboxctl cannot make it read-only for the agent; replace the link, or allow it with --git-writable-config",
                path.display(),
                link.display()
            );
        }
    }
    fix_ancestors(project, &mut plan);
    Ok(plan)
}

/// A mount point cannot be renamed or removed, but the directories above it can: the
/// agent could move `.worktrees/feat` aside with its pinned `.git` file and write a new
/// one in its place, which git on the host then reads. So every directory between the
/// project and a pin is pinned onto itself too (read-write), parents before children.
fn fix_ancestors(project: &AgentPath, plan: &mut Plan) {
    let project = project.as_path();
    let mut ancestors: Vec<PathBuf> = Vec::new();
    for pin in &plan.pins {
        for dir in pin.path.ancestors().skip(1) {
            if dir == project || !dir.starts_with(project) {
                break;
            }
            if !plan.pins.iter().any(|p| p.path == dir) && !ancestors.iter().any(|a| a == dir) {
                ancestors.push(dir.to_owned());
            }
        }
    }
    plan.pins.extend(ancestors.into_iter().map(|path| Pin {
        path,
        writable: true,
    }));
    plan.pins.sort_by_key(|p| p.path.components().count());
}

/// The first symbolic link on the way from `project` (excluded) to `path` (included), or
/// the path itself when it lies outside the project; named for a message.
fn symlink_on_the_way(project: &AgentPath, path: &Path) -> Result<Option<PathBuf>> {
    let Ok(rel) = path.strip_prefix(project.as_path()) else {
        return Ok(Some(path.to_owned()));
    };
    let mut at = project.clone();
    for c in rel.components() {
        if !matches!(c, std::path::Component::Normal(_)) {
            return Ok(Some(path.to_owned()));
        }
        at = at.join(c);
        if kind(&at)? == Kind::Symlink {
            return Ok(Some(at.as_path().to_owned()));
        }
    }
    Ok(None)
}

/// The `Volume=` values (`PATH:PATH:ro|rw`) of a project's pins.
pub fn volumes(project: &AgentPath) -> Result<Vec<String>> {
    plan(project)?
        .pins
        .iter()
        .map(|pin| {
            let path = pin.path.to_str().with_context(|| {
                format!(
                    "git path {} is not valid UTF-8; rename it",
                    pin.path.display()
                )
            })?;
            let v = crate::base::escape::volume_path("git path", path)?;
            let mode = if pin.writable { "rw" } else { "ro" };
            Ok(format!("{v}:{v}:{mode}"))
        })
        .collect()
}

/// Projects of `settings` with a git dir that `unit` (the unit file's text) does not
/// pin: they became repositories, or got worktrees or submodules, after `enable`.
pub fn unpinned(settings: &crate::sandbox::settings::Settings, unit: &str) -> Vec<PathBuf> {
    if settings.git_writable_config {
        return Vec::new();
    }
    let lines: Vec<&str> = unit.lines().collect();
    settings
        .agent_projects()
        .into_iter()
        .filter(|p| {
            volumes(p).map_or(true, |vols| {
                vols.iter()
                    .any(|v| !lines.contains(&format!("Volume={v}").as_str()))
            })
        })
        .map(|p| p.as_path().to_owned())
        .collect()
}

/// Paths the unit pins (self-bind `Volume=` lines inside a project) that no longer
/// exist: Podman refuses to start the container until `enable` writes a new unit.
pub fn missing_pins(settings: &crate::sandbox::settings::Settings, unit: &str) -> Vec<PathBuf> {
    let projects = settings.agent_projects();
    unit.lines()
        .filter_map(|l| l.strip_prefix("Volume="))
        .filter_map(|v| {
            let mut parts = v.splitn(3, ':');
            let (host, target) = (parts.next()?, parts.next()?);
            if host != target {
                return None;
            }
            let path = Path::new(host);
            let pin = projects
                .iter()
                .find_map(|p| p.below(path).filter(|pin| pin != p))?;
            pin.kind()
                .map_or(true, |k| k == Kind::Missing)
                .then(|| path.to_owned())
        })
        .collect()
}

/// Submodules checked out in the project (`path = …` in `.gitmodules`): their `.git`
/// file is pinned, and their git dir when it is a directory inside the project.
fn plan_submodules(project: &AgentPath, plan: &mut Plan) -> Result<()> {
    let gitmodules = project.join(".gitmodules");
    if kind(&gitmodules)? != Kind::File {
        return Ok(());
    }
    for line in read_small(&gitmodules)?.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let rel = Path::new(value.trim());
        if key.trim() != "path"
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let dotgit = project.join(rel).join(".git");
        if let Some(link) = symlink_on_the_way(project, dotgit.as_path())? {
            // Through a link the git dir is another repository (outside the project, or
            // one pinned under its own path): nothing is mounted or created for it.
            plan.skipped.push(format!(
                "warning: submodule path {} is reached through the symbolic link {}: sandboxctl pins no git dir through a link; do not run git on the host there",
                project.join(rel).display(),
                link.display()
            ));
            continue;
        }
        match kind(&dotgit)? {
            Kind::File => {
                pin_gitdir_file(project, &dotgit, plan)?;
            }
            Kind::Dir => plan_gitdir(project, &dotgit, 1, plan)?,
            Kind::Missing | Kind::Symlink | Kind::Other => {}
        }
    }
    Ok(())
}

/// Creates what the plan needs to exist (only what is missing; nothing is overwritten).
pub fn prepare(plan: &Plan) -> Result<()> {
    for c in &plan.create {
        match c {
            Create::Dir(d) => match fs::create_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", d.display())),
            },
            Create::Upgrade(f) => {
                if read_small(&AgentPath::new(f))? == OLD_COMMONDIR_SELF {
                    crate::base::atomic::write(f, COMMONDIR_SELF, 0o644)?;
                }
            }
            Create::File(f, text) => {
                if let Some(parent) = f.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                let created = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(f)
                    .and_then(|mut file| std::io::Write::write_all(&mut file, text));
                match created {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot create {}", f.display()));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Warnings for the git dirs a plan left unpinned and the risky settings in the git
/// configs it pins.
pub fn warnings(plan: &Plan) -> Vec<String> {
    let risky = plan
        .pins
        .iter()
        .filter(|p| !p.writable && p.path.file_name().is_some_and(|n| n == "config"))
        .filter_map(|p| {
            let keys = risky_config_keys(&read_small(&AgentPath::new(&p.path)).ok()?);
            (!keys.is_empty()).then(|| {
                format!(
                    "warning: {} sets {}: git on the host runs these; check that you wrote them",
                    p.path.display(),
                    keys.join(", ")
                )
            })
        });
    plan.skipped.iter().cloned().chain(risky).collect()
}

/// A note for `enable` when a project is a repository and your own git config lets
/// `git status` enter submodules, which the agent can add (see docs/security.md, "Git on the host").
pub fn submodule_note(projects: &[AgentPath]) -> Option<String> {
    let repo = projects
        .iter()
        .any(|p| p.join(".git").kind().is_ok_and(|k| k != Kind::Missing));
    let set = global_configs()
        .iter()
        .any(|t| !config_values(t, "diff", "ignoresubmodules").is_empty());
    (repo && !set).then(|| {
        "note: git on the host runs `git status` inside submodules, and the agent can add one with a config of its own; `git config --global diff.ignoreSubmodules dirty` stops that".to_owned()
    })
}

/// Settings in a project's git config that make git on the host run a program. Shown by
/// `enable`, since a config the agent wrote before it was protected stays in effect.
pub fn risky_config_keys(config_text: &str) -> Vec<String> {
    const RISKY: [&str; 10] = [
        "fsmonitor",
        "hookspath",
        "sshcommand",
        "pager",
        "editor",
        "askpass",
        "gitproxy",
        "textconv",
        "uploadpack",
        "receivepack",
    ];
    let mut out = Vec::new();
    let mut section = String::new();
    for line in config_text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix('[') {
            section = rest
                .split([']', ' ', '"'])
                .next()
                .unwrap_or("")
                .to_lowercase();
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let key = key.trim().to_lowercase();
        let risky = RISKY.contains(&key.as_str())
            || (section == "alias" && value.trim_start().trim_start_matches('"').starts_with('!'))
            || (section == "filter" && ["clean", "smudge", "process"].contains(&key.as_str()))
            || ((section == "diff" || section == "merge")
                && ["command", "driver"].contains(&key.as_str()))
            || (section == "credential" && key == "helper")
            || section == "include"
            || section == "includeif";
        if risky {
            out.push(format!("{section}.{key}"));
        }
    }
    out.dedup();
    out
}

/// What is at a path of the project; a FIFO, socket or device there is an error.
fn kind(p: &AgentPath) -> Result<Kind> {
    match p.kind()? {
        Kind::Other => bail!(
            "{} is neither a file nor a directory; remove it",
            p.display()
        ),
        k => Ok(k),
    }
}

/// The directory a `gitdir: PATH` file names, resolved, when it lies in the project.
fn gitdir_of_file(project: &AgentPath, file: &AgentPath) -> Result<Option<AgentPath>> {
    let text = read_small(file)?;
    let Some(target) = text.trim_end().strip_prefix("gitdir: ") else {
        return Ok(None);
    };
    let base = file.parent().unwrap_or_else(|| AgentPath::new("/"));
    Ok(base
        .join(target)
        .resolved()
        .and_then(|dir| project.below(&dir)))
}

/// Largest git file (config, `.gitmodules`, `gitdir`, `commondir`) the planner reads.
const MAX_GIT_FILE: u64 = 1 << 20;

/// Most entries of `worktrees/` or `modules/` the planner lists.
const MAX_GIT_ENTRIES: usize = 10_000;

/// A file of a project, which the agent writes: read bounded, never through a link, and
/// never blocking on a FIFO (see [`AgentPath`]).
fn read_small(file: &AgentPath) -> Result<String> {
    let bytes = file
        .read(MAX_GIT_FILE)?
        .with_context(|| format!("{} is missing", file.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A `.git` file (a linked worktree or a submodule) is pinned read-only, and the git dir
/// it names is planned too when it lies inside the project.
fn pin_gitdir_file(project: &AgentPath, dotgit: &AgentPath, plan: &mut Plan) -> Result<()> {
    plan.pins.push(Pin {
        path: dotgit.as_path().to_owned(),
        writable: false,
    });
    if let Some(gitdir) = gitdir_of_file(project, dotgit)?
        && kind(&gitdir)? == Kind::Dir
    {
        plan_gitdir(project, &gitdir, 1, plan)?;
    }
    Ok(())
}

/// Whether the plan pins `path` already.
fn pinned(plan: &Plan, path: &AgentPath) -> bool {
    plan.pins.iter().any(|p| p.path == path.as_path())
}

fn plan_gitdir(
    project: &AgentPath,
    gitdir: &AgentPath,
    depth: usize,
    plan: &mut Plan,
) -> Result<()> {
    if depth > MAX_DEPTH || pinned(plan, gitdir) {
        return Ok(());
    }
    plan.pins.push(Pin {
        path: gitdir.as_path().to_owned(),
        writable: true,
    });
    let config = gitdir.join("config");
    let config_text = match kind(&config)? {
        Kind::Missing => {
            plan.create
                .push(Create::File(config.as_path().to_owned(), b""));
            String::new()
        }
        Kind::File => read_small(&config)?,
        _ => bail!(
            "{} is not a regular file; git on the host would not read it as the repository's config",
            config.display()
        ),
    };
    pin_ro(&config, Kind::File, plan)?;
    // What the config names inside the project: a hooks dir (`core.hooksPath`, e.g.
    // husky's), relative to the work tree, and included config files, relative to the
    // git dir. Both would run the agent's code on the host.
    let worktree = if *gitdir == project.join(".git") {
        project.clone()
    } else {
        config_values(&config_text, "core", "worktree")
            .last()
            .map_or_else(|| gitdir.clone(), |w| gitdir.join(w))
    };
    for v in config_values(&config_text, "core", "hookspath") {
        pin_named(project, &worktree, &v, Kind::Dir, plan)?;
    }
    let includes = config_values(&config_text, "include", "path");
    for v in includes
        .into_iter()
        .chain(config_values(&config_text, "includeif", "path"))
    {
        pin_named(project, gitdir, &v, Kind::File, plan)?;
    }
    let hooks = gitdir.join("hooks");
    if kind(&hooks)? == Kind::Missing {
        plan.create.push(Create::Dir(hooks.as_path().to_owned()));
    }
    pin_ro(&hooks, Kind::Dir, plan)?;
    let commondir = gitdir.join("commondir");
    match kind(&commondir)? {
        Kind::Missing => plan
            .create
            .push(Create::File(commondir.as_path().to_owned(), COMMONDIR_SELF)),
        Kind::File => {
            let target = read_small(&commondir)?;
            if target == OLD_COMMONDIR_SELF {
                plan.create
                    .push(Create::Upgrade(commondir.as_path().to_owned()));
            }
            if let Some(common) = gitdir
                .join(target.trim_end_matches(['\n', '\r']))
                .resolved()
                .and_then(|c| project.below(&c))
                && common != *gitdir
            {
                plan_gitdir(project, &common, depth + 1, plan)?;
            }
        }
        _ => {}
    }
    pin_ro(&commondir, Kind::File, plan)?;
    let worktree_config = config_text.to_lowercase().contains("worktreeconfig");
    if worktree_config {
        pin_created_file(&gitdir.join("config.worktree"), plan)?;
    }
    for admin in subdirs(&gitdir.join("worktrees"))? {
        plan.pins.push(Pin {
            path: admin.as_path().to_owned(),
            writable: true,
        });
        let c = admin.join("commondir");
        if kind(&c)? == Kind::File {
            pin_ro(&c, Kind::File, plan)?;
        }
        if worktree_config {
            pin_created_file(&admin.join("config.worktree"), plan)?;
        }
        // The worktree's own `.git` file names this admin dir; writable, it could name a
        // git dir the agent made, whose config git on the host obeys in that worktree.
        if let Some(file) = worktree_dotgit(project, &admin)?
            && !pinned(plan, &file)
        {
            pin_ro(&file, Kind::File, plan)?;
        }
    }
    for module in module_gitdirs(&gitdir.join("modules"), 0)? {
        plan_gitdir(project, &module, depth + 1, plan)?;
    }
    Ok(())
}

/// The `.git` file of the linked worktree whose admin dir is `admin` (its `gitdir` file
/// names it, absolute or relative to `admin`), when it lies in the project, is reached
/// without a symbolic link and is a regular file.
fn worktree_dotgit(project: &AgentPath, admin: &AgentPath) -> Result<Option<AgentPath>> {
    let named = admin.join("gitdir");
    if kind(&named)? != Kind::File {
        return Ok(None);
    }
    let file = normalize(
        admin
            .join(read_small(&named)?.trim_end_matches(['\n', '\r']))
            .as_path(),
    );
    if file.file_name().is_none_or(|n| n != ".git") {
        return Ok(None);
    }
    // Outside the project it is not ours to pin (`symlink_on_the_way` says so too).
    let Some(file) = project.below(&file) else {
        return Ok(None);
    };
    if symlink_on_the_way(project, file.as_path())?.is_some() || kind(&file)? != Kind::File {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Whether `unit` (a unit file's text) mounts `path` onto itself read-only.
pub fn pinned_read_only(unit: &str, path: &Path) -> bool {
    let Some(v) = path
        .to_str()
        .and_then(|p| crate::base::escape::volume_path("git path", p).ok())
    else {
        return false;
    };
    let want = format!("Volume={v}:{v}:ro");
    crate::base::unit_text::volume_lines(unit).contains(&want)
}

/// Pins a path a config names (`~/`, absolute, or relative to `base`) when it lies in the
/// project, creating it empty if it is missing so the agent cannot create it.
fn pin_named(
    project: &AgentPath,
    base: &AgentPath,
    value: &str,
    want: Kind,
    plan: &mut Plan,
) -> Result<()> {
    // Only a name until it is found to lie in the project.
    let named = match value.strip_prefix("~/") {
        Some(rest) => match dirs::home_dir() {
            Some(home) => home.join(rest),
            None => return Ok(()),
        },
        None => base.as_path().join(value),
    };
    let Some(path) = project.below(&normalize(&named)) else {
        return Ok(());
    };
    if pinned(plan, &path) {
        return Ok(());
    }
    // Through a symlink the mount (and the file `enable` creates) would land elsewhere.
    for dir in path
        .as_path()
        .ancestors()
        .skip(1)
        .map_while(|d| project.below(d))
        .take_while(|d| d != project)
    {
        if kind(&dir)? == Kind::Symlink {
            bail!(
                "{} (named by a git config) is reached through the symbolic link {}; sandboxctl cannot make it read-only for the agent; replace the link, or allow it with --git-writable-config",
                path.display(),
                dir.display()
            );
        }
    }
    if kind(&path)? == Kind::Missing {
        let name = path.as_path().to_owned();
        plan.create.push(match want {
            Kind::Dir => Create::Dir(name),
            _ => Create::File(name, b""),
        });
    }
    pin_ro(&path, want, plan)
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The user's own git config files (`$GIT_CONFIG_GLOBAL`, else `~/.gitconfig` and
/// `$XDG_CONFIG_HOME/git/config`), as text; includes in them are not followed.
fn global_configs() -> Vec<String> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("GIT_CONFIG_GLOBAL") {
        files.push(PathBuf::from(f));
    } else {
        if let Some(home) = dirs::home_dir() {
            files.push(home.join(".gitconfig"));
        }
        if let Some(config) = dirs::config_dir() {
            files.push(config.join("git/config"));
        }
    }
    // Your own files (a symlinked ~/.gitconfig is fine here), read bounded all the same.
    files
        .iter()
        .filter_map(|f| {
            let mut text = String::new();
            fs::File::open(f)
                .ok()?
                .take(MAX_GIT_FILE)
                .read_to_string(&mut text)
                .ok()?;
            Some(text)
        })
        .collect()
}

/// The values of `section.key` (both lower case; a subsection is ignored) in a git
/// config text, unquoted, in order.
fn config_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix('[') {
            current = rest
                .split([']', ' ', '"'])
                .next()
                .unwrap_or("")
                .to_lowercase();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = l.split_once('=')
            && k.trim().eq_ignore_ascii_case(key)
        {
            out.push(v.trim().trim_matches('"').to_owned());
        }
    }
    out
}

fn pin_created_file(path: &AgentPath, plan: &mut Plan) -> Result<()> {
    if kind(path)? == Kind::Missing {
        plan.create
            .push(Create::File(path.as_path().to_owned(), b""));
    }
    pin_ro(path, Kind::File, plan)
}

/// A read-only pin; a path that exists must be what git expects, never a symlink (a
/// mount would follow it).
fn pin_ro(path: &AgentPath, want: Kind, plan: &mut Plan) -> Result<()> {
    let k = kind(path)?;
    if k != Kind::Missing && k != want {
        bail!(
            "{} is a symbolic link or of an unexpected type; sandboxctl cannot make it read-only for the agent; replace it with a plain {}, or allow it with --git-writable-config",
            path.display(),
            if want == Kind::Dir {
                "directory"
            } else {
                "file"
            }
        );
    }
    plan.pins.push(Pin {
        path: path.as_path().to_owned(),
        writable: false,
    });
    Ok(())
}

/// Real subdirectories (not symlinks) of `dir`, sorted; none if it does not exist.
fn subdirs(dir: &AgentPath) -> Result<Vec<AgentPath>> {
    if kind(dir)? != Kind::Dir {
        return Ok(Vec::new());
    }
    let mut out: Vec<AgentPath> = dir
        .read_dir(MAX_GIT_ENTRIES)?
        .into_iter()
        .filter(|e| e.kind == Kind::Dir)
        .map(|e| e.path)
        .collect();
    out.sort();
    Ok(out)
}

/// Submodule git dirs below `.git/modules` (names may contain `/`): dirs with a `HEAD`.
/// A `HEAD` that is a symbolic link counts (git writes one where `core.preferSymlinkRefs`
/// is set); it is not followed.
fn module_gitdirs(dir: &AgentPath, depth: usize) -> Result<Vec<AgentPath>> {
    let mut out = Vec::new();
    if depth > MAX_DEPTH {
        return Ok(out);
    }
    for d in subdirs(dir)? {
        if matches!(d.join("HEAD").kind(), Ok(Kind::File | Kind::Symlink)) {
            out.push(d);
        } else {
            out.extend(module_gitdirs(&d, depth + 1)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "git_guard_tests.rs"]
mod tests;
