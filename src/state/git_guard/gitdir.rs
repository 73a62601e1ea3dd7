//! Finding a project's git dirs (its own, its worktrees', its submodules') and planning
//! the read-only pins of each, without following a link the agent could plant.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::base::agent_file::{AgentPath, Kind};

#[allow(clippy::wildcard_imports)]
use super::*;

/// Submodules checked out in the project (`path = …` in `.gitmodules`): their `.git`
/// file is pinned, and their git dir when it is a directory inside the project.
pub(crate) fn plan_submodules(project: &AgentPath, plan: &mut Plan) -> Result<()> {
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

/// What is at a path of the project; a FIFO, socket or device there is an error.
pub(crate) fn kind(p: &AgentPath) -> Result<Kind> {
    match p.kind()? {
        Kind::Other => bail!(
            "{} is neither a file nor a directory; remove it",
            p.display()
        ),
        k => Ok(k),
    }
}

/// The directory a `gitdir: PATH` file names, resolved, when it lies in the project.
pub(crate) fn gitdir_of_file(project: &AgentPath, file: &AgentPath) -> Result<Option<AgentPath>> {
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
pub(crate) const MAX_GIT_FILE: u64 = 1 << 20;

/// Most entries of `worktrees/` or `modules/` the planner lists.
pub(crate) const MAX_GIT_ENTRIES: usize = 10_000;

/// A file of a project, which the agent writes: read bounded, never through a link, and
/// never blocking on a FIFO (see [`AgentPath`]).
pub(crate) fn read_small(file: &AgentPath) -> Result<String> {
    let bytes = file
        .read(MAX_GIT_FILE)?
        .with_context(|| format!("{} is missing", file.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A `.git` file (a linked worktree or a submodule) is pinned read-only, and the git dir
/// it names is planned too when it lies inside the project.
pub(crate) fn pin_gitdir_file(
    project: &AgentPath,
    dotgit: &AgentPath,
    plan: &mut Plan,
) -> Result<()> {
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

pub(crate) fn plan_gitdir(
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
pub(crate) fn worktree_dotgit(project: &AgentPath, admin: &AgentPath) -> Result<Option<AgentPath>> {
    let named = admin.join("gitdir");
    if kind(&named)? != Kind::File {
        return Ok(None);
    }
    let file = crate::base::lexical::normalize(
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
pub(crate) fn pin_named(
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
    let Some(path) = project.below(&crate::base::lexical::normalize(&named)) else {
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

pub(crate) fn pin_created_file(path: &AgentPath, plan: &mut Plan) -> Result<()> {
    if kind(path)? == Kind::Missing {
        plan.create
            .push(Create::File(path.as_path().to_owned(), b""));
    }
    pin_ro(path, Kind::File, plan)
}

/// A read-only pin; a path that exists must be what git expects, never a symlink (a
/// mount would follow it).
pub(crate) fn pin_ro(path: &AgentPath, want: Kind, plan: &mut Plan) -> Result<()> {
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
pub(crate) fn subdirs(dir: &AgentPath) -> Result<Vec<AgentPath>> {
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
pub(crate) fn module_gitdirs(dir: &AgentPath, depth: usize) -> Result<Vec<AgentPath>> {
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
