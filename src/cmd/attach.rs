//! `exec`: one command in the running sandbox with `podman exec`, which replaces
//! sandboxctl (terminal, signals and exit status are podman's own). `attach` is
//! `ops::attach`.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;

use anyhow::{Result, bail};

use crate::sandbox::layout::Layout;

/// The podman arguments that run one command in the sandbox.
pub fn exec_args(container: &str, command: &[String], tty: bool) -> Vec<String> {
    let mut args = vec!["exec".to_owned(), "-i".to_owned()];
    if tty {
        args.push("-t".to_owned());
        args.push("--detach-keys=".to_owned());
    }
    args.push(container.to_owned());
    args.extend(command.iter().cloned());
    args
}

pub fn exec(layout: &Layout, name: &str, command: &[String]) -> Result<()> {
    let (client, _) = crate::ops::clients::known_with_podman(layout, name)?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let err =
        crate::host::podman::command(exec_args(&client.container_name(), command, tty)).exec();
    bail!("cannot run {}: {err}", crate::host::podman::binary())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_command_line() {
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), "echo $HOME".to_owned()];
        assert_eq!(
            exec_args("agent-acme", &cmd, false),
            ["exec", "-i", "agent-acme", "sh", "-c", "echo $HOME"]
        );
        assert_eq!(
            exec_args("agent-acme", &cmd, true)[..4],
            ["exec", "-i", "-t", "--detach-keys="]
        );
    }
}
