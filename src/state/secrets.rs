//! Per-client credentials as Podman secrets. A value travels from stdin or the
//! environment to `podman secret create` on its stdin: never in an argument, a unit file,
//! the settings file, or the container's configuration. Inside, a secret is a file under
//! `/run/secrets/<NAME>` that the image's entry program exports to the agent. (With
//! `type=env`, Podman 4.3 shows the value in `podman inspect`; a mount does not.)

use std::io::Write;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::sandbox::client::ClientName;

/// Where a secret appears inside the container.
pub const MOUNT_DIR: &str = "/run/secrets";

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !ok {
        bail!(
            "invalid secret name {}: use an environment variable name (letters, digits and '_', not starting with a digit), e.g. GH_TOKEN",
            crate::base::escape::display(name)
        );
    }
    Ok(())
}

/// Secrets that are files for a program inside (not environment variables), so they
/// may span lines: the image's ssh config reads the client's deploy key from
/// `/run/secrets/GIT_SSH_KEY`, and its entry program does not export it.
pub const FILE_SECRETS: [&str; 1] = ["GIT_SSH_KEY"];

/// Checks a value and drops one trailing line break (as `echo` adds). A file secret
/// keeps its lines, ending with a line break as key files do.
pub fn clean_value(name: &str, raw: &[u8]) -> Result<Vec<u8>> {
    if FILE_SECRETS.contains(&name) {
        if raw.iter().all(u8::is_ascii_whitespace) {
            bail!("the value for {name} is empty; nothing was stored");
        }
        if raw.contains(&0) {
            bail!("the value for {name} contains a NUL byte; nothing was stored");
        }
        let mut v = raw.to_vec();
        if !v.ends_with(b"\n") {
            v.push(b'\n');
        }
        return Ok(v);
    }
    let mut value = raw.strip_suffix(b"\n").unwrap_or(raw);
    value = value.strip_suffix(b"\r").unwrap_or(value);
    if value.is_empty() {
        bail!("the value for {name} is empty; nothing was stored");
    }
    if value.contains(&0) {
        bail!("the value for {name} contains a NUL byte; nothing was stored");
    }
    if value.contains(&b'\n') || value.contains(&b'\r') {
        bail!("the value for {name} contains a line break; nothing was stored");
    }
    Ok(value.to_vec())
}

/// The Podman secret that holds `name` for `client`.
pub fn podman_name(client: &ClientName, name: &str) -> String {
    format!("{}.{name}", client.container_name())
}

/// Stores (or replaces) a secret; the value goes to podman on stdin.
pub fn store(client: &ClientName, name: &str, value: &[u8]) -> Result<()> {
    check_name(name)?;
    let value = clean_value(name, value)?;
    let secret = podman_name(client, name);
    // Podman before 4.7 has no `--replace`: remove, then create.
    remove_quietly(&secret);
    let mut child = crate::host::podman::command(["secret", "create", &secret, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", crate::host::podman::binary()))?;
    child
        .stdin
        .take()
        .context("podman's stdin is not available")?
        .write_all(&value)
        .context("cannot pass the secret to podman")?;
    let out = child
        .wait_with_output()
        .context("podman secret create failed")?;
    if !out.status.success() {
        bail!(
            "podman could not store secret {secret}: {}",
            crate::host::podman::stderr_line(&out)
        );
    }
    Ok(())
}

/// Keeps a copy of an API key for the egress proxy (a 0600 file in the client's
/// `config/proxy-keys/`, never mounted) when `name` is a provider's key; the proxy adds
/// it to the agent's requests unless the client has `--key-in-sandbox on`.
pub fn store_for_proxy(
    layout: &crate::sandbox::layout::Layout,
    client: &ClientName,
    name: &str,
    value: &[u8],
) -> Result<()> {
    if crate::proxy::keyed::Provider::for_key_var(name).is_none() {
        return Ok(());
    }
    let value = clean_value(name, value)?;
    crate::proxy::keyed::store(&layout.client_subdir(client, "config"), name, &value)
        .with_context(|| format!("cannot store {name} for {client}'s egress proxy"))
}

/// Removes the proxy's copy of a key (see [`store_for_proxy`]), if any.
pub fn remove_for_proxy(
    layout: &crate::sandbox::layout::Layout,
    client: &ClientName,
    name: &str,
) -> Result<()> {
    crate::proxy::keyed::remove(&layout.client_subdir(client, "config"), name)
}

/// The names of a client's secrets that Podman holds.
pub fn list(client: &ClientName) -> Result<Vec<String>> {
    let out = crate::host::podman::command(["secret", "ls", "--format", "{{.Name}}"])
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", crate::host::podman::binary()))?;
    if !out.status.success() {
        bail!(
            "podman secret ls failed: {}",
            crate::host::podman::stderr_line(&out)
        );
    }
    let prefix = format!("{}.", client.container_name());
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix).map(str::to_owned))
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Removes one secret; an error if it does not exist.
pub fn remove(client: &ClientName, name: &str) -> Result<()> {
    check_name(name)?;
    let secret = podman_name(client, name);
    let out = crate::host::podman::command(["secret", "rm", &secret])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", crate::host::podman::binary()))?;
    if !out.status.success() {
        bail!("client {client} has no secret {name} (see `sandboxctl secret list {client}`)");
    }
    Ok(())
}

/// Removes every secret of a client; returns their names.
pub fn remove_all(client: &ClientName) -> Result<Vec<String>> {
    let names = list(client)?;
    for n in &names {
        remove_quietly(&podman_name(client, n));
    }
    Ok(names)
}

fn remove_quietly(secret: &str) {
    let _ = crate::host::podman::command(["secret", "rm", secret])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["GH_TOKEN", "_X", "ANTHROPIC_API_KEY", "a1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1X", "A-B", "A B", "A=B", "A\nB", "É", &"A".repeat(129)] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid secret name"), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn values() {
        assert_eq!(clean_value("K", b"abc\n").expect("ok"), b"abc");
        assert_eq!(clean_value("K", b"abc\r\n").expect("ok"), b"abc");
        assert_eq!(clean_value("K", b"a b=c").expect("ok"), b"a b=c");
        for (bad, why) in [
            (&b""[..], "empty"),
            (b"\n", "empty"),
            (b"a\nb", "line break"),
            (b"a\n\n", "line break"),
            (b"a\0b", "NUL"),
        ] {
            let err = clean_value("K", bad).expect_err(why).to_string();
            assert!(err.contains(why), "{err}");
        }
        // A deploy key is a file of several lines, kept as given with its final newline.
        let key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----";
        let mut want = key.to_vec();
        want.push(b'\n');
        assert_eq!(clean_value("GIT_SSH_KEY", key).expect("key"), want);
        assert_eq!(clean_value("GIT_SSH_KEY", &want).expect("key"), want);
        assert!(clean_value("GIT_SSH_KEY", b"\n \n").is_err());
        assert!(clean_value("GIT_SSH_KEY", b"a\0").is_err());
    }

    #[test]
    fn podman_names() {
        let c = ClientName::parse("acme").expect("name");
        assert_eq!(podman_name(&c, "GH_TOKEN"), "agent-acme.GH_TOKEN");
    }
}
