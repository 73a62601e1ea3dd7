//! `update`: restarts the clients whose image name now points to another image than
//! their container runs, and rolls a client back to its previous image when the new one
//! does not come up.
//!
//! A client is restarted only when none of its tmux sessions is busy (see
//! `sessions::Row::busy`) unless `--force`. Before the restart the old image gets the
//! name `REPO:TAG-previous` (`image::previous_name`), so that neither a prune nor a
//! later build loses it. The rollback is the client's alone: its settings pin the old
//! image's ID (`Settings::image_pin`), which its unit then runs, and the old image keeps
//! a name of that client's (`image::pinned_name`). The name every client shares stays
//! on the new image, so one client's failed start (which its agent can cause) changes
//! nothing for the others; the next `update` of the pinned client tries the new image
//! again. What the sandbox says (its tmux sessions) is read bounded and sanitised by
//! `sessions::list`; image labels are shown through `terminal::one_line`
//! (`image::inspect_image`).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::base::output::outln;
use crate::host::image::{self, ImageState};
use crate::host::systemd::{Systemd, Verb};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

/// How long a restarted sandbox must stay up, without systemd restarting it, to count
/// as started: a container whose command fails exits within a second or two, and
/// `Restart=on-failure` then restarts it (`NRestarts` counts that).
const SETTLE: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(500);

pub enum Outcome {
    Done,
    Skipped,
}

pub fn update_one(
    layout: &Layout,
    systemd: &Systemd,
    client: &ClientName,
    settings: &Settings,
    dry_run: bool,
    force: bool,
) -> Result<Outcome> {
    let unit = client.service_name();
    let active = systemd.is_active(&unit)?;
    let running = if active {
        image::container_image(&client.container_name())
    } else {
        None
    };
    let Some(old_id) = running else {
        match &settings.image_pin {
            Some(pin) => outln!(
                "{client}: not running; its next start runs {} (pinned after a failed update; `sandboxctl update {client}` while it runs tries {} again)",
                image::short_id(pin),
                settings.image
            ),
            None => outln!(
                "{client}: not running; its next start runs {}",
                settings.image
            ),
        }
        return Ok(Outcome::Done);
    };
    let Some(new) = image::inspect_image(&settings.image) else {
        bail!(
            "its image {} is not in your Podman store: build it (`sandboxctl image build --tag {0}`) or pull it (`podman pull {0}`)",
            settings.image
        );
    };
    if new.id == old_id {
        if settings.image_pin.is_some() && !dry_run {
            // Pinned to what the name points to again: the pin is not needed.
            save_pin(layout, client, settings, None)?;
        }
        outln!("{client}: up to date ({})", image::short_id(&new.id));
        return Ok(Outcome::Done);
    }
    let old = image::inspect_image(&old_id);
    let change = describe_change(&old_id, old.as_ref(), &new);
    let busy = busy_sessions(layout, client, settings);
    if dry_run {
        let note = match &busy {
            Some(why) if !force => format!("; busy ({why}): skipped without --force"),
            _ => String::new(),
        };
        outln!("{client}: would restart: {change}{note}");
        return Ok(Outcome::Done);
    }
    if let Some(why) = busy {
        if !force {
            outln!(
                "{client}: skipped: busy ({why}); it still runs {}",
                image::short_id(&old_id)
            );
            return Ok(Outcome::Skipped);
        }
        outln!("{client}: busy ({why}); restarting anyway (--force)");
    }
    // Podman takes a bare ID, not `sha256:…`, where it also takes a name.
    let old_ref = old_id.trim_start_matches("sha256:");
    if let Some(previous) = image::previous_name(&settings.image) {
        image::tag(old_ref, &previous)?;
    }
    if settings.image_pin.is_some() {
        outln!(
            "{client}: pinned to {} after a failed update; trying {} again",
            image::short_id(&old_id),
            settings.image
        );
    }
    let trial = save_pin(layout, client, settings, None)?;
    let failed = match restart_and_watch(layout, systemd, client, &trial, &new.id) {
        Ok(()) => {
            outln!("{client}: updated: {change}");
            return Ok(Outcome::Done);
        }
        Err(why) => why,
    };
    // Roll back this client alone: its unit runs the old image's ID.
    outln!(
        "{client}: the new image did not come up; rolling back to {}",
        image::short_id(&old_id)
    );
    if let Some(name) = image::pinned_name(&settings.image, client) {
        image::tag(old_ref, &name)?;
    }
    let pinned = save_pin(layout, client, settings, Some(old_ref.to_owned()))?;
    let failed_image = format!("{} ({})", image::short_id(&new.id), settings.image);
    if let Err(again) = restart_and_watch(layout, systemd, client, &pinned, &old_id) {
        bail!(
            "the new image {failed_image} did not come up ({failed}); rolled back to {} but that did not come up either ({again}); see `sandboxctl logs {client}`",
            image::short_id(&old_id)
        );
    }
    bail!(
        "the new image {failed_image} did not come up ({failed}); rolled back to {}, which runs again (for {client} only: `sandboxctl update {client}` tries the new image again); see `sandboxctl logs {client}`",
        image::short_id(&old_id)
    )
}

