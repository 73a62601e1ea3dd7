//! The notification template units (`systemd/sandboxctl-notify@.socket` and
//! `.service`), installed beside the proxy's. Like the proxy, the service runs the copy
//! of sandboxctl in `Layout::libexec_dir` (`proxy_units::install` makes it), never the
//! binary that ran `enable`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::sandbox::layout::Layout;

const SOCKET: &str = include_str!("../../systemd/sandboxctl-notify@.socket");
const SERVICE: &str = include_str!("../../systemd/sandboxctl-notify@.service");

pub use crate::sandbox::layout::{
    NOTIFY_SERVICE_FILE as SERVICE_FILE, NOTIFY_SOCKET_FILE as SOCKET_FILE,
};

/// The service template with `ExecStart=` running `exe`, and its log file where there
/// is no journald.
pub fn render_service(exe: &Path, journald: bool) -> Result<String> {
    let log = (!journald).then_some(
        "# host adaptation: no journald here\n\
         StandardError=append:%t/sandboxctl-notify-%i.log\n",
    );
    crate::units::proxy::rewrite_exec_start(SERVICE, "notification", exe, log)
}

/// The unit files and their texts for this host.
pub fn files(layout: &Layout, journald: bool) -> Result<Vec<(PathBuf, String)>> {
    let service = render_service(&crate::units::proxy::binary_path(layout), journald)?;
    Ok(vec![
        (layout.systemd_user_dir.join(SOCKET_FILE), SOCKET.to_owned()),
        (layout.systemd_user_dir.join(SERVICE_FILE), service),
    ])
}

/// Writes the template units that differ; returns whether any changed.
/// Whether `install` would change nothing.
pub fn installed(layout: &Layout, journald: bool) -> bool {
    files(layout, journald).is_ok_and(|files| {
        files
            .iter()
            .all(|(path, text)| fs::read(path).ok().as_deref() == Some(text.as_bytes()))
    })
}

pub fn install(layout: &Layout, journald: bool) -> Result<bool> {
    fs::create_dir_all(&layout.systemd_user_dir)
        .with_context(|| format!("cannot create {}", layout.systemd_user_dir.display()))?;
    let mut changed = false;
    for (path, text) in files(layout, journald)? {
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            crate::base::atomic::write(&path, text.as_bytes(), 0o644)?;
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_runs_the_private_copy() {
        let text = render_service(
            Path::new("/home/u/.local/libexec/sandboxctl/sandboxctl"),
            true,
        )
        .expect("render");
        assert!(
            text.contains(
                "ExecStart=\"/home/u/.local/libexec/sandboxctl/sandboxctl\" notify --client %i --systemd-socket\n"
            ),
            "{text}"
        );
        assert!(text.contains("RestrictAddressFamilies=AF_UNIX\n"));
        assert!(text.contains("RuntimeDirectory=agent-sandbox/session-state/%i\n"));
        let text = render_service(Path::new("/usr/bin/sandboxctl"), false).expect("render");
        assert!(text.contains("StandardError=append:%t/sandboxctl-notify-%i.log"));
    }

    #[test]
    fn socket_matches_the_model() {
        let client = crate::sandbox::client::ClientName::parse("acme").expect("name");
        let dir = crate::notify::events_dir_relative(&client).replace("acme", "%i");
        assert!(
            SOCKET.contains(&format!(
                "ListenStream=%t/{dir}/{}\n",
                crate::notify::SOCKET_NAME
            )),
            "{SOCKET}"
        );
        assert!(SOCKET.contains("SocketMode=0600"));
    }

    #[test]
    fn install_writes_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(tmp.path());
        assert!(install(&layout, true).expect("install"));
        assert!(!install(&layout, true).expect("again"));
        assert!(layout.systemd_user_dir.join(SOCKET_FILE).is_file());
    }
}
