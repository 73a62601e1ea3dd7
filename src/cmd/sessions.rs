//! `sessions` and `worktree rm`: what runs in a sandbox's tmux sessions, and removing a
//! worktree made by `attach --worktree`.

use anyhow::Result;

use crate::base::output::outln;
use crate::ops::sessions::{check_worktree_name, list, remove_worktree, require_running};
use crate::sandbox::layout::Layout;

pub fn sessions(layout: &Layout, name: &str, json: bool) -> Result<()> {
    let (client, settings) = crate::ops::clients::known_with_podman(layout, name)?;
    require_running(&client)?;
    let rows = list(layout, &client, &settings)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        outln!("no sessions in {client}; `sandboxctl attach {client}` starts one");
        return Ok(());
    }
    outln!(
        "{:<20} {:<12} {:<18} WORKTREE",
        "SESSION",
        "COMMAND",
        "STATE"
    );
    for r in &rows {
        let host_git = match r.host_git_pinned {
            Some(true) => " (git on the host: pinned)".to_owned(),
            Some(false) => format!(
                " (git on the host: NOT safe until `sandboxctl enable {client}` and a restart)"
            ),
            None => String::new(),
        };
        outln!(
            "{:<20} {:<12} {:<18} {}{host_git}",
            r.session,
            r.command,
            r.activity,
            r.worktree.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub fn worktree_rm(layout: &Layout, name: &str, worktree: &str, force: bool) -> Result<()> {
    check_worktree_name(worktree)?;
    let (client, settings) = crate::ops::clients::known_with_podman(layout, name)?;
    let (project, ended) = remove_worktree(&client, &settings, worktree, force)?;
    outln!(
        "removed the worktree {worktree} of {client}{}; its branch {worktree} stays (`sandboxctl exec {client} -- git -C {project} branch -D {worktree}` deletes it)",
        if ended { " and ended its session" } else { "" }
    );
    Ok(())
}
