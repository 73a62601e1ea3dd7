//! `image build`.

use anyhow::Result;

use crate::cli::ImageCommand;
use crate::image::{self, BuildOptions};

pub fn image(cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build {
            base,
            tag,
            ca_certs,
            claude_version,
            codex_version,
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
            // What the tag held before, to say what changed.
            let before = image::inspect(&tag).ok();
            let summary = image::build(&BuildOptions {
                base,
                tag,
                ca_certs,
                build_args,
            })?;
            println!("{summary}");
            if let Some(old) = before {
                for line in image::changes(&old, &summary) {
                    println!("{line}");
                }
            }
            Ok(())
        }
    }
}
