//! Starting, stopping and restarting a client's sandbox: the one way sandboxctl does it,
//! whichever command asks (`start`, `attach`, `enable --now`, `run`, `restart`,
//! `update`, `doctor --fix`). A start syncs a shared Claude login first, recreates what
//! the unit mounts, refreshes the unit, builds the default image if missing, clears a
//! start limit, follows the job to its result and returns once the agent runs.

use anyhow::{Result, anyhow};

use crate::base::output::outln;
use crate::host::systemd::{START_LIMIT_HIT, ServiceOutcome, Systemd, SystemdError, Verb};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

/// Runs `verb` on the client's sandbox (see the module's documentation).
pub fn run(
    layout: &Layout,
    systemd: &Systemd,
    client: &ClientName,
    settings: &Settings,
    verb: Verb,
) -> Result<()> {
    // A shared Claude login: the fresher copy wins before a start and after a stop.
    crate::state::claude_login::sync_client(layout, client, settings);
    if !matches!(verb, Verb::Stop) {
        prepare_start(layout, systemd, client, settings)?;
    }
    run_job(systemd, client, settings, verb)?;
    if !matches!(verb, Verb::Stop) {
        super::sessions::wait_for_agent(client);
    }
    crate::state::claude_login::sync_client(layout, client, settings);
    Ok(())
}

/// Runs the job; a start or restart first builds the default image if it is missing
/// (any other image is pulled by Podman within the start job) and clears the unit's
/// failed state, and a failure carries the reason and the unit's last log lines.
fn run_job(systemd: &Systemd, client: &ClientName, settings: &Settings, verb: Verb) -> Result<()> {
    if !matches!(verb, Verb::Stop) && settings.image == crate::host::image::DEFAULT_IMAGE {
        crate::host::image::ensure(&settings.image)?;
    }
    let unit = client.service_name();
    if !matches!(verb, Verb::Stop) {
        // A start the user asks for is deliberate: systemd's start limit (5 starts in
        // 10 s), which quick start/stop cycles also reach, must not refuse it.
        // `ResetFailedUnit` clears that count and the failed state; the restarts
        // `Restart=on-failure` makes on its own still count, so a crash loop still ends.
        systemd.reset_failed(&unit)?;
    }
    match systemd.run_job(verb, &unit) {
        Ok(()) => {
            let done = match verb {
                Verb::Start => "started",
                Verb::Stop => "stopped",
                Verb::Restart => "restarted",
            };
            outln!("{done} {client} ({unit})");
            Ok(())
        }
        Err(e) => Err(explain(e, client, systemd)),
    }
}

/// What every start by sandboxctl does first: the client's directories, the git pins'
/// needs, the masks looked for again.
fn prepare_start(
    layout: &Layout,
    systemd: &Systemd,
    client: &ClientName,
    settings: &Settings,
) -> Result<()> {
    recreate_client_dirs(layout, client)?;
    warn_unpinned(layout, client, settings);
    refresh_unit(layout, systemd, client, settings)
}

