//! `doctor`: runs the checks of `crate::ops::doctor`, prints them, and fails when one failed.

use std::path::Path;

use anyhow::{Result, bail};

use crate::base::output::outln;
use crate::host::HostProfile;
use crate::host::systemd::Verb;
use crate::ops::doctor::{self, Checks, Report, User};
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{NetworkMode, Settings};

pub fn doctor(layout: &Layout, live: Option<&str>, json: bool) -> Result<()> {
    let host = HostProfile::detect(&layout.cache_dir, false);
    let user = User::current();
    let mut report = Report::default();
    let mut hc = doctor::host_static(&host, &user, Path::new("/etc"), Path::new("/"));
    if host.podman.is_some() {
        doctor::podman_storage(&mut hc);
    }
    let systemd = doctor::user_manager(&mut hc);
    if host.podman.is_some() {
        doctor::image(&mut hc);
    }

    let mut clients: Vec<(crate::sandbox::client::ClientName, Settings)> = Vec::new();
    let mut broken = Checks::new("clients");
    for c in layout.list_clients()? {
        match Settings::load(&layout.settings_path(&c)) {
            Ok(s) => clients.push((c, s)),
            Err(e) => broken.fail(
                "settings",
                format!("{e:#}"),
                format!("fix the file, or `sandboxctl enable {c} --reset …`"),
            ),
        }
    }
    let needs_proxy = clients
        .iter()
        .any(|(_, s)| s.network == NetworkMode::Allowlist);
    doctor::proxy_units(&mut hc, layout, &host, needs_proxy);
    report.add(hc);
    report.add(broken);

    let mut units = Vec::new();
    for (c, s) in &clients {
        units.push(c.service_name());
        if s.network == NetworkMode::Allowlist {
            units.push(crate::units::proxy::socket_unit(c));
        }
    }
    let states = match &systemd {
        Some(sd) => sd.unit_states(&units).unwrap_or_default(),
        None => Vec::new(),
    };
    for (c, s) in &clients {
        report.add(doctor::client(layout, &host, c, s, &states));
    }

    if let Some(name) = live {
        let (client, settings) = crate::ops::clients::known(layout, name)?;
        let Some(sd) = &systemd else {
            bail!("doctor --live {client} needs the systemd user manager (see above)");
        };
        let running = sd.is_active(&client.service_name())?;
        if !running {
            crate::ops::start::run(layout, sd, &client, &settings, Verb::Start)?;
        }
        report.add(doctor::live(layout, &client, &settings, &clients));
    }

    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{report}");
    }
    if report.failed > 0 {
        bail!(
            "doctor: {} of {} checks failed (each FAIL line above says how to fix it)",
            report.failed,
            report.checks.len()
        );
    }
    Ok(())
}
