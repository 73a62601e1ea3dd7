//! Tests of `model`.

use super::parts::*;
use super::*;
use crate::host::fixed_profile;

fn spec(network: NetworkMode, host: &HostProfile) -> SandboxSpec {
    let client = ClientName::parse("acme").expect("name");
    let settings = Settings {
        network,
        projects: vec!["/p/web".into()],
        ..Settings::default()
    };
    let layout = Layout::under(Path::new("/home/u"));
    SandboxSpec::new(&Sandbox {
        client: &client,
        settings: &settings,
        layout: &layout,
        host,
    })
    .expect("spec")
}

#[test]
fn auto_update_policy_follows_the_image_reference() {
    let p = |i: &str| AutoUpdate::for_image(i);
    assert_eq!(p("localhost/agent-sandbox:latest"), Some(AutoUpdate::Local));
    assert_eq!(
        p("registry.example.com/team/agent:1"),
        Some(AutoUpdate::Registry)
    );
    assert_eq!(p("registry:5000/agent"), Some(AutoUpdate::Registry));
    assert_eq!(p("agent-sandbox:latest"), None);
    assert_eq!(p("team/agent:1"), None);
    assert_eq!(p("registry.example.com/agent@sha256:abcd"), None);
}

#[test]
fn adaptations_follow_the_host_with_reasons() {
    let old = fixed_profile(
        Version::new(4, 3, 1),
        Version::new(5, 4, 2),
        Cgroups::Hybrid,
        false,
    );
    let kinds: Vec<AdaptationKind> = spec(NetworkMode::Open, &old)
        .adaptations
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            AdaptationKind::CgroupsDisabled,
            AdaptationKind::RemoveStaleCidFile,
            AdaptationKind::LogToFile {
                runtime_relative: "agent-acme.log".into()
            },
        ]
    );
    let modern = fixed_profile(
        Version::new(5, 4, 2),
        Version::new(5, 4, 2),
        Cgroups::V2,
        true,
    );
    assert!(spec(NetworkMode::Open, &modern).adaptations.is_empty());
}

/// Autonomy and each agent argument are a variable of their own, verbatim.
#[test]
fn agent_args_are_one_variable_each() {
    let client = ClientName::parse("acme").expect("name");
    let env = |s: &Settings| -> Vec<(String, String)> {
        environment(&client, s)
            .into_iter()
            .filter(|e| e.name.starts_with("SANDBOX_A") && e.name != "SANDBOX_AGENT")
            .map(|e| (e.name, e.value))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        env(&Settings::default()),
        pairs(&[("SANDBOX_AUTONOMY", "ask"), ("SANDBOX_AGENT_ARGC", "0")])
    );
    let s = Settings {
        autonomy: Autonomy::Auto,
        agent_args: vec!["--model".into(), "a \"b\" $c 100%".into(), String::new()],
        ..Settings::default()
    };
    assert_eq!(
        env(&s),
        pairs(&[
            ("SANDBOX_AUTONOMY", "auto"),
            ("SANDBOX_AGENT_ARGC", "3"),
            ("SANDBOX_AGENT_ARG_1", "--model"),
            ("SANDBOX_AGENT_ARG_2", "a \"b\" $c 100%"),
            ("SANDBOX_AGENT_ARG_3", ""),
        ])
    );
}

#[test]
fn allowlist_is_no_network_plus_the_proxy_socket() {
    let host = fixed_profile(
        Version::new(5, 4, 2),
        Version::new(5, 4, 2),
        Cgroups::V2,
        true,
    );
    let s = spec(NetworkMode::Allowlist, &host);
    assert_eq!(s.network, Network::None);
    assert_eq!(s.working_dir, "/p/web");
    assert_eq!(s.dependencies[0].unit, "sandboxctl-proxy@acme.socket");
    assert!(s.binds().any(
        |b| b.source == BindSource::Runtime("agent-sandbox/proxy/acme".into())
            && b.target == proxy_units::CONTAINER_SOCKET_DIR
    ));
    assert_eq!(spec(NetworkMode::Open, &host).network, Network::Default);
    assert_eq!(
        spec(NetworkMode::Open, &host).dependencies[0].unit,
        "sandboxctl-notify@acme.socket"
    );
}

