//! Rendering a client's Quadlet unit from its settings and the detected host. All
//! values are escaped (or refused) through `escape` before they reach the template,
//! and keys the installed Quadlet generator does not know fall back to `PodmanArgs=`.

use std::path::Path;

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::client::ClientName;
use crate::escape;
use crate::host::{Cgroups, HostProfile, Version};
use crate::layout::Layout;
use crate::proxy_units;
use crate::settings::{NetworkMode, Settings};

const TEMPLATE: &str = include_str!("../templates/agent.container.j2");

/// The agent's home inside the container.
pub const HOME: &str = "/home/agent";

/// The first line of every unit sandboxctl writes; a unit without it is the user's.
pub const MARKER: &str = "# Managed by sandboxctl for client ";

/// The label that identifies a client's container.
pub const CLIENT_LABEL: &str = "io.sandboxctl.client";

/// A line with the reason it is there, shown as a comment above it.
#[derive(Debug, Serialize)]
struct Line {
    value: String,
    why: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct Key {
    name: &'static str,
    value: String,
}

#[derive(Debug, Serialize)]
struct UnitContext {
    client: String,
    agent: &'static str,
    host_summary: String,
    container_name: String,
    image: String,
    labels: Vec<String>,
    keys: Vec<Key>,
    environment: Vec<String>,
    volumes: Vec<String>,
    podman_args: Vec<Line>,
    unit_lines: Vec<Line>,
    service_lines: Vec<Line>,
    quadlet_lines: Vec<Line>,
}

/// Where the host side of a client's sandbox lives: its own dirs and its settings.
pub struct Sandbox<'a> {
    pub client: &'a ClientName,
    pub settings: &'a Settings,
    pub layout: &'a Layout,
    pub host: &'a HostProfile,
}

/// Quadlet keys by the generator version that introduced them.
const V4_5: Version = Version::new(4, 5, 0);
const V4_6: Version = Version::new(4, 6, 0);
const V5_3: Version = Version::new(5, 3, 0);
const V4_4: Version = Version::new(4, 4, 0);

