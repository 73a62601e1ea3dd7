//! `start`, `stop`, `restart`.

use anyhow::Result;

use crate::host::systemd::{Systemd, Verb};
use crate::sandbox::layout::Layout;

pub fn job(layout: &Layout, name: &str, verb: Verb) -> Result<()> {
    // Stopping needs only systemd; starting runs podman.
    let (client, settings) = if matches!(verb, Verb::Stop) {
        crate::ops::clients::known(layout, name)?
    } else {
        crate::ops::clients::known_with_podman(layout, name)?
    };
    let systemd = Systemd::connect_user()?;
    crate::ops::start::run(layout, &systemd, &client, &settings, verb)
}
