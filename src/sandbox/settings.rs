//! A client's settings: what `enable` was told, kept as a small TOML file under the
//! client's `config/` directory so a person can read it and `render` can rebuild the
//! unit from it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::sandbox::client::ClientName;

pub use crate::sandbox::agent::Agent;

/// The image every sandbox runs unless its settings name another.
pub const DEFAULT_IMAGE: &str = "localhost/agent-sandbox:latest";

/// How the sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// Loopback only, plus the client's egress proxy: the hosts its policy allows.
    #[default]
    Allowlist,
    /// Podman's default rootless network: unrestricted egress.
    Open,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Allowlist => "allowlist",
            Self::Open => "open",
        }
    }
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "allowlist" => Ok(Self::Allowlist),
            "open" => Ok(Self::Open),
            _ => Err(format!(
                "unknown network mode {s:?}: use allowlist, none or open"
            )),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much the agent does without asking, inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Autonomy {
    /// The agent's own permission prompts and approvals, as it ships.
    #[default]
    Ask,
    /// Claude skips its permission prompts, Codex runs without approvals.
    Auto,
}

impl Autonomy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::Auto => "auto",
        }
    }
}

impl FromStr for Autonomy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ask" => Ok(Self::Ask),
            "auto" => Ok(Self::Auto),
            _ => Err(format!("unknown autonomy {s:?}: use ask or auto")),
        }
    }
}

impl fmt::Display for Autonomy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An extra bind mount given with `--mount` (read-only) or `--mount-rw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraMount {
    pub host: PathBuf,
    pub container: PathBuf,
    #[serde(default)]
    pub writable: bool,
}

/// Everything that describes one client's sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// Each bool is one on/off option of `enable`, kept as the user gave it.
#[allow(clippy::struct_excessive_bools)]
pub struct Settings {
    pub agent: Agent,
    pub image: String,
    pub network: NetworkMode,
    /// Project directories, mounted read-write at their host paths.
    #[serde(default)]
    pub projects: Vec<PathBuf>,
    #[serde(default)]
    pub mounts: Vec<ExtraMount>,
    #[serde(default)]
    pub podman_args: Vec<String>,
    /// A Claude config directory shared on purpose instead of the client's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_config: Option<PathBuf>,
    /// Names of the client's Podman secrets (values live only in Podman's store).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Leave the projects' git config and hooks writable by the agent (off: they are
    /// mounted read-only, because git on the host executes what they say).
    #[serde(default, skip_serializing_if = "is_false")]
    pub git_writable_config: bool,
    /// What the agent may do without asking (`--autonomy`).
    #[serde(default)]
    pub autonomy: Autonomy,
    /// Extra arguments for the agent (`--agent-arg`), one environment variable each.
    #[serde(default)]
    pub agent_args: Vec<String>,
    /// Host ports forwarded into the sandbox (`sandboxctl port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::sandbox::forward::PortForward>,
    /// The git identity inside (`user.name`, `user.email`), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_email: Option<String>,
    /// Where git's credential helper inside may answer with the client's `GH_TOKEN`
    /// (`https://host[:port]`, or `http://…` given so): unset means `https://github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_credential_hosts: Option<Vec<String>>,
    /// Desktop notifications when an agent waits for input or finishes (the per-client
    /// event channel of `notify`); only `notify = false` is written.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub notify: bool,
    /// Resource limits (`--memory`, `--cpus`, `--pids`); absent means unlimited.
    #[serde(
        default,
        skip_serializing_if = "crate::sandbox::limits::Limits::is_empty"
    )]
    pub limits: crate::sandbox::limits::Limits,
    /// The agent's API key is mounted and exported inside (`--key-in-sandbox on`)
    /// instead of being added by the egress proxy.
    #[serde(default, skip_serializing_if = "is_false")]
    pub key_in_sandbox: bool,
    /// API paths the proxy adds the held key to beyond the agent's own (`--key-path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_paths: Vec<String>,
    /// Files of the projects the sandbox sees empty (`--mask`), beyond the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<String>,
    /// Whether `mask::DEFAULT_PATTERNS` apply (`--default-masks`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub default_masks: bool,
    /// The image ID this client runs instead of what `image` names, after `update` to
    /// that image failed (the shared name stays); the next `update` tries again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pin: Option<String>,
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_true(b: &bool) -> bool {
    *b
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            agent: Agent::default(),
            image: DEFAULT_IMAGE.to_owned(),
            network: NetworkMode::default(),
            projects: Vec::new(),
            mounts: Vec::new(),
            podman_args: Vec::new(),
            claude_config: None,
            secrets: Vec::new(),
            git_writable_config: false,
            autonomy: Autonomy::Ask,
            agent_args: Vec::new(),
            ports: Vec::new(),
            git_name: None,
            git_email: None,
            git_credential_hosts: None,
            notify: true,
            limits: crate::sandbox::limits::Limits::default(),
            key_in_sandbox: false,
            key_paths: Vec::new(),
            masks: Vec::new(),
            default_masks: true,
            image_pin: None,
        }
    }
}

impl Settings {
    /// The project directories, as paths the sandbox writes: what the host reads of
    /// them goes through [`AgentPath`](crate::base::agent_file::AgentPath).
    pub fn agent_projects(&self) -> Vec<crate::base::agent_file::AgentPath> {
        self.projects
            .iter()
            .map(crate::base::agent_file::AgentPath::new)
            .collect()
    }

