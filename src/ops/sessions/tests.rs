//! Tests of `sessions`.

use super::worktree::*;
use super::*;

#[test]
fn panes_are_sanitised_bounded_and_one_per_session() {
    let text = b"main\t7\nmain\t8\nwa\t9\n\x1b]52;c;x\x07\t10\nnopid\tx\nshort\n";
    let panes = parse_panes(text);
    assert_eq!(panes.len(), 3, "{panes:?}");
    assert_eq!((panes[0].session.as_str(), panes[0].pid), ("main", 7));
    assert_eq!((panes[1].session.as_str(), panes[1].pid), ("wa", 9));
    assert_eq!(panes[2].session, "^[]52;c;x^G");
    let many: Vec<String> = (0..1000).map(|i| format!("s{i}\t1")).collect();
    assert_eq!(parse_panes(many.join("\n").as_bytes()).len(), ROWS_MAX);
}

/// `PROCS_SCRIPT`'s output for `(stat, cwd)` pairs.
fn dump(procs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (stat, cwd) in procs {
        out.extend_from_slice(stat.as_bytes());
        out.push(0);
        out.extend_from_slice(cwd);
        out.push(0);
    }
    out
}

#[test]
fn the_foreground_command_is_the_deepest_in_the_foreground_group() {
    let text = dump(&[
        ("1 (podman-init) S 0 1 1 0 -1 4194560\n", b"/"),
        ("12 (agent-session) S 4 12 12 34816 12 0\n", b"/p/web"),
        ("20 (codex) S 12 12 12 34816 12 0\n", b"/p/web/sub"),
        ("21 (tmux: client) S 20 12 12 34816 12 0\n", b"/"),
        ("30 (bash) S 4 30 30 34817 31 0\n", b"/p/web/.worktrees/wa"),
        (
            "31 (sleep) S 30 31 30 34817 31 0\n",
            b"/p/web/.worktrees/wa/src",
        ),
        ("32 (bg-job) S 30 32 30 34817 31 0\n", b"/"),
        ("40 (bash) S 4 40 40 34818 40 0\n", b"/x"),
        ("garbage", b""),
        ("41 (sl\x1b[2Jy) S (1 2) S 40 40 40 34818 40 0\n", b"/x"),
    ]);
    let procs = parse_procs(&text);
    assert_eq!(procs.len(), 9);
    let command = |pid| foreground(&procs, pid).map(|p| p.comm.as_str());
    assert_eq!(command(12), Some("codex"));
    assert_eq!(command(30), Some("sleep"));
    assert_eq!(command(40), Some("sl^[[2Jy) S (1 2"));
    assert_eq!(command(99), None);
    assert_eq!(command(1), None);
    assert_eq!(
        describe(&procs, 30),
        ("sleep".into(), "/p/web/.worktrees/wa/src".into())
    );
    assert_eq!(describe(&procs, 12), ("codex".into(), "/p/web".into()));
    assert_eq!(describe(&procs, 99), (String::new(), String::new()));
}

#[test]
fn a_name_or_path_with_line_breaks_stays_one_process() {
    // What `tmux list-panes` once gave a pane in a directory named like this: a
    // second pane, and a forged process table. Framed by NUL, it is one path.
    let forged: &[u8] = b"/p/evil\nmain\t1\tclaude\t/\n#ps\n1 0 1 1 claude";
    let text = dump(&[
        ("7 (bash) S 1 7 7 34816 8 0\n", b"/p"),
        (
            "8 (x\n9 (y) S 7 8 7 34816 8 0\n) S 7 8 7 34816 8 0\n",
            forged,
        ),
    ]);
    let procs = parse_procs(&text);
    assert_eq!(procs.len(), 2, "{procs:?}");
    let (command, path) = describe(&procs, 7);
    assert_eq!(command, "x^J9 (y) S 7 8 7 34816 8 0^J");
    assert_eq!(path, "/p/evil^Jmain\t1\tclaude\t/^J#ps^J1 0 1 1 claude");
}

#[test]
fn activity_from_events_and_the_foreground_command() {
    let at = |state| Some(SessionState { state, at: 1 });
    assert_eq!(activity("claude", None), ("running", false));
    assert_eq!(
        activity("claude", at(Kind::Waiting)),
        ("waiting for input", true)
    );
    assert_eq!(activity("node", at(Kind::Finished)), ("finished", true));
    assert_eq!(activity("claude", at(Kind::Working)), ("working", false));
    assert_eq!(
        activity("bash", at(Kind::Working)),
        ("at a shell prompt", true)
    );
    assert_eq!(activity("sleep", None), ("running", false));
    assert_eq!(activity("bash", None), ("at a shell prompt", true));
}

#[test]
fn busy_is_anything_but_a_shell_prompt_or_a_finished_turn() {
    let at = |state| Some(SessionState { state, at: 1 });
    let busy_for = |command, event| busy(activity(command, event).0);
    assert!(!busy_for("bash", None));
    assert!(!busy_for("bash", at(Kind::Working)));
    assert!(!busy_for("claude", at(Kind::Finished)));
    assert!(busy_for("claude", at(Kind::Waiting)));
    assert!(busy_for("claude", at(Kind::Working)));
    assert!(busy_for("claude", None));
    assert!(busy_for("sleep", None));
}

#[test]
fn worktrees_from_paths() {
    let p = Some(Path::new("/p/web"));
    assert_eq!(
        worktree_of(p, "/p/web/.worktrees/wa/src"),
        Some("wa".into())
    );
    assert_eq!(worktree_of(p, "/p/web/.worktrees/wb"), Some("wb".into()));
    assert_eq!(worktree_of(p, "/p/web"), None);
    assert_eq!(worktree_of(p, "/p/website/.worktrees/wa"), None);
    assert_eq!(worktree_of(p, "/p/web/.worktrees/a b"), None);
    assert_eq!(worktree_of(None, "/p/web/.worktrees/wa"), None);
}

#[test]
fn the_mode_is_what_the_footer_says() {
    let screen = "> say hello\n\n  ⏸ manual mode on (shift+tab to cycle)\n".as_bytes();
    assert_eq!(mode_in(screen).as_deref(), Some("manual mode on"));
    let bypass = "x\n  ⏵⏵ bypass permissions on (shift+tab to cycle)\n".as_bytes();
    assert_eq!(mode_in(bypass).as_deref(), Some("bypass permissions on"));
    assert_eq!(mode_in(b"$ \n"), None);
    // The last one wins (capture-pane gives text without escape sequences).
    let two = "plan mode on\n\u{7}  auto mode on\n".as_bytes();
    assert_eq!(mode_in(two).as_deref(), Some("auto mode on"));
    // Codex 0.171 names a mode other than its default in its header.
    let codex = ">_ OpenAI Codex (v0.171.0)\n   /p\n  permissions: YOLO mode\n\n› Ask\n".as_bytes();
    assert_eq!(mode_in(codex).as_deref(), Some("permissions: YOLO mode"));
    let boxed = "│ permissions: YOLO mode   │\n".as_bytes();
    assert_eq!(mode_in(boxed).as_deref(), Some("permissions: YOLO mode"));
}

#[test]
fn branch_names() {
    assert!(check_branch("feature-1").is_ok());
    assert!(check_branch("-x").is_err());
}
