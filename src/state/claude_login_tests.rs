//! Tests of `claude_login`.

use super::*;

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = tmp.path().join("host/.claude");
    let client = tmp.path().join("client/claude");
    std::fs::create_dir_all(&host).expect("mkdir");
    std::fs::create_dir_all(&client).expect("mkdir");
    (tmp, host, client)
}

#[test]
fn copies_host_login_once_and_leaves_host_alone() {
    let (_tmp, host, client) = setup();
    std::fs::write(host.join(".credentials.json"), b"{\"token\":\"t1\"}").expect("write");
    let said = prepare(&client, Some(&host), false).expect("prepare");
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(
        std::fs::read(client.join(".credentials.json")).expect("copied"),
        b"{\"token\":\"t1\"}"
    );
    // A later refresh inside the sandbox is not overwritten by the host's file.
    std::fs::write(client.join(".credentials.json"), b"refreshed").expect("write");
    assert!(
        prepare(&client, Some(&host), false)
            .expect("again")
            .is_empty()
    );
    assert_eq!(
        std::fs::read(client.join(".credentials.json")).expect("kept"),
        b"refreshed"
    );
    assert_eq!(
        std::fs::read(host.join(".credentials.json")).expect("host"),
        b"{\"token\":\"t1\"}"
    );
    let state = std::fs::read_to_string(client.join(".claude.json")).expect("state");
    assert!(state.contains("\"hasCompletedOnboarding\": true"));
}

fn login(token: &str, expires: u64) -> String {
    format!(
        "{{\"claudeAiOauth\": {{\"accessToken\": \"a-{token}\", \"refreshToken\": \"r-{token}\", \"expiresAt\": {expires}}}}}"
    )
}

#[test]
fn shared_login_goes_both_ways_the_fresher_one_winning() {
    let (_tmp, shared, client) = setup();
    let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
    std::fs::write(&sc, login("host", 100)).expect("write");
    sync_shared(&client, &shared).expect("sync");
    assert_eq!(
        std::fs::read_to_string(&cc).expect("client"),
        login("host", 100)
    );
    // The sandbox refreshed: the host gets the new refresh token.
    std::fs::write(&cc, login("sandbox", 200)).expect("write");
    let said = sync_shared(&client, &shared).expect("sync");
    assert!(
        said[0].contains("copied the sandbox's refreshed"),
        "{said:?}"
    );
    assert_eq!(json_file(&sc), json_file(&cc));
    // The host refreshed later: the sandbox gets it.
    std::fs::write(&sc, login("host2", 300)).expect("write");
    assert!(sync_shared(&client, &shared).expect("sync").is_empty());
    assert_eq!(
        std::fs::read_to_string(&cc).expect("client"),
        login("host2", 300)
    );
}

#[test]
fn a_bad_sandbox_login_is_never_copied_to_the_host() {
    let (tmp, shared, client) = setup();
    let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
    std::fs::write(&sc, login("host", 100)).expect("write");
    let secret = tmp.path().join("id_rsa");
    std::fs::write(&secret, login("stolen", 999)).expect("write");
    for bad in [
        "not json".to_owned(),
        "{\"claudeAiOauth\": {\"accessToken\": 1}}".to_owned(),
        format!("{}{}", login("big", 900), " ".repeat(70 * 1024)),
    ] {
        std::fs::write(&cc, &bad).expect("write");
        let said = sync_shared(&client, &shared).expect("sync");
        assert!(said[0].contains("ignoring the sandbox's login"), "{said:?}");
        assert_eq!(
            std::fs::read_to_string(&sc).expect("host"),
            login("host", 100)
        );
    }
    // A symlink is not followed (and so not copied), nor is a FIFO waited on.
    std::fs::remove_file(&cc).expect("rm");
    std::os::unix::fs::symlink(&secret, &cc).expect("symlink");
    let said = sync_shared(&client, &shared).expect("sync");
    assert!(said[0].contains("symbolic link"), "{said:?}");
    assert_eq!(
        std::fs::read_to_string(&sc).expect("host"),
        login("host", 100)
    );
    std::fs::remove_file(&cc).expect("rm");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &cc,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let said = sync_shared(&client, &shared).expect("sync");
    assert!(said[0].contains("not a regular file"), "{said:?}");
    assert_eq!(
        std::fs::read_to_string(&sc).expect("host"),
        login("host", 100)
    );
}

#[test]
fn a_shared_file_that_is_not_a_login_is_left_alone() {
    let (_tmp, shared, client) = setup();
    let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
    std::fs::write(&sc, "{\"someOtherFormat\": 1}").expect("write");
    std::fs::write(&cc, login("sandbox", 200)).expect("write");
    let said = sync_shared(&client, &shared).expect("a warning, not an error");
    assert!(said[0].contains("not sharing the Claude login"), "{said:?}");
    assert_eq!(
        std::fs::read_to_string(&sc).expect("host"),
        "{\"someOtherFormat\": 1}"
    );
}

