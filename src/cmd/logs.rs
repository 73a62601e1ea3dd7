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
        let err = Command::new("journalctl")
            .args(journal_args(&unit, network, follow, lines))
            .exec();
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

/// `journalctl`'s arguments for the unit's last `lines`. The proxy's decisions are shown as
/// it wrote them, one JSON object a line (`-o cat`), as they are without journald.
fn journal_args(unit: &str, network: bool, follow: bool, lines: usize) -> Vec<String> {
    let mut args: Vec<String> = ["--user", "--no-pager", "-n", &lines.to_string(), "-u", unit]
        .map(str::to_owned)
        .to_vec();
    if network {
        args.extend(["-o".to_owned(), "cat".to_owned()]);
    }
    if follow {
        args.push("-f".to_owned());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::journal_args;

    #[test]
    fn network_log_lines_are_bare_json_from_the_journal() {
        assert_eq!(
            journal_args("sandboxctl-proxy@acme.service", true, false, 50),
            [
                "--user",
                "--no-pager",
                "-n",
                "50",
                "-u",
                "sandboxctl-proxy@acme.service",
                "-o",
                "cat"
            ]
        );
        assert_eq!(
            journal_args("agent-acme.service", false, true, 10),
            [
                "--user",
                "--no-pager",
                "-n",
                "10",
                "-u",
                "agent-acme.service",
                "-f"
            ]
        );
    }
}
