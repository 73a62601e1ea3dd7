//! The agents a sandbox runs, and for each the provider of its API: which variable
//! holds its key, the host the proxy adds it for, the base-URL variable the agent reads
//! and the paths it calls. One table: the proxy, the unit and the commands read it here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which program the sandbox's tmux session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Agent {
    #[default]
    Claude,
    Codex,
    Shell,
}

impl Agent {
    pub const NAMES: [&'static str; 3] = ["claude", "codex", "shell"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claude => "claude",
            Self::Codex => "codex",
            Self::Shell => "shell",
        }
    }
}

impl FromStr for Agent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "claude" => Ok(Self::Claude),
            "codex" => Ok(Self::Codex),
            "shell" => Ok(Self::Shell),
            _ => Err(format!("unknown agent {s:?}: use claude, codex or shell")),
        }
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Agent {
    /// The provider whose key this agent uses; none for the shell.
    pub fn provider(self) -> Option<&'static Provider> {
        match self {
            Self::Claude => Some(&ANTHROPIC),
            Self::Codex => Some(&OPENAI),
            Self::Shell => None,
        }
    }

    /// The variable (and Podman secret name) that holds this agent's API key.
    pub fn key_var(self) -> Option<&'static str> {
        self.provider().map(|p| p.key_var)
    }
}

/// A provider whose key the proxy can add.
#[derive(Debug, PartialEq, Eq)]
pub struct Provider {
    /// The first path segment inside the sandbox: `/anthropic/…`.
    pub name: &'static str,
    /// The API host the proxy connects to (port 443, TLS).
    pub host: &'static str,
    /// The secret (and environment variable) that holds the key.
    pub key_var: &'static str,
    /// The agent's base-URL variable and its value's path after the prefix.
    pub base_url_var: &'static str,
    pub base_url_suffix: &'static str,
    /// The key goes in `Authorization: Bearer`, else in `x-api-key`.
    pub bearer: bool,
    /// The API paths the key is added to: what the agents call (see `proxy::keyed::path_allowed`).
    /// Anything else on the key path (files, batches, stored responses, admin and
    /// organisation endpoints) is refused unless the client widens the list.
    pub paths: &'static [&'static str],
}

pub const ANTHROPIC: Provider = Provider {
    name: "anthropic",
    host: "api.anthropic.com",
    key_var: "ANTHROPIC_API_KEY",
    base_url_var: "ANTHROPIC_BASE_URL",
    base_url_suffix: "",
    bearer: false,
    // Claude Code 2.1: `/v1/messages?beta=true`, token counting, the model list.
    // `/v1/messages/batches` is not one of them.
    paths: &[
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models*",
        "/v1/complete",
    ],
};

pub const OPENAI: Provider = Provider {
    name: "openai",
    host: "api.openai.com",
    key_var: "OPENAI_API_KEY",
    base_url_var: "OPENAI_BASE_URL",
    base_url_suffix: "/v1",
    bearer: true,
    // Codex 0.171 (measured: `/v1/responses`, by WebSocket upgrade and by POST) and the
    // chat, model and embedding endpoints; not `/v1/responses/{id}` (stored responses).
    paths: &[
        "/v1/responses",
        "/v1/responses/compact",
        "/v1/chat/completions",
        "/v1/models*",
        "/v1/embeddings",
    ],
};

/// Every provider the proxy knows.
pub const PROVIDERS: [&Provider; 2] = [&ANTHROPIC, &OPENAI];

/// Every provider's key variable: what no Podman call inherits from sandboxctl.
pub const KEY_VARS: [&str; 2] = [ANTHROPIC.key_var, OPENAI.key_var];

impl Provider {
    /// The provider of a key variable.
    pub fn for_key_var(var: &str) -> Option<&'static Provider> {
        PROVIDERS.into_iter().find(|p| p.key_var == var)
    }

    /// The base URL the agent gets, through the in-sandbox forwarder on `port`.
    pub fn base_url(&self, port: u16) -> String {
        format!(
            "http://127.0.0.1:{port}/{}{}",
            self.name, self.base_url_suffix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_has_its_providers_key() {
        assert_eq!(Agent::Claude.key_var(), Some("ANTHROPIC_API_KEY"));
        assert_eq!(Agent::Codex.key_var(), Some("OPENAI_API_KEY"));
        assert_eq!(Agent::Shell.key_var(), None);
        assert_eq!(Provider::for_key_var("OPENAI_API_KEY"), Some(&OPENAI));
        for p in PROVIDERS {
            assert!(KEY_VARS.contains(&p.key_var));
        }
    }
}
