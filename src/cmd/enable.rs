//! `enable`, `render` and `run`: from options to a written unit and a reloaded manager.

use std::cell::RefCell;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::base::agent_file::{AgentPath, Kind};
use crate::base::output::outln;
use crate::cli::{EnableArgs, RunArgs};
use crate::host::systemd::{Systemd, UnitState, Verb};
use crate::host::{HostProfile, TemplateUnits, UnitTarget};
use crate::ops::options::{self, Request};
use crate::render::{self, Sandbox};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{Agent, NetworkMode, Settings};
use crate::txn::plan::{Applied, Plan, Touch, Undo, keep_files, missing_dirs, remove_dirs};
use crate::{state::claude_login, state::secrets};

/// Unit files are readable by their owner only.
use crate::render::UNIT_MODE;

/// A client ready to be written: its settings and unit.
struct Planned {
    client: ClientName,
    settings: Settings,
    unit: render::UnitFile,
    /// The other target's unit sandboxctl wrote earlier (the host gained or lost its
    /// Quadlet generator since), removed when this one is written.
    stale_unit: Option<PathBuf>,
    /// The unit differs from the one on disk (or there was none).
    changed: bool,
    /// The agent's API key found in the environment: (variable, value).
    api_key: Option<(&'static str, Vec<u8>)>,
    /// The client's settings before this command, if it existed.
    previous: Option<Settings>,
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
            let unit = render::unit_file(&Sandbox {
                client,
                settings: &settings,
                layout,
                host,
            })?;
            let mut units = Vec::new();
            for path in render::all_unit_paths(layout, client) {
                let existing = existing_unit(&path, client)?;
                units.push((path, existing));
            }
            let existing = units
                .iter()
                .find(|(p, _)| *p == unit.path)
                .and_then(|(_, t)| t.clone());
            let stale_unit = units
                .iter()
                .find(|(p, t)| *p != unit.path && t.is_some())
                .map(|(p, _)| p.clone());
            Ok(Planned {
                client: client.clone(),
                changed: existing.as_deref() != Some(unit.text.as_str()) || stale_unit.is_some(),
                settings,
                unit,
                stale_unit,
                api_key,
                previous: others
                    .iter()
                    .find(|(c, _)| c == client)
                    .map(|(_, s)| s.clone()),
            })
        })
        .collect()
}

/// A unit file of the client's as it is on disk; an error if sandboxctl did not write
/// it (a user's `agent-<client>.service` would also shadow the generated one).
fn existing_unit(path: &Path, client: &ClientName) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
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
    let Some(name) = settings.agent.key_var() else {
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

/// Everything `enable` changes, in order, each with its undo: the proxy's units and
/// binary, then per client its drop-in, data dirs, settings, unit (and the other
/// target's stale unit), policy, Claude state and API key, then one reload and the
/// check that systemd loaded every unit. `exe` is the binary the proxy units run a
/// copy of; `reload` and `check` reach the user manager.
fn effects<'a>(
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
fn client_files<'a>(
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
                &super::network::default_policy(&p.settings)?,
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
fn unit_effects<'a>(plan: &mut Plan<'a>, layout: &'a Layout, p: &'a Planned) -> Result<()> {
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
        let touches = vec![
            Touch::Dir(link.parent().map(Path::to_path_buf).unwrap_or_default()),
            Touch::Path(link.clone()),
        ];
        let (linked, target) = (link.clone(), service.clone());
        plan.step_touching(format!("link {}", link.display()), touches, move || {
            link_plain_service(link, &service)
        });
        plan.skip_if(move || std::fs::read_link(&linked).is_ok_and(|t| t == target));
    } else {
        let touches = vec![Touch::Path(link.clone())];
        let (linked, target) = (link.clone(), service.clone());
        plan.step_touching(format!("remove {}", link.display()), touches, move || {
            if std::fs::read_link(&link).ok().as_deref() != Some(service.as_path()) {
                return Ok(Applied::nothing());
            }
            std::fs::remove_file(&link)
                .with_context(|| format!("cannot remove {}", link.display()))?;
            Ok(Applied::undo(Undo::new(
                format!("put back {}", link.display()),
                move || {
                    std::os::unix::fs::symlink(&service, &link)
                        .with_context(|| format!("cannot create {}", link.display()))
                },
            )))
        });
        plan.skip_if(move || std::fs::read_link(&linked).ok().as_deref() != Some(target.as_path()));
    }
    Ok(())
}

