//! Named groups of hosts a policy can switch on with one word, and the list of broad
//! hosts that can carry arbitrary data out of a sandbox.

use std::fmt;
use std::str::FromStr;

use super::pattern::{Pattern, Target};
use crate::sandbox::agent::Agent;

/// A named group of hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bundle {
    /// Claude Code: the API and the OAuth login/refresh hosts.
    Claude,
    /// Codex CLI: the API, auth and `ChatGPT` login hosts.
    Codex,
    /// GitHub: web/git over HTTPS, the API, archive downloads, git over SSH.
    Github,
    /// The package registries the image's npm and pip are configured to use. Its hosts
    /// are not built in: they are the policy file's `packages` list, which sandboxctl
    /// writes from the image's configuration.
    Packages,
}

impl Bundle {
    pub const ALL: [Bundle; 4] = [
        Bundle::Claude,
        Bundle::Codex,
        Bundle::Github,
        Bundle::Packages,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bundle::Claude => "claude",
            Bundle::Codex => "codex",
            Bundle::Github => "github",
            Bundle::Packages => "packages",
        }
    }

    /// The built-in hosts (empty for `packages`, whose hosts come from the policy file).
    /// Only what the tool needs: broad content hosts such as
    /// `objects.githubusercontent.com` stay opt-in.
    pub fn builtin_hosts(self) -> &'static [&'static str] {
        match self {
            // API, plus the OAuth login and token refresh hosts (refresh fails without
            // platform.claude.com and claude.ai).
            Bundle::Claude => &["api.anthropic.com", "claude.ai", "platform.claude.com"],
            // API, plus the hosts of ChatGPT login and token refresh.
            Bundle::Codex => &["api.openai.com", "auth.openai.com", "chatgpt.com"],
            // git over SSH goes through the proxy with CONNECT, hence port 22.
            Bundle::Github => &[
                "github.com",
                "github.com:22",
                "api.github.com",
                "codeload.github.com",
            ],
            Bundle::Packages => &[],
        }
    }
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown bundle name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bundle {0:?}: known bundles are claude, codex, github, packages")]
pub struct UnknownBundle(String);

impl FromStr for Bundle {
    type Err = UnknownBundle;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bundle::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBundle(s.chars().take(40).collect()))
    }
}

/// Hosts where anyone can put or fetch arbitrary content: allowing them opens a channel
/// for data out of the sandbox, so they are never in a bundle and allowing one warns.
const BROAD_HOSTS: &[&str] = &[
    "objects.githubusercontent.com",
    "raw.githubusercontent.com",
    "gist.githubusercontent.com",
    "gist.github.com",
    "storage.googleapis.com",
    "drive.google.com",
    "docs.google.com",
    "s3.amazonaws.com",
    "x.s3.amazonaws.com",
    "x.blob.core.windows.net",
    "x.cloudfront.net",
    "x.r2.cloudflarestorage.com",
    "x.workers.dev",
    "x.pages.dev",
    "x.ngrok.io",
    "x.ngrok-free.app",
    "pastebin.com",
    "transfer.sh",
    "webhook.site",
    "dropbox.com",
    "www.dropbox.com",
];

/// A warning when `pattern` covers a host that can carry arbitrary data.
pub fn broad_warning(pattern: &Pattern) -> Option<String> {
    // `x.` stands for "any subdomain": only a wildcard covers those.
    let hit = BROAD_HOSTS
        .iter()
        .find(|h| pattern.host.matches(&Target::Name((**h).to_owned())))?;
    let example = hit.strip_prefix("x.").unwrap_or(hit);
    Some(format!(
        "`{pattern}` covers {example}, where anyone can store data: allowing it lets the agent send data out"
    ))
}

impl Bundle {
    /// The bundle of an agent's own hosts (its API and login); none for the shell.
    pub fn of_agent(agent: Agent) -> Option<Self> {
        match agent {
            Agent::Claude => Some(Self::Claude),
            Agent::Codex => Some(Self::Codex),
            Agent::Shell => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_rejected() {
        for b in Bundle::ALL {
            assert_eq!(b.name().parse::<Bundle>(), Ok(b));
        }
        assert!("npm".parse::<Bundle>().is_err());
    }

    #[test]
    fn builtin_hosts_are_valid_patterns_and_not_broad() {
        for b in Bundle::ALL {
            for h in b.builtin_hosts() {
                let p = Pattern::parse(h).expect(h);
                assert_eq!(broad_warning(&p), None, "{h}");
            }
        }
    }

    #[test]
    fn trap6_hosts_are_in_the_agent_bundles() {
        assert!(
            Bundle::Claude
                .builtin_hosts()
                .contains(&"platform.claude.com")
        );
        assert!(Bundle::Claude.builtin_hosts().contains(&"claude.ai"));
        assert!(Bundle::Codex.builtin_hosts().contains(&"auth.openai.com"));
        assert!(Bundle::Codex.builtin_hosts().contains(&"chatgpt.com"));
        assert!(
            !Bundle::Github
                .builtin_hosts()
                .contains(&"objects.githubusercontent.com")
        );
    }

    #[test]
    fn broad_hosts_and_wildcards_over_them_warn() {
        for s in [
            "objects.githubusercontent.com",
            "*.githubusercontent.com",
            "storage.googleapis.com",
            "*.googleapis.com",
            "*.s3.amazonaws.com",
            "*.amazonaws.com",
            "*.cloudfront.net",
        ] {
            assert!(broad_warning(&Pattern::parse(s).unwrap()).is_some(), "{s}");
        }
        assert!(broad_warning(&Pattern::parse("api.example.com").unwrap()).is_none());
    }
}
