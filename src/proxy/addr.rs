//! Address classes the proxy refuses to connect to after resolving an allowed name: a
//! name that resolves to loopback or to the cloud metadata service must not become a
//! way into the host or its network (DNS rebinding).
//!
//! What a rule with `private = true` unlocks is deliberately narrow: the private
//! networks (RFC 1918, IPv6 unique local, CGNAT), where internal servers live. The
//! host itself (loopback), link-local addresses and the metadata services are reachable
//! only through a rule naming the literal address with `private = true`, so no name —
//! not even one under a wildcard the user trusts — can be pointed at them. Unspecified,
//! multicast, broadcast and reserved addresses are never reached.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What it takes to reach a forbidden address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlock {
    /// Any rule with `private = true` (RFC 1918, unique local, CGNAT).
    Private,
    /// A rule naming this literal address, with `private = true` (loopback, link-local,
    /// metadata).
    Literal,
    /// Nothing: no TCP service is meant to be reached there.
    Never,
}

/// Why an address is refused by default, and what unlocks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub reason: &'static str,
    pub unlock: Unlock,
}

impl Forbidden {
    /// Whether the matching rule unlocks this address: `private` is the rule's
    /// `private = true`, `literal` whether the rule names the address itself.
    pub fn unlocked_by(self, private: bool, literal: bool) -> bool {
        match self.unlock {
            Unlock::Private => private,
            Unlock::Literal => private && literal,
            Unlock::Never => false,
        }
    }
}

/// Why `ip` must not be reached through the proxy by default, or `None` for a public
/// address. IPv6 forms that embed an IPv4 address (v4-mapped, v4-compatible, NAT64,
/// 6to4) are judged by that IPv4 address.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

const fn f(reason: &'static str, unlock: Unlock) -> Forbidden {
    Forbidden { reason, unlock }
}

fn v4_class(ip: Ipv4Addr) -> Option<Forbidden> {
    use Unlock::{Literal, Never, Private};
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        (169, 254, 169, 254) => f("cloud metadata address", Literal),
        (0, ..) => f("unspecified/\"this network\" address", Never),
        (127, ..) => f("loopback address", Literal),
        (10, ..) | (192, 168, ..) => f("private address", Private),
        (172, b, ..) if (16..32).contains(&b) => f("private address", Private),
        (169, 254, ..) => f("link-local address", Literal),
        (100, b, ..) if (64..128).contains(&b) => f("shared (CGNAT) address", Private),
        (255, 255, 255, 255) => f("broadcast address", Never),
        (224..=239, ..) => f("multicast address", Never),
        (240..=255, ..) => f("reserved address", Never),
        // IETF protocol assignments; 192.0.0.192 and neighbours serve metadata on
        // some clouds.
        (192, 0, 0, _) => f("IETF protocol address", Literal),
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<Forbidden> {
    use Unlock::{Literal, Never, Private};
    let seg = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some(f("cloud metadata address", Literal));
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4);
    }
    if ip.is_unspecified() {
        return Some(f("unspecified address", Never));
    }
    if ip.is_loopback() {
        return Some(f("loopback address", Literal));
    }
    // Deprecated v4-compatible ::a.b.c.d.
    if seg[..6] == [0; 6] {
        return v4_class(embedded_v4(seg[6], seg[7])).or(Some(f("IPv4-compatible address", Never)));
    }
    // NAT64 64:ff9b::a.b.c.d and 64:ff9b:1::/48 reach the embedded IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[..3] == [0x64, 0xff9b, 1] {
        return v4_class(embedded_v4(seg[6], seg[7]));
    }
    // 6to4 2002:a.b.c.d::/48.
    if seg[0] == 0x2002 {
        return v4_class(embedded_v4(seg[1], seg[2]));
    }
    Some(match seg[0] {
        s if s & 0xfe00 == 0xfc00 => f("private (unique local) address", Private),
        s if s & 0xffc0 == 0xfe80 => f("link-local address", Literal),
        s if s & 0xffc0 == 0xfec0 => f("site-local address", Literal),
        s if s & 0xff00 == 0xff00 => f("multicast address", Never),
        _ => return None,
    })
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> Option<&'static str> {
        forbidden(s.parse().unwrap()).map(|f| f.reason)
    }

    #[test]
    fn forbidden_classes() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("fd00:ec2::254", "metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("64:ff9b::10.0.0.1", "private"),
            ("64:ff9b::169.254.169.254", "metadata"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a00:1::", "private"),
        ] {
            let got = reason(ip).unwrap_or_else(|| panic!("{ip} allowed"));
            assert!(got.contains(why), "{ip}: {got}");
        }
    }

    #[test]
    fn public_and_documentation_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.0.2.1",
            "198.51.100.10",
            "203.0.113.7",
            "223.255.255.255",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    /// Each range against each kind of rule: (address, private rule on a wildcard or
    /// name, private rule naming the literal address, rule without `private`).
    #[test]
    fn what_unlocks_each_range() {
        for (ip, by_name, by_literal) in [
            ("10.1.2.3", true, true),
            ("172.16.0.1", true, true),
            ("192.168.1.1", true, true),
            ("100.64.0.1", true, true),
            ("fd12:3456::1", true, true),
            ("::ffff:10.1.2.3", true, true),
            ("64:ff9b::192.168.0.1", true, true),
            ("127.0.0.1", false, true),
            ("::1", false, true),
            ("::ffff:127.0.0.1", false, true),
            ("169.254.1.1", false, true),
            ("fe80::1", false, true),
            ("169.254.169.254", false, true),
            ("fd00:ec2::254", false, true),
            ("192.0.0.192", false, true),
            ("0.0.0.0", false, false),
            ("::", false, false),
            ("224.0.0.1", false, false),
            ("ff02::1", false, false),
            ("255.255.255.255", false, false),
            ("240.0.0.1", false, false),
        ] {
            let f = forbidden(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip} public"));
            assert_eq!(
                f.unlocked_by(true, false),
                by_name,
                "{ip} by a private name rule"
            );
            assert_eq!(
                f.unlocked_by(true, true),
                by_literal,
                "{ip} by a private literal"
            );
            assert!(!f.unlocked_by(false, true), "{ip} without private");
            assert!(!f.unlocked_by(false, false), "{ip} without private");
        }
    }
}