/// Starts the plain service with the user manager, as `systemctl --user enable` does:
/// a link in `default.target.wants/`. A file there that is not this link is the user's.
fn link_plain_service<'a>(link: PathBuf, service: &Path) -> Result<Applied<'a>> {
    match std::fs::read_link(&link) {
        Ok(target) if target == service => return Ok(Applied::nothing()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => bail!(
            "{} exists and was not made by sandboxctl; move it away, then enable again",
            link.display()
        ),
    }
    let dir = link.parent().context("a link has a directory")?;
    let new = missing_dirs(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dirs = remove_dirs(new);
    if let Err(e) = std::os::unix::fs::symlink(service, &link) {
        let e = anyhow::Error::from(e).context(format!("cannot create {}", link.display()));
        return Err(undo_now(e, dirs));
    }
    Ok(Applied::undo(Undo::new(
        format!("remove {}", link.display()),
        move || {
            remove_undo(link).run()?;
            dirs.run()
        },
    )))
}

/// A client's agent state: Claude's first-run state and the API key from the environment.
fn client_agent<'a>(plan: &mut Plan<'a>, layout: &'a Layout, p: &'a Planned) {
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

/// An effect failed half-way: undo what it did, and report both if that fails too.
fn undo_now(e: anyhow::Error, undo: Undo<'_>) -> anyhow::Error {
    match undo.run() {
        Ok(()) => e,
        Err(u) => e.context(format!("and undoing it failed too: {u:#}")),
    }
}

/// Puts a template unit back as it was (`None`: there was none). One that is unchanged
/// is left alone: its directory may not be writable, which is maybe why the plan is
/// being undone.
fn put_back(path: PathBuf, before: Option<Vec<u8>>) -> Result<()> {
    match before {
        Some(bytes) if std::fs::read(&path).ok().as_ref() == Some(&bytes) => Ok(()),
        Some(bytes) => crate::base::atomic::write(&path, &bytes, 0o644),
        None => remove_undo(path).run(),
    }
}

/// The previous private binary, kept (as a hard link) until the plan is applied.
const BINARY_BACKUP: &str = ".sandboxctl.before-enable";

/// What pinning the git dirs of `projects` may create. A project whose pins cannot be
/// planned has none: its step fails before creating anything.
fn git_pin_touches(projects: &[AgentPath]) -> Vec<Touch> {
    let mut touches = Vec::new();
    for project in projects {
        let Ok(plan) = crate::state::git_guard::plan(project) else {
            continue;
        };
        for c in &plan.create {
            match c {
                crate::state::git_guard::Create::File(f, _) => {
                    touches.extend(f.parent().map(|d| Touch::Dir(d.to_path_buf())));
                    touches.push(Touch::Path(f.clone()));
                }
                crate::state::git_guard::Create::Upgrade(f) => touches.push(Touch::Path(f.clone())),
                crate::state::git_guard::Create::Dir(d) => touches.push(Touch::Dir(d.clone())),
            }
        }
    }
    touches
}

/// Creates what the git pins of `projects` need (a `commondir`, an empty `config` or
/// `hooks/`), and says what the pins do not cover; the undo removes what it created.
fn pin_git_dirs(projects: &[AgentPath]) -> Result<Applied<'static>> {
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<()> {
        for project in projects {
            let plan = crate::state::git_guard::plan(project)?;
            let mut new = Vec::new();
            for c in &plan.create {
                // A rewritten `commondir` means the same to git before and after: the
                // undo leaves it.
                if matches!(c, crate::state::git_guard::Create::Upgrade(_)) {
                    continue;
                }
                let path = c.path();
                // Outermost first, so removing in reverse empties each before its parent.
                for d in path.parent().map(missing_dirs).unwrap_or_default() {
                    if !new.contains(&d) {
                        new.push(d);
                    }
                }
                let missing = AgentPath::new(path)
                    .kind()
                    .map_or(true, |k| k == Kind::Missing);
                if missing && !new.iter().any(|n| n == path) {
                    new.push(path.to_path_buf());
                }
            }
            crate::state::git_guard::prepare(&plan)?;
            created.extend(new);
            for w in crate::state::git_guard::warnings(&plan) {
                eprintln!("{w}");
            }
        }
        Ok(())
    })();
    let undo = Undo::new("remove what was created to pin git dirs", move || {
        for path in created.iter().rev() {
            let removed = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        return Err(undo_now(e, undo));
    }
    if let Some(note) = crate::state::git_guard::submodule_note(projects) {
        eprintln!("{note}");
    }
    Ok(Applied::undo(undo))
}

/// The undo of a file this command created: remove it.
fn remove_undo<'a>(path: PathBuf) -> Undo<'a> {
    Undo::new(
        format!("remove {}", path.display()),
        move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        },
    )
}

/// Installs the proxy's template units and its copy of sandboxctl; the undo puts the
/// previous ones back (the previous binary is kept as a hard link until the plan is
/// applied).
fn install_proxy_units<'a>(layout: &'a Layout, exe: &Path, journald: bool) -> Result<Applied<'a>> {
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
fn install_notify_units(layout: &Layout, journald: bool) -> Result<Applied<'_>> {
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

