//! Masks: files of a project that the sandbox sees as empty and read-only (`.env`,
//! keys, token files). Each file that matches a pattern when the unit is written gets
//! an empty read-only file of the client's bind-mounted over it; `start` looks again
//! and rewrites the unit when the set changed.
//!
//! The project is the agent's to write, so the walk here is of an [`AgentPath`]: no
//! symbolic link is followed or masked (the agent could point one anywhere), only
//! regular files are masked, and the walk is bounded in depth and in entries. Where it
//! cannot finish, or a file cannot be written as a mount, it fails closed: the unit is
//! not written (or the sandbox not started) with masks missing.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::base::agent_file::{AgentPath, Kind};
use crate::base::escape;

/// What `enable` masks unless told otherwise (`--default-masks off`): a pattern without
/// `/` matches a file name at any depth, one with `/` the path below the project.
pub const DEFAULT_PATTERNS: &[&str] = &[
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".git-credentials",
    ".aws/credentials",
    ".docker/config.json",
    "*.tfvars",
];

/// Directories not looked into: the git dir (pinned separately) and installed packages.
const SKIPPED_DIRS: &[&str] = &[".git", "node_modules"];
/// The deepest directory looked into, below the project.
const MAX_DEPTH: usize = 16;
/// The most directory entries looked at, per project.
const MAX_ENTRIES: usize = 200_000;
/// The most files masked, per project: each is a mount.
pub const MAX_FILES: usize = 256;

/// Checks a pattern given with `--mask`.
pub fn check_pattern(pattern: &str) -> Result<()> {
    let bad = pattern.is_empty()
        || pattern.len() > 200
        || pattern.starts_with('/')
        || pattern.ends_with('/')
        || pattern.chars().any(char::is_control)
        || pattern
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        bail!(
            "invalid mask {}: use a file name or a path below the project, with * and ? (e.g. '.env', '*.pem', 'config/secrets.yml')",
            escape::display(pattern)
        );
    }
    Ok(())
}

/// The patterns of a client: the defaults (unless off), then its own.
pub fn patterns(settings: &crate::sandbox::settings::Settings) -> Vec<String> {
    let defaults: &[&str] = if settings.default_masks {
        DEFAULT_PATTERNS
    } else {
        &[]
    };
    defaults
        .iter()
        .map(|p| (*p).to_owned())
        .chain(settings.masks.iter().cloned())
        .collect()
}

/// `*` (any characters) and `?` (one) on one path component; no `/` inside.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, name) || name.split_first().is_some_and(|(_, n)| glob(pattern, n))
        }
        (Some((b'?', p)), Some((_, n))) => glob(p, n),
        (Some((c, p)), Some((d, n))) => c == d && glob(p, n),
        _ => false,
    }
}

/// Whether `relative` (a path below the project, `/`-separated) matches `pattern`.
fn matches(pattern: &str, relative: &str) -> bool {
    if pattern.contains('/') {
        let p: Vec<&str> = pattern.split('/').collect();
        let r: Vec<&str> = relative.split('/').collect();
        p.len() == r.len()
            && p.iter()
                .zip(&r)
                .all(|(p, r)| glob(p.as_bytes(), r.as_bytes()))
    } else {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        glob(pattern.as_bytes(), name.as_bytes())
    }
}

