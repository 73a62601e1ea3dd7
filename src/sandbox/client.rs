//! Client names: the unit of isolation. A name becomes part of a systemd unit name,
//! a container name and a directory name, so it is checked once, here.

use std::fmt;

use anyhow::{Result, bail};

/// A validated client name: `^[a-z0-9][a-z0-9-]{0,62}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientName(String);

impl ClientName {
    /// Checks `name` and wraps it.
    pub fn parse(name: &str) -> Result<Self> {
        let bytes = name.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !first_ok || !rest_ok || bytes.len() > 63 {
            bail!(
                "invalid client name {}: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                crate::base::escape::display(name)
            );
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The container (and Quadlet file stem) name: `agent-<client>`.
    pub fn container_name(&self) -> String {
        format!("agent-{}", self.0)
    }

    /// The systemd service generated from the Quadlet unit.
    pub fn service_name(&self) -> String {
        format!("agent-{}.service", self.0)
    }

    /// The Quadlet unit file name.
    pub fn unit_file_name(&self) -> String {
        format!("agent-{}.container", self.0)
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::ClientName;

    #[test]
    fn accepts_valid_names() {
        for name in ["acme", "a", "0", "acme-web", "9lives", &"a".repeat(63)] {
            assert!(ClientName::parse(name).is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for name in [
            "",
            "-acme",
            "Acme",
            "acme_web",
            "acme.web",
            "acme/web",
            "../acme",
            "acme\n",
            "ac me",
            "acmé",
            &"a".repeat(64),
        ] {
            let err = ClientName::parse(name).expect_err(name).to_string();
            assert!(err.starts_with("invalid client name"), "{err}");
            assert!(!err.contains('\n'), "one-line error: {err:?}");
        }
    }

    #[test]
    fn derived_names() {
        let c = ClientName::parse("acme").expect("valid");
        assert_eq!(c.container_name(), "agent-acme");
        assert_eq!(c.service_name(), "agent-acme.service");
        assert_eq!(c.unit_file_name(), "agent-acme.container");
    }
}
