//! `image build`.

use anyhow::Result;

use crate::base::output::outln;
use crate::cli::{AgentVersions, ImageCommand};
use crate::host::image::{self, BuildOptions};

pub fn image(cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build {
            base,
            tag,
            ca_certs,
            claude_version,
            codex_version,
            agents,
        } => {
            let mut build_args = Vec::new();
            for (arg, flag, v) in [
                ("CLAUDE_CODE_VERSION", "--claude-version", claude_version),
                ("CODEX_VERSION", "--codex-version", codex_version),
            ] {
                if let Some(v) = v {
                    image::check_version(flag, &v)?;
                    build_args.push((arg.to_owned(), v));
                }
            }
            if agents == Some(AgentVersions::Latest) {
                let mut found = Vec::new();
                for (arg, name, package) in [
                    ("CLAUDE_CODE_VERSION", "Claude Code", image::CLAUDE_PACKAGE),
                    ("CODEX_VERSION", "Codex", image::CODEX_PACKAGE),
                ] {
                    let v = image::latest_version(package)?;
                    found.push(format!("{name} {v}"));
                    build_args.push((arg.to_owned(), v));
                }
                outln!("newest on npm: {}", found.join(", "));
            }
            // What the tag held before, to say what changed.
            let before = image::inspect(&tag).ok();
            let summary = image::build(&BuildOptions {
                base,
                tag,
                ca_certs,
                build_args,
            })?;
            outln!("{summary}");
            if let Some(old) = before {
                for line in image::changes(&old, &summary) {
                    outln!("{line}");
                }
            }
            Ok(())
        }
    }
}
