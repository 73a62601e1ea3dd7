//! `status` and `list`: systemd's view of each client (one D-Bus call for all) with the
//! client's settings.

use anyhow::Result;
use serde::Serialize;

use crate::base::output::outln;
use crate::host::systemd::{ServiceOutcome, Systemd};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

#[derive(Debug, Serialize)]
struct ClientStatus {
    client: String,
    unit: String,
    load_state: String,
    active_state: String,
    sub_state: String,
    /// How a failed unit ended (systemd's `Result` and `NRestarts`), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<ServiceOutcome>,
    agent: String,
    image: String,
    network: String,
    /// Desktop notifications when an agent waits or finishes.
    notify: bool,
    projects: Vec<String>,
    unit_file: String,
    autonomy: String,
    agent_args: Vec<String>,
    /// Host ports forwarded into the sandbox (`sandboxctl port`).
    ports: Vec<crate::ops::forwards::PortStatus>,
    /// Resource limits; an absent one is unlimited.
    limits: crate::sandbox::limits::Limits,
    /// The image the sandbox runs (ID, digest, agent versions), if Podman knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    image_state: Option<crate::host::image::ImageState>,
    /// Where the agent's API key is: "key held by the proxy" or "key in the sandbox";
    /// absent for an agent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    /// Whether the image is missing from Podman's store (`status CLIENT` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    image_missing: Option<bool>,
    /// Podman's store when it is too full to create the container (`status CLIENT` of a
    /// sandbox that is not running only).
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_full: Option<crate::host::podman::Storage>,
    /// The files of the projects the unit masks (empty and read-only in the sandbox).
    masked: Vec<String>,
    /// The image ID the client runs instead of `image`, after a failed `update`.
    image_pin: Option<String>,
    /// The permission mode the agent itself shows (`status CLIENT` of a running Claude
    /// Code client), e.g. `manual mode on` for autonomy `ask`.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_mode: Option<String>,
}

/// Where a client's API key is, for `status`.
fn api_key_place(layout: &Layout, c: &ClientName, s: &Settings) -> Option<String> {
    let var = s.agent.key_var()?;
    if s.proxy_held_key().is_none() {
        return Some("key in the sandbox".to_owned());
    }
    let file = layout
        .client_subdir(c, "config")
        .join(crate::proxy::keyed::KEY_DIR)
        .join(var);
    Some(if file.is_file() {
        "key held by the proxy".to_owned()
    } else {
        format!("key held by the proxy (none stored: `sandboxctl secret set {c} {var}`)")
    })
}

