//! A client a command names: a valid name with settings on disk, and for commands that
//! run podman, a podman that is there and new enough. One place for every command.

use anyhow::Result;

use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

/// Podman is there and new enough (one line saying what to install if not).
pub fn require_podman(layout: &Layout) -> Result<()> {
    crate::host::HostProfile::detect(&layout.cache_dir, false).require_podman()?;
    Ok(())
}

/// A known client for a command that runs podman: also checks Podman.
pub fn known_with_podman(layout: &Layout, name: &str) -> Result<(ClientName, Settings)> {
    let known = known(layout, name)?;
    require_podman(layout)?;
    Ok(known)
}

/// A known client: a valid name with settings on disk.
pub fn known(layout: &Layout, name: &str) -> Result<(ClientName, Settings)> {
    let client = ClientName::parse(name)?;
    let settings = Settings::load_client(layout, &client)?;
    Ok((client, settings))
}

/// Every client with its settings, sorted by name.
pub fn all(layout: &Layout) -> Result<Vec<(ClientName, Settings)>> {
    layout
        .list_clients()?
        .into_iter()
        .map(|c| {
            let s = Settings::load_client(layout, &c)?;
            Ok((c, s))
        })
        .collect()
}
