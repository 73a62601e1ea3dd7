//! The steps of applying clients, each with its undo: the shared template units and
//! binary, each client's drop-in, directories, settings, unit, policy, git pins, Claude
//! state and API key, then the reload and the check of what systemd loaded.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::base::output::outln;
use crate::host::{HostProfile, TemplateUnits, UnitTarget};
use crate::render::{self};
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{Agent, NetworkMode};
use crate::txn::plan::{Applied, Plan, Touch, Undo, keep_files, missing_dirs, remove_dirs};
use crate::{state::claude_login, state::secrets};

/// Unit files are readable by their owner only.
use crate::render::UNIT_MODE;

use super::git_pins::{git_pin_touches, pin_git_dirs};
use super::{Planned, undo_now};

/// Everything `enable` changes, in order, each with its undo: the proxy's units and
/// binary, then per client its drop-in, data dirs, settings, unit (and the other
/// target's stale unit), policy, Claude state and API key, then one reload and the
/// check that systemd loaded every unit. `exe` is the binary the proxy units run a
/// copy of; `reload` and `check` reach the user manager.
pub(crate) fn effects<'a>(
    layout: &'a Layout,
    host: &'a HostProfile,
    planned: &'a [Planned],
    exe: &'a Path,
    reload: &'a dyn Fn() -> Result<()>,
    needs_reload: &'a dyn Fn() -> Result<bool>,
    check: &'a dyn Fn() -> Result<()>,
) -> Result<Plan<'a>> {
    let mut plan = Plan::new();
    let allowlist = |p: &&Planned| p.settings.network == NetworkMode::Allowlist;
    let notify = |p: &&Planned| p.settings.notify;
    // The notification service runs the same sandboxctl as the proxy: the package's,
    // or the private copy.
    if planned.iter().any(|p| allowlist(&p) || notify(&p)) {
        match &host.template_units {
            TemplateUnits::PerUser => {
                let binary = crate::units::proxy::binary_path(layout);
                let mut touches = vec![
                    Touch::Dir(layout.systemd_user_dir.clone()),
                    Touch::Dir(layout.libexec_dir.clone()),
                    Touch::Path(binary.with_file_name(BINARY_BACKUP)),
                    Touch::Path(binary),
                ];
                for f in [
                    crate::units::proxy::SOCKET_FILE,
                    crate::units::proxy::SERVICE_FILE,
                ] {
                    touches.push(Touch::Path(layout.systemd_user_dir.join(f)));
                }
                plan.step_touching("install the proxy units", touches, move || {
                    install_proxy_units(layout, exe, host.journald)
                });
                plan.skip_if(move || crate::units::proxy::installed(layout, exe, host.journald));
                if planned.iter().any(|p| notify(&p)) {
                    let touches = crate::units::notify::files(layout, host.journald)?
                        .into_iter()
                        .map(|(path, _)| Touch::Path(path))
                        .collect();
                    plan.step_touching("install the notification units", touches, move || {
                        install_notify_units(layout, host.journald)
                    });
                    plan.skip_if(move || crate::units::notify::installed(layout, host.journald));
                }
            }
            // Per-user copies from before the package would shadow its units (the
            // user's unit directory comes first): they go, with the binary copy.
            TemplateUnits::Packaged { .. } => {
                for file in crate::host::TEMPLATE_UNIT_FILES {
                    plan.remove_file(layout.systemd_user_dir.join(file));
                }
                plan.remove_file(crate::units::proxy::binary_path(layout));
            }
        }
    }
    for p in planned {
        client_files(&mut plan, layout, host, p)?;
        client_agent(&mut plan, layout, p);
    }
    plan.step_touching(
        "reload the systemd user manager",
        vec![Touch::Reload],
        move || {
            reload()?;
            Ok(Applied::undo(Undo::last(
                "reload the systemd user manager after undoing",
                reload,
            )))
        },
    );
    // With every file as it was, a reload would change nothing unless systemd still
    // has an older unit loaded.
    plan.only_after_change(needs_reload);
    plan.step("check that systemd loaded every unit", move || {
        check()?;
        Ok(Applied::nothing())
    });
    Ok(plan)
}

