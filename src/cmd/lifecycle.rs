//! `start`, `stop`, `restart`: systemd jobs over D-Bus, followed to their result.

use anyhow::{Result, anyhow};

use crate::client::ClientName;
use crate::layout::Layout;
use crate::settings::Settings;
use crate::systemd::{Systemd, SystemdError, Verb};

pub fn job(layout: &Layout, name: &str, verb: Verb) -> Result<()> {
    let (client, settings) = super::known_client(layout, name)?;
    let systemd = Systemd::connect_user()?;
    // A shared Claude login: the fresher copy wins before a start and after a stop.
    crate::claude_login::sync_client(layout, &client, &settings);
    if !matches!(verb, Verb::Stop) {
        warn_unpinned(layout, &client, &settings);
    }
    run_job(&systemd, &client, &settings, verb)?;
    crate::claude_login::sync_client(layout, &client, &settings);
    Ok(())
}

/// Runs the job; a start or restart first builds the default image if it is missing
/// (any other image is pulled by Podman within the start job), and a failure carries the
/// unit's last log lines.
pub fn run_job(
    systemd: &Systemd,
    client: &ClientName,
    settings: &Settings,
    verb: Verb,
) -> Result<()> {
    if !matches!(verb, Verb::Stop) && settings.image == crate::image::DEFAULT_IMAGE {
        crate::image::ensure(&settings.image)?;
    }
    let unit = client.service_name();
    match systemd.run_job(verb, &unit) {
        Ok(()) => {
            let done = match verb {
                Verb::Start => "started",
                Verb::Stop => "stopped",
                Verb::Restart => "restarted",
            };
            println!("{done} {client} ({unit})");
            Ok(())
        }
        Err(e) => Err(explain(e, client)),
    }
}

/// Before a start: recreates what the git pins need (a deleted `commondir`, say, which
/// Podman would refuse to mount), and says how to pin git dirs that appeared after the
/// unit was written (a repository, worktree or submodule), which the agent can write.
pub fn warn_unpinned(layout: &Layout, client: &ClientName, settings: &Settings) {
    let Ok(unit) = std::fs::read_to_string(layout.unit_path(client)) else {
        return;
    };
    if settings.git_writable_config {
        return;
    }
    for project in &settings.projects {
        if let Err(e) =
            crate::git_guard::plan(project).and_then(|plan| crate::git_guard::prepare(&plan))
        {
            eprintln!("warning: {e:#}");
        }
    }
    for p in crate::git_guard::missing_pins(settings, &unit) {
        eprintln!(
            "warning: {} is mounted by the unit but no longer exists, so Podman will not start the sandbox; run `sandboxctl enable {client}`",
            p.display()
        );
    }
    for p in crate::git_guard::unpinned(settings, &unit) {
        eprintln!(
            "warning: the git dirs of {} are not all read-only for the agent (a repository, worktree or submodule added after `enable`); run `sandboxctl enable {client}` and restart to protect them",
            p.display()
        );
    }
}

/// Adds what the user needs to act on a failed job.
pub fn explain(e: anyhow::Error, client: &ClientName) -> anyhow::Error {
    match e.downcast_ref::<SystemdError>() {
        Some(SystemdError::NoSuchUnit(unit)) => anyhow!(
            "systemd does not know {unit}: run `sandboxctl enable {client}` (it reloads systemd and reports a unit the Quadlet generator rejects)"
        ),
        Some(SystemdError::JobFailed { .. }) => {
            let lines = crate::logs::last_lines(client, 15);
            if lines.is_empty() {
                e.context(format!("see `sandboxctl logs {client}`"))
            } else {
                let mut msg = format!("{e}; last log lines:");
                for l in lines {
                    msg.push_str("\n  ");
                    msg.push_str(&l);
                }
                anyhow!(msg)
            }
        }
        None => e,
    }
}
