//! sandboxctl: per-client coding-agent sandboxes on rootless Podman, run as Quadlet
//! units by the user's systemd.

pub mod base;
pub mod cli;
mod cmd;
pub mod host;
pub mod notify;
pub mod ops;
pub mod proxy;
pub mod render;
pub mod sandbox;
pub mod state;
pub mod txn;
pub mod units;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// Parses `args`, runs the command and maps the outcome to an exit code: 0 on success,
/// 1 with `sandboxctl: <error chain>` on stderr on failure, 2 for usage errors. A
/// closed standard output changes neither (see `output`).
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    match ops::completions::complete_if_asked(&args) {
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
        Ok(()) => match base::output::failure() {
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
