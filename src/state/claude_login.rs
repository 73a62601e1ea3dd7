//! Claude subscription logins, per client. Each client has its own writable Claude
//! config dir, so a login (and its rotating refresh token) belongs to that client alone.
//! When the user is logged in on the host and gave no API key, the host's credentials
//! file is copied once into the client's own dir: the host's files are only read, and
//! other clients get nothing unless they are enabled the same way.
//!
//! A Claude config dir shared on purpose (`--claude-config DIR`) is never mounted: the
//! agent could write hooks, an `apiKeyHelper`, MCP server commands or `CLAUDE.md` there,
//! which Claude Code on the host would run or obey. The client keeps its own dir, and
//! only the login (`.credentials.json`) goes both ways (`sync_shared`), checked and
//! written atomically, the fresher one winning: a token refresh rotates the refresh
//! token, so neither side may keep a stale copy for long.
//!
//! The sandbox's copy is written by the agent, so it comes back only as a refresh of
//! the host's own login (`refreshed_login`): the tokens and their expiry, nothing else,
//! and only when everything else of the login is the host's. Another account's login
//! (one of an organisation the attacker runs, whose managed settings Claude Code on the
//! host would then obey) is refused as far as the file can tell it apart; see
//! `refreshed_login` for what it cannot.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The credentials file's name in a Claude config dir.
pub const CREDENTIALS: &str = ".credentials.json";

/// Larger than any real credentials file; a bigger one is not a login.
const MAX_CREDENTIALS: u64 = 64 * 1024;

/// The fields of `claudeAiOauth` a token refresh changes: the only ones that travel from
/// the sandbox to the shared dir.
const ROTATED: [&str; 3] = ["accessToken", "refreshToken", "expiresAt"];

/// Top-level keys of a credentials file besides `claudeAiOauth`: Claude Code keeps the
/// OAuth tokens of MCP servers there. Each side keeps its own; never copied back.
const KEPT_PER_SIDE: [&str; 1] = ["mcpOAuth"];

/// How far ahead a login from the sandbox may say its access token expires. Claude
/// Code's access tokens are issued for hours (reports say 8 to 12), so a refreshed login
/// expires less than a day after the sync that finds it; a later expiry is not a
/// refresh, and would make a forged copy win every sync.
const MAX_EXPIRY_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// The Claude config dir on the host: `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
pub fn host_config_dir() -> Option<PathBuf> {
    std::env::var_os("CLAUDE_CONFIG_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".claude")))
}

/// Prepares a client's own Claude dir; returns what it did, for the user.
pub fn prepare(
    client_dir: &Path,
    host_dir: Option<&Path>,
    has_api_key: bool,
) -> Result<Vec<String>> {
    let mut said = Vec::new();
    let creds = client_dir.join(".credentials.json");
    if !has_api_key
        && !creds.exists()
        && let Some(host_creds) = host_dir
            .map(|d| d.join(".credentials.json"))
            .filter(|p| p.is_file())
    {
        let bytes = std::fs::read(&host_creds)
            .with_context(|| format!("cannot read {}", host_creds.display()))?;
        crate::base::atomic::write(&creds, &bytes, 0o600)?;
        said.push(format!(
            "copied your Claude login from {} into {} (this client only; the host's files are untouched)",
            host_creds.display(),
            creds.display()
        ));
    }
    mark_onboarded(client_dir)?;
    Ok(said)
}

/// Whether [`prepare`] would change nothing: the first-run state is there, and so is
/// a login, unless the client has a key or the host has no login to copy. Anything
/// but a plain file there (the agent's FIFO or link) is for `prepare` to refuse.
pub fn prepared(client_dir: &Path, host_dir: Option<&Path>, has_api_key: bool) -> bool {
    let file = |name: &str| {
        std::fs::symlink_metadata(client_dir.join(name)).is_ok_and(|m| m.file_type().is_file())
    };
    file(".claude.json")
        && (has_api_key
            || file(".credentials.json")
            || !host_dir.is_some_and(|d| d.join(".credentials.json").is_file()))
}

/// Claude Code keeps its first-run state in `.claude.json` inside its config dir;
/// without it, every new client would walk through onboarding again.
pub fn mark_onboarded(client_dir: &Path) -> Result<()> {
    let state = client_dir.join(".claude.json");
    if std::fs::symlink_metadata(&state).is_err() {
        crate::base::atomic::write(&state, b"{\"hasCompletedOnboarding\": true}\n", 0o600)?;
    }
    Ok(())
}

/// A credentials file that looks like a Claude login: its bytes, its JSON and when its
/// access token expires.
struct Login {
    bytes: Vec<u8>,
    json: serde_json::Value,
    expires_at: u64,
}

impl Login {
    fn oauth(&self) -> &serde_json::Value {
        &self.json["claudeAiOauth"]
    }
}

/// Reads `path` without following a symlink and without blocking on a FIFO; `None`
/// if there is no file. Anything that is not a plain, small JSON login is an error.
fn read_login(path: &Path) -> Result<Option<Login>> {
    let Some(bytes) = crate::base::agent_file::AgentPath::new(path).read(MAX_CREDENTIALS)? else {
        return Ok(None);
    };
    let (json, expires_at) =
        check_login(&bytes).with_context(|| format!("{} is not a Claude login", path.display()))?;
    Ok(Some(Login {
        bytes,
        json,
        expires_at,
    }))
}

/// A Claude login is a JSON object whose `claudeAiOauth` holds string `accessToken` and
/// `refreshToken` and a numeric `expiresAt`; returns the JSON and `expiresAt`.
fn check_login(bytes: &[u8]) -> Result<(serde_json::Value, u64)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).context("not JSON")?;
    let oauth = v
        .get("claudeAiOauth")
        .and_then(serde_json::Value::as_object)
        .context("no claudeAiOauth object")?;
    for key in ["accessToken", "refreshToken"] {
        if !oauth.get(key).is_some_and(serde_json::Value::is_string) {
            bail!("claudeAiOauth has no string {key}");
        }
    }
    let expires_at = oauth
        .get("expiresAt")
        .and_then(serde_json::Value::as_u64)
        .context("claudeAiOauth has no numeric expiresAt")?;
    Ok((v, expires_at))
}

