//! Standard output, for everything a command prints there. A reader that stops reading
//! (`sandboxctl status | head -1`) closes the pipe; Rust ignores SIGPIPE, so the next
//! write fails with EPIPE, on which `println!` panics. Printing through `outln!`
//! instead drops what a closed pipe cannot take and carries on: the command still does
//! everything it was asked (a change is never left half-made because nobody read about
//! it) and exits with its own status — 0 when it succeeded, as ripgrep does and as
//! `logs` always did. SIGPIPE stays ignored, as the long-running `proxy` and `notify`
//! need: a peer that hangs up is an error on its socket, never a signal that kills them.
//!
//! Any other failure to write (a full disk behind `>`) fails the command, exit status
//! 1: at the end for what `outln!` printed (`failure`), at once for a writer of its own
//! (`ended`).

use std::io::{ErrorKind, Write as _};
use std::sync::Mutex;

/// What became of standard output: `None` while writes succeed.
static BROKEN: Mutex<Option<Broken>> = Mutex::new(None);

enum Broken {
    /// The reader went away: the rest is dropped, quietly.
    Closed,
    /// Another error, reported at the end.
    Failed(String),
}

/// `println!` for commands: see the module's documentation.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::base::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Writes `args` to standard output unless it is already broken.
pub fn print(args: std::fmt::Arguments<'_>) {
    let mut broken = BROKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if broken.is_some() {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        *broken = Some(if e.kind() == ErrorKind::BrokenPipe {
            Broken::Closed
        } else {
            Broken::Failed(e.to_string())
        });
    }
}

/// The outcome of writing standard output through a writer of its own (a script, a
/// log being followed): a closed pipe ends it quietly, another error is the command's.
pub fn ended(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            let mut broken = BROKEN
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            broken.get_or_insert(Broken::Closed);
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
        Ok(()) => Ok(()),
    }
}

/// Why standard output lost what the command printed, if it did for another reason than
/// a reader that went away.
pub fn failure() -> Option<String> {
    let broken = BROKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*broken {
        Some(Broken::Failed(why)) => Some(format!("cannot write to standard output: {why}")),
        _ => None,
    }
}
