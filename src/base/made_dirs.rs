//! The directories a change creates, and their removal when it is undone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The directories `create_dir_all(dir)` would create, outermost first.
pub fn missing(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Removes `dirs` (outermost first), innermost first, where they are empty: whatever
/// else was put there since is left alone, with its directory.
pub fn remove_empty(dirs: &[PathBuf]) -> Result<()> {
    for d in dirs.iter().rev() {
        match std::fs::remove_dir(d) {
            Err(e)
                if e.kind() != std::io::ErrorKind::NotFound
                    && e.kind() != std::io::ErrorKind::DirectoryNotEmpty =>
            {
                return Err(e).with_context(|| format!("cannot remove {}", d.display()));
            }
            _ => {}
        }
    }
    Ok(())
}
