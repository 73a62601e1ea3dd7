//! `allow`, `deny`, `policy` and `proxy`: a client's egress policy and the proxy that
//! enforces it.

use anyhow::{Result, bail};

use crate::base::output::outln;
use crate::cli::ProxyArgs;
use crate::proxy::policy::{self, EditReport};
use crate::proxy::{self, Listen, ProxyOptions};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{NetworkMode, Settings};

pub fn allow(layout: &Layout, name: &str, hosts: &[String], private: bool) -> Result<()> {
    let _lock = crate::txn::lock::ChangeLock::take(layout)?;
    let (client, settings) = crate::ops::clients::known(layout, name)?;
    let path = layout.policy_path(&client);
    if hosts.iter().any(|h| h == "@packages") {
        let found = crate::host::package_hosts::from_image(&settings.image)?;
        if !path.exists() {
            policy::create(&path, &policy::default_for(settings.agent)?)?;
        }
        policy::set_packages(&path, &found)?;
        outln!("packages bundle for {client}: {}", found.join(", "));
        // The image names these hosts, not the user: a broad one warns just as
        // `allow HOST` does.
        for w in found
            .iter()
            .filter_map(|h| policy::Pattern::parse(h).ok())
            .filter_map(|p| policy::broad_warning(&p))
        {
            eprintln!(
                "warning: {w} (a package registry of image {})",
                settings.image
            );
        }
    }
    let report = if private {
        policy::add_allow_private(&path, hosts)?
    } else {
        policy::add_allow(&path, hosts)?
    };
    print_report(&client, "allowed", &report);
    note_mode(&client, &settings);
    Ok(())
}

pub fn deny(layout: &Layout, name: &str, hosts: &[String]) -> Result<()> {
    let _lock = crate::txn::lock::ChangeLock::take(layout)?;
    let (client, settings) = crate::ops::clients::known(layout, name)?;
    let report = policy::add_deny(&layout.policy_path(&client), hosts)?;
    print_report(&client, "denied", &report);
    note_mode(&client, &settings);
    Ok(())
}

pub fn policy(layout: &Layout, name: &str) -> Result<()> {
    let (client, settings) = crate::ops::clients::known(layout, name)?;
    let path = layout.policy_path(&client);
    outln!(
        "Network of {client}: {} (policy {})",
        settings.network,
        path.display()
    );
    if !path.exists() {
        outln!("no policy file: the proxy refuses every connection");
        return Ok(());
    }
    match policy::load(&path) {
        Ok(p) => crate::base::output::print(format_args!("{}", policy::render_summary(&p))),
        Err(e) => outln!("the policy is invalid, so the proxy refuses every connection: {e:#}"),
    }
    Ok(())
}

pub fn proxy(layout: &Layout, args: &ProxyArgs) -> Result<()> {
    let client = ClientName::parse(&args.client)?;
    // Every path of the client from the unit's data dir, not this process's environment
    // (the user manager's lacks the `AGENT_SANDBOX_DATA` the CLI ran with).
    let layout = &match &args.data_dir {
        Some(dir) if !dir.is_absolute() => bail!(
            "--data-dir {} is not an absolute path; give an absolute directory",
            dir.display()
        ),
        Some(dir) => Layout {
            data_dir: dir.clone(),
            ..layout.clone()
        },
        None => layout.clone(),
    };
    let policy_path = args
        .policy
        .clone()
        .unwrap_or_else(|| layout.policy_path(&client));
    let listen = match (&args.listen_unix, args.listen_tcp) {
        (Some(path), _) => Listen::Unix(path.clone()),
        (None, Some(addr)) => Listen::Tcp(addr),
        (None, None) => Listen::SystemdSocket,
    };
    let mut opts = ProxyOptions::new(client.as_str(), policy_path, listen);
    opts.max_connections = args.max_connections as usize;
    opts.idle_timeout = std::time::Duration::from_secs(args.idle_timeout);
    opts.keys = proxy_keys(layout, &client);
    proxy::run(opts)
}

/// The key-adding configuration of a client's proxy: its agent's provider unless the
/// key is in the sandbox. Unreadable settings or no usable trust store mean no key is
/// added (requests on the key path are refused), never a proxy that does not start.
fn proxy_keys(layout: &Layout, client: &ClientName) -> Option<crate::proxy::keyed::Keys> {
    use crate::proxy::keyed::{CONNECT_TO_ENV, EXTRA_CA_ENV, KEY_DIR, Keys};
    let settings = match Settings::load(&layout.settings_path(client)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandboxctl proxy: no API key is added: {e:#}");
            return None;
        }
    };
    let provider = settings.proxy_held_key()?;
    // Test-only overrides (documented in docs/credentials.md): a CA file to trust and
    // the address to reach the provider at. Only a `test-hooks` build reads them.
    let test_env = |name: &str| {
        if cfg!(feature = "test-hooks") {
            std::env::var_os(name)
        } else {
            None
        }
    };
    let extra_ca = test_env(EXTRA_CA_ENV).map(std::path::PathBuf::from);
    let key_dir = layout.client_subdir(client, "config").join(KEY_DIR);
    match Keys::new(vec![provider], key_dir, extra_ca.as_deref()) {
        Ok(mut k) => {
            k.connect_to = test_env(CONNECT_TO_ENV)
                .and_then(|a| a.into_string().ok())
                .and_then(|a| a.parse().ok());
            k.extra_paths = settings.key_paths;
            Some(k)
        }
        Err(e) => {
            eprintln!("sandboxctl proxy: no API key is added: {e:#}");
            None
        }
    }
}

fn print_report(client: &ClientName, verb: &str, r: &EditReport) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if !r.added.is_empty() {
        outln!("{verb} for {client}: {}", r.added.join(", "));
    }
    if !r.unchanged.is_empty() {
        outln!("already {verb}: {}", r.unchanged.join(", "));
    }
    if !r.removed.is_empty() {
        outln!("removed: {}", r.removed.join(", "));
    }
}

fn note_mode(client: &ClientName, settings: &Settings) {
    if settings.network != NetworkMode::Allowlist {
        outln!(
            "note: {client}'s network is {}; the policy applies after `sandboxctl enable {client} --network allowlist`",
            settings.network
        );
    }
}
