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
        } => {
            let summary = image::build(&BuildOptions {
                base,
                tag,
                ca_certs,
                build_args: Vec::new(),
            })?;
            println!("{summary}");
            Ok(())
        }
    }
}
