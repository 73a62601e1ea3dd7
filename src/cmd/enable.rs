//! `enable`, `render` and `run`: from options to a written unit and a reloaded manager.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cli::{EnableArgs, RunArgs};
use crate::client::ClientName;
use crate::host::HostProfile;
use crate::layout::Layout;
use crate::options::{self, Request};
use crate::render::{self, Sandbox};
use crate::settings::{Agent, NetworkMode, Settings};
use crate::systemd::{Systemd, UnitState, Verb};
use crate::{claude_login, secrets};

/// Unit files are readable by their owner only.
const UNIT_MODE: u32 = 0o600;

/// A client ready to be written: its settings and unit text.
struct Planned {
    client: ClientName,
    settings: Settings,
    unit: String,
    /// The unit differs from the one on disk (or there was none).
    changed: bool,
    /// The agent's API key found in the environment: (variable, value).
    api_key: Option<(&'static str, Vec<u8>)>,
    /// What was on disk before, to put back if systemd cannot load the new unit.
    before: Before,
}

/// A client's files before `enable` touched them.
struct Before {
    unit: Option<String>,
    settings: Option<Vec<u8>>,
    client_dir_existed: bool,
    /// The client's proxy drop-in (`sandboxctl-proxy@<client>.service.d/`).
    proxy_dropin: Option<String>,
}

impl Before {
    fn restore(&self, layout: &Layout, client: &ClientName) {
        let unit = layout.unit_path(client);
        let _ = match &self.unit {
            Some(text) => crate::atomic::write(&unit, text.as_bytes(), UNIT_MODE),
            None => std::fs::remove_file(&unit).map_err(Into::into),
        };
        let _ = match &self.proxy_dropin {
            Some(text) => crate::atomic::write(
                &crate::proxy_units::dropin_path(layout, client),
                text.as_bytes(),
                0o644,
            ),
            None => crate::proxy_units::remove_client(layout, client).map(|_| ()),
        };
        if !self.client_dir_existed {
            let _ = std::fs::remove_dir_all(layout.client_dir(client));
            let _ = secrets::remove_all(client);
        } else if let Some(bytes) = &self.settings {
            let _ = crate::atomic::write(&layout.settings_path(client), bytes, 0o600);
        }
    }
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
    if clients.len() > 1 && !req.projects.is_empty() {
        bail!(
            "several clients cannot share project directories: one client's project must not be visible to another; enable them one by one"
        );
    }
    let others = options::all_settings(layout)?;
    clients
        .iter()
        .map(|client| {
            let mut settings = options::apply(layout, client, &others, req)?;
            let api_key = api_key_from_env(&settings)?;
            if let Some((name, _)) = &api_key
                && !settings.secrets.iter().any(|s| s == name)
            {
                settings.secrets.push((*name).to_owned());
            }
            let unit = render::render(&Sandbox {
                client,
                settings: &settings,
                layout,
                host,
            })?;
            let existing = existing_unit(layout, client)?;
            Ok(Planned {
                client: client.clone(),
                changed: existing.as_deref() != Some(unit.as_str()),
                settings,
                unit,
                api_key,
                before: Before {
                    unit: existing,
                    settings: std::fs::read(layout.settings_path(client)).ok(),
                    client_dir_existed: layout.client_dir(client).exists(),
                    proxy_dropin: crate::proxy_units::existing_dropin(layout, client)?,
                },
            })
        })
        .collect()
}

/// The client's unit file as it is on disk; an error if sandboxctl did not write it.
fn existing_unit(layout: &Layout, client: &ClientName) -> Result<Option<String>> {
    let path = layout.unit_path(client);
    match std::fs::read_to_string(&path) {
        Ok(text) if !render::is_ours(&text) => bail!(
            "{} exists and was not written by sandboxctl; move it away before enabling client {client}",
            path.display()
        ),
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The agent's API key (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`) when the environment has
/// one; it is stored as a Podman secret each time, so a changed key is picked up.
fn api_key_from_env(settings: &Settings) -> Result<Option<(&'static str, Vec<u8>)>> {
    let Some(name) = secrets::agent_key(settings.agent) else {
        return Ok(None);
    };
    match std::env::var_os(name) {
        Some(v) if !v.is_empty() => {
            let value = secrets::clean_value(name, v.as_encoded_bytes())?;
            Ok(Some((name, value)))
        }
        _ => Ok(None),
    }
}

fn write(layout: &Layout, p: &Planned) -> Result<()> {
    let client = &p.client;
    if let Some((name, value)) = &p.api_key {
        secrets::store(client, name, value)?;
        println!(
            "stored {name} from the environment as Podman secret {} (not in any file sandboxctl writes)",
            secrets::podman_name(client, name)
        );
    }
    layout.create_client_dirs(client)?;
    p.settings.save(&layout.settings_path(client), client)?;
    // Units name every client's projects and mounts: other local users have no business
    // reading them. A unit directory sandboxctl creates is private; an existing one
    // keeps the mode its owner chose.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&layout.unit_dir)
        .with_context(|| format!("cannot create {}", layout.unit_dir.display()))?;
    crate::atomic::write(&layout.unit_path(client), p.unit.as_bytes(), UNIT_MODE)?;
    let policy = layout.policy_path(client);
    if p.settings.network == NetworkMode::Allowlist && !policy.exists() {
        crate::proxy::policy::create(&policy, &super::network::default_policy(&p.settings)?)?;
        println!(
            "network of {client}: allowlist, policy {} (`sandboxctl allow {client} HOST` adds hosts)",
            policy.display()
        );
    }
    if !p.settings.git_writable_config {
        for project in &p.settings.projects {
            let plan = crate::git_guard::plan(project)?;
            crate::git_guard::prepare(&plan)?;
            for w in crate::git_guard::warnings(&plan) {
                eprintln!("{w}");
            }
        }
        if let Some(note) = crate::git_guard::submodule_note(&p.settings.projects) {
            eprintln!("{note}");
        }
    }
    if let Some(shared) = &p.settings.claude_config {
        let dir = layout.client_subdir(client, "claude");
        for line in claude_login::sync_shared(&dir, shared)? {
            if line.starts_with("warning:") {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        claude_login::mark_onboarded(&dir)?;
    } else if p.settings.agent == Agent::Claude {
        let has_key = p.settings.secrets.iter().any(|s| s == "ANTHROPIC_API_KEY");
        let host = claude_login::host_config_dir();
        for line in claude_login::prepare(
            &layout.client_subdir(client, "claude"),
            host.as_deref(),
            has_key,
        )? {
            println!("{line}");
        }
    }
    Ok(())
}

/// After a reload, each unit must have produced a loaded service; if the generator
/// rejected one, say why using its dry-run output. Returns whether each one runs.
fn check_generated(
    systemd: &Systemd,
    host: &HostProfile,
    layout: &Layout,
    planned: &[Planned],
) -> Result<Vec<bool>> {
    let units: Vec<String> = planned.iter().map(|p| p.client.service_name()).collect();
    let states = systemd.unit_states(&units)?;
    for state in &states {
        if state.load_state != "loaded" {
            let why = host
                .quadlet
                .as_ref()
                .map(|q| generator_verdict(&q.path, &layout.unit_dir, &state.unit))
                .unwrap_or_default();
            bail!(
                "systemd has no {} after reloading (load state {}): the Quadlet generator did not produce it{why}",
                state.unit,
                state.load_state
            );
        }
    }
    Ok(states.iter().map(UnitState::is_active).collect())
}

/// The generator's complaint about `service`'s unit file (or its last word if it names
/// no file), from a dry run over the unit directory.
fn generator_verdict(
    quadlet: &std::path::Path,
    unit_dir: &std::path::Path,
    service: &str,
) -> String {
    let out = std::process::Command::new(quadlet)
        .args(["-dryrun", "-user"])
        .env("QUADLET_UNIT_DIRS", unit_dir)
        .output();
    let unit_file = format!("{}.container", service.trim_end_matches(".service"));
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let line = text
                .lines()
                .rev()
                .find(|l| l.contains(&unit_file))
                .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
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

/// Validates, writes and reloads; the shared path of `enable`, `run` and `secret`.
pub fn enable_clients(
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
    if planned
        .iter()
        .any(|p| p.settings.network == NetworkMode::Allowlist)
    {
        crate::proxy_units::install(layout, host.journald)?;
    }
    // Each allowlist client's proxy enforces the policy file this CLI edits, wherever
    // AGENT_SANDBOX_DATA put it.
    for p in planned
        .iter()
        .filter(|p| p.settings.network == NetworkMode::Allowlist)
    {
        crate::proxy_units::install_client(layout, &p.client)?;
    }
    for p in &planned {
        write(layout, p)?;
    }
    systemd.reload()?;
    let running = match check_generated(&systemd, &host, layout, &planned) {
        Ok(r) => r,
        Err(e) => {
            // Put every file back as it was, so a rejected unit leaves nothing behind.
            for p in &planned {
                p.before.restore(layout, &p.client);
            }
            let _ = systemd.reload();
            return Err(e.context("nothing was changed"));
        }
    };
    for (p, running) in planned.iter().zip(&running) {
        for w in options::warnings(&p.client, &p.settings) {
            eprintln!("{w}");
        }
        let client = &p.client;
        println!(
            "enabled {client}: {} ({} agent, network {})",
            layout.unit_path(client).display(),
            p.settings.agent,
            p.settings.network
        );
        if *running && p.changed && !now {
            println!(
                "{0} is running the previous settings; `sandboxctl restart {0}` applies them (the agent restarts)",
                p.client
            );
        }
    }
    if let Some(line) = linger_note(&host, Path::new(LINGER_DIR)) {
        println!("{line}");
    }
    if now {
        for (p, running) in planned.iter().zip(&running) {
            let verb = match (running, p.changed) {
                (false, _) => Verb::Start,
                (true, true) => Verb::Restart,
                (true, false) => continue,
            };
            super::lifecycle::run_job(&systemd, &p.client, &p.settings, verb)?;
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

/// Where logind records the users whose manager runs from boot (one empty file each).
const LINGER_DIR: &str = "/var/lib/systemd/linger";

/// Whether the sandboxes start at boot or only with a login: logind's linger flag for
/// this user, a file in `linger_dir`. Nothing where systemd is not the init (no logind,
/// so no linger: whatever started the user manager decides).
fn linger_note(host: &HostProfile, linger_dir: &Path) -> Option<String> {
    if !host.systemd_booted {
        return None;
    }
    let user = user_name()?;
    Some(if linger_dir.join(&user).exists() {
        format!(
            "linger is on for {user}: the sandboxes start at boot and keep running when you log out"
        )
    } else {
        format!(
            "linger is off for {user}: the sandboxes start when you log in and stop when your last session ends; `loginctl enable-linger {user}` makes them start at boot"
        )
    })
}

/// This process's user name: its uid in `/etc/passwd`, else `$USER`.
fn user_name() -> Option<String> {
    let uid = rustix::process::getuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                (f.nth(1)? == uid).then(|| name.to_owned())
            })
        })
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
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
        print!("{}", p.unit);
    }
    Ok(())
}

pub fn run(layout: &Layout, args: &RunArgs) -> Result<()> {
    let client = ClientName::parse(&args.client)?;
    if !args.resume {
        let projects: Vec<_> = args.project.iter().cloned().collect();
        let network = if args.no_network {
            Some(NetworkMode::None)
        } else if args.firewall {
            Some(NetworkMode::Allowlist)
        } else {
            None
        };
        let req = Request {
            projects: &projects,
            options: &args.options,
            network,
            reset: false,
        };
        enable_clients(layout, std::slice::from_ref(&client), &req, false)?;
    }
    super::attach::attach(layout, client.as_str(), "main")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Cgroups, Version, fixed_profile};

    fn host(booted: bool) -> HostProfile {
        fixed_profile(
            Version::new(5, 4, 2),
            Version::new(5, 4, 2),
            Cgroups::V2,
            booted,
        )
    }

    #[test]
    fn linger_note_says_whether_sandboxes_start_at_boot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = user_name().expect("the test runs as a user with a name");
        let off = linger_note(&host(true), dir.path()).expect("a booted host gets a note");
        assert_eq!(
            off,
            format!(
                "linger is off for {user}: the sandboxes start when you log in and stop when your last session ends; `loginctl enable-linger {user}` makes them start at boot"
            )
        );
        std::fs::write(dir.path().join(&user), b"").expect("linger file");
        let on = linger_note(&host(true), dir.path()).expect("a booted host gets a note");
        assert_eq!(
            on,
            format!(
                "linger is on for {user}: the sandboxes start at boot and keep running when you log out"
            )
        );
    }

    #[test]
    fn no_linger_note_where_systemd_is_not_the_init() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(linger_note(&host(false), dir.path()), None);
    }
}
