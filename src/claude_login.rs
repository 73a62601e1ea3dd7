//! Claude subscription logins, per client. Each client has its own writable Claude
//! config dir, so a login (and its rotating refresh token) belongs to that client alone.
//! When the user is logged in on the host and gave no API key, the host's credentials
//! file is copied once into the client's own dir: the host's files are only read, and
//! other clients get nothing unless they are enabled the same way.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
        crate::atomic::write(&creds, &bytes, 0o600)?;
        said.push(format!(
            "copied your Claude login from {} into {} (this client only; the host's files are untouched)",
            host_creds.display(),
            creds.display()
        ));
    }
    // Claude Code keeps its first-run state in `.claude.json` inside its config dir;
    // without it, every new client would walk through onboarding again.
    let state = client_dir.join(".claude.json");
    if !state.exists() {
        crate::atomic::write(&state, b"{\"hasCompletedOnboarding\": true}\n", 0o600)?;
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let host = tmp.path().join("host/.claude");
        let client = tmp.path().join("client/claude");
        std::fs::create_dir_all(&host).expect("mkdir");
        std::fs::create_dir_all(&client).expect("mkdir");
        (tmp, host, client)
    }

    #[test]
    fn copies_host_login_once_and_leaves_host_alone() {
        let (_tmp, host, client) = setup();
        std::fs::write(host.join(".credentials.json"), b"{\"token\":\"t1\"}").expect("write");
        let said = prepare(&client, Some(&host), false).expect("prepare");
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(
            std::fs::read(client.join(".credentials.json")).expect("copied"),
            b"{\"token\":\"t1\"}"
        );
        // A later refresh inside the sandbox is not overwritten by the host's file.
        std::fs::write(client.join(".credentials.json"), b"refreshed").expect("write");
        assert!(
            prepare(&client, Some(&host), false)
                .expect("again")
                .is_empty()
        );
        assert_eq!(
            std::fs::read(client.join(".credentials.json")).expect("kept"),
            b"refreshed"
        );
        assert_eq!(
            std::fs::read(host.join(".credentials.json")).expect("host"),
            b"{\"token\":\"t1\"}"
        );
        let state = std::fs::read_to_string(client.join(".claude.json")).expect("state");
        assert!(state.contains("\"hasCompletedOnboarding\": true"));
    }

    #[test]
    fn api_key_or_no_host_login_copies_nothing() {
        let (_tmp, host, client) = setup();
        std::fs::write(host.join(".credentials.json"), b"x").expect("write");
        assert!(
            prepare(&client, Some(&host), true)
                .expect("prepare")
                .is_empty()
        );
        assert!(!client.join(".credentials.json").exists());
        let (_tmp2, _host2, client2) = setup();
        assert!(prepare(&client2, None, false).expect("prepare").is_empty());
        assert!(!client2.join(".credentials.json").exists());
    }
}