/// Clients written and reloaded: the user manager, each client's plan and whether its
/// sandbox was running.
struct Written {
    systemd: Systemd,
    planned: Vec<Planned>,
    running: Vec<bool>,
    host: HostProfile,
}

/// Validates, writes and reloads `clients`.
fn write_clients(layout: &Layout, clients: &[ClientName], req: &Request<'_>) -> Result<Written> {
    let host = HostProfile::detect(&layout.cache_dir, true);
    host.require_podman()?;
    // From reading the clients' settings to the last file written: one change at a time.
    let _lock = crate::txn::lock::ChangeLock::take(layout)?;
    let planned = plan(layout, &host, clients, req)?;
    // Reach systemd before writing, so a missing user manager leaves nothing behind.
    let systemd = Systemd::connect_user()?;
    let exe = std::env::current_exe().context("cannot find the path of the sandboxctl binary")?;
    let running = RefCell::new(Vec::new());
    let reload = || systemd.reload();
    let units: Vec<String> = planned.iter().map(|p| p.client.service_name()).collect();
    let needs_reload = || systemd.needs_reload(&units);
    let check = || -> Result<()> {
        *running.borrow_mut() = check_generated(&systemd, &host, layout, &planned)?;
        Ok(())
    };
    effects(
        layout,
        &host,
        &planned,
        &exe,
        &reload,
        &needs_reload,
        &check,
    )?
    .journaled(crate::txn::journal::Journal::begin(layout)?)
    .apply()?;
    let running = running.into_inner();
    // Notifications off: the client's event socket stops listening (the sandbox stops
    // mounting it at its next start).
    for p in planned.iter().filter(|p| !p.settings.notify) {
        for unit in [
            crate::notify::socket_unit(&p.client),
            crate::notify::service_unit(&p.client),
        ] {
            systemd.stop_if_known(&unit)?;
        }
    }
    Ok(Written {
        systemd,
        planned,
        running,
        host,
    })
}

