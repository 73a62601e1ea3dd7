//! sandboxctl against a fake systemd user manager on a private `dbus-daemon`: the zbus
//! client in `src/systemd.rs` (module `client`), and the commands that talk to systemd,
//! run as the real binary (module `cli`). The real user manager is exercised by the
//! system tests (`tests/system.rs`).

mod client {
    use sandboxctl::host::systemd::{ServiceOutcome, Systemd, SystemdError, UnitState, Verb};

    use crate::support::fake_systemd::{Call, FakeSystemd, SignalTiming};

    const UNIT: &str = "agent-acme.service";

    fn connect(fake: &FakeSystemd) -> Systemd {
        Systemd::connect(fake.address()).expect("connect to the fake manager")
    }

    fn call(method: &'static str, args: &[&str]) -> Call {
        Call {
            method,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// The job's result as `SystemdError::JobFailed` fields, or `None` for success.
    fn job_result(fake: &FakeSystemd, verb: Verb) -> Option<(String, &'static str, String)> {
        match connect(fake).run_job(verb, UNIT) {
            Ok(()) => None,
            Err(e) => match e.downcast_ref::<SystemdError>() {
                Some(SystemdError::JobFailed { unit, verb, result }) => {
                    Some((unit.clone(), *verb, result.clone()))
                }
                _ => panic!("expected SystemdError::JobFailed, got {e:#}"),
            },
        }
    }

    #[test]
    fn job_done_is_ok_after_subscribing_first() {
        let fake = FakeSystemd::start();
        fake.add_unit(UNIT);
        assert_eq!(job_result(&fake, Verb::Start), None);
        assert_eq!(
            fake.calls(),
            [
                call("Subscribe", &[]),
                call("StartUnit", &[UNIT, "replace"])
            ]
        );
        assert_eq!(
            fake.unit_state(UNIT),
            Some(("active".into(), "running".into()))
        );
    }

    #[test]
    fn each_verb_queues_its_own_job() {
        let fake = FakeSystemd::start();
        fake.add_unit(UNIT);
        for verb in [Verb::Start, Verb::Restart, Verb::Stop] {
            assert_eq!(job_result(&fake, verb), None, "{verb:?}");
        }
        let jobs: Vec<Call> = fake
            .calls()
            .into_iter()
            .filter(|c| c.method != "Subscribe")
            .collect();
        assert_eq!(
            jobs,
            [
                call("StartUnit", &[UNIT, "replace"]),
                call("RestartUnit", &[UNIT, "replace"]),
                call("StopUnit", &[UNIT, "replace"]),
            ]
        );
        assert_eq!(
            fake.unit_state(UNIT),
            Some(("inactive".into(), "dead".into()))
        );
    }

    #[test]
    fn job_results_other_than_done_are_job_failed_with_that_result() {
        let fake = FakeSystemd::start();
        fake.add_unit(UNIT);
        for result in ["failed", "timeout", "dependency", "canceled"] {
            fake.script_result(UNIT, result);
            assert_eq!(
                job_result(&fake, Verb::Start),
                Some((UNIT.to_owned(), "start", result.to_owned())),
                "result {result}"
            );
        }
        fake.script_result(UNIT, "timeout");
        let err = connect(&fake)
            .run_job(Verb::Restart, UNIT)
            .expect_err("timeout");
        assert_eq!(
            format!("{err:#}"),
            "agent-acme.service: job restart finished with result 'timeout'"
        );
    }

    /// The fake sends, before each real `JobRemoved`, one for another unit and one for
    /// the same unit under another job path with the opposite result: only matching by
    /// job path gives the right answer both ways.
    #[test]
    fn decoy_signals_for_other_jobs_are_ignored() {
        let fake = FakeSystemd::start();
        fake.add_unit(UNIT);
        let watcher = zbus::blocking::connection::Builder::address(fake.address())
            .and_then(zbus::blocking::connection::Builder::build)
            .expect("watcher connection");
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.systemd1.Manager")
            .and_then(|b| b.member("JobRemoved"))
            .expect("match rule")
            .build();
        let mut signals = zbus::blocking::MessageIterator::for_match_rule(rule, &watcher, None)
            .expect("watch JobRemoved");

        assert_eq!(job_result(&fake, Verb::Start), None, "decoy 'failed' taken");
        fake.script_result(UNIT, "failed");
        assert_eq!(
            job_result(&fake, Verb::Start),
            Some((UNIT.to_owned(), "start", "failed".to_owned())),
            "decoy 'done' taken"
        );

        // The decoys were really sent, before the real signal.
        let mut seen = Vec::new();
        for _ in 0..6 {
            let msg = signals.next().expect("a JobRemoved").expect("message");
            let (_, job, unit, result): (u32, zbus::zvariant::OwnedObjectPath, String, String) =
                msg.body().deserialize().expect("JobRemoved body");
            seen.push(format!("{} {unit} {result}", job.as_str()));
        }
        assert_eq!(
            seen,
            [
                "/org/freedesktop/systemd1/job/2 decoy.service done",
                "/org/freedesktop/systemd1/job/3 agent-acme.service failed",
                "/org/freedesktop/systemd1/job/1 agent-acme.service done",
                "/org/freedesktop/systemd1/job/5 decoy.service done",
                "/org/freedesktop/systemd1/job/6 agent-acme.service done",
                "/org/freedesktop/systemd1/job/4 agent-acme.service failed",
            ]
        );
    }

    /// A job that ends before its method reply arrives: the signal is already queued
    /// because the client listens before queuing the job.
    #[test]
    fn job_removed_before_the_reply_is_not_missed() {
        let fake = FakeSystemd::start();
        fake.add_unit(UNIT);
        fake.signal_timing(SignalTiming::BeforeReply);
        assert_eq!(job_result(&fake, Verb::Start), None);
        fake.script_result(UNIT, "failed");
        assert_eq!(
            job_result(&fake, Verb::Stop),
            Some((UNIT.to_owned(), "stop", "failed".to_owned()))
        );
    }

    #[test]
    fn no_such_unit_is_a_typed_error() {
        let fake = FakeSystemd::start();
        for verb in [Verb::Start, Verb::Stop, Verb::Restart] {
            let err = connect(&fake)
                .run_job(verb, "agent-ghost.service")
                .expect_err("unknown unit");
            match err.downcast_ref::<SystemdError>() {
                Some(SystemdError::NoSuchUnit(unit)) => assert_eq!(unit, "agent-ghost.service"),
                _ => panic!("{verb:?}: expected SystemdError::NoSuchUnit, got {err:#}"),
            }
        }
    }

    #[test]
    fn unit_states_of_three_units_in_one_call() {
        let fake = FakeSystemd::start();
        fake.set_state("agent-a.service", "active", "running");
        fake.set_state("agent-b.service", "failed", "failed");
        let units: Vec<String> = ["agent-a.service", "agent-b.service", "agent-c.service"]
            .map(str::to_owned)
            .to_vec();
        let states = connect(&fake).unit_states(&units).expect("unit states");
        let state = |unit: &str, load: &str, active: &str, sub: &str| UnitState {
            unit: unit.into(),
            load_state: load.into(),
            active_state: active.into(),
            sub_state: sub.into(),
        };
        assert_eq!(
            states,
            [
                state("agent-a.service", "loaded", "active", "running"),
                state("agent-b.service", "loaded", "failed", "failed"),
                state("agent-c.service", "not-found", "inactive", "dead"),
            ]
        );
        assert!(states[0].is_active() && !states[1].is_active());
        assert_eq!(
            fake.calls(),
            [call(
                "ListUnitsByNames",
                &["agent-a.service", "agent-b.service", "agent-c.service"]
            )]
        );
    }

    #[test]
    fn unit_states_fills_in_units_missing_from_the_reply() {
        let fake = FakeSystemd::start();
        fake.omit_unknown_units();
        fake.set_state("agent-b.service", "active", "running");
        let units = vec!["agent-a.service".to_owned(), "agent-b.service".to_owned()];
        let states = connect(&fake).unit_states(&units).expect("unit states");
        let got: Vec<(&str, &str, &str)> = states
            .iter()
            .map(|s| {
                (
                    s.unit.as_str(),
                    s.load_state.as_str(),
                    s.active_state.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("agent-a.service", "not-found", "inactive"),
                ("agent-b.service", "loaded", "active"),
            ]
        );
    }

    #[test]
    fn unit_states_of_no_units_makes_no_call() {
        let fake = FakeSystemd::start();
        assert!(connect(&fake).unit_states(&[]).expect("states").is_empty());
        assert_eq!(fake.calls(), []);
    }

    #[test]
    fn reload_is_one_call_each() {
        let fake = FakeSystemd::start();
        let systemd = connect(&fake);
        systemd.reload().expect("reload");
        assert_eq!(fake.count("Reload"), 1);
        systemd.reload().expect("reload");
        assert_eq!(fake.calls(), [call("Reload", &[]), call("Reload", &[])]);
    }

    #[test]
    fn reset_failed_clears_the_state_and_ignores_unknown_units() {
        let fake = FakeSystemd::start();
        fake.set_state(UNIT, "failed", "failed");
        let systemd = connect(&fake);
        systemd.reset_failed(UNIT).expect("reset");
        assert_eq!(
            fake.unit_state(UNIT),
            Some(("inactive".into(), "dead".into()))
        );
        systemd
            .reset_failed("agent-ghost.service")
            .expect("unknown unit is fine");
        assert_eq!(
            fake.calls(),
            [
                call("ResetFailedUnit", &[UNIT]),
                call("ResetFailedUnit", &["agent-ghost.service"])
            ]
        );
    }

    /// The service's `Result` and `NRestarts` say how it ended where the job result only
    /// says "failed".
    #[test]
    fn service_outcome_reads_result_and_restarts_and_none_for_unknown_units() {
        let fake = FakeSystemd::start();
        fake.add_unit(UNIT);
        let systemd = connect(&fake);
        let outcome = |result: &str, restarts| {
            Some(ServiceOutcome {
                result: result.to_owned(),
                restarts,
            })
        };
        assert_eq!(
            systemd.service_outcome(UNIT).expect("outcome"),
            outcome("success", 0)
        );
        fake.script_result(UNIT, "failed");
        fake.script_restarts(UNIT, 5);
        systemd
            .run_job(Verb::Start, UNIT)
            .expect_err("scripted to fail");
        assert_eq!(
            systemd.service_outcome(UNIT).expect("outcome"),
            outcome("exit-code", 5)
        );
        fake.script_service_result(UNIT, "timeout");
        systemd
            .run_job(Verb::Start, UNIT)
            .expect_err("scripted to fail");
        assert_eq!(
            systemd.service_outcome(UNIT).expect("outcome"),
            outcome("timeout", 5)
        );
        assert_eq!(
            systemd
                .service_outcome("agent-ghost.service")
                .expect("unknown unit is not an error"),
            None
        );
        assert!(
            fake.calls()
                .contains(&call("GetUnit", &["agent-ghost.service"])),
            "{}",
            fake.call_log()
        );
    }

    /// A unit over its start limit refuses starts until its failed state is reset, as
    /// systemd does; the reset clears the limit.
    #[test]
    fn reset_failed_clears_the_start_limit() {
        let fake = FakeSystemd::start();
        fake.add_unit(UNIT);
        fake.hit_start_limit(UNIT);
        let systemd = connect(&fake);
        systemd
            .run_job(Verb::Start, UNIT)
            .expect_err("over the limit");
        assert_eq!(
            systemd
                .service_outcome(UNIT)
                .expect("outcome")
                .map(|o| o.result),
            Some("start-limit-hit".to_owned())
        );
        systemd.reset_failed(UNIT).expect("reset");
        assert_eq!(fake.service_result(UNIT).as_deref(), Some("success"));
        systemd
            .run_job(Verb::Start, UNIT)
            .expect("started after the reset");
    }

    #[test]
    fn connecting_to_a_missing_bus_names_the_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let address = format!("unix:path={}/no-bus", dir.path().display());
        let Err(err) = Systemd::connect(&address) else {
            panic!("connected to a bus that does not exist");
        };
        let msg = format!("{err:#}");
        assert!(msg.contains(&address), "{msg}");
        assert!(msg.contains("systemctl --user status"), "{msg}");
    }
}

mod cli {
    use std::os::unix::fs::PermissionsExt;

    use crate::support::fake_systemd::Call;
    use crate::support::sandbox::{Home, write_executable};

    /// `enable CLIENT --agent shell PROJECT` with a fresh project dir; returns the project.
    fn enable_shell(home: &Home, client: &str) -> std::path::PathBuf {
        let proj = home.mkdir(&format!("projects/{client}"));
        home.sandboxctl(["enable", client, "--agent", "shell"])
            .arg(&proj)
            .run()
            .success();
        proj
    }

    fn methods(calls: &[Call]) -> Vec<&'static str> {
        calls.iter().map(|c| c.method).collect()
    }

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn enable_writes_unit_dirs_and_settings_and_reloads_once() {
        let home = Home::new();
        let proj = home.mkdir("projects/acme");
        let out = home
            .sandboxctl(["enable", "acme", "--agent", "shell"])
            .arg(&proj)
            .run()
            .success();

        let unit = std::fs::read_to_string(home.unit_file("acme")).expect("unit file");
        assert!(
            unit.starts_with("# Managed by sandboxctl for client acme"),
            "{unit}"
        );
        assert!(unit.contains("ContainerName=agent-acme\n"), "{unit}");
        assert!(unit.contains(&proj.display().to_string()), "{unit}");
        let data = home.client_dir("acme");
        for sub in ["claude", "codex", "config", "history"] {
            assert_eq!(mode(&data.join(sub)), 0o700, "{sub}");
        }
        // Other local users can read neither the units nor the directory sandboxctl made.
        assert_eq!(mode(&home.unit_file("acme")), 0o600, "unit file");
        assert_eq!(mode(&home.unit_dir()), 0o700, "unit directory");
        let settings = std::fs::read_to_string(data.join("config/sandbox.toml")).expect("settings");
        assert!(settings.contains("shell"), "{settings}");
        assert!(settings.contains(&proj.display().to_string()), "{settings}");

        assert_eq!(
            methods(&home.fake.calls()),
            ["Reload", "ListUnitsByNames"],
            "{}",
            home.fake.call_log()
        );
        assert!(home.fake.knows("agent-acme.service"), "generator output");
        assert!(out.stdout.contains("enabled acme:"), "{out}");
        assert!(out.stdout.contains("sandboxctl start acme"), "{out}");
    }

    #[test]
    fn enable_several_clients_reloads_once() {
        let home = Home::new();
        home.sandboxctl(["enable", "a,b,c", "--agent", "shell"])
            .run()
            .success();
        for c in ["a", "b", "c"] {
            assert!(home.unit_file(c).is_file(), "unit of {c}");
            assert!(home.client_dir(c).join("config/sandbox.toml").is_file());
        }
        assert_eq!(home.fake.count("Reload"), 1, "{}", home.fake.call_log());
        let lists: Vec<Call> = home
            .fake
            .calls()
            .into_iter()
            .filter(|c| c.method == "ListUnitsByNames")
            .collect();
        assert_eq!(lists.len(), 1, "{}", home.fake.call_log());
        assert_eq!(
            lists[0].args,
            ["agent-a.service", "agent-b.service", "agent-c.service"]
        );
    }

    /// "One client's project must not be visible to another": a comma list with project
    /// directories would give every client the same projects, which `enable` refuses
    /// when the clients are enabled one at a time, so it must refuse it here too, before
    /// writing anything.
    #[test]
    fn enable_several_clients_refuses_shared_projects() {
        let home = Home::new();
        let proj = home.mkdir("projects/shared");
        let out = home
            .sandboxctl(["enable", "a,b", "--agent", "shell"])
            .arg(&proj)
            .run();
        assert_eq!(
            out.code,
            Some(1),
            "two clients were given the same project:\n{out}"
        );
        assert!(out.stderr.contains("project"), "{out}");
        assert!(!home.unit_file("a").exists() && !home.unit_file("b").exists());
        assert!(!home.client_dir("a").exists() && !home.client_dir("b").exists());
        assert_eq!(home.fake.calls(), [], "{}", home.fake.call_log());
    }

    #[test]
    fn enable_again_updates_the_unit_and_keeps_projects() {
        let home = Home::new();
        let proj = enable_shell(&home, "acme");
        let before = std::fs::read_to_string(home.unit_file("acme")).expect("unit");
        assert!(
            before.contains("Network=none"),
            "allowlist by default: {before}"
        );
        assert!(
            before.contains("Wants=sandboxctl-proxy@acme.socket"),
            "{before}"
        );

        home.sandboxctl(["enable", "acme", "--network", "none"])
            .run()
            .success();
        let after = std::fs::read_to_string(home.unit_file("acme")).expect("unit");
        assert!(after.contains("Network=none"), "{after}");
        assert!(
            !after.contains("sandboxctl-proxy"),
            "no proxy without allowlist: {after}"
        );
        assert!(after.contains(&proj.display().to_string()), "{after}");
        let settings = std::fs::read_to_string(home.client_dir("acme").join("config/sandbox.toml"))
            .expect("settings");
        assert!(settings.contains(&proj.display().to_string()), "{settings}");
        assert!(settings.contains("shell"), "agent kept: {settings}");
        assert_eq!(home.fake.count("Reload"), 2, "one per command");

        let status = home
            .sandboxctl(["status", "acme", "--json"])
            .run()
            .success()
            .json();
        assert_eq!(status["network"], "none");
        assert_eq!(status["projects"][0], proj.display().to_string());
    }

    /// Without Quadlet (`SANDBOXCTL_QUADLET=none`, as on Podman < 4.4) `enable` writes
    /// a plain service; when the generator is back it switches to the `.container`
    /// and removes the service it wrote, and the other way round; `disable` removes
    /// whichever it wrote.
    #[test]
    fn enable_switches_between_plain_service_and_quadlet_unit() {
        let home = Home::new();
        let proj = home.mkdir("projects/acme");
        let plain = || {
            home.sandboxctl(["enable", "acme", "--agent", "shell"])
                .arg(&proj)
                .env("SANDBOXCTL_QUADLET", "none")
                .run()
                .success()
        };
        let out = plain();
        let service = std::fs::read_to_string(home.service_file("acme")).expect("service");
        assert!(
            service.starts_with("# Managed by sandboxctl for client acme"),
            "{service}"
        );
        assert!(service.contains("\nType=notify\n"), "{service}");
        assert!(service.contains("--cidfile=%t/%N.cid"), "{service}");
        assert!(!home.unit_file("acme").exists(), "no .container: {out}");
        assert!(home.fake.knows("agent-acme.service"), "loaded: {out}");
        assert!(out.stdout.contains("agent-acme.service"), "{out}");
        // Started with the user manager, as `systemctl --user enable` would.
        let link = home
            .service_dir()
            .join("default.target.wants/agent-acme.service");
        assert_eq!(
            std::fs::read_link(&link).expect("wants link"),
            home.service_file("acme")
        );

        let out = home.sandboxctl(["enable", "acme"]).run().success();
        assert!(home.unit_file("acme").exists(), "{out}");
        assert!(
            !home.service_file("acme").exists(),
            "plain service removed: {out}"
        );
        assert!(link.symlink_metadata().is_err(), "link removed: {out}");
        assert!(out.stdout.contains("removed "), "{out}");
        assert!(home.fake.knows("agent-acme.service"), "generated: {out}");

        let out = plain();
        assert!(home.service_file("acme").exists(), "{out}");
        assert!(
            !home.unit_file("acme").exists(),
            ".container removed: {out}"
        );

        home.sandboxctl(["disable", "acme"])
            .env("SANDBOXCTL_QUADLET", "none")
            .run()
            .success();
        assert!(!home.service_file("acme").exists());
        assert!(!home.unit_file("acme").exists());
        assert!(link.symlink_metadata().is_err(), "link removed by disable");
    }

    #[test]
    fn enable_never_replaces_a_service_it_did_not_write() {
        let home = Home::new();
        std::fs::create_dir_all(home.service_dir()).expect("service dir");
        let mine = "[Service]\nExecStart=/bin/true\n";
        std::fs::write(home.service_file("acme"), mine).expect("user's service");
        for quadlet in [None, Some("none")] {
            let mut cmd = home.sandboxctl(["enable", "acme", "--agent", "shell"]);
            if let Some(q) = quadlet {
                cmd = cmd.env("SANDBOXCTL_QUADLET", q);
            }
            cmd.run()
                .failure(&["agent-acme.service", "not written by sandboxctl"]);
            assert_eq!(
                std::fs::read_to_string(home.service_file("acme")).expect("service"),
                mine
            );
            assert!(!home.unit_file("acme").exists());
            assert!(!home.client_dir("acme").exists(), "nothing else written");
        }
    }

    #[test]
    fn enable_refuses_a_podman_older_than_supported() {
        let home = Home::new();
        let old = home.path().join("old-podman");
        write_executable(&old, "#!/bin/sh\necho 'podman version 3.4.4'\n");
        let out = home
            .sandboxctl(["enable", "acme", "--agent", "shell"])
            .env("SANDBOXCTL_PODMAN", &old)
            .run()
            .failure(&["podman 3.4.4 is too old", "Podman 4.3.0 or newer"]);
        assert_eq!(out.stderr.lines().count(), 1, "{out}");
        assert!(!home.client_dir("acme").exists(), "nothing written");
        assert_eq!(home.fake.calls(), [], "no D-Bus call");

        // Every other command that runs podman says the same.
        enable_shell(&home, "acme");
        for cmd in [
            vec!["start", "acme"],
            vec!["restart", "acme"],
            vec!["attach", "acme"],
            vec!["exec", "acme", "--", "true"],
            vec!["secret", "list", "acme"],
            vec!["image", "build"],
        ] {
            let out = home
                .sandboxctl(&cmd)
                .env("SANDBOXCTL_PODMAN", &old)
                .run()
                .failure(&["podman 3.4.4 is too old"]);
            assert_eq!(out.stderr.lines().count(), 1, "{cmd:?}: {out}");
        }
    }

    /// A generator named by `SANDBOXCTL_QUADLET` that does not run is a setting to fix,
    /// not a reason to write another kind of unit.
    #[test]
    fn enable_refuses_a_quadlet_override_that_does_not_run() {
        let home = Home::new();
        home.sandboxctl(["enable", "acme", "--agent", "shell"])
            .env("SANDBOXCTL_QUADLET", "/nonexistent/quadlet")
            .run()
            .failure(&[
                "SANDBOXCTL_QUADLET=/nonexistent/quadlet does not run as a Quadlet generator",
                "set it to `none`",
            ]);
        assert!(!home.client_dir("acme").exists(), "nothing written");
        assert!(!home.service_file("acme").exists());
        assert_eq!(home.fake.calls(), [], "no D-Bus call");
    }

    /// A program that prints a version but generates nothing (here a `quadlet` script
    /// around `true`) is not taken for the generator.
    #[test]
    fn enable_refuses_a_quadlet_override_that_only_prints_a_version() {
        let home = Home::new();
        let fake = home.mkdir("fake-quadlet").join("quadlet");
        write_executable(&fake, "#!/bin/sh\necho 5.4.2\nexec true\n");
        home.sandboxctl(["enable", "acme", "--agent", "shell"])
            .env("SANDBOXCTL_QUADLET", &fake)
            .run()
            .failure(&["does not run as a Quadlet generator", "set it to `none`"]);
        assert!(!home.client_dir("acme").exists(), "nothing written");
        assert_eq!(home.fake.calls(), [], "no D-Bus call");
    }

    #[test]
    fn render_says_which_unit_and_why() {
        let home = Home::new();
        let out = home
            .sandboxctl(["render", "acme", "--agent", "shell"])
            .env("SANDBOXCTL_QUADLET", "none")
            .run()
            .success();
        assert!(
            out.stderr
                .contains("agent-acme.service: a plain systemd service (SANDBOXCTL_QUADLET=none)"),
            "{out}"
        );
        assert!(out.stdout.contains("ExecStart="), "{out}");
        let out = home
            .sandboxctl(["render", "acme", "--agent", "shell"])
            .run()
            .success();
        assert!(
            out.stderr
                .contains("agent-acme.container: a Quadlet unit for Quadlet "),
            "{out}"
        );
    }

    #[test]
    fn enable_never_overwrites_a_unit_it_did_not_write() {
        let home = Home::new();
        std::fs::create_dir_all(home.unit_dir()).expect("unit dir");
        let mine = "[Container]\nImage=docker.io/library/alpine\n";
        std::fs::write(home.unit_file("acme"), mine).expect("user's unit");
        home.sandboxctl(["enable", "acme", "--agent", "shell"])
            .run()
            .failure(&["agent-acme.container", "not written by sandboxctl"]);
        assert_eq!(
            std::fs::read_to_string(home.unit_file("acme")).expect("unit"),
            mine
        );
        assert!(!home.client_dir("acme").exists(), "nothing else written");
        assert_eq!(home.fake.calls(), [], "no D-Bus call");
    }

    /// A unit the real generator refuses (an `.image` reference to a Quadlet image unit
    /// that does not exist; Quadlet knows `.image` units since Podman 4.8) is reported
    /// with the unit's name and the generator's reason.
    #[test]
    fn enable_reports_a_unit_the_generator_rejects() {
        let home = Home::new();
        home.sandboxctl([
            "enable",
            "acme",
            "--agent",
            "shell",
            "--image",
            "nope.image",
        ])
        .run()
        .failure(&[
            "agent-acme.service",
            "not-found",
            "Quadlet generator did not produce it",
            "nope.image was not found",
            "nothing was changed",
        ]);
        // The second reload follows the rollback, which leaves nothing behind.
        assert_eq!(home.fake.count("Reload"), 2);
        assert!(!home.unit_file("acme").exists(), "unit removed again");
        assert!(
            !home.client_dir("acme").exists(),
            "client dir removed again"
        );
    }

    #[test]
    fn enable_reports_a_unit_systemd_did_not_load() {
        let home = Home::new();
        home.fake.reject_unit("agent-b.service");
        home.sandboxctl(["enable", "a,b", "--agent", "shell"])
            .run()
            .failure(&["systemd has no agent-b.service after reloading"]);
        for c in ["a", "b"] {
            assert!(!home.unit_file(c).exists(), "{c}: unit rolled back");
            assert!(!home.client_dir(c).exists(), "{c}: data rolled back");
        }
    }

    #[test]
    fn enable_now_starts_after_the_reload() {
        let home = Home::new();
        home.sandboxctl(["enable", "acme", "--agent", "shell", "--now"])
            .run()
            .success();
        assert_eq!(
            methods(&home.fake.calls()),
            [
                "Reload",
                "ListUnitsByNames",
                "ResetFailedUnit",
                "Subscribe",
                "StartUnit"
            ]
        );
        assert!(
            home.podman_log()
                .contains("image exists localhost/agent-sandbox:latest")
        );
    }

    /// A running sandbox keeps its old unit until restarted: `enable` says so, and
    /// queues no job.
    #[test]
    fn enable_of_a_running_client_with_new_settings_says_to_restart() {
        let home = Home::new();
        enable_shell(&home, "acme");
        home.sandboxctl(["start", "acme"]).run().success();
        let jobs = home.fake.count("StartUnit");
        let out = home
            .sandboxctl(["enable", "acme", "--network", "none"])
            .run()
            .success();
        assert!(
            out.stdout
                .contains("acme is running the previous settings; `sandboxctl restart acme`"),
            "{out}"
        );
        assert_eq!(home.fake.count("StartUnit"), jobs);
        assert_eq!(home.fake.count("RestartUnit"), 0);
    }

    /// `enable` again with the same settings does not reload the user manager, unless
    /// systemd says the unit it has loaded is older than its file (one edited since);
    /// a changed setting reloads.
    #[test]
    fn enable_reloads_only_when_something_changed() {
        let home = Home::new();
        let proj = enable_shell(&home, "acme");
        let enable = |extra: &[&str]| {
            let args = ["enable", "acme", "--agent", "shell"].into_iter();
            home.sandboxctl(args.chain(extra.iter().copied()))
                .arg(&proj)
                .run()
                .success();
        };
        assert_eq!(home.fake.count("Reload"), 1);
        enable(&[]);
        assert_eq!(home.fake.count("Reload"), 1, "{}", home.fake.call_log());
        // The unit edited by hand and put back by `enable`: systemd has neither loaded.
        let unit = home.unit_file("acme");
        let text = std::fs::read_to_string(&unit).expect("unit");
        std::fs::write(&unit, format!("{text}# edited\n")).expect("edit");
        enable(&[]);
        assert_eq!(home.fake.count("Reload"), 2, "{}", home.fake.call_log());
        // Edited, reloaded by hand, then the edit undone by hand: the file is what
        // `enable` writes, but systemd has the edit loaded.
        std::fs::write(&unit, format!("{text}# edited\n")).expect("edit");
        home.fake.reload_now();
        std::fs::write(&unit, &text).expect("undo the edit");
        enable(&[]);
        assert_eq!(home.fake.count("Reload"), 4, "{}", home.fake.call_log());
        enable(&["--network", "none"]);
        assert_eq!(home.fake.count("Reload"), 5, "{}", home.fake.call_log());
    }

    /// `enable --now` starts a stopped sandbox, leaves a running one with an unchanged
    /// unit alone, and restarts a running one whose unit changed.
    #[test]
    fn enable_now_starts_or_restarts_only_as_needed() {
        let home = Home::new();
        let proj = enable_shell(&home, "acme");
        let jobs = |home: &Home| -> Vec<&'static str> {
            home.fake
                .calls()
                .iter()
                .map(|c| c.method)
                .filter(|m| m.ends_with("Unit") && !["ResetFailedUnit", "GetUnit"].contains(m))
                .collect()
        };
        home.sandboxctl(["enable", "acme", "--now"]).run().success();
        assert_eq!(jobs(&home), ["StartUnit"]);
        home.sandboxctl(["enable", "acme", "--now"])
            .arg(&proj)
            .run()
            .success();
        assert_eq!(jobs(&home), ["StartUnit"], "unchanged unit: no job");
        home.sandboxctl(["enable", "acme", "--now", "--network", "none"])
            .run()
            .success();
        assert_eq!(jobs(&home), ["StartUnit", "RestartUnit"]);
    }

