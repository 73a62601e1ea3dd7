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

pub(crate) mod config;
pub(crate) mod gitdir;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::base::agent_file::{AgentPath, Kind};

#[allow(clippy::wildcard_imports)]
use config::*;
pub use gitdir::pinned_read_only;
#[allow(clippy::wildcard_imports)]
use gitdir::*;

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

/// Whether the plan pins `path` already.
fn pinned(plan: &Plan, path: &AgentPath) -> bool {
    plan.pins.iter().any(|p| p.path == path.as_path())
}
