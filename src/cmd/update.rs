//! `update`: restart the clients whose image name now points to another image (see
//! `ops::update`), one at a time, and say which were skipped or failed.

use anyhow::{Result, bail};

use crate::base::output::outln;
use crate::host::systemd::Systemd;
use crate::ops::update::{Outcome, update_one};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

pub fn update(layout: &Layout, names: &[String], dry_run: bool, force: bool) -> Result<()> {
    // From reading the clients' settings to the last restarted client settled (or rolled
    // back): one change at a time. A dry run changes nothing and, like `status`, waits
    // for no one.
    let _lock = if dry_run {
        None
    } else {
        Some(crate::txn::lock::ChangeLock::take(layout)?)
    };
    let clients: Vec<(ClientName, Settings)> = if names.is_empty() {
        crate::ops::clients::all(layout)?
    } else {
        names
            .iter()
            .map(|n| crate::ops::clients::known(layout, n))
            .collect::<Result<_>>()?
    };
    crate::ops::clients::require_podman(layout)?;
    if clients.is_empty() {
        outln!("no clients; create one with `sandboxctl enable CLIENT [PROJECT_DIR…]`");
        return Ok(());
    }
    let systemd = Systemd::connect_user()?;
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for (client, settings) in &clients {
        match update_one(layout, &systemd, client, settings, dry_run, force) {
            Ok(Outcome::Done) => {}
            Ok(Outcome::Skipped) => skipped.push(client.to_string()),
            Err(e) => failures.push(format!("{client}: {e:#}")),
        }
    }
    if !skipped.is_empty() {
        outln!(
            "skipped (busy): {}; `sandboxctl update --force {}` restarts them anyway",
            skipped.join(", "),
            skipped.join(" ")
        );
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}
