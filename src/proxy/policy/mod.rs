//! The per-client network policy: what the file looks like, how it is read, and the
//! decision on a requested `host:port` — made on the name, before any DNS lookup.
//!
//! The file is TOML, meant to be read and edited by people:
//!
//! ```toml
//! # Bundles: claude, codex, github, packages.
//! bundles = ["claude", "packages"]
//!
//! # Hosts of the `packages` bundle: the registries npm and pip in the image use.
//! # sandboxctl writes this list from the image's configuration.
//! packages = ["npm.example.org", "pypi.example.org"]
//!
//! allow = [
//!   "example.com",           # port 443 only
//!   "*.example.org",         # any name below example.org (not example.org itself)
//!   "intranet.example:80",   # plain HTTP needs port 80 listed
//!   "203.0.113.7:22",        # a literal IP is reachable only when listed
//!   # Private-network answers (RFC 1918, ULA, CGNAT) need `private = true`.
//!   { host = "git.corp.example:22", private = true },
//!   # Loopback, link-local and metadata addresses: only as a literal, with private.
//!   { host = "127.0.0.1:8080", private = true },
//! ]
//!
//! # Deny wins over allow; a deny entry without a port covers every port.
//! deny = ["uploads.example.org"]
//! ```
//!
//! Unknown keys, unknown bundles and invalid patterns make the whole file invalid; the
//! proxy then denies everything (fail closed).

mod bundle;
mod edit;
mod pattern;
mod summary;

use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

pub use bundle::{Bundle, UnknownBundle, broad_warning};
pub use edit::{
    EditReport, add_allow, add_allow_private, add_deny, create, default_for, render_default,
    set_packages,
};
pub use pattern::{DEFAULT_PORT, HostMatch, Pattern, PatternError, Target};
pub use summary::render_summary;

/// Where an allow rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `allow` list.
    Allow,
    /// A bundle (for `packages`: the `packages` list).
    Bundle(Bundle),
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub pattern: Pattern,
    /// Whether the name may resolve to a private network (RFC 1918, ULA, CGNAT); on an
    /// IP literal rule, also whether that loopback, link-local or metadata address may
    /// be reached. See [`crate::proxy::Unlock`].
    pub private: bool,
    pub source: Source,
}

