//! The `sandboxctl` binary: parse the command line, run it, report errors.

use std::process::ExitCode;

fn main() -> ExitCode {
    sandboxctl::run(std::env::args_os())
}