#[test]
fn notify_mounts_the_event_dir_read_only_or_nothing() {
    let host = fixed_profile(
        Version::new(5, 4, 2),
        Version::new(5, 4, 2),
        Cgroups::V2,
        true,
    );
    let client = ClientName::parse("acme").expect("name");
    let layout = Layout::under(Path::new("/home/u"));
    let build = |notify| {
        let settings = Settings {
            network: NetworkMode::None,
            notify,
            ..Settings::default()
        };
        SandboxSpec::new(&Sandbox {
            client: &client,
            settings: &settings,
            layout: &layout,
            host: &host,
        })
        .expect("spec")
    };
    let on = build(true);
    let event_binds: Vec<&Bind> = on
        .binds()
        .filter(|b| b.target == crate::notify::CONTAINER_DIR)
        .collect();
    assert_eq!(event_binds.len(), 1);
    assert_eq!(
        event_binds[0].source,
        BindSource::Runtime("agent-sandbox/events/acme".into())
    );
    assert_eq!(event_binds[0].access, Access::ReadOnly);
    assert_eq!(
        on.dependencies
            .iter()
            .map(|d| d.unit.as_str())
            .collect::<Vec<_>>(),
        ["sandboxctl-notify@acme.socket"]
    );
    let off = build(false);
    assert!(
        off.binds()
            .all(|b| b.target != crate::notify::CONTAINER_DIR)
    );
    assert!(off.dependencies.is_empty());
}

#[test]
fn a_stored_api_key_is_held_by_the_proxy_unless_it_goes_inside() {
    let client = ClientName::parse("acme").expect("name");
    let layout = Layout::under(Path::new("/home/u"));
    let host = fixed_profile(
        Version::new(5, 0, 0),
        Version::new(5, 4, 2),
        Cgroups::V2,
        true,
    );
    let build = |agent, network, secrets: &[&str], key_in_sandbox| {
        let settings = Settings {
            agent,
            network,
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
            key_in_sandbox,
            ..Settings::default()
        };
        SandboxSpec::new(&Sandbox {
            client: &client,
            settings: &settings,
            layout: &layout,
            host: &host,
        })
        .expect("spec")
    };
    let env = |s: &SandboxSpec, name: &str| {
        s.environment
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.clone())
    };
    let mounted =
        |s: &SandboxSpec| -> Vec<String> { s.secrets.iter().map(|m| m.target.clone()).collect() };
    let keys = ["ANTHROPIC_API_KEY", "GH_TOKEN"];
    let held = build(Agent::Claude, NetworkMode::Allowlist, &keys, false);
    assert_eq!(mounted(&held), ["GH_TOKEN"]);
    assert_eq!(
        env(&held, "ANTHROPIC_BASE_URL").as_deref(),
        Some("http://127.0.0.1:3128/anthropic")
    );
    assert_eq!(
        env(&held, "ANTHROPIC_API_KEY").as_deref(),
        Some(crate::proxy::keyed::PLACEHOLDER)
    );
    let codex = build(
        Agent::Codex,
        NetworkMode::Allowlist,
        &["OPENAI_API_KEY"],
        false,
    );
    assert!(mounted(&codex).is_empty());
    assert_eq!(
        env(&codex, "OPENAI_BASE_URL").as_deref(),
        Some("http://127.0.0.1:3128/openai/v1")
    );
    // The key inside (asked for, or no proxy to hold it), or no key at all
    // (subscription login): no base URL, no placeholder.
    for s in [
        build(Agent::Claude, NetworkMode::Allowlist, &keys, true),
        build(Agent::Claude, NetworkMode::Open, &keys, false),
    ] {
        assert_eq!(mounted(&s), keys);
        assert_eq!(env(&s, "ANTHROPIC_BASE_URL"), None);
        assert_eq!(env(&s, "ANTHROPIC_API_KEY"), None);
    }
    let login = build(Agent::Claude, NetworkMode::Allowlist, &["GH_TOKEN"], false);
    assert_eq!(env(&login, "ANTHROPIC_BASE_URL"), None);
    assert_eq!(env(&login, "ANTHROPIC_API_KEY"), None);
}