impl Sandbox<'_> {
    fn quadlet_version(&self) -> Version {
        // Without a generator, write for the oldest Quadlet (4.4): the most portable unit.
        self.host.quadlet.as_ref().map_or(V4_4, |q| q.version)
    }

    /// A key if the generator knows it, else the equivalent podman argument.
    fn key_or_arg(
        &self,
        since: Version,
        name: &'static str,
        value: String,
        arg: &str,
        keys: &mut Vec<Key>,
        args: &mut Vec<Line>,
    ) -> Result<()> {
        if self.quadlet_version() >= since {
            keys.push(Key { name, value });
        } else {
            args.push(Line {
                value: escape::word("podman argument", arg)?,
                why: Some("this Quadlet version has no key for this option"),
            });
        }
        Ok(())
    }

    fn context(&self) -> Result<UnitContext> {
        let s = self.settings;
        let client = self.client.as_str();
        let (keys, mut podman_args) = self.keys()?;
        if self.host.rootless && self.host.cgroups != Cgroups::V2 {
            podman_args.push(Line {
                value: escape::word("podman argument", "--cgroups=disabled")?,
                why: Some("host adaptation: rootless Podman cannot split cgroups on cgroup v1"),
            });
        }
        for a in &s.podman_args {
            podman_args.push(Line {
                value: escape::word("podman argument", a)?,
                why: None,
            });
        }
        Ok(UnitContext {
            client: client.to_owned(),
            agent: s.agent.as_str(),
            host_summary: escape::comment(&self.host.summary()),
            container_name: self.client.container_name(),
            image: image_ref(&s.image)?,
            labels: vec![escape::word("label", &format!("{CLIENT_LABEL}={client}"))?],
            keys,
            environment: self.environment()?,
            volumes: self.volumes()?,
            podman_args,
            unit_lines: self.unit_lines(),
            service_lines: self.service_lines(),
            quadlet_lines: self.quadlet_lines(),
        })
    }

    /// Version-dependent keys, with their `PodmanArgs=` fallbacks.
    fn keys(&self) -> Result<(Vec<Key>, Vec<Line>)> {
        let s = self.settings;
        let client = self.client.as_str();
        let mut keys = Vec::new();
        let mut args = Vec::new();
        self.key_or_arg(
            V4_5,
            "UserNS",
            "keep-id".into(),
            "--userns=keep-id",
            &mut keys,
            &mut args,
        )?;
        let home_tmpfs = format!("{HOME}:rw,exec,nosuid,nodev,size=2g,mode=1777");
        self.key_or_arg(
            V4_5,
            "Tmpfs",
            escape::raw("tmpfs", &home_tmpfs)?,
            &format!("--tmpfs={home_tmpfs}"),
            &mut keys,
            &mut args,
        )?;
        self.key_or_arg(
            V4_6,
            "HostName",
            client.to_owned(),
            &format!("--hostname={client}"),
            &mut keys,
            &mut args,
        )?;
        let workdir = match s.projects.first() {
            Some(p) => path_str("project directory", p)?,
            None => HOME.to_owned(),
        };
        self.key_or_arg(
            V4_6,
            "WorkingDir",
            escape::raw("working directory", &workdir)?,
            &format!("--workdir={workdir}"),
            &mut keys,
            &mut args,
        )?;
        for name in &s.secrets {
            crate::secrets::check_name(name)?;
            let spec = format!(
                "{},type=mount,target={name}",
                crate::secrets::podman_name(self.client, name)
            );
            self.key_or_arg(
                V4_5,
                "Secret",
                spec.clone(),
                &format!("--secret={spec}"),
                &mut keys,
                &mut args,
            )?;
        }
        if matches!(s.network, NetworkMode::None | NetworkMode::Allowlist) {
            // Allowlist mode has no network either: its only way out is the proxy's
            // Unix socket, mounted below.
            keys.push(Key {
                name: "Network",
                value: "none".into(),
            });
        }
        Ok((keys, args))
    }

    fn environment(&self) -> Result<Vec<String>> {
        let s = self.settings;
        let mut env = vec![
            format!("SANDBOX_CLIENT={}", self.client),
            format!("SANDBOX_AGENT={}", s.agent),
            format!("HOME={HOME}"),
            format!("CODEX_HOME={HOME}/.codex"),
            format!("HISTFILE={HOME}/.history/bash_history"),
        ];
        env.push(format!("CLAUDE_CONFIG_DIR={HOME}/.claude"));
        if s.network == NetworkMode::Allowlist {
            let proxy = format!("http://127.0.0.1:{}", proxy_units::FORWARDER_PORT);
            env.push(format!(
                "SANDBOX_PROXY_SOCKET={}/proxy.sock",
                proxy_units::CONTAINER_SOCKET_DIR
            ));
            env.push(format!(
                "SANDBOX_PROXY_PORT={}",
                proxy_units::FORWARDER_PORT
            ));
            for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
                env.push(format!("{var}={proxy}"));
                env.push(format!("{}={proxy}", var.to_lowercase()));
            }
            env.push("NO_PROXY=localhost,127.0.0.1".to_owned());
            env.push("no_proxy=localhost,127.0.0.1".to_owned());
        }
        env.iter()
            .map(|e| escape::word("environment value", e))
            .collect()
    }

    fn unit_lines(&self) -> Vec<Line> {
        if self.settings.network != NetworkMode::Allowlist {
            return Vec::new();
        }
        let socket = proxy_units::socket_unit(self.client);
        vec![
            Line {
                value: format!("Wants={socket}"),
                why: Some(
                    "allowlist: the client's egress proxy socket is the only way out; without \
                     it nothing gets out, and stopping it does not stop the sandbox",
                ),
            },
            Line {
                value: format!("After={socket}"),
                why: None,
            },
        ]
    }

    fn service_lines(&self) -> Vec<Line> {
        let mut lines = Vec::new();
        if self.host.podman.is_some_and(|v| v < V4_4) {
            lines.push(Line {
                value: "ExecStartPre=-/bin/rm -f %t/%N.cid".into(),
                why: Some("host adaptation: this Podman leaves a stale cid file that blocks the next start"),
            });
        }
        if !self.host.journald {
            let log = format!("%t/{}.log", self.client.container_name());
            lines.push(Line {
                value: format!("StandardOutput=append:{log}"),
                why: Some("host adaptation: no journald here, so the unit logs to a file that `sandboxctl logs` reads"),
            });
            lines.push(Line {
                value: format!("StandardError=append:{log}"),
                why: None,
            });
        }
        lines
    }

    /// Quadlet's own dependencies. From 5.3 Quadlet orders every user unit after
    /// `podman-user-wait-network-online.service`, which polls the system's
    /// `network-online.target` and gives up after 90 s; where nothing pulls that target
    /// in, each start waits the full 90 s. `DefaultDependencies=false` (a key 5.3
    /// introduced, rejected by older generators) drops exactly that wait. 5.1 and 5.2 add
    /// `network-online.target` itself, which is no unit in a user manager and so costs
    /// nothing; older versions add no network dependency.
    fn quadlet_lines(&self) -> Vec<Line> {
        if self.quadlet_version() < V5_3 {
            return Vec::new();
        }
        let why = match self.settings.network {
            NetworkMode::None => {
                "network none: the sandbox has no network, so it need not wait for the host's network-online.target (Quadlet's wait takes up to 90 s on every start where nothing brings that target up)"
            }
            NetworkMode::Allowlist => {
                "allowlist: the sandbox has no network of its own (its way out is the proxy socket, which resolves names per connection), so it need not wait for the host's network-online.target (Quadlet's wait takes up to 90 s on every start where nothing brings that target up)"
            }
            NetworkMode::Open if !self.host.systemd_booted => {
                "host adaptation: systemd is not PID 1, so the network-online units Quadlet waits for never start"
            }
            NetworkMode::Open => return Vec::new(),
        };
        vec![Line {
            value: "DefaultDependencies=false".into(),
            why: Some(why),
        }]
    }

    fn volumes(&self) -> Result<Vec<String>> {
        let s = self.settings;
        let mut out = Vec::new();
        // Projects keep their host path, so an agent's per-directory history and
        // `--resume` line up with the host. `z` (shared label) rather than `Z`:
        // a project may be used by other containers and tools too.
        for p in &s.projects {
            let v = escape::volume_path("project directory", &path_str("project directory", p)?)?;
            out.push(format!("{v}:{v}:rw,z"));
            // Git dirs pinned over the project mount, so the agent cannot write what git
            // on the host executes (see `git_guard`).
            if !s.git_writable_config {
                out.extend(crate::git_guard::volumes(p)?);
            }
        }
        // The client's own dirs are sandboxctl's: private SELinux label.
        let own = |sub: &str, target: &str| -> Result<String> {
            let host = self.layout.client_subdir(self.client, sub);
            let host = escape::volume_path("data directory", &path_str("data directory", &host)?)?;
            Ok(format!("{host}:{target}:rw,Z"))
        };
        // A shared `--claude-config` is not mounted: the client keeps its own Claude dir
        // and only the login is copied both ways by the CLI (`claude_login::sync_shared`),
        // since the agent must not write hooks, settings or instructions that Claude Code
        // on the host would run.
        out.push(own("claude", &format!("{HOME}/.claude"))?);
        out.push(own("codex", &format!("{HOME}/.codex"))?);
        out.push(own("history", &format!("{HOME}/.history"))?);
        if s.network == NetworkMode::Allowlist {
            // `%t` is expanded by systemd; the directory is created by the socket unit.
            // Read-only: connect(2) works on a socket in a read-only mount, and the
            // agent cannot fill the shared runtime tmpfs through it. `Z` still gives
            // the directory the container's private label, which connecting needs.
            out.push(format!(
                "{}:{}:ro,Z",
                proxy_units::socket_dir_specifier(self.client),
                proxy_units::CONTAINER_SOCKET_DIR
            ));
        }
        for m in &s.mounts {
            let h = escape::volume_path("mount host path", &path_str("mount host path", &m.host)?)?;
            let c = escape::volume_path(
                "mount container path",
                &path_str("mount container path", &m.container)?,
            )?;
            let mode = if m.writable { "rw" } else { "ro" };
            out.push(format!("{h}:{c}:{mode}"));
        }
        Ok(out)
    }
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
    escape::raw("image", image)
}

/// Renders the unit text for a client.
pub fn render(sandbox: &Sandbox<'_>) -> Result<String> {
    let ctx = sandbox.context()?;
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template("agent.container", TEMPLATE)
        .context("the unit template is invalid")?;
    let mut text = env
        .get_template("agent.container")
        .and_then(|t| t.render(&ctx))
        .context("cannot render the unit template")?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Whether an existing unit file was written by sandboxctl.
pub fn is_ours(text: &str) -> bool {
    text.starts_with(MARKER)
}
