//! `notify` (hidden): the service behind a client's agent event socket.

use anyhow::{Context, Result};

use crate::notify::{self, desktop::Desktop};
use crate::sandbox::client::ClientName;

pub fn serve(name: &str) -> Result<()> {
    let client = ClientName::parse(name)?;
    let mut fds = listenfd::ListenFd::from_env();
    let listener = fds
        .take_unix_listener(0)
        .context("the socket passed by systemd is not a Unix stream socket")?
        .with_context(|| {
            format!(
                "no socket passed by systemd (LISTEN_FDS unset); start it through {}",
                notify::socket_unit(&client)
            )
        })?;
    listener
        .set_nonblocking(false)
        .context("cannot make the event socket blocking")?;
    let state = notify::state_path(&client)
        .context("XDG_RUNTIME_DIR is not set; run this through the systemd user manager")?;
    crate::sandbox::layout::create_private_dir(
        state.parent().context("a state file has a directory")?,
    )?;
    let desktop = Desktop::from_env()?;
    notify::serve(&client, &listener, &state, &desktop)
}
