//! The doctor's checks of one client: its settings, unit, data directories and proxy.

use crate::host::HostProfile;
use crate::host::systemd::UnitState;
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{NetworkMode, Settings};

use super::Checks;

/// One client: its unit file, systemd's view of it, its socket and policy.
pub fn client(
    layout: &Layout,
    host: &HostProfile,
    client: &ClientName,
    settings: &Settings,
    states: &[UnitState],
) -> Checks {
    let mut c = Checks::new(format!("client {client}"));
    // The Quadlet unit, or the plain service where the host has no generator.
    let unit_path = crate::render::all_unit_paths(layout, client)
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| layout.unit_path(client));
    match std::fs::read_to_string(&unit_path) {
        Ok(t) if crate::render::is_ours(&t) => c.ok("unit file", unit_path.display().to_string()),
        Ok(_) => c.fail(
            "unit file",
            format!("{} was not written by sandboxctl", unit_path.display()),
            format!("move it away, then `sandboxctl enable {client}`"),
        ),
        Err(_) => c.fail(
            "unit file",
            format!("{} is missing", unit_path.display()),
            format!("`sandboxctl enable {client}`"),
        ),
    }
    let state = |unit: &str| states.iter().find(|s| s.unit == unit);
    let service = client.service_name();
    match state(&service) {
        None => {}
        Some(s) if s.load_state != "loaded" => c.fail(
            "unit",
            format!("{service} is {}", s.load_state),
            format!(
                "`sandboxctl enable {client}` reloads systemd and names what the Quadlet generator rejects"
            ),
        ),
        Some(s) if s.active_state == "failed" => c.fail(
            "unit",
            format!("{service} failed ({})", s.sub_state),
            format!("`sandboxctl logs {client}` says why; then `sandboxctl start {client}`"),
        ),
        Some(s) if s.is_active() => c.ok("unit", format!("{service} {}", s.sub_state)),
        Some(s) => c.ok(
            "unit",
            format!(
                "{service} {} ({}): stopped; `sandboxctl start {client}` starts it",
                s.active_state, s.sub_state
            ),
        ),
    }
    let running = state(&service).is_some_and(UnitState::is_active);
    if settings.network == NetworkMode::Allowlist {
        let socket = crate::units::proxy::socket_unit(client);
        client_proxy(&mut c, layout, host, client, state(&socket), running);
    }
    c
}

/// The allowlist parts of a client: its proxy socket, drop-in and policy.
pub(crate) fn client_proxy(
    c: &mut Checks,
    layout: &Layout,
    host: &HostProfile,
    client: &ClientName,
    state: Option<&UnitState>,
    running: bool,
) {
    let socket = crate::units::proxy::socket_unit(client);
    match state {
        None => {}
        Some(s) if s.is_active() => c.ok("proxy socket", format!("{socket} {}", s.sub_state)),
        Some(s) if !running => c.ok(
            "proxy socket",
            format!("{socket} {}: it starts with the sandbox", s.active_state),
        ),
        Some(s) => c.fail(
            "proxy socket",
            format!("{socket} {} ({}): the sandbox has no way out", s.active_state, s.sub_state),
            format!("`systemctl --user start {socket}`, or `sandboxctl enable {client}` if it is not found"),
        ),
    }
    let dropin = crate::units::proxy::dropin_path(layout, client);
    let policy = layout.policy_path(client);
    let want = crate::units::proxy::client_dropin(layout, host).ok();
    match std::fs::read_to_string(&dropin) {
        Ok(t) if Some(&t) == want.as_ref() => {
            c.ok("proxy drop-in", dropin.display().to_string());
        }
        Ok(_) => c.fail(
            "proxy drop-in",
            format!(
                "{} is not what `enable` writes for {}: the proxy may enforce another policy than `sandboxctl policy` shows",
                dropin.display(),
                policy.display()
            ),
            format!("`sandboxctl enable {client}` (with the same AGENT_SANDBOX_DATA) rewrites it"),
        ),
        Err(_) => c.fail(
            "proxy drop-in",
            format!(
                "{} is missing: the proxy reads the policy at the default location",
                dropin.display()
            ),
            format!("`sandboxctl enable {client}` writes it"),
        ),
    }
    match crate::proxy::policy::load(&policy) {
        Ok(p) => c.ok(
            "policy",
            format!(
                "{}: {} allow rules, bundles {}",
                policy.display(),
                p.effective_allow().len(),
                if p.bundles.is_empty() {
                    "none".to_owned()
                } else {
                    p.bundles
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ),
        Err(e) => c.fail(
            "policy",
            format!("{e:#}; every connection is refused"),
            format!(
                "fix {} (or move it away and run `sandboxctl enable {client}` for a new one)",
                policy.display()
            ),
        ),
    }
}