impl Written {
    /// Warnings and one line per client; without `now`, says which running sandbox
    /// still has its previous settings.
    fn report(&self, layout: &Layout, now: bool) {
        for (p, running) in self.planned.iter().zip(&self.running) {
            for w in options::warnings(&p.client, &p.settings) {
                eprintln!("{w}");
            }
            let client = &p.client;
            outln!(
                "enabled {client}: {} ({} agent, network {}, autonomy {})",
                p.unit.path.display(),
                p.settings.agent,
                p.settings.network,
                p.settings.autonomy
            );
            let masked = crate::state::mask::in_unit(&p.unit.text, &layout.mask_file(client)).len();
            outln!("{}", crate::state::mask::summary(&p.settings, masked));
            if *running && p.changed && !now {
                outln!(
                    "{0} is running the previous settings; `sandboxctl restart {0}` applies them (the agent restarts)",
                    p.client
                );
            }
        }
        if let Some(line) = linger_note(&self.host, Path::new(LINGER_DIR)) {
            outln!("{line}");
        }
    }

    /// Starts the `i`th client's sandbox, or restarts it when it runs with other
    /// settings (saying what changed); a sandbox already running these is left alone.
    fn start_or_restart(&self, layout: &Layout, i: usize) -> Result<()> {
        let p = &self.planned[i];
        let verb = if !self.running[i] {
            Verb::Start
        } else if p.changed {
            outln!(
                "restarting {} with the new settings ({})",
                p.client,
                what_changed(p.previous.as_ref(), &p.settings)
            );
            Verb::Restart
        } else if started_before(&p.client, &p.unit.path) {
            outln!(
                "restarting {} with the new settings (its unit was written after it started)",
                p.client
            );
            Verb::Restart
        } else {
            return Ok(());
        };
        crate::ops::start::run(layout, &self.systemd, &p.client, &p.settings, verb)
    }
}

/// Whether the client's container started before `unit` was last written: an `enable`
/// without `--now` since, so it runs older settings. sandboxctl writes a unit only when
/// its text changes; anything podman cannot answer counts as no.
fn started_before(client: &ClientName, unit: &Path) -> bool {
    let Ok(written) = std::fs::metadata(unit).and_then(|m| m.modified()) else {
        return false;
    };
    let Ok(written) = written.duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let out = crate::host::podman::command([
        "container",
        "inspect",
        "--format",
        "{{.State.StartedAt.Unix}}",
        &client.container_name(),
    ])
    .output();
    let started = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().parse::<u64>(),
        _ => return false,
    };
    started.is_ok_and(|started| written.as_secs() > started)
}

/// The settings that differ, as `name old → new` for single values and `name` for
/// lists; "the unit changed" when only the unit did (a new host, a new sandboxctl).
fn what_changed(before: Option<&Settings>, after: &Settings) -> String {
    let table = |s: &Settings| match toml::Value::try_from(s) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::map::Map::new(),
    };
    let after = table(after);
    let before = before.map(table).unwrap_or_default();
    let mut keys: Vec<&String> = after.keys().collect();
    keys.extend(before.keys().filter(|k| !after.contains_key(*k)));
    let shown = |v: Option<&toml::Value>| match v {
        Some(toml::Value::String(s)) => crate::base::terminal::sanitize(s.as_bytes()),
        Some(toml::Value::Boolean(b)) => b.to_string(),
        _ => "(none)".to_owned(),
    };
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| match after.get(k).or_else(|| before.get(k)) {
            Some(toml::Value::String(_) | toml::Value::Boolean(_)) => {
                format!("{k} {} → {}", shown(before.get(k)), shown(after.get(k)))
            }
            _ => k.clone(),
        })
        .collect();
    if changed.is_empty() {
        "the unit changed".to_owned()
    } else {
        changed.join(", ")
    }
}

