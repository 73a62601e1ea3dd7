//! Port forwards of a client: adding one (its units written and its socket started as
//! one plan), removing one or all, and their state as systemd reports it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::base::output::outln;
use crate::host::HostProfile;
use crate::host::systemd::{Systemd, Verb};
use crate::render::ports::{self, MIN_HOST_PORT, PortForward};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;
use crate::txn::plan::{Applied, Plan, Undo};

/// Unit files of forwards are the user's to read, like the proxy's.
const UNIT_MODE: u32 = 0o644;

/// A forward as `port` and `status` show it.
#[derive(Debug, Serialize)]
pub struct PortStatus {
    pub host_address: &'static str,
    pub host_port: u16,
    pub container_port: u16,
    pub persist: bool,
    /// `listening` when its socket unit is active; else systemd's active state, or
    /// `gone` when the user manager has no such unit (a forward that was not persistent,
    /// after a logout or reboot).
    pub state: String,
    pub socket_unit: String,
}

/// The states of every forward in `clients`, one D-Bus call for all.
pub fn statuses(
    systemd: &Systemd,
    clients: &[(&ClientName, &[PortForward])],
) -> Result<Vec<Vec<PortStatus>>> {
    let units: Vec<String> = clients
        .iter()
        .flat_map(|(c, fs)| fs.iter().map(|f| f.socket_unit(c)))
        .collect();
    let mut states = systemd.unit_states(&units)?.into_iter();
    Ok(clients
        .iter()
        .map(|(_, fs)| {
            fs.iter()
                .zip(states.by_ref())
                .map(|(f, st)| PortStatus {
                    host_address: "127.0.0.1",
                    host_port: f.host,
                    container_port: f.container,
                    persist: f.persist,
                    state: if st.is_active() {
                        "listening".to_owned()
                    } else if st.load_state == "not-found" {
                        "gone".to_owned()
                    } else {
                        st.active_state
                    },
                    socket_unit: st.unit,
                })
                .collect()
        })
        .collect())
}

/// One line per forward, for `port` and `status`.
pub fn describe(client: &ClientName, p: &PortStatus) -> String {
    let kept = if p.persist {
        "persistent"
    } else {
        "until logout"
    };
    let mut line = format!(
        "{}:{} → port {} ({kept}): {}",
        p.host_address, p.host_port, p.container_port, p.state
    );
    if p.state == "gone" {
        let _ = write!(
            line,
            "; `sandboxctl port {client} {} --host-port {}` sets it up again",
            p.container_port, p.host_port
        );
    }
    line
}

pub fn add(
    layout: &Layout,
    client: &ClientName,
    settings: &Settings,
    port: u16,
    host_port: Option<u16>,
    persist: bool,
) -> Result<()> {
    if host_port.is_none() && port < MIN_HOST_PORT {
        bail!(
            "port {port} is privileged on the host; forward it to another with --host-port {MIN_HOST_PORT}-65535"
        );
    }
    let fwd = PortForward {
        host: host_port.unwrap_or(port),
        container: port,
        persist,
    };
    fwd.validate(client)?;
    for (other, s) in crate::ops::clients::all(layout)? {
        for f in &s.ports {
            if f.host == fwd.host && !(other == *client && f.container == fwd.container) {
                bail!(
                    "host port {} already forwards to port {} of {other}; choose another --host-port, or remove that one with `sandboxctl port {other} {} --host-port {} --rm`",
                    f.host,
                    f.container,
                    f.container,
                    f.host
                );
            }
        }
    }
    let old = settings.ports.iter().find(|f| f.host == fwd.host).copied();
    if old.is_none() {
        ports::check_free(fwd.host)?;
    }
    let host = HostProfile::detect(&layout.cache_dir, false);
    host.require_podman()?;
    let podman = host
        .podman_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/bin/podman"));
    let texts = ports::render_units(client, fwd, &podman, host.journald)?;
    let paths = fwd.unit_paths(layout, client)?;
    let mut new = settings.clone();
    new.ports.retain(|f| f.host != fwd.host);
    new.ports.push(fwd);
    new.ports.sort_by_key(|f| f.host);
    let settings_text = new.to_file_text(client)?;
    // Reach systemd before writing, so a missing user manager leaves nothing behind.
    let systemd = Systemd::connect_user()?;
    let socket = fwd.socket_unit(client);
    let listening = old.is_some() && systemd.is_active(&socket)?;
    if old.is_some() && !listening {
        // Set up again after its units went away: the port must still be free.
        ports::check_free(fwd.host)?;
    }
    let start = if !listening {
        Start::New
    } else if old
        .and_then(|o| o.unit_paths(layout, client).ok())
        .and_then(|[s, _]| std::fs::read_to_string(s).ok())
        .as_deref()
        == Some(texts[0].as_str())
    {
        Start::Keep
    } else {
        Start::Restart
    };

    add_plan(
        layout,
        &systemd,
        client,
        old,
        fwd,
        &paths,
        texts,
        settings_text,
        start,
    )?
    .apply()?;
    let dir = paths[0].parent().map(Path::display);
    let kept = if fwd.persist {
        "persistent, started with the user manager"
    } else {
        "until logout or reboot; --persist keeps it"
    };
    outln!(
        "forwarding 127.0.0.1:{} on the host to port {} in {client}'s sandbox ({kept}; units in {})",
        fwd.host,
        fwd.container,
        dir.map(|d| d.to_string()).unwrap_or_default()
    );
    Ok(())
}

/// How `port` brings the socket up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// It was not listening: start it (undone by stopping it).
    New,
    /// It listens with the same socket unit: nothing to do (a start is a no-op).
    Keep,
    /// It listens with an older socket unit: restart it.
    Restart,
}

