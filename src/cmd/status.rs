//! `status` and `list`: systemd's view of each client (one D-Bus call for all) with the
//! client's settings.

use anyhow::Result;

use crate::base::output::outln;
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;

#[allow(clippy::too_many_lines)] // one line per fact of the status table
pub fn status(layout: &Layout, name: Option<&str>, json: bool) -> Result<()> {
    let gathered = crate::ops::status::gather(layout, name)?;
    let (clients, rows): (Vec<ClientName>, Vec<crate::ops::status::ClientStatus>) =
        gathered.into_iter().unzip();
    if json {
        let text = if name.is_some() {
            serde_json::to_string_pretty(&rows[0])?
        } else {
            serde_json::to_string_pretty(&rows)?
        };
        outln!("{text}");
        return Ok(());
    }
    if rows.is_empty() {
        outln!("no clients; create one with `sandboxctl enable CLIENT [PROJECT_DIR…]`");
        return Ok(());
    }
    outln!(
        "{:<24} {:<10} {:<10} {:<7} {:<9} {:<8} {:<6} PROJECTS",
        "CLIENT",
        "STATE",
        "SUB",
        "AGENT",
        "NETWORK",
        "AUTONOMY",
        "NOTIFY"
    );
    for r in &rows {
        outln!(
            "{:<24} {:<10} {:<10} {:<7} {:<9} {:<8} {:<6} {}",
            r.client,
            r.active_state,
            r.sub_state,
            r.agent,
            r.network,
            r.autonomy,
            if r.notify { "on" } else { "off" },
            r.projects.join(", ")
        );
    }
    for (c, r) in clients.iter().zip(&rows) {
        for p in &r.ports {
            outln!("{c}: port {}", crate::ops::forwards::describe(c, p));
        }
        print_limits(c, &r.limits);
        print_image(c, r.image_state.as_ref());
        if r.image_missing == Some(true) {
            outln!(
                "{c}: image {} is not in Podman's store, so the sandbox cannot start: build it \
                 (`sandboxctl image build --tag {0}`) or pull it (`podman pull {0}`)",
                r.image
            );
        }
        if let Some(st) = &r.storage_full {
            outln!(
                "{c}: {}, so the sandbox cannot start: {}, then `sandboxctl start {c}`",
                st.full_in_words(),
                crate::host::podman::STORAGE_FIX
            );
        }
        r.api_key.iter().for_each(|k| outln!("{c}: API key: {k}"));
        if let Some(mode) = &r.agent_mode {
            outln!("{c}: autonomy {}; the agent shows: {mode}", r.autonomy);
        }
        if let Some(pin) = &r.image_pin {
            outln!(
                "{c}: pinned to image {} after a failed update; `sandboxctl update {c}` tries {} again",
                crate::host::image::short_id(pin),
                r.image
            );
        }
        if name.is_some() {
            for m in &r.masked {
                outln!(
                    "{c}: masked: {}",
                    crate::base::terminal::sanitize(m.as_bytes())
                );
            }
        }
        if let Some(f) = &r.failure {
            let words =
                crate::ops::start::stopped_by_start_limit(c, &r.unit, f).unwrap_or_else(|| {
                    format!(
                        "{} failed (systemd result '{}'); see `sandboxctl logs {c}`",
                        r.unit, f.result
                    )
                });
            outln!("{words}");
        }
    }
    Ok(())
}

/// `CLIENT: image sha256:0123456789ab, Claude Code 2.1.332, Codex 0.171.0`, and
/// whether a newer image waits under the same name.
fn print_image(c: &ClientName, state: Option<&crate::host::image::ImageState>) {
    let Some(i) = state else { return };
    let short = i.id.get(..19).unwrap_or(&i.id);
    outln!(
        "{c}: image {short}, Claude Code {}, Codex {}{}",
        i.claude_version,
        i.codex_version,
        if i.newer_image {
            format!("; a newer image has this name: `sandboxctl restart {c}` runs it")
        } else {
            String::new()
        }
    );
}

/// `CLIENT: limits memory 8g, cpus 2, pids 4096`, when any is set.
fn print_limits(c: &ClientName, l: &crate::sandbox::limits::Limits) {
    let mut parts = Vec::new();
    if let Some(m) = l.memory {
        parts.push(format!("memory {m}"));
    }
    if let Some(c) = l.cpus {
        parts.push(format!("cpus {c}"));
    }
    if let Some(p) = l.pids {
        parts.push(format!("pids {p}"));
    }
    if !parts.is_empty() {
        outln!("{c}: limits {}", parts.join(", "));
    }
}
