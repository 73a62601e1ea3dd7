//! What a client's container must be, computed once from its settings and the detected
//! host: image, names, mounts, environment, secrets, network, security, labels, the
//! unit's dependencies and service settings, and the host adaptations with their
//! reasons. Renderers (`render::quadlet`, `render::plain`) map this to a target and
//! decide nothing about the sandbox themselves, so targets cannot drift apart.
//! Every value is validated here, so an unsafe setting is refused before any renderer
//! runs; renderers escape through `escape`.

pub(crate) mod parts;
#[cfg(test)]
mod tests;

use std::path::Path;

use anyhow::{Context, Result};

use crate::base::agent_file::AgentPath;
use crate::base::escape;
use crate::host::{Cgroups, HostProfile, Version};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{Agent, Autonomy, NetworkMode, Settings};
use crate::units::proxy as proxy_units;

pub use parts::*;

/// The agent's home inside the container.
pub const HOME: &str = "/home/agent";

/// The size cap of the tmpfs at `~/.cache`.
pub const CACHE_SIZE: &str = "1g";

/// The label that identifies a client's container.
pub const CLIENT_LABEL: &str = "io.sandboxctl.client";

/// Where the host side of a client's sandbox lives: its own dirs and its settings.
pub struct Sandbox<'a> {
    pub client: &'a ClientName,
    pub settings: &'a Settings,
    pub layout: &'a Layout,
    pub host: &'a HostProfile,
}

/// A client's container, as every renderer must express it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub client: ClientName,
    pub agent: Agent,
    /// One line describing the detected host, for the unit's header.
    pub host_summary: String,
    pub image: String,
    pub container_name: String,
    pub hostname: String,
    pub working_dir: String,
    pub userns: UserNs,
    /// In the order they are given to podman: tmpfs mounts, then binds.
    pub mounts: Vec<Mount>,
    pub environment: Vec<EnvVar>,
    pub secrets: Vec<SecretMount>,
    pub network: Network,
    pub security: Security,
    pub labels: Vec<Label>,
    /// Units started with the sandbox and ordered before it (`Wants=` + `After=`).
    pub dependencies: Vec<Dependency>,
    /// Why the sandbox need not wait for the host's network to be online, if it need
    /// not (no network of its own, or a host where that wait never ends).
    pub skip_network_online: Option<&'static str>,
    pub service: ServiceSettings,
    /// What this host needs that a well-equipped one does not, with the reasons.
    pub adaptations: Vec<Adaptation>,
    /// The user's own podman arguments (settings `podman_args`), passed last.
    pub extra_podman_args: Vec<String>,
    /// What the agent does without asking (named in the unit's description).
    pub autonomy: Autonomy,
    /// Resource limits, checked to be enforceable on this host.
    pub limits: crate::sandbox::limits::Limits,
    /// Podman's auto-update policy for the image, if it can have one.
    pub auto_update: Option<AutoUpdate>,
}

/// Why a `localhost/` image is never pulled: Podman would retry a pull that cannot
/// succeed for seconds at each start, too slowly for systemd's start limit to end the
/// retries of a sandbox whose image is gone.
pub const PULL_NEVER_WHY: &str = "the image exists only in local storage (localhost/): a missing one fails the start at once, so systemd's start limit ends the retries";

/// Podman older than this leaves a stale cid file behind.
const STALE_CID_FIXED: Version = Version::new(4, 4, 0);

