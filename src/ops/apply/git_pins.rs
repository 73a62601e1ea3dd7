//! The git pins a client's projects need, as steps: what they may create, and creating it.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::base::agent_file::{AgentPath, Kind};
use crate::txn::plan::{Applied, Touch, Undo, missing_dirs};

use super::undo_now;

/// What pinning the git dirs of `projects` may create. A project whose pins cannot be
/// planned has none: its step fails before creating anything.
pub(crate) fn git_pin_touches(projects: &[AgentPath]) -> Vec<Touch> {
    let mut touches = Vec::new();
    for project in projects {
        let Ok(plan) = crate::state::git_guard::plan(project) else {
            continue;
        };
        for c in &plan.create {
            match c {
                crate::state::git_guard::Create::File(f, _) => {
                    touches.extend(f.parent().map(|d| Touch::Dir(d.to_path_buf())));
                    touches.push(Touch::Path(f.clone()));
                }
                crate::state::git_guard::Create::Upgrade(f) => touches.push(Touch::Path(f.clone())),
                crate::state::git_guard::Create::Dir(d) => touches.push(Touch::Dir(d.clone())),
            }
        }
    }
    touches
}

/// Creates what the git pins of `projects` need (a `commondir`, an empty `config` or
/// `hooks/`), and says what the pins do not cover; the undo removes what it created.
pub(crate) fn pin_git_dirs(projects: &[AgentPath]) -> Result<Applied<'static>> {
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<()> {
        for project in projects {
            let plan = crate::state::git_guard::plan(project)?;
            let mut new = Vec::new();
            for c in &plan.create {
                // A rewritten `commondir` means the same to git before and after: the
                // undo leaves it.
                if matches!(c, crate::state::git_guard::Create::Upgrade(_)) {
                    continue;
                }
                let path = c.path();
                // Outermost first, so removing in reverse empties each before its parent.
                for d in path.parent().map(missing_dirs).unwrap_or_default() {
                    if !new.contains(&d) {
                        new.push(d);
                    }
                }
                let missing = AgentPath::new(path)
                    .kind()
                    .map_or(true, |k| k == Kind::Missing);
                if missing && !new.iter().any(|n| n == path) {
                    new.push(path.to_path_buf());
                }
            }
            crate::state::git_guard::prepare(&plan)?;
            created.extend(new);
            for w in crate::state::git_guard::warnings(&plan) {
                eprintln!("{w}");
            }
        }
        Ok(())
    })();
    let undo = Undo::new("remove what was created to pin git dirs", move || {
        for path in created.iter().rev() {
            let removed = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        return Err(undo_now(e, undo));
    }
    if let Some(note) = crate::state::git_guard::submodule_note(projects) {
        eprintln!("{note}");
    }
    Ok(Applied::undo(undo))
}