/// Validates, writes and reloads; the shared path of `enable`, `run` and `secret`.
pub fn enable_clients(
    layout: &Layout,
    clients: &[ClientName],
    req: &Request<'_>,
    now: bool,
) -> Result<()> {
    let written = write_clients(layout, clients, req)?;
    written.report(layout, now);
    if now {
        for i in 0..written.planned.len() {
            written.start_or_restart(layout, i)?;
        }
    } else if let [p] = written.planned.as_slice() {
        outln!(
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
        return super::attach::attach(layout, client.as_str(), "main");
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
    super::attach::attach(layout, client.as_str(), "main")
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
    let others = options::all_settings(layout)?;
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
    let mut out = match agent {
        Agent::Claude => vec![Bundle::Claude],
        Agent::Codex => vec![Bundle::Codex],
        Agent::Shell => vec![Bundle::Claude, Bundle::Codex],
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::host::{Cgroups, Version, fixed_profile};

    /// Every file and directory under `root`: path, mode, contents.
    fn tree(root: &Path) -> Vec<(String, u32, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read dir") {
                let path = e.expect("entry").path();
                let meta = std::fs::symlink_metadata(&path).expect("metadata");
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string();
                let mode = meta.permissions().mode() & 0o7777;
                if meta.is_dir() {
                    out.push((rel, mode, None));
                    stack.push(path);
                } else if meta.is_symlink() {
                    let target = std::fs::read_link(&path).expect("read link");
                    out.push((rel, 0, Some(target.as_os_str().as_encoded_bytes().to_vec())));
                } else {
                    out.push((rel, mode, Some(std::fs::read(&path).expect("read"))));
                }
            }
        }
        out.sort();
        out
    }

    fn host(quadlet: bool) -> HostProfile {
        let mut h = fixed_profile(
            Version::new(4, 3, 1),
            Version::new(5, 4, 2),
            Cgroups::V2,
            true,
        );
        if !quadlet {
            h.quadlet = None;
            h.quadlet_disabled = true;
        }
        h
    }

    /// A user manager that has an older unit loaded: a reload is needed.
    const ALWAYS: &dyn Fn() -> Result<bool> = &|| Ok(true);

    /// What `plan` computes for one client, without reading options.
    fn planned(layout: &Layout, host: &HostProfile, settings: Settings) -> Planned {
        let client = ClientName::parse("acme").expect("name");
        let unit = render::unit_file(&Sandbox {
            client: &client,
            settings: &settings,
            layout,
            host,
        })
        .expect("renders");
        let stale_unit = render::all_unit_paths(layout, &client)
            .into_iter()
            .find(|p| *p != unit.path && p.exists());
        Planned {
            client,
            settings,
            unit,
            stale_unit,
            changed: true,
            api_key: None,
            previous: None,
        }
    }

    fn settings(network: NetworkMode, image: &str) -> Settings {
        Settings {
            agent: Agent::Claude,
            network,
            image: image.to_owned(),
            // A key in the settings: no login is copied from this machine's home.
            secrets: vec!["ANTHROPIC_API_KEY".into()],
            ..Settings::default()
        }
    }

    /// A home under `tmp` with the new binary to install, and (if `existing`) a client
    /// enabled before with other settings, on a host without a Quadlet generator.
    fn home_for_steps(tmp: &Path, existing: bool) -> (PathBuf, Layout, PathBuf) {
        let root = tmp.join("home");
        let layout = Layout::under(&root);
        // The change lock creates the data directory before anything else.
        std::fs::create_dir_all(&layout.data_dir).expect("data dir");
        let exe = tmp.join("sandboxctl-v2");
        std::fs::write(&exe, "new binary").expect("exe");
        if existing {
            let ok = || Ok(());
            let old_exe = tmp.join("sandboxctl-v1");
            std::fs::write(&old_exe, "old binary").expect("exe");
            let old_host = host(false);
            let old = [planned(
                &layout,
                &old_host,
                settings(NetworkMode::Allowlist, "localhost/old:1"),
            )];
            effects(&layout, &old_host, &old, &old_exe, &ok, ALWAYS, &ok)
                .expect("plan")
                .apply()
                .expect("first enable");
        }
        (root, layout, exe)
    }

    /// `enable` again with the same settings changes nothing: no step runs, nothing is
    /// journaled and systemd is reloaded only when it says it still has an older unit
    /// loaded; a changed file reloads whatever systemd says.
    #[test]
    fn an_unchanged_enable_writes_nothing_and_reloads_only_when_needed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, layout, exe) = home_for_steps(tmp.path(), false);
        let ok = || Ok(());
        let h = host(true);
        let new = [planned(
            &layout,
            &h,
            settings(NetworkMode::Allowlist, "localhost/x:1"),
        )];
        let reloads = Cell::new(0);
        let reload = || {
            reloads.set(reloads.get() + 1);
            Ok(())
        };
        let fresh = || Ok(false);
        let apply = |needs: &dyn Fn() -> Result<bool>| {
            effects(&layout, &h, &new, &exe, &reload, needs, &ok)
                .expect("plan")
                .journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"))
                .apply()
                .expect("applies");
        };
        apply(&fresh);
        assert_eq!(reloads.get(), 1, "a new client reloads");
        let before = tree(&root);
        let journal = layout.data_dir.join(".journal");
        std::fs::create_dir_all(&journal).expect("journal dir");
        for (needs, want) in [(&fresh as &dyn Fn() -> Result<bool>, 0), (ALWAYS, 1)] {
            reloads.set(0);
            let mut plan = effects(&layout, &h, &new, &exe, &reload, needs, &ok).expect("plan");
            // Stopped before its last step, the log holds every entry it wrote.
            plan.die_at(plan.len() - 1);
            let plan =
                plan.journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"));
            plan.apply().expect_err("died");
            let entries: Vec<_> = std::fs::read_dir(&journal)
                .expect("log")
                .flatten()
                .collect();
            assert_eq!(entries.len(), want, "entries: {entries:?}");
            assert_eq!(reloads.get(), want);
            std::fs::remove_dir_all(&journal).expect("clear the log");
            assert_eq!(tree(&root), before, "an unchanged enable changed files");
        }
        std::fs::write(layout.settings_path(&new[0].client), "changed").expect("write");
        reloads.set(0);
        apply(&fresh);
        assert_eq!(reloads.get(), 1, "a rewritten settings file reloads");
    }

    /// A failure at any step of `enable` leaves every file as it was, reloads again
    /// once systemd had reloaded, and says nothing was changed: for a new client, and
    /// for one that moves from a plain service to a Quadlet unit with new settings.
    #[test]
    fn a_failure_at_any_step_undoes_every_effect() {
        for existing in [false, true] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let (root, layout, exe) = home_for_steps(tmp.path(), existing);
            let ok = || Ok(());
            let new_host = host(true);
            let new = [planned(
                &layout,
                &new_host,
                settings(NetworkMode::Allowlist, "localhost/new:2"),
            )];
            assert_eq!(new[0].stale_unit.is_some(), existing);
            let before = tree(&root);
            let reloads = Cell::new(0);
            let reload = || {
                reloads.set(reloads.get() + 1);
                Ok(())
            };
            let plan = effects(&layout, &new_host, &new, &exe, &reload, ALWAYS, &ok).expect("plan");
            let steps: Vec<String> = plan.describe().into_iter().map(str::to_owned).collect();
            let reload_at = steps
                .iter()
                .position(|s| s.starts_with("reload"))
                .expect("a reload step");
            assert!(steps.len() >= 8, "{steps:?}");
            for (n, step) in steps.iter().enumerate() {
                reloads.set(0);
                let mut plan =
                    effects(&layout, &new_host, &new, &exe, &reload, ALWAYS, &ok).expect("plan");
                plan.fail_at(n);
                let err = format!("{:#}", plan.apply().expect_err("injected failure"));
                assert!(
                    err.starts_with("nothing was changed: injected failure"),
                    "step {n} ({step}): {err}",
                );
                let after = tree(&root);
                let changed: Vec<String> = after
                    .iter()
                    .filter(|e| !before.contains(e))
                    .chain(before.iter().filter(|e| !after.contains(e)))
                    .map(|(p, m, c)| {
                        format!("{p} {m:o} {:?}", c.as_deref().map(String::from_utf8_lossy))
                    })
                    .collect();
                assert!(
                    changed.is_empty(),
                    "step {n} ({step}) left changes behind: {changed:?}",
                );
                let want = if n > reload_at { 2 } else { 0 };
                assert_eq!(reloads.get(), want, "step {n} ({step})");
            }
            effects(&layout, &new_host, &new, &exe, &reload, ALWAYS, &ok)
                .expect("plan")
                .apply()
                .expect("applies without a failure");
            let after = tree(&root);
            assert_ne!(after, before);
            assert!(new[0].unit.path.exists());
            assert!(!render::plain_unit_path(&layout, &new[0].client).exists());
            assert!(
                !after.iter().any(|(p, _, _)| p.contains("before-enable")),
                "the binary's backup is gone once applied: {after:?}"
            );
        }
    }

    /// A failed `enable` that found the private binary already up to date leaves no
    /// backup of it behind (the backup is then a second name of the same file).
    #[test]
    fn a_failure_with_the_binary_unchanged_leaves_no_backup() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_, layout, exe) = home_for_steps(tmp.path(), false);
        let ok = || Ok(());
        let host = host(true);
        let new = [planned(
            &layout,
            &host,
            settings(NetworkMode::Allowlist, "localhost/new:2"),
        )];
        effects(&layout, &host, &new, &exe, &ok, ALWAYS, &ok)
            .expect("plan")
            .apply()
            .expect("first enable");
        let mut plan = effects(&layout, &host, &new, &exe, &ok, ALWAYS, &ok).expect("plan");
        let last = plan.len() - 1;
        plan.fail_at(last);
        plan.apply().expect_err("injected failure");
        let left: Vec<_> = std::fs::read_dir(&layout.libexec_dir)
            .expect("libexec")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("sandboxctl")]);
    }

    /// A command killed before any step, or after the last, leaves an undo log on
    /// disk; the next command's recovery puts every file back as it was, and enabling
    /// again then applies the whole plan.
    #[test]
    fn a_kill_at_any_step_is_undone_by_the_next_command() {
        for existing in [false, true] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let (root, layout, exe) = home_for_steps(tmp.path(), existing);
            let ok = || Ok(());
            let new_host = host(true);
            let new = [planned(
                &layout,
                &new_host,
                settings(NetworkMode::Allowlist, "localhost/new:2"),
            )];
            let before = tree(&root);
            let reloads = Cell::new(0);
            let reload = || {
                reloads.set(reloads.get() + 1);
                Ok(())
            };
            let plan = effects(&layout, &new_host, &new, &exe, &ok, ALWAYS, &ok).expect("plan");
            let count = plan.len();
            let reload_at = plan
                .describe()
                .iter()
                .position(|s| s.starts_with("reload"))
                .expect("a reload step");
            drop(plan);
            for n in 0..=count {
                let mut plan = effects(&layout, &new_host, &new, &exe, &ok, ALWAYS, &ok)
                    .expect("plan")
                    .journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"));
                plan.die_at(n);
                plan.apply().expect_err("died");
                assert!(crate::txn::journal::pending(&layout), "step {n}");
                reloads.set(0);
                crate::txn::journal::recover_with(&layout, &reload).expect("recover");
                assert_eq!(tree(&root), before, "step {n} of {count} is not undone");
                assert!(!crate::txn::journal::pending(&layout));
                // The reload step's entry is there once the plan reached it.
                assert_eq!(reloads.get() > 0, n >= reload_at, "step {n} of {count}");
            }
            effects(&layout, &new_host, &new, &exe, &ok, ALWAYS, &ok)
                .expect("plan")
                .journaled(crate::txn::journal::Journal::begin(&layout).expect("journal"))
                .apply()
                .expect("enable again");
            assert_ne!(tree(&root), before);
            assert!(new[0].unit.path.exists());
            assert!(!crate::txn::journal::pending(&layout));
        }
    }

    /// An undo that fails is named in the error, with the failure that caused it, and
    /// the other undos still run.
    #[test]
    fn a_failed_undo_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(tmp.path());
        let exe = tmp.path().join("exe");
        std::fs::write(&exe, "binary").expect("exe");
        let h = host(true);
        let new = [planned(
            &layout,
            &h,
            settings(NetworkMode::None, "localhost/x:1"),
        )];
        let ok = || Ok(());
        let unit = new[0].unit.path.clone();
        let fail_check = || -> Result<()> {
            // Something put a directory where the unit was: its undo cannot remove it.
            std::fs::remove_file(&unit).expect("remove unit");
            std::fs::create_dir_all(unit.join("in-the-way")).expect("mkdir");
            bail!("systemd has no agent-acme.service")
        };
        let err = effects(&layout, &h, &new, &exe, &ok, ALWAYS, &fail_check)
            .expect("plan")
            .apply()
            .expect_err("fails");
        let err = format!("{err:#}");
        assert!(
            err.starts_with("some changes could not be undone; could not remove "),
            "{err}"
        );
        assert!(err.contains("agent-acme.container"), "{err}");
        assert!(err.ends_with("systemd has no agent-acme.service"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(
            !layout.client_dir(&new[0].client).exists(),
            "the rest was undone"
        );
    }

    fn booted_host(booted: bool) -> HostProfile {
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
        let off = linger_note(&booted_host(true), dir.path()).expect("a booted host gets a note");
        assert_eq!(
            off,
            format!(
                "linger is off for {user}: the sandboxes start when you log in and stop when your last session ends; `loginctl enable-linger {user}` makes them start at boot"
            )
        );
        std::fs::write(dir.path().join(&user), b"").expect("linger file");
        let on = linger_note(&booted_host(true), dir.path()).expect("a booted host gets a note");
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
        assert_eq!(linger_note(&booted_host(false), dir.path()), None);
    }

    /// With the package's units, `enable` writes no template unit and no copy of
    /// sandboxctl, removes the per-user ones an earlier `enable` wrote (they would shadow
    /// the package's), and the client's drop-in runs the packaged binary.
    #[test]
    fn packaged_units_leave_no_template_or_binary_in_the_home() {
        use crate::units::proxy::{SERVICE_FILE, SOCKET_FILE, binary_path, dropin_path};
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("home");
        std::fs::create_dir(&root).expect("home");
        let layout = Layout::under(&root);
        let exe = tmp.path().join("sandboxctl");
        std::fs::write(&exe, "binary").expect("exe");
        let ok = || Ok(());

        // Before the package: per-user copies.
        let per_user = host(true);
        let first = [planned(
            &layout,
            &per_user,
            settings(NetworkMode::Allowlist, "localhost/a:1"),
        )];
        effects(&layout, &per_user, &first, &exe, &ok, ALWAYS, &ok)
            .expect("plan")
            .apply()
            .expect("per-user enable");
        assert!(layout.systemd_user_dir.join(SERVICE_FILE).is_file());
        assert!(binary_path(&layout).is_file());

        let mut packaged = host(true);
        packaged.template_units = TemplateUnits::Packaged {
            dir: PathBuf::from("/usr/lib/systemd/user"),
            binary: PathBuf::from("/usr/bin/sandboxctl"),
        };
        let second = [planned(
            &layout,
            &packaged,
            settings(NetworkMode::Allowlist, "localhost/a:2"),
        )];
        effects(&layout, &packaged, &second, &exe, &ok, ALWAYS, &ok)
            .expect("plan")
            .apply()
            .expect("packaged enable");
        for f in [SOCKET_FILE, SERVICE_FILE] {
            assert!(!layout.systemd_user_dir.join(f).exists(), "{f} left");
        }
        assert!(!binary_path(&layout).exists(), "the binary copy left");
        let client = ClientName::parse("acme").expect("name");
        let dropin = std::fs::read_to_string(dropin_path(&layout, &client)).expect("drop-in");
        assert!(
            dropin.contains("ExecStart=\"/usr/bin/sandboxctl\" proxy"),
            "{dropin}"
        );
    }
}
