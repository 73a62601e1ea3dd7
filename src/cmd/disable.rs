//! `disable`: stop the sandbox, remove its unit, reload; `--purge` also deletes data.

use anyhow::{Context, Result, bail};

use crate::client::ClientName;
use crate::layout::Layout;
use crate::systemd::Systemd;

pub fn disable(layout: &Layout, name: &str, purge: bool) -> Result<()> {
    let client = ClientName::parse(name)?;
    let unit_path = layout.unit_path(&client);
    let client_dir = layout.client_dir(&client);
    let unit_text = match std::fs::read_to_string(&unit_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", unit_path.display())),
    };
    if unit_text.is_none() && !client_dir.exists() {
        bail!(
            "unknown client {client}: nothing is enabled under that name (see `sandboxctl list`)"
        );
    }
    if let Some(text) = &unit_text
        && !crate::render::is_ours(text)
    {
        bail!(
            "{} was not written by sandboxctl; remove it yourself if it should go",
            unit_path.display()
        );
    }
    let systemd = Systemd::connect_user()?;
    let unit = client.service_name();
    // The sandbox, then its egress proxy (socket first, so nothing restarts the proxy).
    for u in [
        unit.clone(),
        crate::proxy_units::socket_unit(&client),
        crate::proxy_units::service_unit(&client),
    ] {
        systemd.stop_if_known(&u)?;
    }
    if unit_text.is_some() {
        std::fs::remove_file(&unit_path)
            .with_context(|| format!("cannot remove {}", unit_path.display()))?;
    }
    crate::proxy_units::remove_client(layout, &client)?;
    // The socket directory is runtime state in the small, shared $XDG_RUNTIME_DIR; its
    // socket unit is stopped, so nothing recreates it.
    crate::proxy_units::remove_socket_dir(&client)?;
    systemd.reload()?;
    systemd.reset_failed(&unit)?;
    // A container left by an earlier failure must not outlive the client.
    let _ = crate::podman::command(["rm", "-f", "-i", &client.container_name()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    println!(
        "disabled {client}: stopped {unit}, removed {}",
        unit_path.display()
    );
    if purge {
        let removed = crate::secrets::remove_all(&client)?;
        if !removed.is_empty() {
            println!("purged {client}'s secrets: {}", removed.join(", "));
        }
        if client_dir.exists() {
            std::fs::remove_dir_all(&client_dir)
                .with_context(|| format!("cannot delete {}", client_dir.display()))?;
            println!(
                "purged {client}: deleted {} (agent config, credentials, history and settings)",
                client_dir.display()
            );
        }
    } else if client_dir.exists() {
        println!(
            "kept {client}'s data in {}; `sandboxctl disable {client} --purge` deletes it",
            client_dir.display()
        );
    }
    Ok(())
}
