//! Paths a sandbox can write (its projects, its home, its login files, anything mounted
//! read-write), as the host reads them. The agent is assumed hostile, so what it left
//! there may be a symbolic link to a host file, a FIFO that blocks a plain `open` forever
//! (while the caller holds the change lock), or a huge or sparse file that a plain read
//! would take whole into memory. [`AgentPath`] offers only reads that refuse all three:
//! no symbolic link at the last component (`O_NOFOLLOW`), a non-blocking open, regular
//! files only (checked on the open descriptor, so nothing can be swapped in between),
//! and a size cap; directory listings are capped in length too. Each error is one line
//! naming the path.
//!
//! The type is the boundary: code that holds an [`AgentPath`] can look at what is there
//! ([`AgentPath::kind`]), list it and read it only through the methods here, and derive
//! paths below it ([`AgentPath::join`]) that keep the type. Calling something that takes
//! a `&Path` on one needs [`AgentPath::as_path`], which is for naming the path only, so
//! every other host access to agent-written data stands out.

use std::ffi::{OsStr, OsString};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A path that a sandbox can write.
///
/// Typing a path the sandbox cannot write as one is harmless (its reads are only
/// stricter), so the methods that derive paths ([`join`](Self::join),
/// [`parent`](Self::parent)) keep the type without checking.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgentPath(PathBuf);

/// What is at a path, looked at without following a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// One entry of a directory the sandbox can write.
#[derive(Debug)]
pub struct Entry {
    pub name: OsString,
    pub path: AgentPath,
    /// The entry itself, not followed; [`Kind::Other`] too when it cannot be inspected.
    pub kind: Kind,
}

impl AgentPath {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The path as a name: for mount strings, messages and comparing paths. Never to
    /// open, inspect, list or resolve it, which would skip the checks of the methods
    /// here.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// For messages.
    pub fn display(&self) -> std::path::Display<'_> {
        self.0.display()
    }

    /// A path below this one, which the sandbox can write too. `rel` is meant to descend
    /// (see the type's note on paths it names otherwise).
    #[must_use]
    pub fn join(&self, rel: impl AsRef<Path>) -> Self {
        Self(self.0.join(rel))
    }

    /// The directory above, typed as the sandbox's too (see the type's note).
    pub fn parent(&self) -> Option<Self> {
        self.0.parent().map(|p| Self(p.to_owned()))
    }

    pub fn file_name(&self) -> Option<&OsStr> {
        self.0.file_name()
    }

    /// `path` as a path the sandbox can write when it lies at or below this directory,
    /// compared by name (`..` is not resolved: normalize first).
    pub fn below(&self, path: &Path) -> Option<Self> {
        path.starts_with(&self.0).then(|| Self(path.to_owned()))
    }

    /// What is at the path (`symlink_metadata`: a symbolic link is reported as one,
    /// never followed). Like [`read`](Self::read), this is about the last component: a
    /// link in a directory above is resolved by the kernel, so a caller that must not
    /// pass one looks at each component on the way.
    pub fn kind(&self) -> Result<Kind> {
        match std::fs::symlink_metadata(&self.0) {
            Ok(m) => Ok(kind_of(m.file_type())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Kind::Missing),
            Err(e) => Err(e).with_context(|| format!("cannot inspect {}", self.0.display())),
        }
    }

    /// Where the path leads with every symbolic link and `..` resolved (`realpath`), if
    /// it exists. The one method that follows links: it reads no file, only names the
    /// target, as a plain path, which the caller types again with [`below`](Self::below)
    /// where it must lie in a directory of the sandbox's.
    pub fn resolved(&self) -> Option<PathBuf> {
        std::fs::canonicalize(&self.0).ok()
    }

    /// The file's bytes, at most `max`; `None` if there is no such file. A symbolic
    /// link, anything but a regular file, or a larger file is an error.
    pub fn read(&self, max: u64) -> Result<Option<Vec<u8>>> {
        use rustix::fs::{Mode, OFlags};
        let path = &self.0;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                bail!(
                    "{} is a symbolic link, which sandboxctl does not follow in a directory the sandbox can write",
                    path.display()
                )
            }
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot open {}", path.display()));
            }
        };
        let file = std::fs::File::from(fd);
        let meta = file
            .metadata()
            .with_context(|| format!("cannot inspect {}", path.display()))?;
        if !meta.is_file() {
            bail!(
                "{} is not a regular file (a FIFO, device or directory); remove it",
                path.display()
            );
        }
        if meta.len() > max {
            bail!(
                "{} is larger than {max} bytes ({} bytes); sandboxctl reads no more from a file the sandbox can write: delete it and run the command again",
                path.display(),
                meta.len()
            );
        }
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.len() as u64 > max {
            bail!("{} grew past {max} bytes while read", path.display());
        }
        Ok(Some(bytes))
    }

    /// The entries of the directory (not followed through a symbolic link), at most
    /// `max`; an empty list if it does not exist.
    pub fn read_dir(&self, max: usize) -> Result<Vec<Entry>> {
        let path = &self.0;
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
            Ok(m) if !m.is_dir() => bail!("{} is not a directory", path.display()),
            Ok(_) => {}
        }
        let mut out = Vec::new();
        for entry in
            std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
        {
            if out.len() == max {
                bail!(
                    "{} has more than {max} entries; sandboxctl lists no more of a directory the sandbox can write",
                    path.display()
                );
            }
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            let name = entry.file_name();
            out.push(Entry {
                path: self.join(&name),
                kind: entry.file_type().map_or(Kind::Other, kind_of),
                name,
            });
        }
        Ok(out)
    }
}

