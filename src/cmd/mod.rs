//! One module per command family; each takes parsed arguments and does the work.

mod attach;
mod disable;
mod doctor;
mod enable;
mod export;
mod image;
mod lifecycle;
mod logs;
mod network;
mod notify;
mod port;
mod secret;
mod sessions;
mod status;
mod update;

use std::io::Write as _;

use anyhow::Result;

use crate::base::output::outln;
use crate::cli::{Cli, Command};
use crate::sandbox::layout::Layout;

/// Runs a parsed command line.
pub fn dispatch(cli: Cli) -> Result<()> {
    // These need no home or data directory (the package build runs them).
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            crate::ops::completions::script(*shell, &mut script)?;
            return crate::base::output::ended(std::io::stdout().lock().write_all(&script));
        }
        Command::Man { dir } => {
            let n = crate::ops::completions::write_man_pages(dir)?;
            outln!("wrote {n} man pages into {}", dir.display());
            return Ok(());
        }
        _ => {}
    }
    let layout = Layout::from_env()?;
    match cli.command {
        Command::Enable(args) => enable::enable(&layout, &args),
        Command::Render(args) => enable::render(&layout, &args),
        Command::Run(args) => enable::run(&layout, &args),
        Command::Disable { client, purge } => disable::disable(&layout, &client, purge),
        Command::Start { client } => {
            lifecycle::job(&layout, &client, crate::host::systemd::Verb::Start)
        }
        Command::Stop { client } => {
            lifecycle::job(&layout, &client, crate::host::systemd::Verb::Stop)
        }
        Command::Restart { client } => {
            lifecycle::job(&layout, &client, crate::host::systemd::Verb::Restart)
        }
        Command::Status { client, json } => status::status(&layout, client.as_deref(), json),
        Command::List { json } => status::status(&layout, None, json),
        Command::Attach {
            client,
            session,
            worktree,
        } => crate::ops::attach::attach_to(&layout, &client, &session, worktree.as_deref()),
        Command::Sessions { client, json } => sessions::sessions(&layout, &client, json),
        Command::Worktree(crate::cli::WorktreeCommand::Rm {
            client,
            name,
            force,
        }) => sessions::worktree_rm(&layout, &client, &name, force),
        Command::Notify { client, .. } => notify::serve(&client),
        Command::Exec { client, command } => attach::exec(&layout, &client, &command),
        Command::Logs {
            client,
            network,
            follow,
            lines,
        } => logs::logs(&layout, &client, network, follow, lines),
        Command::Allow {
            client,
            hosts,
            private,
        } => network::allow(&layout, &client, &hosts, private),
        Command::Deny { client, hosts } => network::deny(&layout, &client, &hosts),
        Command::Policy { client } => network::policy(&layout, &client),
        Command::Proxy(args) => network::proxy(&layout, &args),
        Command::Export(args) => export::export(&layout, &args),
        Command::Doctor { live, json } => doctor::doctor(&layout, live.as_deref(), json),
        Command::Image(cmd) => {
            crate::ops::clients::require_podman(&layout)?;
            image::image(cmd)
        }
        Command::Secret(cmd) => secret::secret(&layout, cmd),
        Command::Update {
            clients,
            dry_run,
            force,
        } => update::update(&layout, &clients, dry_run, force),
        Command::Port(args) => port::port(&layout, &args),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
    }
}
