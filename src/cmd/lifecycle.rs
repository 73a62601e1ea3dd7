//! `start`, `stop`, `restart`: systemd jobs over D-Bus, followed to their result.

use anyhow::{Result, anyhow};

use crate::client::ClientName;
use crate::layout::Layout;
use crate::settings::Settings;
use crate::systemd::{START_LIMIT_HIT, Systemd, SystemdError, Verb};

pub fn job(layout: &Layout, name: &str, verb: Verb) -> Result<()> {
    let (client, settings) = super::known_client(layout, name)?;
    let systemd = Systemd::connect_user()?;
    run_job(&systemd, &client, &settings, verb)
}

/// Runs the job; a start or restart first builds the default image if it is missing
/// (any other image is pulled by Podman within the start job) and clears the unit's
/// failed state, and a failure carries the reason and the unit's last log lines.
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
            println!("{done} {client} ({unit})");
            Ok(())
        }
        Err(e) => Err(explain(e, client, systemd)),
    }
}

/// Adds what the user needs to act on a failed job: why it failed, in words where
/// systemd's result says more than "failed", and the unit's last log lines.
pub fn explain(e: anyhow::Error, client: &ClientName, systemd: &Systemd) -> anyhow::Error {
    match e.downcast_ref::<SystemdError>() {
        Some(SystemdError::NoSuchUnit(unit)) => anyhow!(
            "systemd does not know {unit}: run `sandboxctl enable {client}` (it reloads systemd and reports a unit the Quadlet generator rejects)"
        ),
        Some(SystemdError::JobFailed { unit, .. }) => {
            let head = match systemd.service_result(unit) {
                Ok(Some(r)) if r == START_LIMIT_HIT => {
                    format!("{unit} {}", crash_loop(client))
                }
                _ => e.to_string(),
            };
            let lines = crate::logs::last_lines(client, 15);
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

/// What a unit that ended over its start limit went through, and what to do.
pub fn crash_loop(client: &ClientName) -> String {
    format!(
        "kept failing and systemd stopped restarting it (start limit hit: a crash loop, the sandbox exited again and again right after starting); see `sandboxctl logs {client}`, fix the cause, then `sandboxctl start {client}` tries again"
    )
}
