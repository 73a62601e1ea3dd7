//! Where a client's logs are: the journal where journald runs, else the file the unit
//! appends to (see the renderer's no-journald adaptation), plus the container's output
//! from `podman logs`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::client::ClientName;

/// The file a unit logs to on a host without journald.
pub fn unit_log_file(client: &ClientName) -> Option<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty())?;
    Some(PathBuf::from(runtime).join(format!("{}.log", client.container_name())))
}

/// Whether the journal can be read.
pub fn journald() -> bool {
    std::path::Path::new("/run/systemd/journal/socket").exists()
}

/// The last `n` lines the unit logged (empty if none can be found).
pub fn last_lines(client: &ClientName, n: usize) -> Vec<String> {
    let text = if journald() {
        Command::new("journalctl")
            .args(["--user", "--no-pager", "-o", "cat", "-n"])
            .arg(n.to_string())
            .arg("-u")
            .arg(client.service_name())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    } else {
        unit_log_file(client)
            .and_then(|f| std::fs::read(f).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    tail(&text, n)
}

fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_keeps_last_non_empty_lines() {
        assert_eq!(super::tail("a\n\nb\nc\n", 2), ["b", "c"]);
        assert_eq!(super::tail("a\n", 5), ["a"]);
        assert!(super::tail("", 3).is_empty());
    }
}