/// The shared dir's new credentials file when the sandbox's login is a refresh of the
/// host's: the host's file with the sandbox's `accessToken`, `refreshToken` and
/// `expiresAt`. Anything else is the reason it is not one.
///
/// "A refresh of the same login" is what the file can show, and no more: it names no
/// account or organisation (Claude Code keeps those in `.claude.json`, which the agent
/// writes too) and its tokens are opaque, so a refresh token's lineage cannot be proved.
/// The strictest rule that still lets a refresh through is used: no top-level key but
/// `claudeAiOauth` and `mcpOAuth`; every field of `claudeAiOauth` other than the three
/// above (`scopes`, `subscriptionType`, `rateLimitTier`, any a later Claude Code adds)
/// present on both sides with equal values; an expiry at most a day ahead of `now_ms`.
/// What remains: a login of another account with the same plan, scopes and rate tier
/// passes (an organisation on the same Team or Enterprise plan as the user's).
fn refreshed_login(
    host: &serde_json::Value,
    sandbox: &serde_json::Value,
    now_ms: u64,
) -> std::result::Result<Vec<u8>, String> {
    let (Some(top), Some(h_oauth), Some(s_oauth)) = (
        sandbox.as_object(),
        host["claudeAiOauth"].as_object(),
        sandbox["claudeAiOauth"].as_object(),
    ) else {
        return Err("it is not a login".to_owned());
    };
    if let Some(key) = top
        .keys()
        .find(|k| *k != "claudeAiOauth" && !KEPT_PER_SIDE.contains(&k.as_str()))
    {
        return Err(format!(
            "it has the key {}, which a Claude login does not",
            shown(key)
        ));
    }
    let mut fields: Vec<&String> = h_oauth.keys().chain(s_oauth.keys()).collect();
    fields.sort();
    fields.dedup();
    if let Some(key) = fields
        .into_iter()
        .find(|k| !ROTATED.contains(&k.as_str()) && h_oauth.get(*k) != s_oauth.get(*k))
    {
        return Err(format!(
            "its claudeAiOauth field {} is not the host's (a login of another account or plan)",
            shown(key)
        ));
    }
    let expires_at = s_oauth
        .get("expiresAt")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(u64::MAX);
    if expires_at > now_ms.saturating_add(MAX_EXPIRY_AHEAD_MS) {
        return Err(
            "its access token would expire more than a day from now, which no refresh gives"
                .to_owned(),
        );
    }
    let mut merged = host.clone();
    for key in ROTATED {
        merged["claudeAiOauth"][key] = s_oauth[key].clone();
    }
    serde_json::to_vec(&merged).map_err(|e| format!("cannot write it as JSON: {e}"))
}