fn kind_of(t: std::fs::FileType) -> Kind {
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_small_regular_files_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        std::fs::write(d.join("f"), b"hello").expect("write");
        assert_eq!(
            AgentPath::new(d.join("f")).read(5).expect("read"),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            AgentPath::new(d.join("missing")).read(5).expect("read"),
            None
        );

        let err =
            |p: &Path, max| format!("{:#}", AgentPath::new(p).read(max).expect_err("refused"));
        assert!(err(&d.join("f"), 4).contains("larger than 4 bytes"));
        std::os::unix::fs::symlink(d.join("f"), d.join("link")).expect("symlink");
        assert!(err(&d.join("link"), 64).contains("symbolic link"));
        assert!(err(d, 64).contains("not a regular file"));
        // A sparse file the size of a disk is refused by its size, not read.
        let sparse = std::fs::File::create(d.join("sparse")).expect("create");
        sparse.set_len(1 << 40).expect("set_len");
        assert!(err(&d.join("sparse"), 64 * 1024).contains("larger than"));
    }

    /// A FIFO the agent left where a file was expected: refused at once, never a hang.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = tmp.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let start = Instant::now();
        let e = AgentPath::new(&fifo).read(64).expect_err("refused");
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn directory_listings_are_capped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).expect("mkdir");
        for i in 0..5 {
            std::fs::create_dir(d.join(i.to_string())).expect("mkdir");
        }
        assert_eq!(AgentPath::new(&d).read_dir(5).expect("list").len(), 5);
        let e = AgentPath::new(&d).read_dir(4).expect_err("capped");
        assert!(format!("{e:#}").contains("more than 4 entries"), "{e:#}");
        assert!(
            AgentPath::new(tmp.path().join("none"))
                .read_dir(4)
                .expect("missing")
                .is_empty()
        );
        std::os::unix::fs::symlink(&d, tmp.path().join("l")).expect("symlink");
        assert!(AgentPath::new(tmp.path().join("l")).read_dir(9).is_err());
    }

    #[test]
    fn kinds_are_of_the_path_itself_never_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = AgentPath::new(tmp.path());
        std::fs::write(d.join("f").as_path(), b"x").expect("write");
        std::fs::create_dir(d.join("dir").as_path()).expect("mkdir");
        std::os::unix::fs::symlink(d.join("f").as_path(), d.join("to-file").as_path())
            .expect("symlink");
        std::os::unix::fs::symlink(d.join("dir").as_path(), d.join("to-dir").as_path())
            .expect("symlink");
        std::os::unix::fs::symlink("/nonexistent", d.join("dangling").as_path()).expect("symlink");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let kind = |name: &str| d.join(name).kind().expect("kind");
        assert_eq!(kind("f"), Kind::File);
        assert_eq!(kind("dir"), Kind::Dir);
        assert_eq!(kind("to-file"), Kind::Symlink);
        assert_eq!(kind("to-dir"), Kind::Symlink);
        assert_eq!(kind("dangling"), Kind::Symlink);
        assert_eq!(kind("fifo"), Kind::Other);
        assert_eq!(kind("missing"), Kind::Missing);
        assert!(d.join("f/x").kind().is_err(), "below a file");

        let mut listed: Vec<(String, Kind, bool)> = d
            .read_dir(16)
            .expect("list")
            .into_iter()
            .map(|e| {
                let name = e.name.to_string_lossy().into_owned();
                let joined = e.path == d.join(&e.name);
                (name, e.kind, joined)
            })
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            listed,
            [
                ("dangling".to_owned(), Kind::Symlink, true),
                ("dir".to_owned(), Kind::Dir, true),
                ("f".to_owned(), Kind::File, true),
                ("fifo".to_owned(), Kind::Other, true),
                ("to-dir".to_owned(), Kind::Symlink, true),
                ("to-file".to_owned(), Kind::Symlink, true),
            ]
        );
    }

    #[test]
    fn derived_paths_keep_the_type_and_below_compares_names() {
        let p = AgentPath::new("/srv/p");
        assert_eq!(
            p.join(".git").join("config").as_path(),
            Path::new("/srv/p/.git/config")
        );
        assert_eq!(p.join(".git").parent(), Some(p.clone()));
        assert_eq!(p.join(".git").file_name(), Some(OsStr::new(".git")));
        assert_eq!(
            p.below(Path::new("/srv/p/a/b")),
            Some(AgentPath::new("/srv/p/a/b"))
        );
        assert_eq!(p.below(Path::new("/srv/p")), Some(p.clone()));
        assert_eq!(p.below(Path::new("/srv/pq")), None);
        assert_eq!(p.below(Path::new("/srv")), None);
    }

    /// `resolved` names where links lead, for the caller to check; a missing path has
    /// none.
    #[test]
    fn resolved_names_the_target_of_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonical");
        let d = AgentPath::new(&root);
        std::fs::create_dir(root.join("real")).expect("mkdir");
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).expect("symlink");
        assert_eq!(d.join("link").resolved(), Some(root.join("real")));
        assert_eq!(d.join("link/../link").resolved(), Some(root.join("real")));
        assert_eq!(d.join("none").resolved(), None);
    }
}
