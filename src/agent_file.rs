//! Paths a sandbox can write (its projects, its home, its login files, anything mounted
//! read-write), as the host reads them. The agent is assumed hostile, so what it left
//! there may be a symbolic link to a host file, a FIFO that blocks a plain `open` forever
//! (while the caller holds the change lock), or a huge or sparse file that a plain read
//! would take whole into memory. [`AgentPath`] offers only reads that refuse all three:
//! no symbolic link at the last component (`O_NOFOLLOW`), a non-blocking open, regular
//! files only (checked on the open descriptor, so nothing can be swapped in between),
//! and a size cap; directory listings are capped in length too. Each error is one line
//! naming the path.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A path that a sandbox can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPath(PathBuf);

impl AgentPath {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn as_path(&self) -> &Path {
        &self.0
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
    pub fn read_dir(&self, max: usize) -> Result<Vec<std::fs::DirEntry>> {
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
            out.push(entry.with_context(|| format!("cannot list {}", path.display()))?);
        }
        Ok(out)
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
}
