//! After a reload: every unit produced a loaded service, or the error says why.

use anyhow::{Result, bail};

use crate::host::systemd::{Systemd, UnitState};
use crate::host::{HostProfile, UnitTarget};
use crate::sandbox::layout::Layout;

use super::Planned;

/// After a reload, each unit must have produced a loaded service; if the generator
/// rejected one, say why using its dry-run output. Returns whether each one runs.
pub(crate) fn check_generated(
    systemd: &Systemd,
    host: &HostProfile,
    layout: &Layout,
    planned: &[Planned],
) -> Result<Vec<bool>> {
    let units: Vec<String> = planned.iter().map(|p| p.client.service_name()).collect();
    let states = systemd.unit_states(&units)?;
    for (state, p) in states.iter().zip(planned) {
        if state.load_state != "loaded" {
            if let UnitTarget::Plain { .. } = p.unit.target {
                bail!(
                    "systemd could not load {} (load state {}); `systemd-analyze --user verify {}` says why",
                    state.unit,
                    state.load_state,
                    p.unit.path.display()
                );
            }
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
pub(crate) fn generator_verdict(
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
