//! sandboxctl: per-client coding-agent sandboxes on rootless Podman, run as Quadlet
//! units by the user's systemd.

pub mod agent;
pub mod agent_file;
pub mod atomic;
pub mod claude_login;
pub mod cli;
pub mod client;
mod cmd;
pub mod completions;
pub mod doctor;
pub mod escape;
pub mod fault;
pub mod forward;
pub mod git_guard;
pub mod git_identity;
pub mod host;
pub mod image;
pub mod journal;
pub mod layout;
pub mod limits;
pub mod lock;
pub mod log_file;
pub mod logs;
pub mod made_dirs;
pub mod mask;
pub mod model;
pub mod notify;
pub mod options;
pub mod output;
pub mod package_hosts;
pub mod plan;
pub mod podman;
pub mod ports;
pub mod proxy;
pub mod proxy_units;
pub mod render;
pub mod secrets;
pub mod settings;
pub mod sizes;
pub mod systemd;
pub mod terminal;
pub mod unit_text;
pub mod user_config;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// Parses `args`, runs the command and maps the outcome to an exit code: 0 on success,
/// 1 with `sandboxctl: <error chain>` on stderr on failure, 2 for usage errors. A
/// closed standard output changes neither (see `output`).
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    match completions::complete_if_asked(&args) {
        Ok(false) => {}
        Ok(true) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandboxctl: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cmd::dispatch(cli) {
        Ok(()) => match output::failure() {
            None => ExitCode::SUCCESS,
            Some(why) => {
                eprintln!("sandboxctl: {why}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("sandboxctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
