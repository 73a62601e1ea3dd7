//! Applying clients: from options to validated settings, written files and a reloaded
//! user manager, as one plan (`effects`) whose steps each have their undo and are
//! journaled first; then the report and, with `--now`, the start. The shared path of
//! `enable`, `run` and `secret`.

mod check;
mod effects;
mod git_pins;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::base::output::outln;
use crate::host::HostProfile;
use crate::host::systemd::{Systemd, Verb};
use crate::ops::options::{self, Request};
use crate::render::{self, Sandbox};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;
use crate::state::secrets;
use crate::txn::plan::Undo;

use check::check_generated;
use effects::effects;

/// A client ready to be written: its settings and unit.
pub(crate) struct Planned {
    pub(crate) client: ClientName,
    pub(crate) settings: Settings,
    pub(crate) unit: render::UnitFile,
    /// The other target's unit sandboxctl wrote earlier (the host gained or lost its
    /// Quadlet generator since), removed when this one is written.
    pub(crate) stale_unit: Option<PathBuf>,
    /// The unit differs from the one on disk (or there was none).
    pub(crate) changed: bool,
    /// The agent's API key found in the environment: (variable, value).
    pub(crate) api_key: Option<(&'static str, Vec<u8>)>,
    /// The client's settings before this command, if it existed.
    pub(crate) previous: Option<Settings>,
}

/// Validates and renders every client before anything is written.
pub(crate) fn plan(
    layout: &Layout,
    host: &HostProfile,
    clients: &[ClientName],
    req: &Request<'_>,
) -> Result<Vec<Planned>> {
    if clients.len() > 1 && !req.projects.is_empty() {
        bail!(
            "several clients cannot share project directories: one client's project must not be visible to another; enable them one by one"
        );
    }
    let others = crate::ops::clients::all(layout)?;
    clients
        .iter()
        .map(|client| {
            let mut settings = options::apply(layout, client, &others, req)?;
            let api_key = api_key_from_env(&settings)?;
            if let Some((name, _)) = &api_key
                && !settings.secrets.iter().any(|s| s == name)
            {
                settings.secrets.push((*name).to_owned());
            }
            let unit = render::unit_file(&Sandbox {
                client,
                settings: &settings,
                layout,
                host,
            })?;
            let mut units = Vec::new();
            for path in render::all_unit_paths(layout, client) {
                let existing = existing_unit(&path, client)?;
                units.push((path, existing));
            }
            let existing = units
                .iter()
                .find(|(p, _)| *p == unit.path)
                .and_then(|(_, t)| t.clone());
            let stale_unit = units
                .iter()
                .find(|(p, t)| *p != unit.path && t.is_some())
                .map(|(p, _)| p.clone());
            Ok(Planned {
                client: client.clone(),
                changed: existing.as_deref() != Some(unit.text.as_str()) || stale_unit.is_some(),
                settings,
                unit,
                stale_unit,
                api_key,
                previous: others
                    .iter()
                    .find(|(c, _)| c == client)
                    .map(|(_, s)| s.clone()),
            })
        })
        .collect()
}

/// A unit file of the client's as it is on disk; an error if sandboxctl did not write
/// it (a user's `agent-<client>.service` would also shadow the generated one).
pub(crate) fn existing_unit(path: &Path, client: &ClientName) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !render::is_ours(&text) => bail!(
            "{} exists and was not written by sandboxctl; move it away before enabling client {client}",
            path.display()
        ),
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The agent's API key (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`) when the environment has
/// one; it is stored as a Podman secret each time, so a changed key is picked up.
pub(crate) fn api_key_from_env(settings: &Settings) -> Result<Option<(&'static str, Vec<u8>)>> {
    let Some(name) = settings.agent.key_var() else {
        return Ok(None);
    };
    match std::env::var_os(name) {
        Some(v) if !v.is_empty() => {
            let value = secrets::clean_value(name, v.as_encoded_bytes())?;
            Ok(Some((name, value)))
        }
        _ => Ok(None),
    }
}

/// Clients written and reloaded: the user manager, each client's plan and whether its
/// sandbox was running.
pub(crate) struct Written {
    pub(crate) systemd: Systemd,
    pub(crate) planned: Vec<Planned>,
    pub(crate) running: Vec<bool>,
    pub(crate) host: HostProfile,
}

/// Validates, writes and reloads `clients`.
pub(crate) fn write_clients(
    layout: &Layout,
    clients: &[ClientName],
    req: &Request<'_>,
) -> Result<Written> {
    let host = HostProfile::detect(&layout.cache_dir, true);
    host.require_podman()?;
    // From reading the clients' settings to the last file written: one change at a time.
    let _lock = crate::txn::lock::ChangeLock::take(layout)?;
    let planned = plan(layout, &host, clients, req)?;
    // Reach systemd before writing, so a missing user manager leaves nothing behind.
    let systemd = Systemd::connect_user()?;
    let exe = std::env::current_exe().context("cannot find the path of the sandboxctl binary")?;
    let running = RefCell::new(Vec::new());
    let reload = || systemd.reload();
    let units: Vec<String> = planned.iter().map(|p| p.client.service_name()).collect();
    let needs_reload = || systemd.needs_reload(&units);
    let check = || -> Result<()> {
        *running.borrow_mut() = check_generated(&systemd, &host, layout, &planned)?;
        Ok(())
    };
    effects(
        layout,
        &host,
        &planned,
        &exe,
        &reload,
        &needs_reload,
        &check,
    )?
    .journaled(crate::txn::journal::Journal::begin(layout)?)
    .apply()?;
    let running = running.into_inner();
    // Notifications off: the client's event socket stops listening (the sandbox stops
    // mounting it at its next start).
    for p in planned.iter().filter(|p| !p.settings.notify) {
        for unit in [
            crate::notify::socket_unit(&p.client),
            crate::notify::service_unit(&p.client),
        ] {
            systemd.stop_if_known(&unit)?;
        }
    }
    Ok(Written {
        systemd,
        planned,
        running,
        host,
    })
}

impl Written {
    /// Warnings and one line per client; without `now`, says which running sandbox
    /// still has its previous settings.
    pub(crate) fn report(&self, layout: &Layout, now: bool) {
        for (p, running) in self.planned.iter().zip(&self.running) {
            for w in options::warnings(&p.client, &p.settings) {
                eprintln!("{w}");
            }
            let client = &p.client;
            outln!(
                "enabled {client}: {} ({} agent, network {}, autonomy {})",
                p.unit.path.display(),
                p.settings.agent,
                p.settings.network,
                p.settings.autonomy
            );
            let masked = crate::state::mask::in_unit(&p.unit.text, &layout.mask_file(client)).len();
            outln!("{}", crate::state::mask::summary(&p.settings, masked));
            if *running && p.changed && !now {
                outln!(
                    "{0} is running the previous settings; `sandboxctl restart {0}` applies them (the agent restarts)",
                    p.client
                );
            }
        }
        if let Some(line) = linger_note(&self.host, Path::new(LINGER_DIR)) {
            outln!("{line}");
        }
    }