    #[test]
    fn start_stop_restart_wait_for_their_jobs() {
        let home = Home::new();
        enable_shell(&home, "acme");
        let out = home.sandboxctl(["start", "acme"]).run().success();
        assert!(
            out.stdout.contains("started acme (agent-acme.service)"),
            "{out}"
        );
        assert_eq!(
            home.fake.unit_state("agent-acme.service"),
            Some(("active".into(), "running".into()))
        );
        home.sandboxctl(["restart", "acme"]).run().success();
        let out = home.sandboxctl(["stop", "acme"]).run().success();
        assert!(out.stdout.contains("stopped acme"), "{out}");
        let jobs: Vec<String> = home
            .fake
            .calls()
            .iter()
            .filter(|c| c.method.ends_with("Unit"))
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            jobs,
            [
                "ResetFailedUnit(agent-acme.service)",
                "StartUnit(agent-acme.service, replace)",
                "ResetFailedUnit(agent-acme.service)",
                "RestartUnit(agent-acme.service, replace)",
                "StopUnit(agent-acme.service, replace)",
            ]
        );
    }

    /// Five quick start/stop cycles put a unit over systemd's start limit; a start or
    /// restart the user asks for clears it first and works, and so does `enable --now`.
    #[test]
    fn start_restart_and_enable_now_work_over_the_start_limit() {
        let home = Home::new();
        enable_shell(&home, "acme");
        let unit = "agent-acme.service";
        home.fake.hit_start_limit(unit);
        home.sandboxctl(["start", "acme"]).run().success();
        home.fake.hit_start_limit(unit);
        home.sandboxctl(["restart", "acme"]).run().success();
        home.sandboxctl(["stop", "acme"]).run().success();
        home.fake.hit_start_limit(unit);
        home.sandboxctl(["enable", "acme", "--now"]).run().success();
        assert_eq!(
            home.fake.unit_state(unit),
            Some(("active".into(), "running".into()))
        );
        // The reset comes right before each start, never before a stop.
        let calls: Vec<&str> = methods(&home.fake.calls())
            .into_iter()
            .filter(|m| m.ends_with("Unit") && *m != "GetUnit")
            .collect();
        assert_eq!(
            calls,
            [
                "ResetFailedUnit",
                "StartUnit",
                "ResetFailedUnit",
                "RestartUnit",
                "StopUnit",
                "ResetFailedUnit",
                "StartUnit"
            ],
            "{}",
            home.fake.call_log()
        );
    }

    /// A sandbox that keeps failing is restarted by systemd until its start limit: the
    /// error says so in words, with what to do, and quotes the log lines that say why,
    /// not container IDs.
    #[test]
    fn start_reports_a_crash_loop_in_words_without_container_ids() {
        let home = Home::new();
        enable_shell(&home, "acme");
        home.fake.script_result("agent-acme.service", "failed");
        home.fake.script_restarts("agent-acme.service", 5);
        let id = "0f3b6a9c2d8e4f1a7b5c3d9e0a2b4c6d8e1f3a5b7c9d0e2f4a6b8c1d3e5f7a9b";
        std::fs::write(
            home.runtime_dir().join("agent-acme.log"),
            format!("{id}\nagent-entry: unknown agent 'x'\n{id}\n"),
        )
        .expect("unit log");
        let out = home.sandboxctl(["start", "acme"]).run().failure(&[
            "agent-acme.service failed 6 times in a row: systemd restarted it 5 times, then stopped at its start limit (a crash loop)",
            "`sandboxctl logs acme`",
            "`sandboxctl start acme`",
        ]);
        assert!(!out.stderr.contains("result 'failed'"), "{out}");
        if !std::path::Path::new("/run/systemd/journal/socket").exists() {
            assert!(
                out.stderr
                    .contains("last log lines:\n  agent-entry: unknown agent 'x'"),
                "{out}"
            );
        }
        assert!(
            !out.stderr.contains(id),
            "a container ID was quoted:\n{out}"
        );
    }

    #[test]
    fn start_reports_a_failed_job_with_its_result_and_log() {
        let home = Home::new();
        enable_shell(&home, "acme");
        home.fake.script_result("agent-acme.service", "failed");
        // Podman prints container IDs on create and remove; they are not quoted.
        let id = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        std::fs::write(
            home.runtime_dir().join("agent-acme.log"),
            format!(
                "{id}\n\x1b]52;c;Y2xpcGJvYXJk\x07\nError: short-name resolution failed\n{id}\n"
            ),
        )
        .expect("unit log");
        let out = home.sandboxctl(["start", "acme"]).run().failure(&[
            "agent-acme.service",
            "start",
            "result 'failed'",
        ]);
        // Without journald the unit logs to $XDG_RUNTIME_DIR/agent-<client>.log.
        if std::path::Path::new("/run/systemd/journal/socket").exists() {
            assert!(out.stderr.contains("log"), "{out}");
        } else {
            assert!(
                out.stderr.contains(
                    "last log lines:\n  ^[]52;c;Y2xpcGJvYXJk^G\n  Error: short-name resolution failed"
                ),
                "{out}"
            );
            assert!(
                !out.stderr.contains(id),
                "a container ID was quoted:\n{out}"
            );
            assert!(!out.stderr.contains('\x1b'), "{out}");
        }
        assert_eq!(
            home.fake.unit_state("agent-acme.service"),
            Some(("failed".into(), "failed".into()))
        );
    }

    #[test]
    fn start_of_an_unloaded_unit_says_to_enable() {
        let home = Home::new();
        enable_shell(&home, "acme");
        std::fs::remove_file(home.unit_file("acme")).expect("remove unit");
        home.fake.reject_unit("agent-acme.service");
        home.sandboxctl(["start", "acme"]).run().failure(&[
            "systemd does not know agent-acme.service",
            "sandboxctl enable acme",
        ]);
    }

    /// The default image is built when it is missing, before any job; a failed build
    /// queues no job.
    #[test]
    fn start_builds_a_missing_default_image_first() {
        let home = Home::new();
        enable_shell(&home, "acme");
        home.without_image();
        let out = home
            .sandboxctl(["start", "acme"])
            .run()
            .failure(&["podman build of localhost/agent-sandbox:latest failed"]);
        assert!(
            out.stderr
                .contains("image localhost/agent-sandbox:latest is missing; building it"),
            "{out}"
        );
        assert!(
            home.podman_log()
                .contains("build --tag localhost/agent-sandbox:latest"),
            "{}",
            home.podman_log()
        );
        assert_eq!(home.fake.count("StartUnit"), 0, "{}", home.fake.call_log());
    }

    /// Any other image is the unit's to pull, inside the start job.
    #[test]
    fn start_leaves_other_images_to_the_unit() {
        let home = Home::new();
        home.sandboxctl([
            "enable",
            "acme",
            "--agent",
            "shell",
            "--image",
            "docker.io/library/debian:12",
        ])
        .run()
        .success();
        home.without_image();
        home.sandboxctl(["start", "acme"]).run().success();
        assert!(
            !home.podman_log().contains("image exists"),
            "{}",
            home.podman_log()
        );
        assert_eq!(home.fake.count("StartUnit"), 1, "{}", home.fake.call_log());
    }

    #[test]
    fn start_of_an_unknown_client_makes_no_call() {
        let home = Home::new();
        home.sandboxctl(["start", "ghost"])
            .run()
            .failure(&["unknown client ghost", "sandboxctl enable ghost"]);
        assert_eq!(home.fake.calls(), []);
    }

    /// A crash loop leaves the unit failed after systemd's own restarts; `status` says
    /// so in words and `--json` carries how it ended.
    #[test]
    fn status_names_a_crash_loop() {
        let home = Home::new();
        enable_shell(&home, "acme");
        let unit = "agent-acme.service";
        home.fake.script_result(unit, "failed");
        home.fake.script_restarts(unit, 5);
        home.sandboxctl(["start", "acme"]).run().failure(&[]);
        let out = home.sandboxctl(["status", "acme"]).run().success();
        assert!(
            out.stdout.contains(
                "agent-acme.service failed 6 times in a row: systemd restarted it 5 times, then stopped at its start limit (a crash loop)"
            ),
            "{out}"
        );
        let v = home
            .sandboxctl(["status", "acme", "--json"])
            .run()
            .success()
            .json();
        assert_eq!(v["active_state"], "failed", "{v}");
        assert_eq!(v["failure"]["result"], "exit-code", "{v}");
        assert_eq!(v["failure"]["restarts"], 5, "{v}");
        // A unit that is not failed costs no extra call and has no failure.
        home.fake.script_result(unit, "done");
        home.sandboxctl(["start", "acme"]).run().success();
        let before = home.fake.count("GetUnit");
        let v = home
            .sandboxctl(["status", "acme", "--json"])
            .run()
            .success()
            .json();
        assert!(v.get("failure").is_none(), "{v}");
        assert_eq!(home.fake.count("GetUnit"), before);
    }

    #[test]
    fn status_json_reports_systemds_state() {
        let home = Home::new();
        let proj = enable_shell(&home, "acme");
        let v = home
            .sandboxctl(["status", "acme", "--json"])
            .run()
            .success()
            .json();
        assert_eq!(v["client"], "acme");
        assert_eq!(v["unit"], "agent-acme.service");
        assert_eq!(v["load_state"], "loaded");
        assert_eq!(v["active_state"], "inactive");
        assert_eq!(v["sub_state"], "dead");
        assert_eq!(v["agent"], "shell");
        assert_eq!(v["projects"][0], proj.display().to_string());
        assert_eq!(v["unit_file"], home.unit_file("acme").display().to_string());

        home.sandboxctl(["start", "acme"]).run().success();
        let v = home
            .sandboxctl(["status", "acme", "--json"])
            .run()
            .success()
            .json();
        assert_eq!(
            (&v["active_state"], &v["sub_state"]),
            (&"active".into(), &"running".into())
        );
    }

    #[test]
    fn list_json_asks_systemd_once_for_all_clients() {
        let home = Home::new();
        home.sandboxctl(["enable", "a,b,c", "--agent", "shell"])
            .run()
            .success();
        home.fake.set_state("agent-b.service", "active", "running");
        let before = home.fake.count("ListUnitsByNames");
        let v = home.sandboxctl(["list", "--json"]).run().success().json();
        assert_eq!(home.fake.count("ListUnitsByNames"), before + 1);
        let rows = v.as_array().expect("a JSON array");
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r["client"].as_str().expect("client"),
                    r["active_state"].as_str().expect("active_state"),
                )
            })
            .collect();
        assert_eq!(got, [("a", "inactive"), ("b", "active"), ("c", "inactive")]);
    }

    #[test]
    fn list_with_no_clients_makes_no_call() {
        let home = Home::new();
        let out = home.sandboxctl(["list", "--json"]).run().success();
        assert_eq!(out.json(), serde_json::json!([]));
        assert_eq!(home.fake.calls(), []);
    }

    #[test]
    fn disable_stops_removes_the_unit_reloads_and_keeps_data() {
        let home = Home::new();
        enable_shell(&home, "acme");
        home.sandboxctl(["start", "acme"]).run().success();
        let before = home.fake.calls().len();
        let out = home.sandboxctl(["disable", "acme"]).run().success();

        let calls = home.fake.calls().split_off(before);
        assert_eq!(
            methods(&calls),
            [
                "Subscribe",
                // The sandbox, its proxy's socket and service, its notifier's.
                "StopUnit",
                "StopUnit",
                "StopUnit",
                "StopUnit",
                "StopUnit",
                "Reload",
                "ResetFailedUnit"
            ],
            "{}",
            home.fake.call_log()
        );
        assert!(!home.unit_file("acme").exists());
        assert!(
            !home.fake.knows("agent-acme.service"),
            "generator output gone"
        );
        assert!(
            home.client_dir("acme")
                .join("config/sandbox.toml")
                .is_file()
        );
        assert!(out.stdout.contains("kept acme's data"), "{out}");
        assert!(
            home.podman_log().contains("rm -f -i agent-acme"),
            "{}",
            home.podman_log()
        );
    }

    #[test]
    fn disable_purge_deletes_data_and_says_what() {
        let home = Home::new();
        enable_shell(&home, "acme");
        let out = home
            .sandboxctl(["disable", "acme", "--purge"])
            .run()
            .success();
        let data = home.client_dir("acme");
        assert!(!data.exists());
        assert!(!home.unit_file("acme").exists());
        assert!(
            out.stdout
                .contains(&format!("purged acme: deleted {}", data.display())),
            "{out}"
        );
        assert_eq!(home.fake.count("Reload"), 2);
    }

    #[test]
    fn disable_refuses_a_unit_it_did_not_write() {
        let home = Home::new();
        std::fs::create_dir_all(home.unit_dir()).expect("unit dir");
        let mine = "[Container]\nImage=docker.io/library/alpine\n";
        std::fs::write(home.unit_file("acme"), mine).expect("user's unit");
        home.sandboxctl(["disable", "acme"])
            .run()
            .failure(&["agent-acme.container", "not written by sandboxctl"]);
        assert_eq!(
            std::fs::read_to_string(home.unit_file("acme")).expect("unit"),
            mine
        );
        assert_eq!(home.fake.calls(), []);
    }

    /// `--claude-config DIR`: what the agent writes as its login reaches `DIR` at `stop`
    /// only as a refresh of `DIR`'s own login (same plan and scopes, an expiry hours
    /// ahead), and then only its tokens; another organisation's login with a far-off
    /// expiry and keys of its own is refused with a warning.
    #[test]
    fn a_shared_claude_login_comes_back_only_as_its_own_refresh() {
        let home = Home::new();
        let proj = home.mkdir("projects/acme");
        let shared = home.mkdir("work/claude-shared");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            * 1000;
        let login = |tag: &str, expires_at: u64, plan: &str| {
            serde_json::json!({"claudeAiOauth": {
                "accessToken": format!("sk-ant-oat01-{tag}"),
                "refreshToken": format!("sk-ant-ort01-{tag}"),
                "expiresAt": expires_at,
                "scopes": ["user:inference", "user:profile"],
                "subscriptionType": plan,
            }})
        };
        let hour = 3_600_000;
        let host = login("host", now + hour, "max");
        let shared_creds = shared.join(".credentials.json");
        std::fs::write(&shared_creds, host.to_string()).expect("write");
        home.sandboxctl(["enable", "acme", "--agent", "shell", "--claude-config"])
            .arg(&shared)
            .arg(&proj)
            .run()
            .success();
        let client_creds = home.client_dir("acme").join("claude/.credentials.json");
        let read = |p: &std::path::Path| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(p).expect("read")).expect("JSON")
        };
        assert_eq!(read(&client_creds), host, "enable shares the host's login");

        // The attack: another organisation's login, valid for a year, with a key of
        // its own.
        let mut forged = login("evil", now + 365 * 24 * hour, "enterprise");
        forged["oauthAccount"] = serde_json::json!({"organizationUuid": "evil-org"});
        std::fs::write(&client_creds, forged.to_string()).expect("write");
        let out = home.sandboxctl(["stop", "acme"]).run().success();
        assert_eq!(read(&shared_creds), host, "the host's login is untouched");
        assert!(
            out.stderr
                .contains("warning: not copying the sandbox's Claude login back"),
            "{out}"
        );

        // A refresh inside: new tokens, the same plan, hours ahead.
        let refreshed = login("refreshed", now + 8 * hour, "max");
        std::fs::write(&client_creds, refreshed.to_string()).expect("write");
        let out = home.sandboxctl(["stop", "acme"]).run().success();
        assert!(
            out.stderr
                .contains("copied the sandbox's refreshed Claude login back"),
            "{out}"
        );
        assert_eq!(read(&shared_creds), refreshed);
        let names: Vec<_> = std::fs::read_dir(&shared)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            [".credentials.json"],
            "nothing else is written there"
        );
    }

    #[test]
    fn disable_of_an_unknown_client_makes_no_call() {
        let home = Home::new();
        home.sandboxctl(["disable", "ghost"])
            .run()
            .failure(&["unknown client ghost"]);
        assert_eq!(home.fake.calls(), []);
    }
}

