//! `secret set|list|rm`: a client's credentials as Podman secrets.

use std::io::Read;

use anyhow::{Context, Result, bail};

use crate::base::output::outln;
use crate::cli::{SandboxOptions, SecretCommand};
use crate::ops::options::Request;
use crate::sandbox::layout::Layout;
use crate::state::secrets;

/// Largest value accepted on stdin; API keys and tokens are far smaller.
const MAX_VALUE: u64 = 64 * 1024;

pub fn secret(layout: &Layout, cmd: SecretCommand) -> Result<()> {
    match cmd {
        SecretCommand::Set { client, name } => {
            secrets::check_name(&name)?;
            // Named wrong, the command fails before the user types a value.
            crate::ops::clients::known_with_podman(layout, &client)?;
            let mut raw = Vec::new();
            std::io::stdin()
                .take(MAX_VALUE + 1)
                .read_to_end(&mut raw)
                .context("cannot read the secret's value from stdin")?;
            if raw.len() as u64 > MAX_VALUE {
                bail!("the value for {name} is larger than 64 KiB; nothing was stored");
            }
            let value = secrets::clean_value(&name, &raw)?;
            let _lock = crate::txn::lock::ChangeLock::take(layout)?;
            let (client, mut settings) = crate::ops::clients::known(layout, &client)?;
            secrets::store(&client, &name, &value)?;
            secrets::store_for_proxy(layout, &client, &name, &value)?;
            if !settings.secrets.contains(&name) {
                settings.secrets.push(name.clone());
                settings.save(&layout.settings_path(&client), &client)?;
            }
            outln!(
                "stored {name} for {client} as Podman secret {}",
                secrets::podman_name(&client, &name)
            );
            update_unit(layout, &client)
        }
        SecretCommand::List { client } => {
            let (client, _) = crate::ops::clients::known_with_podman(layout, &client)?;
            for name in secrets::list(&client)? {
                outln!("{name}");
            }
            Ok(())
        }
        SecretCommand::Rm { client, name } => {
            secrets::check_name(&name)?;
            let _lock = crate::txn::lock::ChangeLock::take(layout)?;
            let (client, mut settings) = crate::ops::clients::known_with_podman(layout, &client)?;
            secrets::remove(&client, &name)?;
            secrets::remove_for_proxy(layout, &client, &name)?;
            settings.secrets.retain(|s| s != &name);
            settings.save(&layout.settings_path(&client), &client)?;
            outln!("removed {name} from {client}");
            update_unit(layout, &client)
        }
    }
}

/// Re-renders the client's unit from its saved settings and reloads systemd.
fn update_unit(layout: &Layout, client: &crate::sandbox::client::ClientName) -> Result<()> {
    let options = SandboxOptions::default();
    let req = Request {
        projects: &[],
        options: &options,
        network: None,
        reset: false,
    };
    crate::ops::apply::enable_clients(layout, std::slice::from_ref(client), &req, false)
}
