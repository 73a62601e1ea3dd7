//! Shell completions and man pages, both made from the clap definitions of `crate::cli`,
//! so help, completions and man pages cannot disagree.
//!
//! Completions use `clap_complete`'s dynamic engine: the script a shell loads only
//! registers a function that runs `SANDBOXCTL_COMPLETE=<shell> sandboxctl -- WORDS…`, and
//! the binary answers with the candidates (subcommands, flags, and the names of the
//! clients on disk for every client argument). A client name reaches the terminal only
//! after `ClientName::parse` accepted it (`a-z`, `0-9`, `-`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{CompleteEnv, EnvCompleter};

use crate::cli::{Cli, Shell};
use crate::sandbox::layout::Layout;

/// The environment variable that turns a run of sandboxctl into a completion request.
pub const VAR: &str = "SANDBOXCTL_COMPLETE";

/// The program the scripts complete and run for candidates (looked up in `PATH`).
const BIN: &str = "sandboxctl";

/// The arguments that name a client.
const CLIENT_ARGS: &[&str] = &["client", "live"];

/// The completion engine of a shell.
fn completer(shell: Shell) -> &'static dyn EnvCompleter {
    match shell {
        Shell::Bash => &clap_complete::env::Bash,
        Shell::Zsh => &clap_complete::env::Zsh,
        Shell::Fish => &clap_complete::env::Fish,
    }
}

/// The command line definition with client names as the candidates of every client
/// argument.
pub fn command() -> clap::Command {
    with_client_candidates(Cli::command())
}

fn with_client_candidates(cmd: clap::Command) -> clap::Command {
    // `mut_args` keeps the arguments' order (positional indexes come from it).
    cmd.mut_args(|a| {
        if CLIENT_ARGS.contains(&a.get_id().as_str()) {
            a.add(ArgValueCandidates::new(client_names))
        } else {
            a
        }
    })
    .mut_subcommands(with_client_candidates)
}

/// The clients on disk; nothing when the layout cannot be read (a completion never
/// prints an error into the user's command line).
fn client_names() -> Vec<CompletionCandidate> {
    Layout::from_env()
        .and_then(|l| l.list_clients())
        .unwrap_or_default()
        .into_iter()
        .map(|c| CompletionCandidate::new(c.as_str()))
        .collect()
}

/// Answers a completion request when `SANDBOXCTL_COMPLETE` is set; returns whether it
/// did (the caller then exits).
pub fn complete_if_asked(args: &[std::ffi::OsString]) -> Result<bool> {
    let cwd = std::env::current_dir().ok();
    CompleteEnv::with_factory(command)
        .var(VAR)
        .bin(BIN)
        .completer(BIN)
        .try_complete(args.iter().cloned(), cwd.as_deref())
        .context("cannot complete the command line")
}

/// Writes the completion script of `shell`.
pub fn script(shell: Shell, out: &mut dyn Write) -> Result<()> {
    let name = Cli::command().get_name().to_owned();
    let mut text = Vec::new();
    completer(shell)
        .write_registration(VAR, &name, BIN, BIN, &mut text)
        .context("cannot write the completion script")?;
    let mut text = String::from_utf8(text).context("the completion script is not UTF-8")?;
    if shell == Shell::Zsh {
        text = zsh_autoloadable(&text)?;
    }
    out.write_all(text.as_bytes())
        .context("cannot write the completion script")
}

/// The zsh script also works as an autoloaded `_sandboxctl` in `fpath` (where the
/// package puts it): zsh then runs the file as the function's body at the first Tab,
/// which must complete right away instead of only registering the completer.
fn zsh_autoloadable(text: &str) -> Result<String> {
    let register = format!("compdef _clap_dynamic_completer_{BIN} {BIN}\n");
    let Some(at) = text.rfind(&register) else {
        anyhow::bail!(
            "clap_complete's zsh script has no `{}` line",
            register.trim_end()
        );
    };
    Ok(format!(
        "{}if [[ ${{funcstack[1]-}} == _{BIN} ]]; then\n    _clap_dynamic_completer_{BIN} \"$@\"\nelse\n    {register}fi\n{}",
        &text[..at],
        &text[at + register.len()..]
    ))
}

/// Writes `sandboxctl.1` and one page per visible subcommand (`sandboxctl-enable.1`,
/// `sandboxctl-image-build.1`, …) into `dir`; returns how many.
pub fn write_man_pages(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    let count = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count();
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_argument_gets_the_client_names() {
        fn walk(cmd: &clap::Command, found: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if CLIENT_ARGS.contains(&a.get_id().as_str()) {
                    assert!(
                        a.get::<ArgValueCandidates>().is_some(),
                        "{} {} has no candidates",
                        cmd.get_name(),
                        a.get_id()
                    );
                    found.push(format!("{} {}", cmd.get_name(), a.get_id()));
                }
            }
            for s in cmd.get_subcommands() {
                walk(s, found);
            }
        }
        let mut found = Vec::new();
        walk(&command(), &mut found);
        for expected in [
            "enable client",
            "attach client",
            "doctor live",
            "run client",
        ] {
            assert!(found.iter().any(|f| f == expected), "{expected}: {found:?}");
        }
    }

    #[test]
    fn scripts_call_sandboxctl_with_its_own_variable() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            script(shell, &mut out).expect("script");
            let text = String::from_utf8(out).expect("UTF-8");
            assert!(text.contains("SANDBOXCTL_COMPLETE="), "{shell:?}: {text}");
            assert!(text.contains("sandboxctl"), "{shell:?}: {text}");
        }
    }
}
