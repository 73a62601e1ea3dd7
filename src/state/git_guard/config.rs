//! The user's own git config that makes host git run what the agent wrote: the keys
//! that do, read from the global configs.

use std::fs;
use std::path::PathBuf;

use std::io::Read as _;

#[allow(clippy::wildcard_imports)]
use super::*;

/// Settings in a project's git config that make git on the host run a program. Shown by
/// `enable`, since a config the agent wrote before it was protected stays in effect.
pub fn risky_config_keys(config_text: &str) -> Vec<String> {
    const RISKY: [&str; 10] = [
        "fsmonitor",
        "hookspath",
        "sshcommand",
        "pager",
        "editor",
        "askpass",
        "gitproxy",
        "textconv",
        "uploadpack",
        "receivepack",
    ];
    let mut out = Vec::new();
    let mut section = String::new();
    for line in config_text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix('[') {
            section = rest
                .split([']', ' ', '"'])
                .next()
                .unwrap_or("")
                .to_lowercase();
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let key = key.trim().to_lowercase();
        let risky = RISKY.contains(&key.as_str())
            || (section == "alias" && value.trim_start().trim_start_matches('"').starts_with('!'))
            || (section == "filter" && ["clean", "smudge", "process"].contains(&key.as_str()))
            || ((section == "diff" || section == "merge")
                && ["command", "driver"].contains(&key.as_str()))
            || (section == "credential" && key == "helper")
            || section == "include"
            || section == "includeif";
        if risky {
            out.push(format!("{section}.{key}"));
        }
    }
    out.dedup();
    out
}

/// The user's own git config files (`$GIT_CONFIG_GLOBAL`, else `~/.gitconfig` and
/// `$XDG_CONFIG_HOME/git/config`), as text; includes in them are not followed.
pub(crate) fn global_configs() -> Vec<String> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("GIT_CONFIG_GLOBAL") {
        files.push(PathBuf::from(f));
    } else {
        if let Some(home) = dirs::home_dir() {
            files.push(home.join(".gitconfig"));
        }
        if let Some(config) = dirs::config_dir() {
            files.push(config.join("git/config"));
        }
    }
    // Your own files (a symlinked ~/.gitconfig is fine here), read bounded all the same.
    files
        .iter()
        .filter_map(|f| {
            let mut text = String::new();
            fs::File::open(f)
                .ok()?
                .take(MAX_GIT_FILE)
                .read_to_string(&mut text)
                .ok()?;
            Some(text)
        })
        .collect()
}

/// The values of `section.key` (both lower case; a subsection is ignored) in a git
/// config text, unquoted, in order.
pub(crate) fn config_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix('[') {
            current = rest
                .split([']', ' ', '"'])
                .next()
                .unwrap_or("")
                .to_lowercase();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = l.split_once('=')
            && k.trim().eq_ignore_ascii_case(key)
        {
            out.push(v.trim().trim_matches('"').to_owned());
        }
    }
    out
}