    /// Starts the `i`th client's sandbox, or restarts it when it runs with other
    /// settings (saying what changed); a sandbox already running these is left alone.
    pub(crate) fn start_or_restart(&self, layout: &Layout, i: usize) -> Result<()> {
        let p = &self.planned[i];
        let verb = if !self.running[i] {
            Verb::Start
        } else if p.changed {
            outln!(
                "restarting {} with the new settings ({})",
                p.client,
                what_changed(p.previous.as_ref(), &p.settings)
            );
            Verb::Restart
        } else if started_before(&p.client, &p.unit.path) {
            outln!(
                "restarting {} with the new settings (its unit was written after it started)",
                p.client
            );
            Verb::Restart
        } else {
            return Ok(());
        };
        crate::ops::start::run(layout, &self.systemd, &p.client, &p.settings, verb)
    }
}

/// Whether the client's container started before `unit` was last written: an `enable`
/// without `--now` since, so it runs older settings. sandboxctl writes a unit only when
/// its text changes; anything podman cannot answer counts as no.
pub(crate) fn started_before(client: &ClientName, unit: &Path) -> bool {
    let Ok(written) = std::fs::metadata(unit).and_then(|m| m.modified()) else {
        return false;
    };
    let Ok(written) = written.duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let out = crate::host::podman::command([
        "container",
        "inspect",
        "--format",
        "{{.State.StartedAt.Unix}}",
        &client.container_name(),
    ])
    .output();
    let started = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().parse::<u64>(),
        _ => return false,
    };
    started.is_ok_and(|started| written.as_secs() > started)
}

