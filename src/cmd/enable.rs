//! `enable`, `render` and `run`: from options to a written unit and a reloaded manager.

use anyhow::{Context, Result, bail};

use crate::cli::{EnableArgs, RunArgs};
use crate::client::ClientName;
use crate::host::HostProfile;
use crate::layout::Layout;
use crate::options::{self, Request};
use crate::render::{self, Sandbox};
use crate::settings::{NetworkMode, Settings};
use crate::systemd::{Systemd, Verb};

/// A client ready to be written: its settings and unit text.
struct Planned {
    client: ClientName,
    settings: Settings,
    unit: String,
}

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

/// Validates and renders every client before anything is written.
fn plan(
    layout: &Layout,
    host: &HostProfile,
    clients: &[ClientName],
    req: &Request<'_>,
) -> Result<Vec<Planned>> {
    clients
        .iter()
        .map(|client| {
            let path = layout.settings_path(client);
            let current = if path.exists() {
                Some(Settings::load(&path)?)
            } else {
                None
            };
            let settings = options::apply(layout, client, current, req)?;
            let unit = render::render(&Sandbox {
                client,
                settings: &settings,
                layout,
                host,
            })?;
            check_unit_is_ours(layout, client)?;
            Ok(Planned {
                client: client.clone(),
                settings,
                unit,
            })
        })
        .collect()
}

fn check_unit_is_ours(layout: &Layout, client: &ClientName) -> Result<()> {
    let path = layout.unit_path(client);
    match std::fs::read_to_string(&path) {
        Ok(text) if !render::is_ours(&text) => bail!(
            "{} exists and was not written by sandboxctl; move it away before enabling client {client}",
            path.display()
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write(layout: &Layout, p: &Planned) -> Result<()> {
    layout.create_client_dirs(&p.client)?;
    p.settings
        .save(&layout.settings_path(&p.client), &p.client)?;
    std::fs::create_dir_all(&layout.unit_dir)
        .with_context(|| format!("cannot create {}", layout.unit_dir.display()))?;
    crate::atomic::write(&layout.unit_path(&p.client), p.unit.as_bytes(), 0o644)
}

/// After a reload, each unit must have produced a loaded service; if the generator
/// rejected one, say why using its dry-run output.
fn check_generated(
    systemd: &Systemd,
    host: &HostProfile,
    layout: &Layout,
    planned: &[Planned],
) -> Result<()> {
    let units: Vec<String> = planned.iter().map(|p| p.client.service_name()).collect();
    for state in systemd.unit_states(&units)? {
        if state.load_state != "loaded" {
            let why = host
                .quadlet
                .as_ref()
                .map(|q| generator_verdict(&q.path, &layout.unit_dir))
                .unwrap_or_default();
            bail!(
                "systemd has no {} after reloading (load state {}): the Quadlet generator did not produce it{why}",
                state.unit,
                state.load_state
            );
        }
    }
    Ok(())
}

fn generator_verdict(quadlet: &std::path::Path, unit_dir: &std::path::Path) -> String {
    let out = std::process::Command::new(quadlet)
        .args(["-dryrun", "-user"])
        .env("QUADLET_UNIT_DIRS", unit_dir)
        .output();
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let line = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            if line.is_empty() {
                String::new()
            } else {
                format!(": {}", line.trim())
            }
        }
        Err(_) => String::new(),
    }
}

fn enable_clients(
    layout: &Layout,
    clients: &[ClientName],
    req: &Request<'_>,
    now: bool,
) -> Result<()> {
    let host = HostProfile::detect(&layout.cache_dir, true);
    host.require_quadlet()?;
    let planned = plan(layout, &host, clients, req)?;
    // Reach systemd before writing, so a missing user manager leaves nothing behind.
    let systemd = Systemd::connect_user()?;
    for p in &planned {
        write(layout, p)?;
    }
    systemd.reload()?;
    check_generated(&systemd, &host, layout, &planned)?;
    for p in &planned {
        for w in options::warnings(&p.settings) {
            eprintln!("{w}");
        }
        let client = &p.client;
        println!(
            "enabled {client}: {} ({} agent, network {})",
            layout.unit_path(client).display(),
            p.settings.agent,
            p.settings.network
        );
    }
    if now {
        for p in &planned {
            super::lifecycle::start_planned(layout, &systemd, &p.client, &p.settings, Verb::Start)?;
        }
    } else if let [p] = planned.as_slice() {
        println!(
            "start it with `sandboxctl start {0}` or `systemctl --user start {1}`",
            p.client,
            p.client.container_name()
        );
    }
    Ok(())
}

pub fn enable(layout: &Layout, args: &EnableArgs) -> Result<()> {
    let clients = parse_clients(&args.client)?;
    let req = Request {
        projects: &args.projects,
        options: &args.options,
        network: args.network,
        reset: args.reset,
    };
    enable_clients(layout, &clients, &req, args.now)
}

pub fn render(layout: &Layout, args: &EnableArgs) -> Result<()> {
    let clients = parse_clients(&args.client)?;
    let req = Request {
        projects: &args.projects,
        options: &args.options,
        network: args.network,
        reset: args.reset,
    };
    let host = HostProfile::detect(&layout.cache_dir, false);
    let planned = plan(layout, &host, &clients, &req)?;
    for p in planned {
        print!("{}", p.unit);
    }
    Ok(())
}

pub fn run(layout: &Layout, args: &RunArgs) -> Result<()> {
    let client = ClientName::parse(&args.client)?;
    if args.firewall {
        bail!(
            "--firewall (allowlist egress) is not available in this version; use --no-network, or leave the network open knowingly"
        );
    }
    if !args.resume {
        let projects: Vec<_> = args.project.iter().cloned().collect();
        let req = Request {
            projects: &projects,
            options: &args.options,
            network: args.no_network.then_some(NetworkMode::None),
            reset: false,
        };
        enable_clients(layout, std::slice::from_ref(&client), &req, false)?;
    }
    super::attach::attach(layout, client.as_str(), "main")
}