/// Saves the client's settings with `pin` (an image ID, or none) and returns them; a
/// pin ended also drops the image's name kept for it.
fn save_pin(
    layout: &Layout,
    client: &ClientName,
    settings: &Settings,
    pin: Option<String>,
) -> Result<Settings> {
    let mut s = settings.clone();
    let ended = pin.is_none() && s.image_pin.is_some();
    s.image_pin = pin;
    if s != *settings {
        s.save(&layout.settings_path(client), client)?;
    }
    if ended && let Some(name) = image::pinned_name(&settings.image, client) {
        image::untag(&name)?;
    }
    Ok(s)
}

/// `0123456789ab → 89abcdef0123 (Claude Code 2.1.300 → 2.1.332, Codex 0.171.0)`.
fn describe_change(old_id: &str, old: Option<&ImageState>, new: &ImageState) -> String {
    let version = |name: &str, a: Option<&String>, b: &String| match a {
        Some(a) if a != b => format!("{name} {a} → {b}"),
        _ => format!("{name} {b}"),
    };
    format!(
        "{} → {} ({}, {})",
        image::short_id(old_id),
        image::short_id(&new.id),
        version(
            "Claude Code",
            old.map(|o| &o.claude_version),
            &new.claude_version
        ),
        version("Codex", old.map(|o| &o.codex_version), &new.codex_version),
    )
}

/// Why the client counts as busy, if it does: its busy sessions, or that its sessions
/// could not be listed (then it is not known to be idle).
fn busy_sessions(layout: &Layout, client: &ClientName, settings: &Settings) -> Option<String> {
    match crate::ops::sessions::list(layout, client, settings) {
        Ok(rows) => {
            let busy: Vec<String> = rows
                .iter()
                .filter(|r| r.busy())
                .map(|r| format!("session {} {}: {}", r.session, r.command, r.activity))
                .collect();
            (!busy.is_empty()).then(|| busy.join(", "))
        }
        Err(e) => Some(format!("cannot tell: {e:#}")),
    }
}

/// Restarts the client through the user manager and waits until it has run `want`
/// for `SETTLE` without systemd restarting it. The error is why not, in one line.
fn restart_and_watch(
    layout: &Layout,
    systemd: &Systemd,
    client: &ClientName,
    settings: &Settings,
    want: &str,
) -> Result<(), String> {
    crate::ops::start::run(layout, systemd, client, settings, Verb::Restart).map_err(|e| {
        // The job's error carries the unit's last log lines: its first line says why.
        format!("{e:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })?;
    let unit = client.service_name();
    let started = Instant::now();
    while started.elapsed() < SETTLE {
        std::thread::sleep(POLL);
        let state = systemd
            .unit_states(std::slice::from_ref(&unit))
            .map_err(|e| format!("{e:#}"))?;
        let outcome = systemd.service_outcome(&unit).ok().flatten();
        if let Some(o) = outcome.filter(|o| o.restarts > 0) {
            return Err(format!(
                "it failed: systemd had to restart it {} time{}",
                o.restarts,
                if o.restarts == 1 { "" } else { "s" }
            ));
        }
        if let Some(s) = state.first().filter(|s| !s.is_active()) {
            return Err(format!("it is {} ({})", s.active_state, s.sub_state));
        }
    }
    match image::container_image(&client.container_name()) {
        Some(id) if id == want => Ok(()),
        Some(id) => Err(format!(
            "it runs {}, not {}",
            image::short_id(&id),
            image::short_id(want)
        )),
        None => Err("its container is gone".to_owned()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, claude: &str, codex: &str) -> ImageState {
        ImageState {
            id: id.to_owned(),
            digest: None,
            claude_version: claude.to_owned(),
            codex_version: codex.to_owned(),
            newer_image: false,
        }
    }

    #[test]
    fn changes_name_short_ids_and_versions() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let old = state(&a, "2.1.300", "0.171.0");
        let new = state(&b, "2.1.332", "0.171.0");
        assert_eq!(
            describe_change(&a, Some(&old), &new),
            "aaaaaaaaaaaa → bbbbbbbbbbbb (Claude Code 2.1.300 → 2.1.332, Codex 0.171.0)"
        );
        // The old image is gone from the store: only the new versions are known.
        assert_eq!(
            describe_change(&a, None, &new),
            "aaaaaaaaaaaa → bbbbbbbbbbbb (Claude Code 2.1.332, Codex 0.171.0)"
        );
    }
}
