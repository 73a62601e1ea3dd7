//! The user's defaults for new clients: `$XDG_CONFIG_HOME/sandboxctl/config.toml`,
//!
//! ```toml
//! [defaults]
//! memory = "8g"
//! cpus = "2"
//! pids = 4096
//! ```
//!
//! `enable` (and `render`, `run`) use them for a client it creates, or one it starts
//! again from the defaults (`--reset`), wherever the option is not given; a client that
//! exists keeps its own settings. Each value is checked as its option would be, and a
//! bad one is one error naming the file and the key.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::SandboxOptions;
use crate::sandbox::settings::{Autonomy, NetworkMode};

/// The keys `[defaults]` may hold: the `enable` options of the same names.
const KEYS: &str = "agent, image, network, autonomy, notify, memory, cpus, pids";

/// Option values from the user's config file.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub options: SandboxOptions,
    pub network: Option<NetworkMode>,
}

impl Defaults {
    /// The defaults in `path`; none when it does not exist.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map_or(1, |s| text[..s.start].matches('\n').count() + 1);
            format!("not valid TOML at line {line}: {}", e.message())
        })?;
        let mut out = Self::default();
        for (section, value) in &table {
            if section != "defaults" {
                return Err(format!(
                    "unknown section or key {section:?}: only [defaults] is read"
                ));
            }
            let Some(defaults) = value.as_table() else {
                return Err("defaults must be a table: [defaults]".to_owned());
            };
            for (key, value) in defaults {
                out.set(key, value)
                    .map_err(|e| format!("[defaults] {key}: {e}"))?;
            }
        }
        Ok(out)
    }

    fn set(&mut self, key: &str, value: &toml::Value) -> Result<(), String> {
        let o = &mut self.options;
        match key {
            "agent" => o.agent = Some(enumerated(value)?),
            "network" => self.network = Some(enumerated(value)?),
            "autonomy" => o.autonomy = Some(enumerated::<Autonomy>(value)?),
            "image" => {
                let image = string(value)?;
                if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!(
                        "{} is not an image name",
                        crate::base::escape::display(&image)
                    ));
                }
                o.image = Some(image);
            }
            "notify" => {
                o.notify = Some(value.as_bool().ok_or("use true or false")?);
            }
            "memory" => {
                let v = scalar(value)?;
                crate::sandbox::limits::parse_option::<crate::sandbox::limits::Memory>(&v)?;
                o.memory = Some(v);
            }
            "cpus" => {
                let v = scalar(value)?;
                crate::sandbox::limits::parse_option::<crate::sandbox::limits::Cpus>(&v)?;
                o.cpus = Some(v);
            }
            "pids" => {
                let v = scalar(value)?;
                if v != "none" {
                    crate::sandbox::limits::parse_pids(&v)?;
                }
                o.pids = Some(v);
            }
            _ => return Err(format!("unknown key; use one of {KEYS}")),
        }
        Ok(())
    }

    /// `given` with each option it leaves out taken from these defaults.
    pub fn under(&self, given: &SandboxOptions) -> SandboxOptions {
        let d = &self.options;
        let mut o = given.clone();
        o.agent = o.agent.or(d.agent);
        o.image = o.image.or_else(|| d.image.clone());
        o.autonomy = o.autonomy.or(d.autonomy);
        o.notify = o.notify.or(d.notify);
        o.memory = o.memory.or_else(|| d.memory.clone());
        o.cpus = o.cpus.or_else(|| d.cpus.clone());
        o.pids = o.pids.or_else(|| d.pids.clone());
        o
    }
}

fn string(value: &toml::Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("use a string, not {value}"))
}

/// A string or a number, as its option's text.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        _ => Err(format!("use a string or a number, not {value}")),
    }
}

/// A value of one of the option's words (`claude`, `allowlist`, …).
fn enumerated<T: std::str::FromStr<Err = String>>(value: &toml::Value) -> Result<T, String> {
    string(value)?.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::settings::Agent;

    #[test]
    fn defaults_are_read_and_checked() {
        let d = Defaults::parse(
            "[defaults]\nmemory = \"8g\"\ncpus = 2\npids = 4096\nagent = \"codex\"\n\
             network = \"none\"\nautonomy = \"auto\"\nnotify = false\n",
        )
        .expect("parses");
        assert_eq!(d.options.memory.as_deref(), Some("8g"));
        assert_eq!(d.options.cpus.as_deref(), Some("2"));
        assert_eq!(d.options.pids.as_deref(), Some("4096"));
        assert_eq!(d.options.agent, Some(Agent::Codex));
        assert_eq!(d.network, Some(NetworkMode::None));
        assert_eq!(d.options.autonomy, Some(Autonomy::Auto));
        assert_eq!(d.options.notify, Some(false));
        let none = format!("{:?}", Defaults::default());
        assert_eq!(format!("{:?}", Defaults::parse("").expect("empty")), none);
        assert_eq!(
            Defaults::parse("[defaults]\ncpus = 0.5\n")
                .expect("parses")
                .options
                .cpus
                .as_deref(),
            Some("0.5")
        );
        for (text, want) in [
            (
                "[defaults]\nmemory = \"8 gigs\"\n",
                "[defaults] memory: invalid memory size",
            ),
            (
                "[defaults]\npids = -1\n",
                "[defaults] pids: invalid pid limit",
            ),
            (
                "[defaults]\ncpus = true\n",
                "[defaults] cpus: use a string or a number",
            ),
            (
                "[defaults]\nmemroy = \"8g\"\n",
                "[defaults] memroy: unknown key; use one of",
            ),
            (
                "[defaults]\nagent = \"vim\"\n",
                "[defaults] agent: unknown agent \"vim\"",
            ),
            (
                "[defaults]\nnotify = \"yes\"\n",
                "[defaults] notify: use true or false",
            ),
            ("memory = \"8g\"\n", "unknown section or key \"memory\""),
            ("[defaults]\nmemory = \n", "not valid TOML at line 2"),
        ] {
            let err = Defaults::parse(text).expect_err(text);
            assert!(err.starts_with(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn given_options_beat_the_defaults() {
        let d = Defaults::parse("[defaults]\nmemory = \"8g\"\npids = 4096\nagent = \"shell\"\n")
            .expect("parses");
        let given = SandboxOptions {
            memory: Some("1g".to_owned()),
            ..SandboxOptions::default()
        };
        let o = d.under(&given);
        assert_eq!(o.memory.as_deref(), Some("1g"));
        assert_eq!(o.pids.as_deref(), Some("4096"));
        assert_eq!(o.agent, Some(Agent::Shell));
        assert_eq!(o.cpus, None);
    }

    #[test]
    fn a_missing_file_is_no_defaults_and_a_bad_one_names_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let none = format!("{:?}", Defaults::default());
        assert_eq!(format!("{:?}", Defaults::load(&path).expect("none")), none);
        std::fs::write(&path, "[defaults]\npids = 1\n").expect("write");
        let err = format!("{:#}", Defaults::load(&path).expect_err("bad"));
        assert!(
            err.starts_with(&format!(
                "{}: [defaults] pids: pid limit 1 is out of range",
                path.display()
            )),
            "{err}"
        );
    }
}