/// Milliseconds since the epoch, as `expiresAt` counts them.
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit u64")
}

const HOUR_MS: u64 = 3_600_000;

/// `claudeAiOauth` as Claude Code writes it for a Max subscription.
fn oauth(tag: &str, expires_at: u64) -> serde_json::Value {
    serde_json::json!({
        "accessToken": format!("sk-ant-oat01-{tag}"),
        "refreshToken": format!("sk-ant-ort01-{tag}"),
        "expiresAt": expires_at,
        "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
        "subscriptionType": "max",
        "rateLimitTier": "default_claude_max_5x",
    })
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
}

/// The attacks of an agent that writes its sandbox's login: none reaches the shared
/// dir, and the user is told why.
#[test]
fn a_login_the_agent_forged_is_never_copied_back() {
    let now = now_ms();
    let host = serde_json::json!({"claudeAiOauth": oauth("host", now + HOUR_MS)});
    let host_text = host.to_string();
    let forged = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::json!({"claudeAiOauth": oauth("evil", now + 2 * HOUR_MS)});
        f(&mut v);
        v
    };
    let cases = [
        // Far-future expiry: always "fresher", never refreshed on the host.
        (
            "far-future expiresAt",
            forged(&|v| v["claudeAiOauth"]["expiresAt"] = (now + 365 * 24 * HOUR_MS).into()),
        ),
        // Keys of its own at the top or in the login.
        (
            "extra top-level key",
            forged(&|v| v["oauthAccount"] = serde_json::json!({"organizationUuid": "evil"})),
        ),
        (
            "extra key in claudeAiOauth",
            forged(&|v| v["claudeAiOauth"]["organizationUuid"] = "evil-org".into()),
        ),
        // Another account's login: another plan or other scopes.
        (
            "another subscriptionType",
            forged(&|v| v["claudeAiOauth"]["subscriptionType"] = "enterprise".into()),
        ),
        (
            "other scopes",
            forged(&|v| {
                v["claudeAiOauth"]["scopes"] = serde_json::json!(["user:inference"]);
            }),
        ),
        (
            "another rateLimitTier",
            forged(&|v| v["claudeAiOauth"]["rateLimitTier"] = "enterprise_org".into()),
        ),
    ];
    for (what, login) in cases {
        let (_tmp, shared, client) = setup();
        let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
        std::fs::write(&sc, &host_text).expect("write");
        std::fs::write(&cc, login.to_string()).expect("write");
        let said = sync_shared(&client, &shared).expect("a warning, not an error");
        assert_eq!(
            std::fs::read_to_string(&sc).expect("host"),
            host_text,
            "{what}: the shared login is the host's"
        );
        assert!(
            said.len() == 1
                && said[0].starts_with("warning: not copying the sandbox's Claude login back"),
            "{what}: {said:?}"
        );
        assert_eq!(
            json_file(&cc),
            login,
            "{what}: the sandbox's file is left as it is"
        );
    }
}

