//! The hosts of the `packages` network bundle: the registries that npm and pip are
//! configured to use inside the image, asked of the image itself (its
//! `agent-package-hosts` program), never written into sandboxctl.

use anyhow::{Context, Result, bail};

/// Runs the image's `agent-package-hosts` (no network) and returns its host names.
pub fn from_image(image: &str) -> Result<Vec<String>> {
    let out = crate::host::podman::command([
        "run",
        "--rm",
        "--network=none",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        image,
        "/usr/local/bin/agent-package-hosts",
    ])
    .output()
    .with_context(|| format!("cannot run {}", crate::host::podman::binary()))?;
    if !out.status.success() {
        bail!(
            "cannot ask image {image} for its package registries: {}",
            crate::host::podman::stderr_line(&out)
        );
    }
    let hosts = parse(&String::from_utf8_lossy(&out.stdout));
    if hosts.is_empty() {
        bail!("image {image} names no package registries");
    }
    Ok(hosts)
}

/// One host per line; blank lines and `#` comments skipped, duplicates dropped.
fn parse(text: &str) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let host = line.to_ascii_lowercase();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_lines() {
        assert_eq!(
            super::parse("# npm\nregistry.example\n\nfiles.example\nREGISTRY.example\n"),
            ["registry.example", "files.example"]
        );
    }
}
