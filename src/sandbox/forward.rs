//! A port forward as a client's settings keep it: the host port on 127.0.0.1, the
//! sandbox's port, whether its units persist, and where those units live. The units
//! themselves are written by `ports`.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;

/// Host ports below this one are privileged: an unprivileged user manager cannot bind
/// them (and they belong to system services).
pub const MIN_HOST_PORT: u16 = 1024;

/// One forward, as kept in the client's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    /// The port on the host's 127.0.0.1.
    pub host: u16,
    /// The port on the sandbox's 127.0.0.1.
    pub container: u16,
    /// The units are in `~/.config/systemd/user` and start with the user manager.
    #[serde(default, skip_serializing_if = "is_false")]
    pub persist: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "127.0.0.1:{} → port {}", self.host, self.container)
    }
}

impl PortForward {
    /// Refuses ports that cannot be forwarded (also for settings edited by hand).
    pub fn validate(self, client: &ClientName) -> Result<()> {
        if self.container == 0 {
            bail!("port 0 of {client}'s sandbox cannot be forwarded; give a port from 1 to 65535");
        }
        if self.host < MIN_HOST_PORT {
            bail!(
                "host port {} is privileged (below {MIN_HOST_PORT}); choose one with --host-port {MIN_HOST_PORT}-65535",
                self.host
            );
        }
        Ok(())
    }

    /// The socket unit's name.
    pub fn socket_unit(self, client: &ClientName) -> String {
        format!("{}.socket", self.stem(client))
    }

    /// The per-connection template service's file name.
    pub fn service_template(self, client: &ClientName) -> String {
        format!("{}@.service", self.stem(client))
    }

    /// `sandboxctl-port-<client>-<hostport>`: unambiguous, as the port is all digits
    /// after the last `-`, and host ports are unique across clients.
    fn stem(self, client: &ClientName) -> String {
        format!("{PREFIX}{client}-{}", self.host)
    }

    /// The directory of the forward's units.
    pub fn unit_dir(self, layout: &Layout) -> Result<PathBuf> {
        if self.persist {
            return Ok(layout.systemd_user_dir.clone());
        }
        runtime_unit_dir(layout)
    }

    /// The forward's unit files (socket, service template).
    pub fn unit_paths(self, layout: &Layout, client: &ClientName) -> Result<[PathBuf; 2]> {
        let dir = self.unit_dir(layout)?;
        Ok([
            dir.join(self.socket_unit(client)),
            dir.join(self.service_template(client)),
        ])
    }

    /// The link that starts a persistent forward's socket with the user manager.
    pub fn wants_link(self, layout: &Layout, client: &ClientName) -> PathBuf {
        layout
            .systemd_user_dir
            .join("sockets.target.wants")
            .join(self.socket_unit(client))
    }
}

pub(crate) const PREFIX: &str = "sandboxctl-port-";

/// The user manager's runtime unit directory, `$XDG_RUNTIME_DIR/systemd/user`
/// (`systemctl --user --runtime` writes there; it is emptied at logout and reboot).
pub fn runtime_unit_dir(layout: &Layout) -> Result<PathBuf> {
    let runtime = layout.runtime_dir.as_ref().context(
        "XDG_RUNTIME_DIR is not set, so there is no runtime unit directory; run sandboxctl in a login session, or add --persist",
    )?;
    Ok(runtime.join("systemd/user"))
}