/// A key the agent wrote, for a warning: quoted, escaped and cut to 64 characters.
fn shown(key: &str) -> String {
    crate::base::escape::display(&key.chars().take(64).collect::<String>())
}

/// Milliseconds since the epoch, as `expiresAt` counts them.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `sync_shared` for a client with a shared `--claude-config`, at the points the CLI
/// passes anyway (enable, start, stop, restart, attach and its end); a failure is a
/// warning, since it must not keep the user out of the sandbox.
pub fn sync_client(
    layout: &crate::sandbox::layout::Layout,
    client: &crate::sandbox::client::ClientName,
    settings: &crate::sandbox::settings::Settings,
) {
    let Some(shared) = &settings.claude_config else {
        return;
    };
    match sync_shared(&layout.client_subdir(client, "claude"), shared) {
        Ok(said) => said.iter().for_each(|l| eprintln!("{l}")),
        Err(e) => eprintln!("warning: cannot share the Claude login of {client}: {e:#}"),
    }
}

/// Copies the Claude login between a shared config dir and a client's own dir, the one
/// whose access token expires later winning; returns what it did, for the user. Only
/// `.credentials.json` is read or written on either side; a file that is not a plain,
/// valid login is never copied, and a shared file that is not one is never replaced.
/// The sandbox's login reaches the shared dir only as a refresh of the login already
/// there (`refreshed_login`), and then only its tokens and their expiry.
pub fn sync_shared(client_dir: &Path, shared_dir: &Path) -> Result<Vec<String>> {
    let mut said = Vec::new();
    let client_path = client_dir.join(CREDENTIALS);
    let shared_path = shared_dir.join(CREDENTIALS);
    let client = read_login(&client_path).unwrap_or_else(|e| {
        said.push(format!("warning: ignoring the sandbox's login: {e:#}"));
        None
    });
    let shared = match read_login(&shared_path) {
        Ok(shared) => shared,
        Err(e) => {
            // Not a file sandboxctl understands: leave both sides alone.
            said.push(format!("warning: not sharing the Claude login: {e:#}"));
            return Ok(said);
        }
    };
    let refused = |why: &str, then: &str| {
        format!(
            "warning: not copying the sandbox's Claude login back to {}: {why}; {then}",
            shared_path.display()
        )
    };
    match (client, shared) {
        // The same login on both sides (each may keep its own MCP servers' tokens).
        (Some(c), Some(h)) if c.oauth() == h.oauth() => {}
        (Some(c), Some(h)) if c.expires_at <= h.expires_at => {
            crate::base::atomic::write(&client_path, &h.bytes, 0o600)?;
        }
        (Some(c), Some(h)) => match refreshed_login(&h.json, &c.json, now_ms()) {
            Ok(bytes) => {
                crate::base::atomic::write(&shared_path, &bytes, 0o600)?;
                said.push(format!(
                    "copied the sandbox's refreshed Claude login back to {}",
                    shared_path.display()
                ));
            }
            Err(why) => said.push(refused(
                &why,
                "the host keeps its own (if it stops working, log in again on the host)",
            )),
        },
        (Some(_), None) => said.push(refused(
            "there is no login there to check it against",
            "log in on the host to share one",
        )),
        (None, Some(h)) => {
            crate::base::atomic::write(&client_path, &h.bytes, 0o600)?;
        }
        (None, None) => {}
    }
    Ok(said)
}

#[cfg(test)]
#[path = "claude_login_tests.rs"]
mod tests;
