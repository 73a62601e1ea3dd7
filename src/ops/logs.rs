//! Where a client's logs are: the journal where journald runs, else the file the unit
//! appends to (see the renderer's no-journald adaptation), plus the container's output
//! from `podman logs`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::sandbox::client::ClientName;

/// The file a unit logs to on a host without journald.
pub fn unit_log_file(client: &ClientName) -> Option<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty())?;
    Some(PathBuf::from(runtime).join(format!("{}.log", client.container_name())))
}

/// Whether the journal can be read.
pub fn journald() -> bool {
    std::path::Path::new("/run/systemd/journal/socket").exists()
}

/// The last `n` lines the unit logged that say something (empty if none can be found),
/// made safe to print (`terminal::sanitize`): the container writes them.
pub fn last_lines(client: &ClientName, n: usize) -> Vec<String> {
    let text = if journald() {
        Command::new("journalctl")
            .args(["--user", "--no-pager", "-o", "cat", "-n"])
            .arg(n.to_string())
            .arg("-u")
            .arg(client.service_name())
            .stderr(Stdio::null())
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    } else {
        unit_log_file(client)
            .and_then(|f| read_tail(&f, TAIL_MAX).ok())
            .unwrap_or_default()
    };
    tail(&text, n)
}

/// The most bytes read from the end of a unit's log file.
const TAIL_MAX: u64 = 1 << 20;

/// The whole lines in the last `max` bytes of the file at `path` (its lines come from
/// the container).
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    if start > 0 {
        // The first line is cut: it starts before what was read.
        let cut = out
            .iter()
            .position(|b| *b == b'\n')
            .map_or(out.len(), |i| i + 1);
        out.drain(..cut);
    }
    Ok(out)
}

/// Whether a log line is only a container ID: Quadlet's `podman run -d` prints the new
/// container's ID and `podman rm` the removed one's on stdout, which the unit logs. They
/// say nothing about why a start failed, so they are left out of what the user reads.
fn is_container_id(line: &str) -> bool {
    let l = line.trim();
    l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tail(text: &[u8], n: usize) -> Vec<String> {
    let mut lines = crate::base::terminal::sanitize_lines(text);
    lines.retain(|l| !l.trim().is_empty() && !is_container_id(l));
    lines.split_off(lines.len().saturating_sub(n))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_end_of_a_log_is_read() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("agent-acme.log");
        std::fs::write(&path, "a\nbb\nccc\n").expect("written");
        assert_eq!(super::read_tail(&path, 6).expect("read"), b"ccc\n");
        assert_eq!(super::read_tail(&path, 100).expect("read"), b"a\nbb\nccc\n");
    }

    #[test]
    fn tail_keeps_last_non_empty_lines() {
        assert_eq!(super::tail(b"a\n\nb\nc\n", 2), ["b", "c"]);
        assert_eq!(super::tail(b"a\n", 5), ["a"]);
        assert!(super::tail(b"", 3).is_empty());
    }

    #[test]
    fn tail_renders_terminal_controls() {
        let lines = super::tail(b"ok\n\x1b]52;c;ZXZpbA==\x07\r\n\xff\n", 5);
        assert_eq!(lines, ["ok", "^[]52;c;ZXZpbA==^G", "\\xff"]);
    }

    #[test]
    fn container_ids_are_left_out() {
        let id = "4f1c9a0e5b7d2c3a8e6f0b1d9c7a5e3f2b4d6c8a0e1f3b5d7c9a2e4f6b8d0c1a";
        let log = format!(
            "{id}\nError: statfs /gone: no such file or directory\n{id}\n  {}\n",
            id.to_uppercase()
        );
        assert_eq!(
            super::tail(log.as_bytes(), 5),
            ["Error: statfs /gone: no such file or directory"]
        );
        // The last n lines are counted after the IDs are dropped.
        assert_eq!(
            super::tail(format!("a\nb\n{id}\n{id}\n").as_bytes(), 2),
            ["a", "b"]
        );
        // Not an ID: other lengths, other characters, hex inside a sentence.
        for keep in [&id[..63], &format!("{id}0"), &format!("container {id}")] {
            assert_eq!(super::tail(keep.as_bytes(), 1), [keep.to_owned()]);
        }
        assert_eq!(super::tail(id.replace('a', "g").as_bytes(), 1).len(), 1);
    }
}
