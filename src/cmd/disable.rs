//! `disable`: stop the sandbox, remove its unit, reload; `--purge` also deletes data.

use anyhow::{Context, Result, bail};

use crate::base::output::outln;
use crate::host::systemd::Systemd;
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

pub fn disable(layout: &Layout, name: &str, purge: bool) -> Result<()> {
    let client = ClientName::parse(name)?;
    // Each step below can be repeated: a `disable` killed half-way is finished by
    // running it again (the checkpoints let a test kill it at each one).
    let _lock = crate::txn::lock::ChangeLock::take(layout)?;
    let client_dir = layout.client_dir(&client);
    // The Quadlet unit or the plain service, whichever sandboxctl wrote (both, if a
    // switch between them was interrupted).
    let mut units = Vec::new();
    for path in crate::render::all_unit_paths(layout, &client) {
        match std::fs::read_to_string(&path) {
            Ok(text) if crate::render::is_ours(&text) => units.push(path),
            // A user's own `agent-<client>.service` is none of ours: left alone.
            Ok(_) if path != layout.unit_path(&client) => {}
            Ok(_) => bail!(
                "{} was not written by sandboxctl; remove it yourself if it should go",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    if units.is_empty() && !client_dir.exists() {
        bail!(
            "unknown client {client}: nothing is enabled under that name (see `sandboxctl list`)"
        );
    }
    let systemd = Systemd::connect_user()?;
    let unit = client.service_name();
    // The sandbox, then its egress proxy (socket first, so nothing restarts the proxy).
    for u in [
        unit.clone(),
        crate::units::proxy::socket_unit(&client),
        crate::units::proxy::service_unit(&client),
        crate::notify::socket_unit(&client),
        crate::notify::service_unit(&client),
    ] {
        systemd.stop_if_known(&u)?;
    }
    crate::base::fault::checkpoint();
    for path in &units {
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
        crate::base::fault::checkpoint();
    }
    // The link that started the plain service at login, if enable made it.
    let link = crate::render::plain_wants_link(layout, &client);
    if std::fs::read_link(&link).ok() == Some(crate::render::plain_unit_path(layout, &client)) {
        std::fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
    }
    // The client's port forwards: nothing may listen for a sandbox that is gone.
    let settings = Settings::load(&layout.settings_path(&client)).ok();
    let forwards = crate::ops::forwards::remove_all(layout, &systemd, &client, settings.as_ref())?;
    crate::base::fault::checkpoint();
    if let Some(mut s) = settings.filter(|s| !s.ports.is_empty() && !purge) {
        s.ports.clear();
        s.save(&layout.settings_path(&client), &client)?;
    }
    crate::units::proxy::remove_client(layout, &client)?;
    crate::base::fault::checkpoint();
    // The socket directory is runtime state in the small, shared $XDG_RUNTIME_DIR; its
    // socket unit is stopped, so nothing recreates it.
    crate::units::proxy::remove_socket_dir(layout, &client)?;
    // The event socket's directory and the session states: runtime state as well.
    remove_runtime_dirs(&client)?;
    systemd.reload()?;
    crate::base::fault::checkpoint();
    systemd.reset_failed(&unit)?;
    // A container left by an earlier failure must not outlive the client.
    let _ = crate::host::podman::command(["rm", "-f", "-i", &client.container_name()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let removed: Vec<String> = units
        .iter()
        .chain(&forwards)
        .map(|p| p.display().to_string())
        .collect();
    if removed.is_empty() {
        outln!("disabled {client}: stopped {unit}");
    } else {
        outln!(
            "disabled {client}: stopped {unit}, removed {}",
            removed.join(", ")
        );
    }
    if purge {
        let removed = crate::state::secrets::remove_all(&client)?;
        crate::base::fault::checkpoint();
        if !removed.is_empty() {
            outln!("purged {client}'s secrets: {}", removed.join(", "));
        }
        if client_dir.exists() {
            crate::sandbox::layout::remove_client_tree(&client_dir)?;
            outln!(
                "purged {client}: deleted {} (home, agent config, credentials, history and settings)",
                client_dir.display()
            );
        }
    } else if client_dir.exists() {
        outln!(
            "kept {client}'s data in {}; `sandboxctl disable {client} --purge` deletes it",
            client_dir.display()
        );
    }
    Ok(())
}

/// The client's event socket directory and session states.
fn remove_runtime_dirs(client: &ClientName) -> Result<()> {
    for dir in [
        crate::notify::events_dir(client),
        crate::notify::state_dir(client),
    ]
    .into_iter()
    .flatten()
    {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot delete {}", dir.display()));
            }
            _ => {}
        }
    }
    Ok(())
}
