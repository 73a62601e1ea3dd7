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

use std::path::{Path, PathBuf};

use std::io::Read;

use anyhow::{Context, Result, bail};

/// The credentials file's name in a Claude config dir.
pub const CREDENTIALS: &str = ".credentials.json";

/// Larger than any real credentials file; a bigger one is not a login.
const MAX_CREDENTIALS: u64 = 64 * 1024;

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
    mark_onboarded(client_dir)?;
    Ok(said)
}

/// Claude Code keeps its first-run state in `.claude.json` inside its config dir;
/// without it, every new client would walk through onboarding again.
pub fn mark_onboarded(client_dir: &Path) -> Result<()> {
    let state = client_dir.join(".claude.json");
    if std::fs::symlink_metadata(&state).is_err() {
        crate::atomic::write(&state, b"{\"hasCompletedOnboarding\": true}\n", 0o600)?;
    }
    Ok(())
}

/// A credentials file that looks like a Claude login: its bytes and when its access
/// token expires.
struct Login {
    bytes: Vec<u8>,
    expires_at: u64,
}

/// Reads `path` without following a symlink and without blocking on a FIFO; `None`
/// if there is no file. Anything that is not a plain, small JSON login is an error.
fn read_login(path: &Path) -> Result<Option<Login>> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::from(e)).with_context(|| {
                format!(
                    "cannot open {} (a symbolic link is refused)",
                    path.display()
                )
            });
        }
    };
    let file = std::fs::File::from(fd);
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    file.take(MAX_CREDENTIALS + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_CREDENTIALS {
        bail!("{} is larger than {MAX_CREDENTIALS} bytes", path.display());
    }
    let expires_at =
        check_login(&bytes).with_context(|| format!("{} is not a Claude login", path.display()))?;
    Ok(Some(Login { bytes, expires_at }))
}

/// A Claude login is a JSON object whose `claudeAiOauth` holds string `accessToken` and
/// `refreshToken` and a numeric `expiresAt`; returns `expiresAt`.
fn check_login(bytes: &[u8]) -> Result<u64> {
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
    oauth
        .get("expiresAt")
        .and_then(serde_json::Value::as_u64)
        .context("claudeAiOauth has no numeric expiresAt")
}

/// `sync_shared` for a client with a shared `--claude-config`, at the points the CLI
/// passes anyway (enable, start, stop, restart, attach and its end); a failure is a
/// warning, since it must not keep the user out of the sandbox.
pub fn sync_client(
    layout: &crate::layout::Layout,
    client: &crate::client::ClientName,
    settings: &crate::settings::Settings,
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
    match (client, shared) {
        (Some(c), Some(h)) if c.bytes == h.bytes => {}
        (Some(c), Some(h)) if c.expires_at <= h.expires_at => {
            crate::atomic::write(&client_path, &h.bytes, 0o600)?;
        }
        (Some(c), _) => {
            crate::atomic::write(&shared_path, &c.bytes, 0o600)?;
            said.push(format!(
                "copied the sandbox's refreshed Claude login back to {}",
                shared_path.display()
            ));
        }
        (None, Some(h)) => {
            crate::atomic::write(&client_path, &h.bytes, 0o600)?;
        }
        (None, None) => {}
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

    fn login(token: &str, expires: u64) -> String {
        format!(
            "{{\"claudeAiOauth\": {{\"accessToken\": \"a-{token}\", \"refreshToken\": \"r-{token}\", \"expiresAt\": {expires}}}}}"
        )
    }

    #[test]
    fn shared_login_goes_both_ways_the_fresher_one_winning() {
        let (_tmp, shared, client) = setup();
        let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
        std::fs::write(&sc, login("host", 100)).expect("write");
        sync_shared(&client, &shared).expect("sync");
        assert_eq!(
            std::fs::read_to_string(&cc).expect("client"),
            login("host", 100)
        );
        // The sandbox refreshed: the host gets the new refresh token.
        std::fs::write(&cc, login("sandbox", 200)).expect("write");
        let said = sync_shared(&client, &shared).expect("sync");
        assert!(
            said[0].contains("copied the sandbox's refreshed"),
            "{said:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&sc).expect("host"),
            login("sandbox", 200)
        );
        // The host refreshed later: the sandbox gets it.
        std::fs::write(&sc, login("host2", 300)).expect("write");
        assert!(sync_shared(&client, &shared).expect("sync").is_empty());
        assert_eq!(
            std::fs::read_to_string(&cc).expect("client"),
            login("host2", 300)
        );
    }

    #[test]
    fn a_bad_sandbox_login_is_never_copied_to_the_host() {
        let (tmp, shared, client) = setup();
        let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
        std::fs::write(&sc, login("host", 100)).expect("write");
        let secret = tmp.path().join("id_rsa");
        std::fs::write(&secret, login("stolen", 999)).expect("write");
        for bad in [
            "not json".to_owned(),
            "{\"claudeAiOauth\": {\"accessToken\": 1}}".to_owned(),
            format!("{}{}", login("big", 900), " ".repeat(70 * 1024)),
        ] {
            std::fs::write(&cc, &bad).expect("write");
            let said = sync_shared(&client, &shared).expect("sync");
            assert!(said[0].contains("ignoring the sandbox's login"), "{said:?}");
            assert_eq!(
                std::fs::read_to_string(&sc).expect("host"),
                login("host", 100)
            );
        }
        // A symlink is not followed (and so not copied), nor is a FIFO waited on.
        std::fs::remove_file(&cc).expect("rm");
        std::os::unix::fs::symlink(&secret, &cc).expect("symlink");
        let said = sync_shared(&client, &shared).expect("sync");
        assert!(said[0].contains("symbolic link"), "{said:?}");
        assert_eq!(
            std::fs::read_to_string(&sc).expect("host"),
            login("host", 100)
        );
        std::fs::remove_file(&cc).expect("rm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &cc,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let said = sync_shared(&client, &shared).expect("sync");
        assert!(said[0].contains("not a regular file"), "{said:?}");
        assert_eq!(
            std::fs::read_to_string(&sc).expect("host"),
            login("host", 100)
        );
    }

    #[test]
    fn a_shared_file_that_is_not_a_login_is_left_alone() {
        let (_tmp, shared, client) = setup();
        let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
        std::fs::write(&sc, "{\"someOtherFormat\": 1}").expect("write");
        std::fs::write(&cc, login("sandbox", 200)).expect("write");
        let said = sync_shared(&client, &shared).expect("a warning, not an error");
        assert!(said[0].contains("not sharing the Claude login"), "{said:?}");
        assert_eq!(
            std::fs::read_to_string(&sc).expect("host"),
            "{\"someOtherFormat\": 1}"
        );
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