#[allow(clippy::too_many_lines)] // one field per line of the status table
pub fn status(layout: &Layout, name: Option<&str>, json: bool) -> Result<()> {
    crate::txn::lock::recover_if_idle(layout)?;
    let clients: Vec<(ClientName, Settings)> = match name {
        Some(n) => vec![crate::ops::clients::known(layout, n)?],
        None => layout
            .list_clients()?
            .into_iter()
            .map(|c| {
                let s = Settings::load(&layout.settings_path(&c))?;
                Ok((c, s))
            })
            .collect::<Result<_>>()?,
    };
    let units: Vec<String> = clients.iter().map(|(c, _)| c.service_name()).collect();
    let systemd = if units.is_empty() {
        None
    } else {
        Some(Systemd::connect_user()?)
    };
    let states = match &systemd {
        Some(s) => s.unit_states(&units)?,
        None => Vec::new(),
    };
    let ports = port_statuses(systemd.as_ref(), &clients)?;
    let mut rows: Vec<ClientStatus> = clients
        .iter()
        .zip(states)
        .zip(ports)
        .map(|(((c, s), st), ports)| ClientStatus {
            client: c.to_string(),
            // Asked only of failed units: one more call each, and why they failed.
            failure: systemd
                .as_ref()
                .filter(|_| st.active_state == "failed")
                .and_then(|s| s.service_outcome(&st.unit).ok().flatten()),
            unit: st.unit,
            load_state: st.load_state,
            active_state: st.active_state,
            sub_state: st.sub_state,
            agent: s.agent.to_string(),
            image: s.image.clone(),
            image_pin: s.image_pin.clone(),
            agent_mode: None,
            network: s.network.to_string(),
            notify: s.notify,
            projects: s.projects.iter().map(|p| p.display().to_string()).collect(),
            unit_file: crate::render::all_unit_paths(layout, c)
                .into_iter()
                .find(|p| p.exists())
                .unwrap_or_else(|| layout.unit_path(c))
                .display()
                .to_string(),
            autonomy: s.autonomy.to_string(),
            agent_args: s.agent_args.clone(),
            ports,
            limits: s.limits,
            // Two or three podman calls: for `status CLIENT` only, `list` stays fast.
            image_state: name
                .and_then(|_| crate::host::image::state(&s.image, &c.container_name())),
            api_key: api_key_place(layout, c, s),
            image_missing: None,
            storage_full: None,
            masked: crate::render::written_unit(layout, c)
                .map(|(_, unit)| crate::state::mask::in_unit(&unit, &layout.mask_file(c)))
                .unwrap_or_default(),
        })
        .collect();
    if name.is_some() {
        // One more podman call, only when the image could not be inspected.
        for (r, (c, s)) in rows.iter_mut().zip(&clients) {
            r.image_missing = Some(
                r.image_state.is_none() && crate::host::image::exists(&s.image).ok() == Some(false),
            );
            if r.active_state == "active" && s.agent != crate::sandbox::settings::Agent::Shell {
                r.agent_mode = crate::ops::sessions::agent_mode(c);
            }
            // A sandbox that does not run may be kept from starting by a full store.
            if r.active_state != "active" {
                r.storage_full = crate::host::podman::Storage::probe()
                    .ok()
                    .filter(crate::host::podman::Storage::is_full);
            }
        }
    }
    if json {
        let text = if name.is_some() {
            serde_json::to_string_pretty(&rows[0])?
        } else {
            serde_json::to_string_pretty(&rows)?
        };
        outln!("{text}");
        return Ok(());
    }
    if rows.is_empty() {
        outln!("no clients; create one with `sandboxctl enable CLIENT [PROJECT_DIR…]`");
        return Ok(());
    }
    outln!(
        "{:<24} {:<10} {:<10} {:<7} {:<9} {:<8} {:<6} PROJECTS",
        "CLIENT",
        "STATE",
        "SUB",
        "AGENT",
        "NETWORK",
        "AUTONOMY",
        "NOTIFY"
    );
    for r in &rows {
        outln!(
            "{:<24} {:<10} {:<10} {:<7} {:<9} {:<8} {:<6} {}",
            r.client,
            r.active_state,
            r.sub_state,
            r.agent,
            r.network,
            r.autonomy,
            if r.notify { "on" } else { "off" },
            r.projects.join(", ")
        );
    }
    for ((c, _), r) in clients.iter().zip(&rows) {
        for p in &r.ports {
            outln!("{c}: port {}", crate::ops::forwards::describe(c, p));
        }
        print_limits(c, &r.limits);
        print_image(c, r.image_state.as_ref());
        if r.image_missing == Some(true) {
            outln!(
                "{c}: image {} is not in Podman's store, so the sandbox cannot start: build it \
                 (`sandboxctl image build --tag {0}`) or pull it (`podman pull {0}`)",
                r.image
            );
        }
        if let Some(st) = &r.storage_full {
            outln!(
                "{c}: {}, so the sandbox cannot start: {}, then `sandboxctl start {c}`",
                st.full_in_words(),
                crate::host::podman::STORAGE_FIX
            );
        }
        r.api_key.iter().for_each(|k| outln!("{c}: API key: {k}"));
        if let Some(mode) = &r.agent_mode {
            outln!("{c}: autonomy {}; the agent shows: {mode}", r.autonomy);
        }
        if let Some(pin) = &r.image_pin {
            outln!(
                "{c}: pinned to image {} after a failed update; `sandboxctl update {c}` tries {} again",
                crate::host::image::short_id(pin),
                r.image
            );
        }
        if name.is_some() {
            for m in &r.masked {
                outln!(
                    "{c}: masked: {}",
                    crate::base::terminal::sanitize(m.as_bytes())
                );
            }
        }
        if let Some(f) = &r.failure {
            let words =
                crate::ops::start::stopped_by_start_limit(c, &r.unit, f).unwrap_or_else(|| {
                    format!(
                        "{} failed (systemd result '{}'); see `sandboxctl logs {c}`",
                        r.unit, f.result
                    )
                });
            outln!("{words}");
        }
    }
    Ok(())
}

/// `CLIENT: image sha256:0123456789ab, Claude Code 2.1.332, Codex 0.171.0`, and
/// whether a newer image waits under the same name.
fn print_image(c: &ClientName, state: Option<&crate::host::image::ImageState>) {
    let Some(i) = state else { return };
    let short = i.id.get(..19).unwrap_or(&i.id);
    outln!(
        "{c}: image {short}, Claude Code {}, Codex {}{}",
        i.claude_version,
        i.codex_version,
        if i.newer_image {
            format!("; a newer image has this name: `sandboxctl restart {c}` runs it")
        } else {
            String::new()
        }
    );
}

/// `CLIENT: limits memory 8g, cpus 2, pids 4096`, when any is set.
fn print_limits(c: &ClientName, l: &crate::sandbox::limits::Limits) {
    let mut parts = Vec::new();
    if let Some(m) = l.memory {
        parts.push(format!("memory {m}"));
    }
    if let Some(c) = l.cpus {
        parts.push(format!("cpus {c}"));
    }
    if let Some(p) = l.pids {
        parts.push(format!("pids {p}"));
    }
    if !parts.is_empty() {
        outln!("{c}: limits {}", parts.join(", "));
    }
}

/// Each client's forwards with their sockets' states (one D-Bus call for all).
fn port_statuses(
    systemd: Option<&Systemd>,
    clients: &[(ClientName, Settings)],
) -> Result<Vec<Vec<crate::ops::forwards::PortStatus>>> {
    let forwards: Vec<(&ClientName, &[crate::render::ports::PortForward])> = clients
        .iter()
        .map(|(c, s)| (c, s.ports.as_slice()))
        .collect();
    match systemd {
        Some(s) if forwards.iter().any(|(_, f)| !f.is_empty()) => {
            crate::ops::forwards::statuses(s, &forwards)
        }
        _ => Ok(clients.iter().map(|_| Vec::new()).collect()),
    }
}
