//! `port`: forward a port of the host's 127.0.0.1 to a server on a sandbox's 127.0.0.1
//! (`src/ports.rs` has the units), list a client's forwards, remove one. Adding and
//! removing are plans: the unit files, the link that makes a forward persistent, the
//! settings, the reload and the socket's start are undone together if one fails.

use anyhow::Result;

use crate::base::output::outln;
use crate::cli::PortArgs;
use crate::host::systemd::Systemd;
use crate::ops::forwards::{add, describe, remove, statuses};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;

pub fn port(layout: &Layout, args: &PortArgs) -> Result<()> {
    let (client, settings) = crate::ops::clients::known(layout, &args.client)?;
    let Some(port) = args.port else {
        return list(&client, &settings);
    };
    let _lock = crate::txn::lock::ChangeLock::take(layout)?;
    // Read again under the lock: another command may have just changed them.
    let (client, settings) = crate::ops::clients::known(layout, &args.client)?;
    if args.rm {
        remove(layout, &client, &settings, port, args.host_port)
    } else {
        add(
            layout,
            &client,
            &settings,
            port,
            args.host_port,
            args.persist,
        )
    }
}

fn list(client: &ClientName, settings: &Settings) -> Result<()> {
    if settings.ports.is_empty() {
        outln!("{client} has no port forwards; `sandboxctl port {client} 3000` adds one");
        return Ok(());
    }
    let systemd = Systemd::connect_user()?;
    let rows = statuses(&systemd, &[(client, &settings.ports)])?;
    for p in rows.iter().flatten() {
        outln!("{}", describe(client, p));
    }
    Ok(())
}
