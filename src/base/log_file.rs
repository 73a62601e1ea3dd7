//! Log lines on standard error that cannot fill the runtime directory.
//!
//! Where journald runs, the proxy's and the notifier's standard error is the journal,
//! which keeps its own limits. Without it (the `no journald here` host adaptation) their
//! units append to a file in `$XDG_RUNTIME_DIR`, a small tmpfs that the user's session
//! needs for its sockets, and the agent decides how many lines they write (a request, an
//! event each). There a log past `MAX` bytes is moved to `NAME.1`, replacing the one
//! before, and a new file takes its place: a client's log holds at most twice `MAX`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::Mutex;

/// The most bytes one log file holds before it is rotated.
pub const MAX: u64 = 4 << 20;

/// What is known of standard error: where it is a regular file, its path and size.
struct Target {
    path: Option<PathBuf>,
    size: u64,
}

static TARGET: Mutex<Option<Target>> = Mutex::new(None);

/// The regular file standard error appends to, if it is one, and its size now.
fn probe() -> Target {
    let stderr = std::io::stderr();
    let Ok(stat) = rustix::fs::fstat(&stderr) else {
        return Target {
            path: None,
            size: 0,
        };
    };
    let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let path = (file_type == rustix::fs::FileType::RegularFile)
        .then(|| std::fs::read_link("/proc/self/fd/2").ok())
        .flatten()
        .filter(|p| p.is_absolute());
    Target {
        path,
        size: u64::try_from(stat.st_size).unwrap_or(0),
    }
}

/// Writes `line` (which ends with a line break) to standard error in one write, and
/// rotates the file behind it once it passes `MAX`. A log that cannot be written or
/// rotated never stops the caller.
pub fn write_line(line: &[u8]) {
    write_line_capped(line, MAX);
}

fn write_line_capped(line: &[u8], max: u64) {
    let Ok(mut target) = TARGET.lock() else {
        let _ = std::io::stderr().lock().write_all(line);
        return;
    };
    let t = target.get_or_insert_with(probe);
    let _ = std::io::stderr().lock().write_all(line);
    t.size += line.len() as u64;
    if t.size <= max {
        return;
    }
    if let Some(path) = &t.path {
        let mut old = path.clone().into_os_string();
        old.push(".1");
        let fresh = std::fs::rename(path, &old).and_then(|()| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
                .open(path)
        });
        if let Ok(file) = fresh
            && file.metadata().is_ok_and(|m| m.file_type().is_file())
            && rustix::stdio::dup2_stderr(&file).is_ok()
        {
            t.size = 0;
            return;
        }
    }
    // Not a file it can rotate (or the rotation failed): start the same file over.
    if rustix::fs::ftruncate(std::io::stderr(), 0).is_ok() {
        t.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    /// The test binary runs this test again as a child whose standard error is a
    /// file: the child writes, the parent reads what the rotation left.
    #[test]
    fn a_log_past_its_cap_moves_to_dot_1_and_starts_again() {
        const CHILD: &str = "SANDBOXCTL_LOG_FILE_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            for i in 0..100 {
                super::write_line_capped(format!("line {i:04}\n").as_bytes(), 200);
            }
            return;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("sandboxctl-proxy-acme.log");
        let file = std::fs::File::create(&log).expect("the log file");
        let status = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                // This test's name, without the crate's.
                &format!(
                    "{}::a_log_past_its_cap_moves_to_dot_1_and_starts_again",
                    module_path!().split_once("::").map_or("", |(_, m)| m)
                ),
                "--nocapture",
            ])
            .env(CHILD, "1")
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .expect("the child runs");
        assert!(status.success());
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("readable");
        let now = read(&log);
        let before = read(&dir.path().join("sandboxctl-proxy-acme.log.1"));
        // Each file holds at most the cap plus the line that passed it (10 bytes).
        assert!(
            now.len() <= 210 && before.len() <= 210,
            "{now:?} {before:?}"
        );
        assert!(before.len() > 200, "{before:?}");
        assert!(now.ends_with("line 0099\n"), "{now:?}");
        // The two files are the log's last lines, in order, with none lost between.
        let lines: Vec<&str> = before.lines().chain(now.lines()).collect();
        let first: usize = lines[0][5..].parse().expect("a number");
        let want: Vec<String> = (first..100).map(|i| format!("line {i:04}")).collect();
        assert_eq!(lines, want);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("listed").count(),
            2,
            "no other file"
        );
    }
}
