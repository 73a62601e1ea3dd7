//! Atomic file writes: a temporary file in the target directory, fsync, rename, fsync
//! of the directory. A reader sees the old file or the new one, never half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `contents` to `path` atomically with the given permission bits.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    write_with(path, mode, |f| f.write_all(contents))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// [`write`] for one of several files of a directory written together: the rename is
/// durable only once the caller has called [`sync_dir`] on the directory.
pub fn write_before_dir_sync(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    replace(path, mode, |f| f.write_all(contents))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Makes the renames into `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Writes `path` atomically with the given permission bits, its contents written by
/// `fill` into the temporary file (which is then synced and renamed over `path`).
pub fn write_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<()> {
    replace(path, mode, fill)?;
    // Make the rename itself durable.
    if let Some(d) = path.parent().and_then(|d| fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A temporary file filled by `fill`, synced and renamed over `path`.
fn replace(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".sandboxctl-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| {
            format!(
                "cannot set permissions on a temporary file in {}",
                dir.display()
            )
        })?;
    fill(tmp.as_file_mut())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot fill a temporary file in {}", dir.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_and_replaces_with_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        super::write(&path, b"one", 0o600).expect("write");
        super::write(&path, b"two", 0o644).expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "f")
            .collect();
        assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let err = super::write(std::path::Path::new("/nonexistent-dir-x/f"), b"x", 0o600)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("/nonexistent-dir-x"), "{err}");
    }
}
