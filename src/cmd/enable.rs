//! `enable`, `render` and `run`: parse the clients and options, apply them
//! (`ops::apply`), and for `run` attach.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::base::output::outln;
use crate::cli::{EnableArgs, RunArgs};
use crate::host::{HostProfile, UnitTarget};
use crate::ops::options::{self, Request};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{Agent, NetworkMode, Settings};

use crate::ops::apply::{enable_clients, plan, write_clients};

fn parse_clients(list: &str) -> Result<Vec<ClientName>> {
    let mut out: Vec<ClientName> = Vec::new();
    for name in list.split(',') {
        let c = ClientName::parse(name)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn request(args: &EnableArgs) -> Request<'_> {
    Request {
        projects: &args.projects,
        options: &args.options,
        network: args.network,
        reset: args.reset,
    }
}

pub fn enable(layout: &Layout, args: &EnableArgs) -> Result<()> {
    let clients = parse_clients(&args.client)?;
    enable_clients(layout, &clients, &request(args), args.now)
}

pub fn render(layout: &Layout, args: &EnableArgs) -> Result<()> {
    let clients = parse_clients(&args.client)?;
    let req = request(args);
    let host = HostProfile::detect(&layout.cache_dir, false);
    let planned = plan(layout, &host, &clients, &req)?;
    for p in planned {
        let target = match &p.unit.target {
            UnitTarget::Quadlet(v) => format!("a Quadlet unit for Quadlet {v}"),
            UnitTarget::Plain { why } => format!("a plain systemd service ({why})"),
        };
        eprintln!("{}: {target}", p.unit.path.display());
        crate::base::output::print(format_args!("{}", p.unit.text));
    }
    Ok(())
}

pub fn run(layout: &Layout, args: &RunArgs) -> Result<()> {
    let client = ClientName::parse(&args.client)?;
    let exists = layout.settings_path(&client).exists();
    if args.resume && exists {
        return crate::ops::attach::attach(layout, client.as_str(), "main");
    }
    if args.resume {
        outln!("{client} does not exist yet: creating and starting it");
    }
    let network = if args.no_network {
        Some(NetworkMode::None)
    } else if args.firewall {
        Some(NetworkMode::Allowlist)
    } else {
        args.network
    };
    let projects = run_projects(layout, &client, args, network)?;
    let req = Request {
        projects: &projects,
        options: &args.options,
        network,
        reset: false,
    };
    let written = write_clients(layout, std::slice::from_ref(&client), &req)?;
    written.report(layout, true);
    if args.firewall {
        firewall_bundles(layout, &client, &written.planned[0].settings)?;
    }
    written.start_or_restart(layout, 0)?;
    crate::ops::attach::attach(layout, client.as_str(), "main")
}

/// `run`'s project: the one given, else the current directory (as `run-agent.sh` did)
/// unless the guards refuse it, in which case the client runs without it, said in one
/// line.
fn run_projects(
    layout: &Layout,
    client: &ClientName,
    args: &RunArgs,
    network: Option<NetworkMode>,
) -> Result<Vec<PathBuf>> {
    if let Some(p) = &args.project {
        return Ok(vec![p.clone()]);
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let others = crate::ops::clients::all(layout)?;
    let try_with = |projects: &[PathBuf]| {
        options::apply(
            layout,
            client,
            &others,
            &Request {
                projects,
                options: &args.options,
                network,
                reset: false,
            },
        )
    };
    let with_cwd = std::slice::from_ref(&cwd);
    match try_with(with_cwd) {
        Ok(_) => Ok(with_cwd.to_vec()),
        // Refused for another reason: the error comes from `enable` as usual.
        Err(_) if try_with(&[]).is_err() => Ok(Vec::new()),
        Err(e) => {
            outln!("{client} runs without the current directory as its project: {e:#}");
            Ok(Vec::new())
        }
    }
}

/// The bundles `run-agent.sh --firewall` allowed: the agent's API (both for the
/// shell), GitHub with SSH, and the image's package registries.
fn firewall_bundle_list(agent: Agent) -> Vec<crate::proxy::policy::Bundle> {
    use crate::proxy::policy::Bundle;
    // `run-agent.sh --firewall` allowed both agents' hosts to its shell.
    let mut out = match Bundle::of_agent(agent) {
        Some(own) => vec![own],
        None => vec![Bundle::Claude, Bundle::Codex],
    };
    out.extend([Bundle::Github, Bundle::Packages]);
    out
}

/// Switches on the `--firewall` bundles in the client's policy (asking the image for
/// its package registries if the policy has none yet) and prints them with their hosts.
fn firewall_bundles(layout: &Layout, client: &ClientName, settings: &Settings) -> Result<()> {
    use crate::proxy::policy;
    let path = layout.policy_path(client);
    let bundles = firewall_bundle_list(settings.agent);
    if policy::load(&path)?.packages.is_empty() {
        match crate::host::package_hosts::from_image(&settings.image) {
            Ok(hosts) => policy::set_packages(&path, &hosts)?,
            Err(e) => eprintln!("warning: @packages has no hosts for {client}: {e:#}"),
        }
    }
    let names: Vec<String> = bundles.iter().map(|b| format!("@{b}")).collect();
    policy::add_allow(&path, &names)?;
    let loaded = policy::load(&path)?;
    let shown: Vec<String> = bundles
        .iter()
        .map(|b| {
            let hosts: Vec<String> = match b {
                policy::Bundle::Packages => {
                    loaded.packages.iter().map(ToString::to_string).collect()
                }
                _ => b.builtin_hosts().iter().map(|h| (*h).to_owned()).collect(),
            };
            format!("@{b} ({})", hosts.join(", "))
        })
        .collect();
    outln!(
        "firewall for {client}: network allowlist with {}",
        crate::base::terminal::sanitize(shown.join(", ").as_bytes())
    );
    Ok(())
}
