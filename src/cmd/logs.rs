//! `logs`: the journal where journald runs; otherwise the unit's log file followed by
//! the container's own output. What the container wrote reaches the terminal only
//! through `terminal::sanitize`, line by line, also when following.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::base::output::outln;
use crate::sandbox::layout::Layout;

pub fn logs(layout: &Layout, name: &str, network: bool, follow: bool, lines: usize) -> Result<()> {
    let (client, _) = crate::ops::clients::known(layout, name)?;
    let unit = if network {
        crate::units::proxy::service_unit(&client)
    } else {
        client.service_name()
    };
    if crate::ops::logs::journald() {
        return stream(
            {
                let mut cmd = Command::new("journalctl");
                cmd.args(journal_args(&unit, network, follow, lines));
                cmd
            },
            "journalctl",
        );
    }
    if network {
        let Some(file) = crate::units::proxy::log_file(&client) else {
            bail!("XDG_RUNTIME_DIR is not set, so the proxy's log file cannot be found");
        };
        if !file.exists() {
            outln!(
                "{client}'s proxy has logged nothing yet ({})",
                file.display()
            );
            return Ok(());
        }
        // The proxy writes these lines, but hosts and paths in them come from the
        // agent's requests: they reach the terminal through the sanitiser too.
        let mut cmd = Command::new("tail");
        cmd.args(["-n", &lines.to_string()]);
        if follow {
            cmd.arg("-F");
        }
        cmd.arg(&file);
        return stream(cmd, "tail");
    }
    let Some(file) = crate::ops::logs::unit_log_file(&client) else {
        bail!("XDG_RUNTIME_DIR is not set, so the unit's log file cannot be found");
    };
    if file.exists() {
        outln!(
            "==> {} (unit) <==",
            crate::base::terminal::sanitize(file.as_os_str().as_encoded_bytes())
        );
        for l in crate::ops::logs::last_lines(&client, lines) {
            outln!("{l}");
        }
    }
    outln!(
        "==> podman logs {} (container) <==",
        client.container_name()
    );
    let mut cmd = crate::host::podman::command(["logs", "--tail", &lines.to_string()]);
    if follow {
        cmd.arg("-f");
    }
    cmd.arg(client.container_name());
    stream(cmd, &format!("{} logs", crate::host::podman::binary()))
}

/// Runs `cmd`, passing its standard output and error through the sanitiser to ours as
/// each line arrives. A reader that goes away (`| head`) ends it quietly.
fn stream(mut cmd: Command, what: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let stderr = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            let _ = crate::base::terminal::copy_sanitized(err, &mut std::io::stderr());
        })
    });
    let copied = match child.stdout.take() {
        Some(out) => crate::base::terminal::copy_sanitized(out, &mut std::io::stdout().lock()),
        None => Ok(()),
    };
    if let Err(e) = copied {
        let _ = child.kill();
        let _ = child.wait();
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e).context("cannot write the logs");
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {what}"))?;
    if let Some(t) = stderr {
        let _ = t.join();
    }
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
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