/// A client's files: proxy drop-in, data dirs, settings, unit, policy.
pub(crate) fn client_files<'a>(
    plan: &mut Plan<'a>,
    layout: &'a Layout,
    host: &'a HostProfile,
    p: &'a Planned,
) -> Result<()> {
    let client = &p.client;
    let allowlist = p.settings.network == NetworkMode::Allowlist;
    if allowlist {
        // The client's proxy enforces the policy file this CLI edits, wherever
        // AGENT_SANDBOX_DATA put it.
        let dropin = crate::units::proxy::dropin_path(layout, client);
        let touches = vec![
            Touch::Dir(dropin.parent().map(Path::to_path_buf).unwrap_or_default()),
            Touch::Path(dropin),
        ];
        plan.step_touching(
            format!("install the proxy drop-in of {client}"),
            touches,
            move || {
                let before = crate::units::proxy::existing_dropin(layout, client)?;
                if !crate::units::proxy::install_client(layout, host, client)? {
                    return Ok(Applied::nothing());
                }
                Ok(Applied::undo(Undo::new(
                    format!("restore the proxy drop-in of {client}"),
                    move || match before {
                        Some(text) => crate::base::atomic::write(
                            &crate::units::proxy::dropin_path(layout, client),
                            text.as_bytes(),
                            0o644,
                        ),
                        None => crate::units::proxy::remove_client(layout, client).map(|_| ()),
                    },
                )))
            },
        );
        plan.skip_if(move || crate::units::proxy::dropin_current(layout, host, client));
    }
    let mut touches = vec![
        Touch::Dir(layout.clients_dir()),
        Touch::Tree(layout.client_dir(client)),
    ];
    for sub in crate::sandbox::layout::CLIENT_SUBDIRS {
        touches.push(Touch::Dir(layout.client_subdir(client, sub)));
    }
    plan.step_touching(
        format!("create the data directories of {client}"),
        touches,
        move || {
            let dir = layout.client_dir(client);
            let mut new = missing_dirs(&dir);
            layout.create_client_dirs(client)?;
            if new.pop().is_none() {
                return Ok(Applied::nothing());
            }
            let parents = remove_dirs(new);
            Ok(Applied::undo(Undo::new(
                format!("remove {}", dir.display()),
                move || {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("cannot remove {}", dir.display()))?;
                    parents.run()
                },
            )))
        },
    );
    plan.skip_if(move || layout.client_dirs_ready(client));
    plan.write_file(
        layout.settings_path(client),
        p.settings.to_file_text(client)?.into_bytes(),
        0o600,
    );
    unit_effects(plan, layout, p)?;
    if allowlist {
        let touches = vec![Touch::Path(layout.policy_path(client))];
        plan.step_touching(format!("create the network policy of {client}"), touches, move || {
            let policy = layout.policy_path(client);
            if policy.exists() {
                return Ok(Applied::nothing());
            }
            crate::proxy::policy::create(
                &policy,
                &crate::proxy::policy::default_for(p.settings.agent)?,
            )?;
            outln!(
                "network of {client}: allowlist, policy {} (`sandboxctl allow {client} HOST` adds hosts)",
                policy.display()
            );
            Ok(Applied::undo(remove_undo(policy)))
        });
        plan.skip_if(move || layout.policy_path(client).exists());
    }
    if !p.settings.git_writable_config {
        plan.step_touching(
            format!("pin the git dirs of {client}'s projects"),
            git_pin_touches(&p.settings.agent_projects()),
            move || pin_git_dirs(&p.settings.agent_projects()),
        );
    }
    Ok(())
}

