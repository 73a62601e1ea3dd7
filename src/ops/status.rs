//! What `status` and `list` show of each client: systemd's view (one D-Bus call for all)
//! with the client's settings, forwards, image, key and masks, and for one client the
//! checks that explain a sandbox that does not start.

use anyhow::Result;
use serde::Serialize;

use crate::host::systemd::{ServiceOutcome, Systemd};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

#[derive(Debug, Serialize)]
pub struct ClientStatus {
    pub client: String,
    pub unit: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// How a failed unit ended (systemd's `Result` and `NRestarts`), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<ServiceOutcome>,
    pub agent: String,
    pub image: String,
    pub network: String,
    /// Desktop notifications when an agent waits or finishes.
    pub notify: bool,
    pub projects: Vec<String>,
    pub unit_file: String,
    pub autonomy: String,
    pub agent_args: Vec<String>,
    /// Host ports forwarded into the sandbox (`sandboxctl port`).
    pub ports: Vec<crate::ops::forwards::PortStatus>,
    /// Resource limits; an absent one is unlimited.
    pub limits: crate::sandbox::limits::Limits,
    /// The image the sandbox runs (ID, digest, agent versions), if Podman knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_state: Option<crate::host::image::ImageState>,
    /// Where the agent's API key is: "key held by the proxy" or "key in the sandbox";
    /// absent for an agent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Whether the image is missing from Podman's store (`status CLIENT` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_missing: Option<bool>,
    /// Podman's store when it is too full to create the container (`status CLIENT` of a
    /// sandbox that is not running only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_full: Option<crate::host::podman::Storage>,
    /// The files of the projects the unit masks (empty and read-only in the sandbox).
    pub masked: Vec<String>,
    /// The image ID the client runs instead of `image`, after a failed `update`.
    pub image_pin: Option<String>,
    /// The permission mode the agent itself shows (`status CLIENT` of a running Claude
    /// Code client), e.g. `manual mode on` for autonomy `ask`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_mode: Option<String>,
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

/// Every client (or the one named), with what `status` shows of it.
pub fn gather(layout: &Layout, name: Option<&str>) -> Result<Vec<(ClientName, ClientStatus)>> {
    crate::txn::lock::recover_if_idle(layout)?;
    let clients: Vec<(ClientName, Settings)> = match name {
        Some(n) => vec![crate::ops::clients::known(layout, n)?],
        None => crate::ops::clients::all(layout)?,
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
    Ok(clients.into_iter().map(|(c, _)| c).zip(rows).collect())
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