/// The settings that differ, as `name old → new` for single values and `name` for
/// lists; "the unit changed" when only the unit did (a new host, a new sandboxctl).
pub(crate) fn what_changed(before: Option<&Settings>, after: &Settings) -> String {
    let table = |s: &Settings| match toml::Value::try_from(s) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::map::Map::new(),
    };
    let after = table(after);
    let before = before.map(table).unwrap_or_default();
    let mut keys: Vec<&String> = after.keys().collect();
    keys.extend(before.keys().filter(|k| !after.contains_key(*k)));
    let shown = |v: Option<&toml::Value>| match v {
        Some(toml::Value::String(s)) => crate::base::terminal::sanitize(s.as_bytes()),
        Some(toml::Value::Boolean(b)) => b.to_string(),
        _ => "(none)".to_owned(),
    };
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| match after.get(k).or_else(|| before.get(k)) {
            Some(toml::Value::String(_) | toml::Value::Boolean(_)) => {
                format!("{k} {} → {}", shown(before.get(k)), shown(after.get(k)))
            }
            _ => k.clone(),
        })
        .collect();
    if changed.is_empty() {
        "the unit changed".to_owned()
    } else {
        changed.join(", ")
    }
}

/// Validates, writes and reloads; the shared path of `enable`, `run` and `secret`.
pub fn enable_clients(
    layout: &Layout,
    clients: &[ClientName],
    req: &Request<'_>,
    now: bool,
) -> Result<()> {
    let written = write_clients(layout, clients, req)?;
    written.report(layout, now);
    if now {
        for i in 0..written.planned.len() {
            written.start_or_restart(layout, i)?;
        }
    } else if let [p] = written.planned.as_slice() {
        outln!(
            "start it with `sandboxctl start {0}` or `systemctl --user start {1}`",
            p.client,
            p.client.container_name()
        );
    }
    Ok(())
}

/// Where logind records the users whose manager runs from boot (one empty file each).
pub(crate) const LINGER_DIR: &str = "/var/lib/systemd/linger";

/// Whether the sandboxes start at boot or only with a login: logind's linger flag for
/// this user, a file in `linger_dir`. Nothing where systemd is not the init (no logind,
/// so no linger: whatever started the user manager decides).
pub(crate) fn linger_note(host: &HostProfile, linger_dir: &Path) -> Option<String> {
    if !host.systemd_booted {
        return None;
    }
    let user = crate::host::user::name()?;
    Some(if linger_dir.join(&user).exists() {
        format!(
            "linger is on for {user}: the sandboxes start at boot and keep running when you log out"
        )
    } else {
        format!(
            "linger is off for {user}: the sandboxes start when you log in and stop when your last session ends; `loginctl enable-linger {user}` makes them start at boot"
        )
    })
}

/// An effect failed half-way: undo what it did, and report both if that fails too.
pub(crate) fn undo_now(e: anyhow::Error, undo: Undo<'_>) -> anyhow::Error {
    match undo.run() {
        Ok(()) => e,
        Err(u) => e.context(format!("and undoing it failed too: {u:#}")),
    }
}