impl SandboxSpec {
    /// Computes the container for a client on this host; refuses settings that cannot
    /// be expressed safely, with a one-line error naming the value.
    pub fn new(sandbox: &Sandbox<'_>) -> Result<Self> {
        let s = sandbox.settings;
        let client = sandbox.client;
        let image = image_ref(s.running_image())?;
        let working_dir = match s.projects.first() {
            Some(p) => path_str("project directory", p)?,
            None => HOME.to_owned(),
        };
        escape::raw("working directory", &working_dir)?;
        let mut secrets = Vec::new();
        let held = s.proxy_held_key().map(|p| p.key_var);
        for name in &s.secrets {
            crate::state::secrets::check_name(name)?;
            if held == Some(name.as_str()) {
                // The egress proxy adds this key on the way out; the agent never has it.
                continue;
            }
            secrets.push(SecretMount {
                podman_name: crate::state::secrets::podman_name(client, name),
                target: name.clone(),
            });
        }
        let environment = environment(client, s);
        for e in &environment {
            escape::check("environment value", &e.assignment())?;
        }
        for a in &s.podman_args {
            escape::check("podman argument", a)?;
        }
        let mounts = mounts(sandbox)?;
        crate::host::enforce::check(&s.limits, sandbox.host)
            .with_context(|| format!("resource limits of client {client}"))?;
        let spec = Self {
            auto_update: AutoUpdate::for_image(&image),
            client: client.clone(),
            agent: s.agent,
            host_summary: sandbox.host.summary(),
            image,
            container_name: client.container_name(),
            hostname: client.as_str().to_owned(),
            working_dir,
            userns: UserNs::KeepId,
            mounts,
            environment,
            secrets,
            // Allowlist mode has no network either: its only way out is the proxy's
            // Unix socket, mounted from the runtime directory.
            network: match s.network {
                NetworkMode::Open => Network::Default,
                NetworkMode::None | NetworkMode::Allowlist => Network::None,
            },
            security: Security {
                drop_capabilities: vec!["all".to_owned()],
                no_new_privileges: true,
                read_only: true,
                init: true,
            },
            labels: vec![Label {
                key: CLIENT_LABEL.to_owned(),
                value: client.as_str().to_owned(),
            }],
            dependencies: dependencies(client, s),
            skip_network_online: skip_network_online(s.network, sandbox.host),
            service: ServiceSettings {
                restart_on_failure: true,
                timeout_start_sec: 900,
            },
            adaptations: adaptations(client, sandbox.host),
            extra_podman_args: s.podman_args.clone(),
            autonomy: s.autonomy,
            limits: s.limits,
        };
        Ok(spec)
    }

    /// `--pull=never`: for an image only in local storage, which no registry has.
    pub fn pull_never(&self) -> bool {
        self.auto_update == Some(AutoUpdate::Local)
    }

    /// The adaptation of this kind, if the host needs it.
    pub fn adaptation(&self, pred: impl Fn(&AdaptationKind) -> bool) -> Option<&Adaptation> {
        self.adaptations.iter().find(|a| pred(&a.kind))
    }

    pub fn tmpfs(&self) -> impl Iterator<Item = &Tmpfs> {
        self.mounts.iter().filter_map(|m| match m {
            Mount::Tmpfs(t) => Some(t),
            Mount::Bind(_) => None,
        })
    }

    pub fn binds(&self) -> impl Iterator<Item = &Bind> {
        self.mounts.iter().filter_map(|m| match m {
            Mount::Bind(b) => Some(b),
            Mount::Tmpfs(_) => None,
        })
    }
}

fn environment(client: &ClientName, s: &Settings) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar::new("SANDBOX_CLIENT", client.as_str()),
        EnvVar::new("SANDBOX_AGENT", s.agent.as_str()),
        EnvVar::new("HOME", HOME),
        EnvVar::new("CODEX_HOME", format!("{HOME}/.codex")),
        EnvVar::new("HISTFILE", format!("{HOME}/.history/bash_history")),
    ];
    env.push(EnvVar::new("CLAUDE_CONFIG_DIR", format!("{HOME}/.claude")));
    for (name, value) in crate::sandbox::git_identity::environment(s) {
        env.push(EnvVar::new(&name, value));
    }
    if s.network == NetworkMode::Allowlist {
        let proxy = format!("http://127.0.0.1:{}", proxy_units::FORWARDER_PORT);
        env.push(EnvVar::new(
            "SANDBOX_PROXY_SOCKET",
            format!("{}/proxy.sock", proxy_units::CONTAINER_SOCKET_DIR),
        ));
        env.push(EnvVar::new(
            "SANDBOX_PROXY_PORT",
            proxy_units::FORWARDER_PORT.to_string(),
        ));
        for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
            env.push(EnvVar::new(var, proxy.clone()));
            env.push(EnvVar::new(&var.to_lowercase(), proxy.clone()));
        }
        env.push(EnvVar::new("NO_PROXY", "localhost,127.0.0.1"));
        env.push(EnvVar::new("no_proxy", "localhost,127.0.0.1"));
    }
    if let Some(p) = s.proxy_held_key() {
        env.push(EnvVar::new(
            p.base_url_var,
            p.base_url(proxy_units::FORWARDER_PORT),
        ));
        env.push(EnvVar::new(p.key_var, crate::proxy::keyed::PLACEHOLDER));
    }
    // Autonomy and agent arguments for `agent-session`, one variable per argument so
    // nothing is ever split into words or re-parsed on the way.
    env.push(EnvVar::new("SANDBOX_AUTONOMY", s.autonomy.as_str()));
    env.push(EnvVar::new(
        "SANDBOX_AGENT_ARGC",
        s.agent_args.len().to_string(),
    ));
    for (i, a) in s.agent_args.iter().enumerate() {
        env.push(EnvVar::new(
            &format!("SANDBOX_AGENT_ARG_{}", i + 1),
            a.clone(),
        ));
    }
    env
}