/// A client's unit: its directory (private when sandboxctl creates it), the unit, and
/// the removal of the other target's unit sandboxctl wrote before.
pub(crate) fn unit_effects<'a>(
    plan: &mut Plan<'a>,
    layout: &'a Layout,
    p: &'a Planned,
) -> Result<()> {
    // Units name every client's projects and mounts: other local users have no business
    // reading them. A unit directory sandboxctl creates is private; an existing one
    // keeps the mode its owner chose.
    let unit_dir = p
        .unit
        .path
        .parent()
        .context("a unit path has a directory")?;
    let touches = vec![Touch::Dir(unit_dir.to_path_buf())];
    plan.step_touching(
        format!("create {}", unit_dir.display()),
        touches,
        move || {
            let new = missing_dirs(unit_dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(unit_dir)
                .with_context(|| format!("cannot create {}", unit_dir.display()))?;
            Ok(Applied::undo(remove_dirs(new)))
        },
    );
    plan.skip_if(move || unit_dir.is_dir());
    plan.write_file(
        p.unit.path.clone(),
        p.unit.text.clone().into_bytes(),
        UNIT_MODE,
    );
    if let Some(stale) = &p.stale_unit {
        plan.remove_file(stale.clone());
        plan.step("say which unit replaced which", move || {
            outln!(
                "removed {} (this host now gets {})",
                stale.display(),
                p.unit.path.display()
            );
            Ok(Applied::nothing())
        });
    }
    let link = render::plain_wants_link(layout, &p.client);
    let service = render::plain_unit_path(layout, &p.client);
    if matches!(p.unit.target, UnitTarget::Plain { .. }) {
        // Starts the plain service with the user manager, as `systemctl --user enable`.
        plan.link(link, service);
    } else {
        plan.unlink(link, Some(service));
    }
    Ok(())
}

/// A client's agent state: Claude's first-run state and the API key from the environment.
pub(crate) fn client_agent<'a>(plan: &mut Plan<'a>, layout: &'a Layout, p: &'a Planned) {
    let client = &p.client;
    if p.settings.claude_config.is_some() || p.settings.agent == Agent::Claude {
        let dir = layout.client_subdir(client, "claude");
        let mut touched = vec![dir.join(".credentials.json"), dir.join(".claude.json")];
        if let Some(shared) = &p.settings.claude_config {
            // The login is copied both ways: the shared one may be written too.
            touched.push(shared.join(".credentials.json"));
        }
        let journaled = touched.iter().cloned().map(Touch::Path).collect();
        let has_key = p
            .settings
            .secrets
            .iter()
            .any(|s| s == crate::sandbox::agent::ANTHROPIC.key_var);
        plan.step_touching(
            format!("prepare the Claude state of {client}"),
            journaled,
            move || {
                let undo = keep_files(format!("restore the Claude state of {client}"), touched)?;
                let lines = if let Some(shared) = &p.settings.claude_config {
                    let lines = claude_login::sync_shared(&dir, shared);
                    lines.and_then(|l| claude_login::mark_onboarded(&dir).map(|()| l))
                } else {
                    let host_dir = claude_login::host_config_dir();
                    claude_login::prepare(&dir, host_dir.as_deref(), has_key)
                };
                let lines = match lines {
                    Ok(lines) => lines,
                    // Half-done is undone here: the plan undoes only completed effects.
                    Err(e) => return Err(undo_now(e, undo)),
                };
                for line in lines {
                    if line.starts_with("warning:") {
                        eprintln!("{line}");
                    } else {
                        outln!("{line}");
                    }
                }
                Ok(Applied::undo(undo))
            },
        );
        if p.settings.claude_config.is_none() {
            let dir = layout.client_subdir(client, "claude");
            plan.skip_if(move || {
                claude_login::prepared(&dir, claude_login::host_config_dir().as_deref(), has_key)
            });
        }
    }
    if let Some((name, value)) = &p.api_key {
        // Last of the client's effects: an earlier value cannot be read back, so
        // a replaced key is the one change that cannot be undone.
        let key_dir = layout
            .client_subdir(client, "config")
            .join(crate::proxy::keyed::KEY_DIR);
        let touches = vec![
            Touch::Secret(client.clone(), (*name).to_owned()),
            Touch::Dir(key_dir.clone()),
            Touch::Path(key_dir.join(name)),
        ];
        plan.step_touching(format!("store {name} of {client}"), touches, move || {
            let existed = secrets::list(client)?.iter().any(|s| s == name);
            secrets::store(client, name, value)?;
            secrets::store_for_proxy(layout, client, name, value)?;
            let secret = secrets::podman_name(client, name);
            outln!(
                "stored {name} from the environment as Podman secret {secret} (not in any file sandboxctl writes)"
            );
            Ok(Applied::undo(Undo::new(
                format!("undo storing Podman secret {secret}"),
                move || {
                    if existed {
                        bail!(
                            "it replaced an earlier value, which Podman cannot give back; `sandboxctl secret set {client} {name}` sets it again"
                        );
                    }
                    secrets::remove_for_proxy(layout, client, name)?;
                    secrets::remove(client, name)
                },
            )))
        });
    }
}

