//! The human-readable view of a policy for `sandboxctl policy <client>`.

use std::fmt::Write as _;

use super::{DEFAULT_PORT, Policy, Source};

/// Renders what a policy allows and denies, bundles expanded, with warnings.
pub fn render_summary(policy: &Policy) -> String {
    let mut out = String::new();
    let port_note = |p: &super::Pattern| match p.port {
        Some(_) => String::new(),
        None => format!(":{DEFAULT_PORT}"),
    };
    out.push_str("Allowed (names are checked before any DNS lookup):\n");
    let rules = policy.effective_allow();
    if rules.is_empty() {
        out.push_str("  nothing: every connection is refused\n");
    }
    for r in &rules {
        let from = match r.source {
            Source::Allow => String::new(),
            Source::Bundle(b) => format!("  (bundle {b})"),
        };
        let private = if r.private {
            "  [private addresses allowed]"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {}{}{from}{private}",
            r.pattern,
            port_note(&r.pattern)
        );
    }
    if policy.bundles.is_empty() {
        out.push_str("Bundles: none\n");
    } else {
        let names: Vec<&str> = policy.bundles.iter().map(|b| b.name()).collect();
        let _ = writeln!(out, "Bundles: {}", names.join(", "));
    }
    out.push_str("Denied (wins over allowed; no port means every port):\n");
    if policy.deny.is_empty() {
        out.push_str("  (none)\n");
    }
    for d in &policy.deny {
        let _ = writeln!(out, "  {d}");
    }
    out.push_str(
        "Addresses: private networks (RFC 1918, IPv6 unique local, CGNAT) only through a \
         rule with private = true; loopback, link-local and cloud metadata only through a \
         rule naming the IP literal with private = true; unspecified and multicast never.\n",
    );
    for w in policy.warnings() {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    #[test]
    fn summary_lists_rules_bundles_denies_and_warnings() {
        let p = parse(
            r#"bundles = ["claude"]
               allow = ["a.example.com:80", { host = "git.corp.example:22", private = true },
                        "storage.googleapis.com"]
               deny = ["claude.ai"]"#,
        )
        .unwrap();
        let s = render_summary(&p);
        insta::assert_snapshot!(s, @r"
        Allowed (names are checked before any DNS lookup):
          a.example.com:80
          git.corp.example:22  [private addresses allowed]
          storage.googleapis.com:443
          api.anthropic.com:443  (bundle claude)
          claude.ai:443  (bundle claude)
          platform.claude.com:443  (bundle claude)
        Bundles: claude
        Denied (wins over allowed; no port means every port):
          claude.ai
        Addresses: private networks (RFC 1918, IPv6 unique local, CGNAT) only through a rule with private = true; loopback, link-local and cloud metadata only through a rule naming the IP literal with private = true; unspecified and multicast never.
        warning: `storage.googleapis.com` covers storage.googleapis.com, where anyone can store data: allowing it lets the agent send data out
        ");
    }

    #[test]
    fn empty_policy_says_everything_is_refused() {
        assert!(
            render_summary(&Policy::default()).contains("nothing: every connection is refused")
        );
    }
}