fn dependencies(client: &ClientName, s: &Settings) -> Vec<Dependency> {
    let mut out = Vec::new();
    if s.network == NetworkMode::Allowlist {
        out.push(Dependency {
            unit: proxy_units::socket_unit(client),
            why: "allowlist: the client's egress proxy socket is the only way out; without \
                  it nothing gets out, and stopping it does not stop the sandbox",
        });
    }
    if s.notify {
        out.push(Dependency {
            unit: crate::notify::socket_unit(client),
            why: "notify: the agents' hooks report waiting and finished through the \
                  client's event socket, whose directory the sandbox mounts",
        });
    }
    out
}

fn adaptations(client: &ClientName, host: &HostProfile) -> Vec<Adaptation> {
    let mut out = Vec::new();
    if host.rootless && host.cgroups != Cgroups::V2 {
        out.push(Adaptation {
            kind: AdaptationKind::CgroupsDisabled,
            why: "host adaptation: rootless Podman cannot split cgroups on cgroup v1",
        });
    }
    if host.podman.is_some_and(|v| v < STALE_CID_FIXED) {
        out.push(Adaptation {
            kind: AdaptationKind::RemoveStaleCidFile,
            why: "host adaptation: this Podman leaves a stale cid file that blocks the next start",
        });
    }
    if !host.journald {
        out.push(Adaptation {
            kind: AdaptationKind::LogToFile {
                runtime_relative: format!("{}.log", client.container_name()),
            },
            why: "host adaptation: no journald here, so the unit logs to a file that `sandboxctl logs` reads",
        });
    }
    out
}

/// Why the sandbox need not wait for the host's `network-online.target`, if it need not.
/// Quadlet (from 5.3) orders every unit after a wait for it that gives up after 90 s,
/// on every start where nothing brings that target up.
fn skip_network_online(network: NetworkMode, host: &HostProfile) -> Option<&'static str> {
    match network {
        NetworkMode::None => Some(
            "network none: the sandbox has no network, so it need not wait for the host's network-online.target (Quadlet's wait takes up to 90 s on every start where nothing brings that target up)",
        ),
        NetworkMode::Allowlist => Some(
            "allowlist: the sandbox has no network of its own (its way out is the proxy socket, which resolves names per connection), so it need not wait for the host's network-online.target (Quadlet's wait takes up to 90 s on every start where nothing brings that target up)",
        ),
        NetworkMode::Open if !host.systemd_booted => Some(
            "host adaptation: systemd is not PID 1, so the network-online units Quadlet waits for never start",
        ),
        NetworkMode::Open => None,
    }
}

