//! The agent image (being filled in): build, existence check, build-if-missing.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Result, bail};

pub const DEFAULT_IMAGE: &str = "localhost/agent-sandbox:latest";

pub struct BuildOptions {
    pub base: Option<String>,
    pub tag: String,
    pub ca_certs: Vec<PathBuf>,
    pub build_args: Vec<(String, String)>,
}

pub struct BuildSummary {
    pub tag: String,
}

impl fmt::Display for BuildSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "built {}", self.tag)
    }
}

pub fn build(_opts: &BuildOptions) -> Result<BuildSummary> {
    bail!("image build is not implemented yet")
}

pub fn exists(image: &str) -> Result<bool> {
    Ok(crate::podman::command(["image", "exists", image])
        .status()
        .is_ok_and(|s| s.success()))
}

pub fn ensure(image: &str) -> Result<()> {
    if exists(image)? {
        Ok(())
    } else {
        bail!("image {image} is missing: build it with `sandboxctl image build`")
    }
}