/// Puts a template unit back as it was (`None`: there was none). One that is unchanged
/// is left alone: its directory may not be writable, which is maybe why the plan is
/// being undone.
pub(crate) fn put_back(path: PathBuf, before: Option<Vec<u8>>) -> Result<()> {
    match before {
        Some(bytes) if std::fs::read(&path).ok().as_ref() == Some(&bytes) => Ok(()),
        Some(bytes) => crate::base::atomic::write(&path, &bytes, 0o644),
        None => remove_undo(path).run(),
    }
}

/// The previous private binary, kept (as a hard link) until the plan is applied.
pub(crate) const BINARY_BACKUP: &str = ".sandboxctl.before-enable";

/// The undo of a file this command created: remove it.
pub(crate) fn remove_undo<'a>(path: PathBuf) -> Undo<'a> {
    Undo::new(format!("remove {}", path.display()), move || {
        crate::txn::plan::remove_if_there(&path)
    })
}

/// Installs the proxy's template units and its copy of sandboxctl; the undo puts the
/// previous ones back (the previous binary is kept as a hard link until the plan is
/// applied).
pub(crate) fn install_proxy_units<'a>(
    layout: &'a Layout,
    exe: &Path,
    journald: bool,
) -> Result<Applied<'a>> {
    use crate::units::proxy::{SERVICE_FILE, SOCKET_FILE, binary_path, install_from};
    let units: Vec<(PathBuf, Option<Vec<u8>>)> = [SOCKET_FILE, SERVICE_FILE]
        .iter()
        .map(|f| {
            let path = layout.systemd_user_dir.join(f);
            let before = std::fs::read(&path).ok();
            (path, before)
        })
        .collect();
    let new_dirs: Vec<PathBuf> = [&layout.systemd_user_dir, &layout.libexec_dir]
        .into_iter()
        .flat_map(|d| missing_dirs(d))
        .collect();
    let binary = binary_path(layout);
    let backup = binary.with_file_name(BINARY_BACKUP);
    let _ = std::fs::remove_file(&backup);
    let had_binary = binary.exists();
    if had_binary {
        std::fs::hard_link(&binary, &backup).with_context(|| {
            format!(
                "cannot keep the previous {} as {}",
                binary.display(),
                backup.display()
            )
        })?;
    }
    let backup_for_commit = backup.clone();
    let undo = Undo::new("restore the proxy units and binary", move || {
        for (path, before) in units {
            put_back(path, before)?;
        }
        if had_binary {
            std::fs::rename(&backup, &binary).with_context(|| {
                format!(
                    "cannot put {} back as {}",
                    backup.display(),
                    binary.display()
                )
            })?;
            // An unchanged binary is the backup's own inode, and renaming a link onto
            // another link of the same file does nothing (POSIX): the name stays.
            remove_undo(backup).run()?;
        } else {
            remove_undo(binary).run()?;
        }
        remove_dirs(new_dirs).run()
    });
    // Whatever changed (the units, the binary or neither), the undo puts back exactly
    // what was there; a failure half-way is undone here.
    if let Err(e) = install_from(layout, exe, journald) {
        return Err(undo_now(e, undo));
    }
    Ok(
        Applied::undo(undo).on_commit(move || match std::fs::remove_file(&backup_for_commit) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", backup_for_commit.display()))
            }
            _ => Ok(()),
        }),
    )
}

/// Installs the notification template units; the undo puts the previous ones back.
pub(crate) fn install_notify_units(layout: &Layout, journald: bool) -> Result<Applied<'_>> {
    let before: Vec<(PathBuf, Option<Vec<u8>>)> = crate::units::notify::files(layout, journald)?
        .into_iter()
        .map(|(path, _)| {
            let old = std::fs::read(&path).ok();
            (path, old)
        })
        .collect();
    let undo = Undo::new("restore the notification units", move || {
        for (path, old) in before {
            put_back(path, old)?;
        }
        Ok(())
    });
    if let Err(e) = crate::units::notify::install(layout, journald) {
        return Err(undo_now(e, undo));
    }
    Ok(Applied::undo(undo))
}