    /// The provider whose key the egress proxy adds for this client, if it does: an
    /// agent with an API-key provider whose key is stored, in allowlist mode (the only
    /// mode with a proxy), without `--key-in-sandbox on`.
    pub fn proxy_held_key(&self) -> Option<&'static crate::sandbox::agent::Provider> {
        if self.key_in_sandbox || self.network != NetworkMode::Allowlist {
            return None;
        }
        let provider = self.agent.provider()?;
        // Without a stored key the agent logs in itself (subscription): nothing to hold.
        self.secrets
            .iter()
            .any(|s| s == provider.key_var)
            .then_some(provider)
    }

    /// Reads the settings file at `path`; a malformed file is a one-line error naming it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read settings {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("malformed settings file {}", path.display()))
    }

    /// Reads the settings of `client`, with an error that says how to create them.
    pub fn load_client(
        layout: &crate::sandbox::layout::Layout,
        client: &ClientName,
    ) -> Result<Self> {
        let path = layout.settings_path(client);
        if !path.exists() {
            bail!(
                "unknown client {client}: no settings at {}; create it with `sandboxctl enable {client}`",
                path.display()
            );
        }
        Self::load(&path)
    }

    fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().replace('\n', " ");
            match line {
                Some(l) => anyhow::anyhow!("line {l}: {}; fix or remove the file", msg.trim()),
                None => anyhow::anyhow!("{}; fix or remove the file", msg.trim()),
            }
        })
    }

    /// The file's text: a header saying what it is, then TOML.
    pub fn to_file_text(&self, client: &ClientName) -> Result<String> {
        let body = toml::to_string_pretty(self).context("cannot serialise settings")?;
        Ok(format!(
            "# sandboxctl settings for client {client}.\n\
             # Change them with `sandboxctl enable {client} …`; edits here take effect at the next `sandboxctl enable {client}`.\n\
             {body}"
        ))
    }

    /// The image the unit runs: the pinned ID after a failed update, else `image`.
    pub fn running_image(&self) -> &str {
        self.image_pin.as_deref().unwrap_or(&self.image)
    }

    /// Writes the settings atomically (mode 0600).
    pub fn save(&self, path: &Path, client: &ClientName) -> Result<()> {
        crate::base::atomic::write(path, self.to_file_text(client)?.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Settings {
        Settings {
            agent: Agent::Codex,
            image: "localhost/custom:1".into(),
            network: NetworkMode::None,
            projects: vec!["/home/u/p one".into(), "/srv/100%".into()],
            mounts: vec![
                ExtraMount {
                    host: "/etc/ssl".into(),
                    container: "/ssl".into(),
                    writable: false,
                },
                ExtraMount {
                    host: "/home/u/cache".into(),
                    container: "/cache".into(),
                    writable: true,
                },
            ],
            podman_args: vec!["--pids-limit=512".into()],
            claude_config: Some("/home/u/.claude".into()),
            secrets: vec!["GH_TOKEN".into()],
            git_writable_config: true,
            autonomy: Autonomy::Auto,
            agent_args: vec!["--model".into(), "a \"b\" $c 100%".into()],
            ports: vec![crate::sandbox::forward::PortForward {
                host: 8080,
                container: 3000,
                persist: true,
            }],
            git_name: Some("Ada L. \"ada\" 100%".into()),
            git_email: Some("ada@example.com".into()),
            git_credential_hosts: Some(vec!["http://127.0.0.1:8080".into()]),
            notify: false,
            limits: crate::sandbox::limits::Limits {
                memory: Some("8g".parse().expect("memory")),
                cpus: Some("1.5".parse().expect("cpus")),
                pids: Some(4096),
            },
            key_in_sandbox: true,
            key_paths: vec!["/v1/files*".into()],
            masks: vec!["secrets.*".into(), "config/*.yml".into()],
            default_masks: false,
            image_pin: Some(
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            ),
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sandbox.toml");
        let client = ClientName::parse("acme").expect("name");
        let s = sample();
        s.save(&path, &client).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("# sandboxctl settings for client acme."),
            "{text}"
        );
        assert_eq!(Settings::load(&path).expect("load"), s);
        assert_eq!(Settings::load(&path).expect("load").agent, Agent::Codex);
        let default = Settings::default();
        default.save(&path, &client).expect("save");
        assert_eq!(Settings::load(&path).expect("load"), default);
    }

    /// A settings file written before autonomy existed still loads, as `ask` with no
    /// agent arguments.
    #[test]
    fn older_files_load_with_autonomy_ask() {
        let s = Settings::parse(
            "agent = \"claude\"\nimage = \"localhost/agent-sandbox:latest\"\nnetwork = \"allowlist\"\n",
        )
        .expect("parses");
        assert_eq!(s.autonomy, Autonomy::Ask);
        assert!(s.agent_args.is_empty());
    }

    #[test]
    fn malformed_files_give_one_line_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sandbox.toml");
        for bad in [
            "agent = \n",
            "agent = \"robot\"\nimage = \"x\"\nnetwork = \"open\"\n",
            "agent = \"shell\"\nimage = \"x\"\nnetwork = \"open\"\nsurprise = 1\n",
            "image = \"x\"\n",
        ] {
            std::fs::write(&path, bad).expect("write");
            let err = format!("{:#}", Settings::load(&path).expect_err(bad));
            assert!(err.contains("malformed settings file"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn parses_names() {
        assert_eq!("shell".parse::<Agent>(), Ok(Agent::Shell));
        assert!("robot".parse::<Agent>().is_err());
        assert_eq!("none".parse::<NetworkMode>(), Ok(NetworkMode::None));
        assert_eq!(
            "allowlist".parse::<NetworkMode>(),
            Ok(NetworkMode::Allowlist)
        );
        assert!("sometimes".parse::<NetworkMode>().is_err());
        assert_eq!("auto".parse::<Autonomy>(), Ok(Autonomy::Auto));
        assert!("yolo".parse::<Autonomy>().is_err());
        assert_eq!(Autonomy::default(), Autonomy::Ask);
        assert_eq!(NetworkMode::default(), NetworkMode::Allowlist);
    }
}
