//! The egress proxy's systemd template units (`systemd/sandboxctl-proxy@.socket` and
//! `.service`), installed into the user's unit directory with the path of this
//! sandboxctl binary and the host's logging adaptation. One pair serves every client:
//! the instance name is the client name.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::client::ClientName;
use crate::layout::Layout;

const SOCKET: &str = include_str!("../systemd/sandboxctl-proxy@.socket");
const SERVICE: &str = include_str!("../systemd/sandboxctl-proxy@.service");

pub const SOCKET_FILE: &str = "sandboxctl-proxy@.socket";
pub const SERVICE_FILE: &str = "sandboxctl-proxy@.service";

/// Where a client's proxy socket lives inside the container.
pub const CONTAINER_SOCKET_DIR: &str = "/run/sandbox-proxy";
/// The port of the in-container forwarder to the socket.
pub const FORWARDER_PORT: u16 = 3128;

pub fn socket_unit(client: &ClientName) -> String {
    format!("sandboxctl-proxy@{client}.socket")
}

pub fn service_unit(client: &ClientName) -> String {
    format!("sandboxctl-proxy@{client}.service")
}

/// The host directory of a client's proxy socket, relative to the user's runtime
/// directory (`%t` in unit files).
pub fn socket_dir_relative(client: &ClientName) -> String {
    format!("agent-sandbox/proxy/{client}")
}

/// The service template with `ExecStart=` pointing at `exe`, and its log file where
/// there is no journald.
pub fn render_service(exe: &Path, journald: bool) -> Result<String> {
    let exe = exe
        .to_str()
        .with_context(|| format!("the sandboxctl path {} is not UTF-8", exe.display()))?;
    let exe = crate::escape::word("sandboxctl path", exe)?;
    let mut out = String::with_capacity(SERVICE.len() + 200);
    let mut replaced = false;
    for line in SERVICE.lines() {
        if let Some(rest) = line.strip_prefix("ExecStart=") {
            let args = rest
                .split_once(' ')
                .map(|(_, a)| a)
                .context("the proxy service template's ExecStart has no arguments")?;
            out.push_str("ExecStart=");
            out.push_str(&exe);
            out.push(' ');
            out.push_str(args);
            out.push('\n');
            replaced = true;
            if !journald {
                out.push_str(
                    "# host adaptation: no journald here; `sandboxctl logs CLIENT --network` reads this file\n\
                     StandardError=append:%t/sandboxctl-proxy-%i.log\n",
                );
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        bail!("the proxy service template has no ExecStart line");
    }
    Ok(out)
}

/// Writes the template units if they differ from what is installed; returns whether
/// anything changed (systemd must then be reloaded).
pub fn install(layout: &Layout, journald: bool) -> Result<bool> {
    let exe = std::env::current_exe().context("cannot find the path of the sandboxctl binary")?;
    let service = render_service(&exe, journald)?;
    std::fs::create_dir_all(&layout.systemd_user_dir)
        .with_context(|| format!("cannot create {}", layout.systemd_user_dir.display()))?;
    let mut changed = false;
    for (name, text) in [(SOCKET_FILE, SOCKET), (SERVICE_FILE, service.as_str())] {
        let path = layout.systemd_user_dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            crate::atomic::write(&path, text.as_bytes(), 0o644)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// The proxy's log file on a host without journald.
pub fn log_file(client: &ClientName) -> Option<std::path::PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty())?;
    Some(Path::new(&runtime).join(format!("sandboxctl-proxy-{client}.log")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_runs_this_binary_quoted() {
        let text = render_service(Path::new("/opt/my tools/sandboxctl"), true).expect("render");
        assert!(
            text.contains(
                "ExecStart=\"/opt/my tools/sandboxctl\" proxy --client %i --systemd-socket\n"
            ),
            "{text}"
        );
        assert!(!text.contains("StandardError="), "{text}");
        let text = render_service(Path::new("/usr/bin/sandboxctl"), false).expect("render");
        assert!(
            text.contains("StandardError=append:%t/sandboxctl-proxy-%i.log"),
            "{text}"
        );
    }

    #[test]
    fn socket_template_listens_privately() {
        assert!(SOCKET.contains("ListenStream=%t/agent-sandbox/proxy/%i/proxy.sock"));
        assert!(SOCKET.contains("SocketMode=0600"));
    }

    #[test]
    fn install_writes_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(tmp.path());
        assert!(install(&layout, true).expect("install"));
        assert!(
            !install(&layout, true).expect("again"),
            "unchanged the second time"
        );
        assert!(layout.systemd_user_dir.join(SOCKET_FILE).is_file());
        assert!(install(&layout, false).expect("adaptation changes it"));
    }
}