/// What comes back of a sandbox's login, at a fixed "now": the host's file with the
/// three rotated fields, or the reason it is not a refresh of the host's login.
#[test]
fn only_a_refresh_of_the_hosts_login_comes_back() {
    const NOW: u64 = 1_800_000_000_000;
    const DAY: u64 = 24 * HOUR_MS;
    let host = serde_json::json!({
        "claudeAiOauth": oauth("host", NOW - HOUR_MS),
        "mcpOAuth": {"notion": {"accessToken": "host-mcp"}},
    });
    let sandbox = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::json!({"claudeAiOauth": oauth("sandbox", NOW + 8 * HOUR_MS)});
        f(&mut v);
        v
    };
    let merged = |expires_at: u64| {
        let mut want = host.clone();
        want["claudeAiOauth"] = oauth("sandbox", expires_at);
        Ok(want)
    };
    let back = |s: &serde_json::Value| {
        refreshed_login(&host, s, NOW)
            .map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON"))
    };
    let ok_cases = [
        (sandbox(&|_| {}), merged(NOW + 8 * HOUR_MS)),
        // A day ahead is the bound; an expired one is no threat (and no use).
        (
            sandbox(&|v| v["claudeAiOauth"]["expiresAt"] = (NOW + DAY).into()),
            merged(NOW + DAY),
        ),
        (
            sandbox(&|v| v["claudeAiOauth"]["expiresAt"] = (NOW - DAY).into()),
            merged(NOW - DAY),
        ),
        // The sandbox's MCP tokens stay in the sandbox; the host keeps its own.
        (
            sandbox(&|v| v["mcpOAuth"] = serde_json::json!({"x": {"accessToken": "s"}})),
            merged(NOW + 8 * HOUR_MS),
        ),
    ];
    for (s, want) in ok_cases {
        assert_eq!(back(&s), want, "{s}");
    }
    let refused = [
        (
            sandbox(&|v| v["claudeAiOauth"]["expiresAt"] = (NOW + DAY + 1).into()),
            "more than a day from now",
        ),
        (
            sandbox(&|v| v["claudeAiOauth"]["subscriptionType"] = "team".into()),
            "field \"subscriptionType\" is not the host's",
        ),
        (
            sandbox(&|v| v["claudeAiOauth"]["scopes"] = serde_json::json!(["user:inference"])),
            "field \"scopes\" is not the host's",
        ),
        // A field only one side has is not equal either.
        (
            sandbox(&|v| {
                v["claudeAiOauth"]
                    .as_object_mut()
                    .expect("object")
                    .remove("rateLimitTier");
            }),
            "field \"rateLimitTier\" is not the host's",
        ),
        (
            sandbox(&|v| v["claudeAiOauth"]["organizationUuid"] = "evil".into()),
            "field \"organizationUuid\" is not the host's",
        ),
        (
            sandbox(&|v| v["primaryApiKey"] = "sk-ant-api03-evil".into()),
            "the key \"primaryApiKey\", which a Claude login does not",
        ),
        (
            sandbox(&|v| v["x\u{1b}]52;c;evil\u{7}"] = 1.into()),
            "the key \"x\\u{1b}]52;c;evil\\u{7}\"",
        ),
    ];
    for (s, want) in refused {
        let err = back(&s).expect_err("refused");
        assert!(err.contains(want), "{s}: {err}");
    }
}

/// With no login in the shared dir there is nothing to check the sandbox's against:
/// an agent's login never becomes the host's.
#[test]
fn a_sandbox_login_is_not_copied_into_a_shared_dir_without_one() {
    let (_tmp, shared, client) = setup();
    let login = serde_json::json!({"claudeAiOauth": oauth("sandbox", now_ms() + HOUR_MS)});
    std::fs::write(client.join(CREDENTIALS), login.to_string()).expect("write");
    let said = sync_shared(&client, &shared).expect("sync");
    assert!(!shared.join(CREDENTIALS).exists(), "{said:?}");
    assert!(said[0].contains("log in on the host"), "{said:?}");
}

/// A refresh inside (same login, new tokens, an expiry hours ahead) reaches the
/// host: the tokens and their expiry, nothing else; the host's other keys (MCP
/// servers' tokens) stay the host's, the sandbox's stay in the sandbox.
#[test]
fn a_refresh_inside_copies_back_the_new_tokens_only() {
    let (_tmp, shared, client) = setup();
    let (sc, cc) = (shared.join(CREDENTIALS), client.join(CREDENTIALS));
    let now = now_ms();
    let host = serde_json::json!({
        "claudeAiOauth": oauth("host", now - HOUR_MS),
        "mcpOAuth": {"notion": {"accessToken": "host-mcp"}},
    });
    std::fs::write(&sc, host.to_string()).expect("write");
    let refreshed = serde_json::json!({
        "claudeAiOauth": oauth("sandbox", now + 8 * HOUR_MS),
        "mcpOAuth": {"evil": {"accessToken": "sandbox-mcp"}},
    });
    std::fs::write(&cc, refreshed.to_string()).expect("write");
    let said = sync_shared(&client, &shared).expect("sync");
    assert!(
        said[0].contains("copied the sandbox's refreshed"),
        "{said:?}"
    );
    assert_eq!(
        json_file(&sc),
        serde_json::json!({
            "claudeAiOauth": oauth("sandbox", now + 8 * HOUR_MS),
            "mcpOAuth": {"notion": {"accessToken": "host-mcp"}},
        })
    );
    let mode = std::fs::metadata(&sc).expect("stat").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // Done: the next sync finds the same login on both sides and writes nothing.
    assert!(sync_shared(&client, &shared).expect("sync").is_empty());
    assert_eq!(json_file(&cc), refreshed);
}

#[test]
fn api_key_or_no_host_login_copies_nothing() {
    let (_tmp, host, client) = setup();
    std::fs::write(host.join(".credentials.json"), b"x").expect("write");
    assert!(
        prepare(&client, Some(&host), true)
            .expect("prepare")
            .is_empty()
    );
    assert!(!client.join(".credentials.json").exists());
    let (_tmp2, _host2, client2) = setup();
    assert!(prepare(&client2, None, false).expect("prepare").is_empty());
    assert!(!client2.join(".credentials.json").exists());
}