/// The files of `project` that match `patterns`, sorted; empty without patterns.
pub fn files(project: &AgentPath, patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if patterns.is_empty() {
        return Ok(out);
    }
    let mut entries = 0usize;
    let mut todo = vec![(project.clone(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = todo.pop() {
        let listing = dir.read_dir(MAX_ENTRIES)?;
        entries += listing.len();
        if entries > MAX_ENTRIES {
            bail!(
                "cannot look through {} for files to mask: more than {MAX_ENTRIES} entries; mask fewer patterns (`--default-masks off`) or move generated files out of the project",
                project.display()
            );
        }
        for entry in listing {
            // A name that is not UTF-8 is matched as shown; only a matching file of
            // such a name stops the walk (no mount can name it).
            let name = entry.name.to_string_lossy();
            let name = name.as_ref();
            let relative = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            // Not followed: the type of the entry itself.
            if entry.kind == Kind::Dir {
                if depth < MAX_DEPTH && !SKIPPED_DIRS.contains(&name) {
                    todo.push((entry.path, relative, depth + 1));
                }
            } else if entry.kind == Kind::File && patterns.iter().any(|p| matches(p, &relative)) {
                // The file's name, for its mount: not read.
                let path = entry.path.as_path();
                if entry.name.to_str().is_none()
                    || escape::volume_path("masked file", &path.to_string_lossy()).is_err()
                {
                    bail!(
                        "cannot mask {}: its name cannot be written as a mount (':', a quote, a backslash or a control character); rename it",
                        escape::display(&path.to_string_lossy())
                    );
                }
                out.push(path.to_owned());
                if out.len() > MAX_FILES {
                    bail!(
                        "more than {MAX_FILES} files in {} match the masks; narrow them (`sandboxctl enable CLIENT --mask …` or `--default-masks off`)",
                        project.display()
                    );
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The files a written unit masks: the targets of its mounts of `mask_file`.
pub fn in_unit(unit: &str, mask_file: &Path) -> Vec<String> {
    let prefix = format!("Volume={}:", mask_file.display());
    crate::base::unit_text::volume_lines(unit)
        .iter()
        .filter_map(|l| {
            l.strip_prefix(&prefix)?
                .split(':')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// One line for `enable`: which patterns apply and how many files they mask now.
pub fn summary(settings: &crate::sandbox::settings::Settings, masked: usize) -> String {
    let patterns = patterns(settings);
    if patterns.is_empty() {
        return "masks: none (`--default-masks on` or `--mask PATTERN` hides secret files of the projects)".to_owned();
    }
    format!(
        "masks: {masked} file{} of the projects empty and read-only in the sandbox, matching {}",
        if masked == 1 { "" } else { "s" },
        patterns.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The walk takes a project as the agent's path; the tests name theirs plainly.
    fn files(project: &Path, patterns: &[String]) -> Result<Vec<PathBuf>> {
        super::files(&AgentPath::new(project), patterns)
    }

    #[test]
    fn patterns_match_names_at_any_depth_and_paths_from_the_top() {
        assert!(matches(".env", ".env"));
        assert!(matches(".env", "api/.env"));
        assert!(!matches(".env", ".envrc"));
        assert!(matches(".env.*", "web/.env.local"));
        assert!(matches("*.pem", "certs/server.pem"));
        assert!(!matches("*.pem", "certs/server.pem.txt"));
        assert!(matches("id_?sa", "id_rsa"));
        assert!(matches(".aws/credentials", ".aws/credentials"));
        assert!(!matches(".aws/credentials", "x/.aws/credentials"));
        assert!(matches("config/*.yml", "config/secrets.yml"));
        assert!(!matches("config/*.yml", "config/a/secrets.yml"));
        assert!(matches("*", "anything"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in ["", "/etc/passwd", "a/../b", "a//b", "dir/", "./x", "a\nb"] {
            assert!(check_pattern(p).is_err(), "{p:?}");
        }
        for p in DEFAULT_PATTERNS {
            check_pattern(p).expect("a default is valid");
        }
    }

    #[test]
    fn the_walk_masks_regular_files_only_and_follows_no_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path();
        for dir in ["api", ".git", "node_modules/x", ".aws"] {
            std::fs::create_dir_all(p.join(dir)).expect("mkdir");
        }
        for f in [
            ".env",
            "api/.env.local",
            "api/server.pem",
            "README.md",
            ".git/x.pem",
            "node_modules/x/.env",
            ".aws/credentials",
        ] {
            std::fs::write(p.join(f), "secret").expect("write");
        }
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(outside.path().join("d")).expect("mkdir");
        std::fs::write(outside.path().join("d/id_rsa"), "host key").expect("write");
        // A link named like a secret, and a link to a directory with one.
        std::os::unix::fs::symlink("/etc/hostname", p.join("api/id_rsa")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("d"), p.join("linked")).expect("symlink");
        std::fs::create_dir(p.join("api/x.key")).expect("a directory named like a key");

        let patterns: Vec<String> = DEFAULT_PATTERNS.iter().map(|s| (*s).to_owned()).collect();
        let got = files(p, &patterns).expect("walked");
        let want: Vec<PathBuf> = [
            ".aws/credentials",
            ".env",
            "api/.env.local",
            "api/server.pem",
        ]
        .iter()
        .map(|f| p.join(f))
        .collect();
        assert_eq!(got, want);
        assert!(files(p, &[]).expect("no patterns").is_empty());
    }

    #[test]
    fn what_cannot_be_masked_fails_closed() {
        use std::os::unix::ffi::OsStrExt as _;
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path();
        // A name that is not UTF-8 stops the walk only where it matches.
        let odd = |tail: &[u8]| p.join(std::ffi::OsStr::from_bytes(&[b"\xff", tail].concat()));
        std::fs::write(odd(b".txt"), "x").expect("write");
        assert!(files(p, &["*.pem".to_owned()]).expect("walked").is_empty());
        std::fs::write(odd(b".pem"), "x").expect("write");
        let e = files(p, &["*.pem".to_owned()]).expect_err("refused");
        assert!(format!("{e:#}").contains("cannot mask"), "{e:#}");
        std::fs::remove_file(odd(b".pem")).expect("rm");
        std::fs::write(p.join("a:b.pem"), "x").expect("write");
        let e = files(p, &["*.pem".to_owned()]).expect_err("refused");
        assert!(
            format!("{e:#}").contains("cannot be written as a mount"),
            "{e:#}"
        );
        std::fs::remove_file(p.join("a:b.pem")).expect("rm");
        for i in 0..=MAX_FILES {
            std::fs::write(p.join(format!("{i}.pem")), "x").expect("write");
        }
        let e = files(p, &["*.pem".to_owned()]).expect_err("refused");
        assert!(format!("{e:#}").contains("match the masks"), "{e:#}");
    }
}