/// `port` against the fake manager: what it asks systemd, and that a socket that fails
/// to start undoes everything.
mod port_cli {
    use crate::support::sandbox::Home;

    fn free_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port().to_string()
    }

    /// Every file under `dir` with its contents (links as their targets).
    fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).expect("metadata");
                if meta.is_dir() {
                    stack.push(p);
                } else if meta.is_symlink() {
                    let t = std::fs::read_link(&p).expect("link");
                    out.push((p, t.into_os_string().into_encoded_bytes()));
                } else {
                    out.push((p.clone(), std::fs::read(&p).expect("read")));
                }
            }
        }
        out.retain(|(p, _)| !p.components().any(|c| c.as_os_str() == ".cache"));
        out.sort();
        out
    }

    fn enable(home: &Home) {
        let proj = home.mkdir("projects/acme");
        home.sandboxctl(["enable", "acme", "--agent", "shell"])
            .arg(&proj)
            .run()
            .success();
    }

    #[test]
    fn a_socket_that_cannot_listen_undoes_every_file_and_reloads_again() {
        let home = Home::new();
        enable(&home);
        let port = free_port();
        let socket = format!("sandboxctl-port-acme-{port}.socket");
        home.fake.add_unit(&socket);
        home.fake.script_result(&socket, "failed");
        for persist in [false, true] {
            let before = files(home.path());
            let reloads = home.fake.count("Reload");
            let mut args = vec!["port", "acme", "3000", "--host-port", &port];
            if persist {
                args.push("--persist");
            }
            home.sandboxctl(args).run().failure(&[
                "nothing was changed",
                &format!("cannot listen on 127.0.0.1:{port}"),
            ]);
            assert_eq!(files(home.path()), before, "persist {persist}");
            assert_eq!(
                home.fake.count("Reload"),
                reloads + 2,
                "a reload to load the units and one after undoing:\n{}",
                home.fake.call_log()
            );
        }
    }

    #[test]
    fn add_list_remove_and_disable_ask_systemd_for_the_socket() {
        let home = Home::new();
        enable(&home);
        let (a, b) = (free_port(), free_port());
        for p in [&a, &b] {
            home.fake
                .add_unit(&format!("sandboxctl-port-acme-{p}.socket"));
        }
        home.sandboxctl(["port", "acme", "3000", "--host-port", &a])
            .run()
            .success();
        home.sandboxctl(["port", "acme", "4000", "--host-port", &b, "--persist"])
            .run()
            .success();
        let runtime = home.runtime_dir().join("systemd/user");
        assert!(
            runtime
                .join(format!("sandboxctl-port-acme-{a}.socket"))
                .is_file()
        );
        assert!(
            home.service_dir()
                .join(format!(
                    "sockets.target.wants/sandboxctl-port-acme-{b}.socket"
                ))
                .is_symlink()
        );
        let status = home
            .sandboxctl(["status", "acme", "--json"])
            .run()
            .success();
        let ports = status.json()["ports"].clone();
        let row = |p: &str| {
            ports
                .as_array()
                .expect("an array")
                .iter()
                .find(|r| r["host_port"].as_u64().map(|n| n.to_string()).as_deref() == Some(p))
                .unwrap_or_else(|| panic!("no forward from {p}: {ports}"))
                .clone()
        };
        assert_eq!(row(&a)["container_port"], 3000, "{ports}");
        assert_eq!(row(&a)["state"], "listening", "{ports}");
        assert_eq!(row(&a)["persist"], false, "{ports}");
        assert_eq!(row(&b)["persist"], true, "{ports}");

        home.sandboxctl(["port", "acme", "3000", "--rm"])
            .run()
            .success();
        assert!(
            !runtime
                .join(format!("sandboxctl-port-acme-{a}.socket"))
                .exists()
        );
        let state = home
            .fake
            .unit_state(&format!("sandboxctl-port-acme-{a}.socket"));
        assert_eq!(state.map(|s| s.0), Some("inactive".to_owned()));

        let out = home.sandboxctl(["disable", "acme"]).run().success();
        assert!(
            out.stdout
                .contains(&format!("sandboxctl-port-acme-{b}.socket")),
            "{out}"
        );
        let state = home
            .fake
            .unit_state(&format!("sandboxctl-port-acme-{b}.socket"));
        assert_eq!(state.map(|s| s.0), Some("inactive".to_owned()));
        for name in [
            format!("sandboxctl-port-acme-{b}.socket"),
            format!("sandboxctl-port-acme-{b}@.service"),
            format!("sockets.target.wants/sandboxctl-port-acme-{b}.socket"),
        ] {
            let path = home.service_dir().join(&name);
            assert!(std::fs::symlink_metadata(&path).is_err(), "{name} left");
        }
        let settings = std::fs::read_to_string(home.client_dir("acme").join("config/sandbox.toml"))
            .expect("settings");
        assert!(!settings.contains("[[ports]]"), "{settings}");
    }
}