/// A parsed, valid policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub bundles: Vec<Bundle>,
    /// The hosts of the `packages` bundle (used only when that bundle is on).
    pub packages: Vec<Pattern>,
    /// The `allow` list as written.
    pub allow: Vec<AllowRule>,
    pub deny: Vec<Pattern>,
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// The rule that allowed it, for the log.
        rule: String,
        private: bool,
    },
    Deny {
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    bundles: Vec<String>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    allow: Vec<RawAllow>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawAllow {
    Host(String),
    Rule(RawRule),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    host: String,
    #[serde(default)]
    private: bool,
}

/// Reads and validates the policy file.
pub fn load(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read network policy {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid network policy {}", path.display()))
}

/// Parses and validates policy text.
pub fn parse(text: &str) -> anyhow::Result<Policy> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        // toml's messages span several lines (with a source excerpt); keep one.
        anyhow::anyhow!("{}", one_line(&e.to_string()))
    })?;
    let mut bundles = Vec::new();
    for name in &raw.bundles {
        let b: Bundle = name.parse()?;
        if !bundles.contains(&b) {
            bundles.push(b);
        }
    }
    let packages = raw
        .packages
        .iter()
        .map(|s| Pattern::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .context("in `packages`")?;
    let allow = raw
        .allow
        .iter()
        .map(|a| {
            let (host, private) = match a {
                RawAllow::Host(h) => (h, false),
                RawAllow::Rule(r) => (&r.host, r.private),
            };
            Ok(AllowRule {
                pattern: Pattern::parse(host)?,
                private,
                source: Source::Allow,
            })
        })
        .collect::<Result<Vec<_>, PatternError>>()
        .context("in `allow`")?;
    let deny = raw
        .deny
        .iter()
        .map(|s| Pattern::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .context("in `deny`")?;
    Ok(Policy {
        bundles,
        packages,
        allow,
        deny,
    })
}

fn one_line(msg: &str) -> String {
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    // toml puts the description on the last line, after the excerpt.
    match lines.next_back() {
        Some(last) if !last.starts_with('|') && !last.starts_with('^') => {
            format!("{first} {last}")
        }
        _ => first,
    }
}

impl Policy {
    /// Every allow rule in force: the `allow` list, then the bundles' hosts.
    pub fn effective_allow(&self) -> Vec<AllowRule> {
        let mut rules = self.allow.clone();
        for &b in &self.bundles {
            let patterns: Vec<Pattern> = if b == Bundle::Packages {
                self.packages.clone()
            } else {
                b.builtin_hosts()
                    .iter()
                    .filter_map(|h| Pattern::parse(h).ok())
                    .collect()
            };
            rules.extend(patterns.into_iter().map(|pattern| AllowRule {
                pattern,
                private: false,
                source: Source::Bundle(b),
            }));
        }
        rules
    }

    /// Decides on `target:port` from the policy alone (no DNS): deny entries first,
    /// then the most specific allow rule.
    pub fn decide(&self, target: &Target, port: u16) -> Decision {
        if let Some(d) = self.deny.iter().find(|d| d.denies(target, port)) {
            return Decision::Deny {
                reason: format!("denied by `{d}`"),
            };
        }
        let rules = self.effective_allow();
        let best = rules
            .iter()
            .filter(|r| r.pattern.allows(target, port))
            .map(|r| r.pattern.host.specificity())
            .max();
        let Some(best) = best else {
            let reason = match target {
                Target::Ip(_) => "IP literal not listed".to_owned(),
                Target::Name(_) if rules.iter().any(|r| r.pattern.host.matches(target)) => {
                    format!("port {port} not allowed for this host")
                }
                Target::Name(_) => "host not in allowlist".to_owned(),
            };
            return Decision::Deny { reason };
        };
        let winners: Vec<&AllowRule> = rules
            .iter()
            .filter(|r| r.pattern.allows(target, port) && r.pattern.host.specificity() == best)
            .collect();
        let first = winners[0];
        let rule = match first.source {
            Source::Allow => first.pattern.to_string(),
            Source::Bundle(b) => format!("{} (bundle {b})", first.pattern),
        };
        Decision::Allow {
            rule,
            private: winners.iter().any(|r| r.private),
        }
    }

    /// Warnings worth showing to the user (broad hosts, empty `packages` bundle).
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .effective_allow()
            .iter()
            .filter_map(|r| broad_warning(&r.pattern))
            .collect();
        if self.bundles.contains(&Bundle::Packages) && self.packages.is_empty() {
            out.push("bundle `packages` is on but the `packages` list is empty".to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Target {
        Target::Name(s.to_owned())
    }

    fn allowed(p: &Policy, host: &str, port: u16) -> Option<bool> {
        match p.decide(&Target::parse(host).unwrap(), port) {
            Decision::Allow { private, .. } => Some(private),
            Decision::Deny { .. } => None,
        }
    }

    const EXAMPLE: &str = r#"
        bundles = ["claude", "packages"]
        packages = ["npm.example.org"]
        allow = [
          "example.com",
          "*.example.net",
          "plain.example.com:80",
          "203.0.113.7:22",
          { host = "git.corp.example:22", private = true },
          { host = "*.corp.example", private = true },
          "build.corp.example",
        ]
        deny = ["uploads.example.net", "example.com:8443"]
    "#;

    #[test]
    fn example_policy_decisions() {
        let p = parse(EXAMPLE).unwrap();
        assert_eq!(allowed(&p, "example.com", 443), Some(false));
        assert_eq!(allowed(&p, "example.com", 80), None);
        assert_eq!(allowed(&p, "plain.example.com", 80), Some(false));
        assert_eq!(allowed(&p, "plain.example.com", 443), None);
        assert_eq!(allowed(&p, "a.example.net", 443), Some(false));
        assert_eq!(allowed(&p, "example.net", 443), None);
        assert_eq!(allowed(&p, "uploads.example.net", 443), None);
        assert_eq!(allowed(&p, "x.uploads.example.net", 443), Some(false));
        assert_eq!(allowed(&p, "api.anthropic.com", 443), Some(false));
        assert_eq!(allowed(&p, "npm.example.org", 443), Some(false));
        assert_eq!(allowed(&p, "api.openai.com", 443), None);
        assert_eq!(allowed(&p, "203.0.113.7", 22), Some(false));
        assert_eq!(allowed(&p, "203.0.113.7", 443), None);
        assert_eq!(allowed(&p, "203.0.113.8", 22), None);
        assert_eq!(allowed(&p, "git.corp.example", 22), Some(true));
        assert_eq!(allowed(&p, "wiki.corp.example", 443), Some(true));
        // The exact entry without `private` beats the private wildcard.
        assert_eq!(allowed(&p, "build.corp.example", 443), Some(false));
    }

    #[test]
    fn deny_beats_allow_on_every_port() {
        let p = parse(
            r#"allow = ["a.example.com", "a.example.com:22"]
               deny = ["a.example.com"]"#,
        )
        .unwrap();
        assert_eq!(allowed(&p, "a.example.com", 443), None);
        assert_eq!(allowed(&p, "a.example.com", 22), None);
        let p = parse(
            r#"allow = ["*.example.com"]
                         deny = ["*.evil.example.com"]"#,
        )
        .unwrap();
        assert_eq!(allowed(&p, "ok.example.com", 443), Some(false));
        assert_eq!(allowed(&p, "x.evil.example.com", 443), None);
    }

    #[test]
    fn deny_reasons_say_why() {
        let p = parse(EXAMPLE).unwrap();
        let reason = |host: &str, port| match p.decide(&Target::parse(host).unwrap(), port) {
            Decision::Deny { reason } => reason,
            Decision::Allow { .. } => panic!("{host} allowed"),
        };
        assert_eq!(reason("nope.example", 443), "host not in allowlist");
        assert_eq!(
            reason("example.com", 22),
            "port 22 not allowed for this host"
        );
        assert_eq!(
            reason("uploads.example.net", 443),
            "denied by `uploads.example.net`"
        );
        assert_eq!(reason("198.51.100.1", 443), "IP literal not listed");
    }

    #[test]
    fn empty_policy_denies_everything() {
        let p = parse("").unwrap();
        assert_eq!(allowed(&p, "example.com", 443), None);
        assert!(matches!(
            p.decide(&name("api.anthropic.com"), 443),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn invalid_files_are_errors_with_one_line_messages() {
        for bad in [
            "bundles = [\"npm\"]",
            "allow = [\"https://example.com\"]",
            "allow = [\"a.example\\nb.example\"]",
            "deny = [\"*\"]",
            "packages = [\"a b\"]",
            "allow = [{ host = \"a.example\", privat = true }]",
            "alow = [\"a.example\"]",
            "allow = \"a.example\"",
            "allow = [",
        ] {
            let err = parse(bad).expect_err(bad);
            let msg = format!("{err:#}");
            assert!(!msg.contains('\n'), "{bad}: {msg}");
        }
    }

    #[test]
    fn warnings_cover_broad_hosts_and_empty_packages() {
        let p = parse(
            r#"bundles = ["packages"]
                         allow = ["objects.githubusercontent.com"]"#,
        )
        .unwrap();
        let w = p.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
    }
}
