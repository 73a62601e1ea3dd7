//! Desktop notifications: `org.freedesktop.Notifications.Notify` on the session bus
//! (or the bus `SANDBOXCTL_NOTIFY_BUS` names, for tests), with zbus's blocking API like
//! `systemd`. Notification servers may render the body as markup, so every text is
//! escaped here, although event fields are already restricted to a plain charset.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Event, Kind, Notifier};
use crate::sandbox::client::ClientName;

/// The environment variable that points the service at another bus (tests set it on
/// the user manager with `systemctl --user set-environment`).
pub const BUS_ENV: &str = "SANDBOXCTL_NOTIFY_BUS";

const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// Escapes the characters notification markup gives a meaning to.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The summary and body of an event's notification, escaped.
pub fn texts(client: &ClientName, event: &Event) -> (String, String) {
    let client = escape_markup(client.as_str());
    let session = escape_markup(&event.session);
    let summary = match event.kind {
        Kind::Waiting => format!("{client}: {session} is waiting for input"),
        Kind::Finished => format!("{client}: {session} finished"),
        Kind::Working => format!("{client}: {session} is working"),
    };
    let body = format!("sandboxctl client {client}, session {session}");
    (summary, body)
}

/// Sends notifications on a D-Bus address, connecting for each one (they are rare).
pub struct Desktop {
    address: String,
}

impl Desktop {
    /// `SANDBOXCTL_NOTIFY_BUS` if set, else the session bus.
    pub fn from_env() -> Result<Self> {
        let address = match std::env::var(BUS_ENV).ok().filter(|a| !a.is_empty()) {
            Some(a) => a,
            None => crate::host::systemd::session_bus_address()?,
        };
        Ok(Self { address })
    }
}

impl Notifier for Desktop {
    fn notify(&self, client: &ClientName, event: &Event) -> Result<()> {
        let connection = zbus::blocking::connection::Builder::address(self.address.as_str())
            .map(|b| b.method_timeout(Duration::from_secs(5)))
            .and_then(zbus::blocking::connection::Builder::build)
            .with_context(|| format!("cannot connect to the session bus at {}", self.address))?;
        let (summary, body) = texts(client, event);
        let hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
        connection
            .call_method(
                Some(SERVICE),
                PATH,
                Some(SERVICE),
                "Notify",
                &(
                    "sandboxctl",
                    0u32,
                    "",
                    summary.as_str(),
                    body.as_str(),
                    Vec::<&str>::new(),
                    hints,
                    -1i32,
                ),
            )
            .context("the notification server refused Notify")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape_markup("<b>a&b</b> \"'\n"),
            "&lt;b&gt;a&amp;b&lt;/b&gt; &quot;&apos; "
        );
        let client = ClientName::parse("acme").expect("name");
        let (summary, body) = texts(
            &client,
            &Event {
                kind: Kind::Waiting,
                session: "wt-1".into(),
            },
        );
        assert_eq!(summary, "acme: wt-1 is waiting for input");
        assert_eq!(body, "sandboxctl client acme, session wt-1");
    }
}
