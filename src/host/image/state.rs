//! The image a client runs against the one its name points to now: IDs, agent versions,
//! the newest published versions, and the names `update` keeps (previous, pinned).

use std::io;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

#[allow(clippy::wildcard_imports)]
use super::*;

/// The newest version of the npm package `package`, from `npm view` on this host (its
/// registry and proxy settings apply). What npm prints must be an exact version.
pub fn latest_version(package: &str) -> Result<String> {
    let mut cmd = Command::new("npm");
    cmd.args([
        "view",
        package,
        "version",
        "--fetch-timeout=30000",
        "--fetch-retries=1",
    ])
    .stdin(Stdio::null());
    for var in crate::host::podman::CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "--agents latest looks the versions up with npm, which is not installed: install it (e.g. `sudo apt install npm`) or give --claude-version and --codex-version"
            )
        } else {
            anyhow::Error::new(e).context("running npm")
        }
    })?;
    if !out.status.success() {
        bail!(
            "`npm view {package} version` failed ({}): {}",
            out.status,
            crate::base::terminal::one_line(&out.stderr)
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    check_version("--agents latest", &version).with_context(|| {
        format!("`npm view {package} version` printed something that is not one version")
    })?;
    Ok(version)
}

/// `Claude Code 2.1.300 → 2.1.332`-style lines for each agent whose version changed
/// between the image `old` and the build `new`.
pub fn changes(old: &BuildSummary, new: &BuildSummary) -> Vec<String> {
    [
        ("Claude Code", &old.claude_version, &new.claude_version),
        ("Codex", &old.codex_version, &new.codex_version),
        ("Node.js", &old.node_version, &new.node_version),
    ]
    .into_iter()
    .map(|(name, a, b)| {
        if a == b {
            format!("{name}: {a} (unchanged)")
        } else {
            format!("{name}: {a} → {b}")
        }
    })
    .collect()
}

/// The image a client runs, for `status`: what its container was created from (else
/// what its image name points to now) and whether the name now points to another image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageState {
    /// The image ID, `sha256:` and 64 hex digits.
    pub id: String,
    /// The manifest digest the image was pulled or built with, if Podman knows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub claude_version: String,
    pub codex_version: String,
    /// The image name now points to another image than the container runs: a
    /// restart (or `podman auto-update`) would run the newer one.
    pub newer_image: bool,
}

/// `image`'s state for the container `container`, if Podman knows the image.
pub fn state(image: &str, container: &str) -> Option<ImageState> {
    // Two podman calls of ~60 ms each, side by side: `status CLIENT` waits for one.
    let (tagged, running) = std::thread::scope(|s| {
        let running = s.spawn(|| container_image(container));
        (inspect_image(image), running.join().ok().flatten())
    });
    let tagged = tagged?;
    match running {
        Some(id) if normalise_id(&id) != tagged.id => {
            let mut s = inspect_image(&id)?;
            s.newer_image = true;
            Some(s)
        }
        _ => Some(tagged),
    }
}

/// The ID of the image the container `container` was created from (`sha256:…`), if
/// the container exists.
pub fn container_image(container: &str) -> Option<String> {
    output_checked(&mut crate::host::podman::command([
        "container",
        "inspect",
        "--format",
        "{{.Image}}",
        container,
    ]))
    .ok()
    .filter(|o| o.status.success())
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .filter(|id| !id.is_empty())
    .map(|id| normalise_id(&id))
}

/// Points the name `target` at the image `source` (a name or ID): `podman tag`.
pub fn tag(source: &str, target: &str) -> Result<()> {
    let out = output_checked(&mut crate::host::podman::command(["tag", source, target]))?;
    if !out.status.success() {
        bail!(
            "podman tag {source} {target} failed: {}",
            crate::host::podman::stderr_line(&out)
        );
    }
    Ok(())
}

/// The name `update` keeps an image under before it moves a client off it:
/// `REPO:TAG-previous` (`REPO:latest-previous` for an untagged name), so that two
/// tags of one repository keep one previous image each. `None` for a name pinned by
/// digest (it never points to another image) or one whose tag would grow too long.
pub fn previous_name(image: &str) -> Option<String> {
    keep_name(image, "previous")
}

/// The name `update` keeps the image one client is pinned to under after its update
/// failed (`REPO:TAG-pinned-CLIENT`), so that no prune removes it while the client
/// needs it; the pin itself is the image's ID in the client's unit.
pub fn pinned_name(image: &str, client: &crate::sandbox::client::ClientName) -> Option<String> {
    keep_name(image, &format!("pinned-{client}"))
}

/// `REPO:TAG-SUFFIX`, or `None` for a name pinned by digest or a tag too long.
pub(crate) fn keep_name(image: &str, suffix: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    };
    let tag = format!("{tag}-{suffix}");
    // The longest tag the OCI distribution spec allows.
    (!repo.is_empty() && tag.len() <= 128).then(|| format!("{repo}:{tag}"))
}

/// Removes the name `name` (not the image); a name that is not there is fine.
pub fn untag(name: &str) -> Result<()> {
    let out = output_checked(&mut crate::host::podman::command(["untag", name, name]))?;
    if !out.status.success() && !crate::host::podman::stderr_line(&out).contains("not known") {
        bail!(
            "podman untag {name} failed: {}",
            crate::host::podman::stderr_line(&out)
        );
    }
    Ok(())
}

/// `sha256:0123456789abcdef…` → `0123456789ab`, as podman shows IDs.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

pub(crate) fn normalise_id(id: &str) -> String {
    if id.starts_with("sha256:") {
        id.to_owned()
    } else {
        format!("sha256:{id}")
    }
}

/// The state of the image `image` (a name or ID), if Podman has it.
pub fn inspect_image(image: &str) -> Option<ImageState> {
    let out = output_checked(&mut crate::host::podman::command([
        "image", "inspect", image,
    ]))
    .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_image_state(&out.stdout)
}

/// The first object of `podman image inspect`'s JSON. Labels are the image's own (an
/// image from a registry chose them): shown on one line, controls made visible.
pub(crate) fn parse_image_state(json: &[u8]) -> Option<ImageState> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let first = v.as_array()?.first()?;
    let id = normalise_id(first.get("Id")?.as_str()?);
    let label = |key: &str| {
        first
            .get("Labels")
            .and_then(|l| l.get(key))
            .and_then(serde_json::Value::as_str)
            .map_or_else(
                || "unknown".to_owned(),
                |v| crate::base::terminal::one_line(v.as_bytes()),
            )
    };
    Some(ImageState {
        id,
        digest: first
            .get("Digest")
            .and_then(serde_json::Value::as_str)
            .filter(|d| !d.is_empty())
            .map(|d| crate::base::terminal::one_line(d.as_bytes())),
        claude_version: label(LABEL_CLAUDE),
        codex_version: label(LABEL_CODEX),
        newer_image: false,
    })
}