/// The effects of adding (or moving) a forward: the old location's files, the units,
/// the link, the settings, a reload, the socket's start.
#[allow(clippy::too_many_arguments)]
fn add_plan<'a>(
    layout: &'a Layout,
    systemd: &'a Systemd,
    client: &'a ClientName,
    old: Option<PortForward>,
    fwd: PortForward,
    paths: &[PathBuf; 2],
    texts: [String; 2],
    settings_text: String,
    start: Start,
) -> Result<Plan<'a>> {
    let mut plan = Plan::new();
    if let Some(old) = old.filter(|o| o.persist != fwd.persist) {
        for path in old.unit_paths(layout, client)? {
            plan.remove_file(path);
        }
        if old.persist {
            plan.unlink(old.wants_link(layout, client), None);
        }
    }
    for (path, text) in paths.iter().zip(texts) {
        plan.write_file(path.clone(), text.into_bytes(), UNIT_MODE);
    }
    if fwd.persist {
        plan.link(fwd.wants_link(layout, client), paths[0].clone());
    }
    plan.write_file(
        layout.settings_path(client),
        settings_text.into_bytes(),
        0o600,
    );
    reload(&mut plan, systemd);
    let socket = fwd.socket_unit(client);
    plan.step(format!("start {socket}"), move || {
        let (socket_ref, systemd_ref) = (&socket, systemd);
        let _ = systemd_ref.reset_failed(socket_ref);
        let verb = if start == Start::Restart {
            Verb::Restart
        } else {
            Verb::Start
        };
        if let Err(e) = systemd_ref.run_job(verb, socket_ref) {
            let _ = systemd_ref.reset_failed(socket_ref);
            return Err(e).with_context(|| {
                format!(
                    "cannot listen on 127.0.0.1:{} (see `systemctl --user status {socket_ref}`)",
                    fwd.host
                )
            });
        }
        if start != Start::New {
            // It listened before: the restored files and the reload bring that back.
            return Ok(Applied::nothing());
        }
        let undo = format!("stop {socket}");
        Ok(Applied::undo(Undo::new(undo, move || {
            systemd.stop_if_known(&socket)
        })))
    });
    Ok(plan)
}

pub fn remove(
    layout: &Layout,
    client: &ClientName,
    settings: &Settings,
    port: u16,
    host_port: Option<u16>,
) -> Result<()> {
    let gone: Vec<PortForward> = settings
        .ports
        .iter()
        .filter(|f| f.container == port && host_port.is_none_or(|h| f.host == h))
        .copied()
        .collect();
    if gone.is_empty() {
        let which = host_port
            .map(|h| format!(" from host port {h}"))
            .unwrap_or_default();
        bail!(
            "{client} has no forward to port {port}{which}; `sandboxctl port {client}` lists them"
        );
    }
    let mut new = settings.clone();
    new.ports.retain(|f| !gone.contains(f));
    let settings_text = new.to_file_text(client)?;
    let sockets: Vec<String> = gone.iter().map(|f| f.socket_unit(client)).collect();
    let systemd = Systemd::connect_user()?;
    let systemd_ref = &systemd;
    let mut plan = Plan::new();
    for socket in &sockets {
        plan.step(format!("stop {socket}"), move || {
            let was = systemd_ref.is_active(socket)?;
            systemd_ref.stop_if_known(socket)?;
            if !was {
                return Ok(Applied::nothing());
            }
            Ok(Applied::undo(Undo::new(
                format!("start {socket} again"),
                move || systemd_ref.run_job(Verb::Start, socket),
            )))
        });
    }
    for f in &gone {
        for path in f.unit_paths(layout, client)? {
            plan.remove_file(path);
        }
        if f.persist {
            plan.unlink(f.wants_link(layout, client), None);
        }
    }
    plan.write_file(
        layout.settings_path(client),
        settings_text.into_bytes(),
        0o600,
    );
    reload(&mut plan, &systemd);
    plan.apply()?;
    for socket in &sockets {
        systemd.reset_failed(socket)?;
    }
    for f in &gone {
        outln!(
            "removed the forward 127.0.0.1:{} → port {} of {client}",
            f.host,
            f.container
        );
    }
    Ok(())
}

fn reload<'a>(plan: &mut Plan<'a>, systemd: &'a Systemd) {
    plan.step("reload the systemd user manager", move || {
        systemd.reload()?;
        Ok(Applied::undo(Undo::last(
            "reload the systemd user manager after undoing",
            move || systemd.reload(),
        )))
    });
}

/// What `disable` does to a client's forwards: stops their sockets and removes every
/// port unit file sandboxctl wrote for it (in both unit directories) and their links;
/// returns the files removed. The caller reloads.
pub fn remove_all(
    layout: &Layout,
    systemd: &Systemd,
    client: &ClientName,
    settings: Option<&Settings>,
) -> Result<Vec<PathBuf>> {
    let files = ports::files_of(layout, client)?;
    let mut sockets: Vec<String> = settings
        .map(|s| s.ports.iter().map(|f| f.socket_unit(client)).collect())
        .unwrap_or_default();
    for f in &files {
        if let Some(name) = f.file_name().and_then(|n| n.to_str())
            && name.ends_with(".socket")
            && !sockets.iter().any(|s| s == name)
        {
            sockets.push(name.to_owned());
        }
    }
    for socket in &sockets {
        systemd.stop_if_known(socket)?;
    }
    for f in &files {
        crate::txn::plan::remove_if_there(f)?;
    }
    Ok(files)
}