fn mounts(sandbox: &Sandbox<'_>) -> Result<Vec<Mount>> {
    let s = sandbox.settings;
    // Caches are rebuilt at will and grow without bound: a capped tmpfs, not the
    // client's disk. Podman mounts the home before anything inside it.
    let mut out = vec![Mount::Tmpfs(Tmpfs {
        target: format!("{HOME}/.cache"),
        options: format!("rw,exec,nosuid,nodev,size={CACHE_SIZE},mode=1777"),
    })];
    let mut bind = |role, source: BindSource, target: String, access, relabel| -> Result<()> {
        let b = Bind {
            source,
            target,
            access,
            relabel,
            role,
        };
        escape::volume("volume", b.escape_source(), &b.target, &b.options())?;
        out.push(Mount::Bind(b));
        Ok(())
    };
    // Projects keep their host path, so an agent's per-directory history and
    // `--resume` line up with the host. `z` (shared label) rather than `Z`: a project
    // may be used by other containers and tools too.
    for project in s.agent_projects() {
        let p = checked_path("project directory", project.as_path())?;
        bind(
            BindRole::Project,
            BindSource::Host(p.clone()),
            p,
            Access::ReadWrite,
            Some(Relabel::Shared),
        )?;
        // Git dirs pinned over the project mount, so the agent cannot write what git
        // on the host executes (see `git_guard`).
        if !s.git_writable_config {
            for pin in crate::state::git_guard::plan(&project)?.pins {
                let path = checked_path("git path", &pin.path)?;
                let access = if pin.writable {
                    Access::ReadWrite
                } else {
                    Access::ReadOnly
                };
                bind(
                    BindRole::GitPin,
                    BindSource::Host(path.clone()),
                    path,
                    access,
                    None,
                )?;
            }
        }
        // Masked files, over the project mount: the client's empty file, read-only.
        for (empty, file) in masks(sandbox, &project)? {
            bind(
                BindRole::Mask,
                BindSource::Host(empty),
                file,
                Access::ReadOnly,
                Some(Relabel::Private),
            )?;
        }
    }
    // The client's own dirs are sandboxctl's: private SELinux label.
    let own = |sub: &str| -> Result<BindSource> {
        let host = sandbox.layout.client_subdir(sandbox.client, sub);
        Ok(BindSource::Host(checked_path("data directory", &host)?))
    };
    // The client's persistent home, then its agent dirs mounted over it. A shared
    // `--claude-config` is not mounted: the client keeps its own Claude dir and only the
    // login is copied both ways by the CLI (`claude_login::sync_shared`), since the
    // agent must not write hooks, settings or instructions that Claude Code on the host
    // would run.
    for (sub, target) in [
        (crate::sandbox::layout::HOME_SUBDIR, HOME.to_owned()),
        ("claude", format!("{HOME}/.claude")),
        ("codex", format!("{HOME}/.codex")),
        ("history", format!("{HOME}/.history")),
    ] {
        bind(
            BindRole::State(sub),
            own(sub)?,
            target,
            Access::ReadWrite,
            Some(Relabel::Private),
        )?;
    }
    if s.network == NetworkMode::Allowlist {
        // The directory is created by the socket unit. Read-only: connect(2) works on a
        // socket in a read-only mount, and the agent cannot fill the shared runtime
        // tmpfs through it. `Z` still gives the directory the container's private
        // label, which connecting needs.
        bind(
            BindRole::ProxySocket,
            BindSource::Runtime(proxy_units::socket_dir_relative(sandbox.client)),
            proxy_units::CONTAINER_SOCKET_DIR.to_owned(),
            Access::ReadOnly,
            Some(Relabel::Private),
        )?;
    }
    if s.notify {
        // Like the proxy's: created by the socket unit, read-only (connect(2) works),
        // `Z` for the container's private label.
        bind(
            BindRole::NotifyEvents,
            BindSource::Runtime(crate::notify::events_dir_relative(sandbox.client)),
            crate::notify::CONTAINER_DIR.to_owned(),
            Access::ReadOnly,
            Some(Relabel::Private),
        )?;
    }
    for m in &s.mounts {
        let h = checked_path("mount host path", &m.host)?;
        let c = checked_path("mount container path", &m.container)?;
        let access = if m.writable {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        bind(BindRole::User, BindSource::Host(h), c, access, None)?;
    }
    Ok(out)
}

/// The masked files of `project`, each with the empty file mounted over it.
fn masks(sandbox: &Sandbox<'_>, project: &AgentPath) -> Result<Vec<(String, String)>> {
    let patterns = crate::state::mask::patterns(sandbox.settings);
    let empty = checked_path("mask file", &sandbox.layout.mask_file(sandbox.client))?;
    crate::state::mask::files(project, &patterns)?
        .iter()
        .map(|f| Ok((empty.clone(), checked_path("masked file", f)?)))
        .collect()
}

/// A path as UTF-8 that a volume can express; the error names `what`.
fn checked_path(what: &str, p: &Path) -> Result<String> {
    let s = path_str(what, p)?;
    escape::volume_path(what, &s)?;
    Ok(s)
}

fn path_str(what: &str, p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{what} {} is not valid UTF-8; rename it", p.display()))
}

/// An image reference: only the characters image names use.
fn image_ref(image: &str) -> Result<String> {
    let ok = !image.is_empty()
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !image.starts_with('-');
    if !ok {
        anyhow::bail!(
            "invalid image name {}: use a reference like localhost/agent-sandbox:latest",
            escape::display(image)
        );
    }
    Ok(image.to_owned())
}
