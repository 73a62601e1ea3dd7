//! What sandboxctl's unit files look like when read back: the line that marks them as
//! its own, and the bind mounts they make.

/// The first line of every unit sandboxctl writes; a unit without it is the user's.
pub const MARKER: &str = "# Managed by sandboxctl for client ";

/// The bind mounts a written unit of either target makes, as `Volume=` lines: the
/// Quadlet unit's own, or the plain service's `-v` words (quoted words whose escaping
/// is the same as a raw value's, since volume paths hold no quote or backslash).
/// For checks that read what an existing unit mounts.
pub fn volume_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = text
        .lines()
        .map(|l| l.trim().trim_end_matches('\\').trim_end());
    while let Some(line) = words.next() {
        if line.starts_with("Volume=") {
            out.push(line.to_owned());
        } else if line == "\"-v\""
            && let Some(v) = words.next()
        {
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            out.push(format!("Volume={v}"));
        }
    }
    out
}

/// Whether an existing unit file was written by sandboxctl.
pub fn is_ours(text: &str) -> bool {
    text.starts_with(MARKER)
}
