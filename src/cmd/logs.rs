//! `logs`: the journal where journald runs; otherwise the unit's log file followed by
//! the container's own output.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Result, bail};

use crate::layout::Layout;

pub fn logs(layout: &Layout, name: &str, network: bool, follow: bool, lines: usize) -> Result<()> {
    let (client, _) = super::known_client(layout, name)?;
    let unit = if network {
        crate::proxy_units::service_unit(&client)
    } else {
        client.service_name()
    };
    if crate::logs::journald() {
        let mut cmd = Command::new("journalctl");
        cmd.args([
            "--user",
            "--no-pager",
            "-n",
            &lines.to_string(),
            "-u",
            &unit,
        ]);
        if follow {
            cmd.arg("-f");
        }
        let err = cmd.exec();
        bail!("cannot run journalctl: {err}");
    }
    if network {
        let Some(file) = crate::proxy_units::log_file(&client) else {
            bail!("XDG_RUNTIME_DIR is not set, so the proxy's log file cannot be found");
        };
        if !file.exists() {
            println!(
                "{client}'s proxy has logged nothing yet ({})",
                file.display()
            );
            return Ok(());
        }
        let mut cmd = Command::new("tail");
        cmd.args(["-n", &lines.to_string()]);
        if follow {
            cmd.arg("-F");
        }
        let err = cmd.arg(&file).exec();
        bail!("cannot run tail: {err}");
    }
    let Some(file) = crate::logs::unit_log_file(&client) else {
        bail!("XDG_RUNTIME_DIR is not set, so the unit's log file cannot be found");
    };
    if file.exists() {
        println!("==> {} (unit) <==", file.display());
        for l in crate::logs::last_lines(&client, lines) {
            println!("{l}");
        }
    }
    println!(
        "==> podman logs {} (container) <==",
        client.container_name()
    );
    let mut cmd = crate::podman::command(["logs", "--tail", &lines.to_string()]);
    if follow {
        cmd.arg("-f");
    }
    cmd.arg(client.container_name());
    let err = cmd.exec();
    bail!("cannot run {}: {err}", crate::podman::binary())
}