/// Before a start: recreates a client directory the unit mounts that is gone (a deleted
/// `home/`, or a client enabled before it existed), since Podman refuses to start
/// with a missing bind source. Says which, since the agent finds it empty.
fn recreate_client_dirs(layout: &Layout, client: &ClientName) -> Result<()> {
    let missing: Vec<std::path::PathBuf> = crate::sandbox::layout::CLIENT_SUBDIRS
        .iter()
        .map(|sub| layout.client_subdir(client, sub))
        .chain(std::iter::once(layout.mask_file(client)))
        .filter(|p| std::fs::symlink_metadata(p).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    layout.create_client_dirs(client)?;
    for p in missing {
        eprintln!("note: {} was missing; created it empty", p.display());
    }
    Ok(())
}

/// Before a start: recreates what the git pins need (a deleted `commondir`, say, which
/// Podman would refuse to mount), and says how to pin git dirs that appeared after the
/// unit was written (a repository, worktree or submodule), which the agent can write.
fn warn_unpinned(layout: &Layout, client: &ClientName, settings: &Settings) {
    let Some((_, unit)) = crate::render::written_unit(layout, client) else {
        return;
    };
    let unit = crate::render::volume_lines(&unit).join("\n");
    if settings.git_writable_config {
        return;
    }
    for project in settings.agent_projects() {
        if let Err(e) = crate::state::git_guard::plan(&project)
            .and_then(|plan| crate::state::git_guard::prepare(&plan))
        {
            eprintln!("warning: {e:#}");
        }
    }
    for p in crate::state::git_guard::missing_pins(settings, &unit) {
        eprintln!(
            "warning: {} is mounted by the unit but no longer exists, so Podman will not start the sandbox; run `sandboxctl enable {client}`",
            p.display()
        );
    }
    for p in crate::state::git_guard::unpinned(settings, &unit) {
        eprintln!(
            "warning: the git dirs of {} are not all read-only for the agent (a repository, worktree or submodule added after `enable`); run `sandboxctl enable {client}` and restart to protect them",
            p.display()
        );
    }
}

/// Before a start: rewrites the unit (and reloads) when it masks other files than the
/// projects now hold (a secret file added since `enable` is hidden too) or runs another
/// image than the settings say (`update` pins a client, or ends its pin, through the
/// settings). A project that cannot be looked through, or a file that cannot be masked,
/// stops the start (`mask` fails closed).
fn refresh_unit(
    layout: &Layout,
    systemd: &Systemd,
    client: &ClientName,
    settings: &Settings,
) -> Result<()> {
    let Some((path, unit)) = crate::render::written_unit(layout, client) else {
        return Ok(());
    };
    let patterns = crate::state::mask::patterns(settings);
    let mut now = Vec::new();
    for project in settings.agent_projects() {
        for f in crate::state::mask::files(&project, &patterns)? {
            now.push(f.to_string_lossy().into_owned());
        }
    }
    let mut before = crate::state::mask::in_unit(&unit, &layout.mask_file(client));
    now.sort();
    before.sort();
    let image = settings.running_image();
    let runs_image = unit.lines().map(str::trim).any(|l| {
        l == format!("Image={image}")
            || l.trim_end_matches('\\').trim_end() == format!("\"{image}\"")
    });
    if now == before && runs_image {
        return Ok(());
    }
    let _lock = crate::txn::lock::ChangeLock::take(layout)?;
    let host = crate::host::HostProfile::detect(&layout.cache_dir, false);
    let sandbox = crate::render::model::Sandbox {
        client,
        settings,
        layout,
        host: &host,
    };
    let fresh = crate::render::unit_file(&sandbox)?;
    if fresh.path != path {
        eprintln!(
            "warning: the files to mask in {client} changed, but this host now gets {} instead of {}: run `sandboxctl enable {client}` to write it",
            fresh.path.display(),
            path.display()
        );
        return Ok(());
    }
    crate::base::atomic::write(&path, fresh.text.as_bytes(), crate::render::UNIT_MODE)?;
    systemd.reload()?;
    if now != before {
        outln!(
            "{client}: {} (the unit now masks what matches)",
            crate::state::mask::summary(settings, now.len())
        );
    }
    Ok(())
}

/// Adds what the user needs to act on a failed job: why it failed, in words where
/// systemd's result says more than "failed", and the unit's last log lines.
fn explain(e: anyhow::Error, client: &ClientName, systemd: &Systemd) -> anyhow::Error {
    match e.downcast_ref::<SystemdError>() {
        Some(SystemdError::NoSuchUnit(unit)) => anyhow!(
            "systemd does not know {unit}: run `sandboxctl enable {client}` (it reloads systemd and reports a unit the Quadlet generator rejects)"
        ),
        Some(SystemdError::JobFailed { unit, .. }) => {
            let mut head = systemd
                .service_outcome(unit)
                .ok()
                .flatten()
                .and_then(|o| stopped_by_start_limit(client, unit, &o))
                .unwrap_or_else(|| e.to_string());
            // The most common cause Podman's own words bury: no room to create the
            // container. Named first, with the fix.
            if let Some(st) = crate::host::podman::Storage::probe()
                .ok()
                .filter(crate::host::podman::Storage::is_full)
            {
                head = format!(
                    "{}: {}, then `sandboxctl start {client}` ({head})",
                    st.full_in_words(),
                    crate::host::podman::STORAGE_FIX
                );
            }
            let lines = crate::ops::logs::last_lines(client, 15);
            if lines.is_empty() {
                anyhow!("{head}; see `sandboxctl logs {client}`")
            } else {
                let mut msg = format!("{head}; last log lines:");
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

/// What happened, in words, when systemd's start limit stopped a service: after
/// restarts of its own (a crash loop: with `Restart=on-failure`, only the start limit
/// ends them; `Result` then keeps the last failure's reason), or on a start asked for
/// too often (`Result` is `start-limit-hit`). `None` for any other ending.
pub fn stopped_by_start_limit(
    client: &ClientName,
    unit: &str,
    outcome: &ServiceOutcome,
) -> Option<String> {
    if outcome.restarts > 0 {
        Some(format!(
            "{unit} failed {} times in a row: systemd restarted it {} times, then stopped at its start limit (a crash loop); see `sandboxctl logs {client}`, fix the cause, then `sandboxctl start {client}` tries again",
            outcome.restarts + 1,
            outcome.restarts
        ))
    } else if outcome.result == START_LIMIT_HIT {
        Some(format!(
            "{unit} was started too often in a short time and systemd refused (start limit hit); `sandboxctl start {client}` clears the limit and starts it"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(result: &str, restarts: u32) -> Option<String> {
        let client = ClientName::parse("acme").expect("name");
        let outcome = ServiceOutcome {
            result: result.to_owned(),
            restarts,
        };
        stopped_by_start_limit(&client, "agent-acme.service", &outcome)
    }

    #[test]
    fn start_limit_in_words() {
        // A crash loop: systemd's restarts ended at the limit; Result keeps the last
        // failure's reason (measured with systemd 252).
        let crash = words("exit-code", 5).expect("a crash loop");
        assert!(
            crash.starts_with("agent-acme.service failed 6 times in a row: systemd restarted it 5 times, then stopped at its start limit (a crash loop)"),
            "{crash}"
        );
        assert!(
            crash.contains("`sandboxctl start acme` tries again"),
            "{crash}"
        );
        // Started too often by hand (not through sandboxctl, which clears the limit).
        let refused = words("start-limit-hit", 0).expect("start limit");
        assert!(
            refused.contains("started too often") && refused.contains("`sandboxctl start acme`"),
            "{refused}"
        );
        // Anything else is left to the job's own error.
        assert_eq!(words("exit-code", 0), None);
        assert_eq!(words("success", 0), None);
    }
}
