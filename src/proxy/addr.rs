//! Address classes the proxy refuses to connect to after resolving an allowed name
//! (unless the rule allows private addresses): a name that resolves to loopback or to
//! the cloud metadata service must not become a way into the host or its network
//! (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` must not be reached through the proxy by default, or `None` for a public
/// address. IPv6 forms that embed an IPv4 address (v4-mapped, v4-compatible, NAT64,
/// 6to4) are judged by that IPv4 address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        (169, 254, 169, 254) => "cloud metadata address",
        (0, ..) => "unspecified/\"this network\" address",
        (127, ..) => "loopback address",
        (10, ..) | (192, 168, ..) => "private address",
        (172, b, ..) if (16..32).contains(&b) => "private address",
        (169, 254, ..) => "link-local address",
        (100, b, ..) if (64..128).contains(&b) => "shared (CGNAT) address",
        (255, 255, 255, 255) => "broadcast address",
        (224..=239, ..) => "multicast address",
        (240..=255, ..) => "reserved address",
        // IETF protocol assignments; 192.0.0.192 and neighbours serve metadata on
        // some clouds.
        (192, 0, 0, _) => "IETF protocol address",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some("cloud metadata address");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    // Deprecated v4-compatible ::a.b.c.d.
    if seg[..6] == [0; 6] {
        return v4_reason(embedded_v4(seg[6], seg[7])).or(Some("IPv4-compatible address"));
    }
    // NAT64 64:ff9b::a.b.c.d and 64:ff9b:1::/48 reach the embedded IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[..3] == [0x64, 0xff9b, 1] {
        return v4_reason(embedded_v4(seg[6], seg[7]));
    }
    // 6to4 2002:a.b.c.d::/48.
    if seg[0] == 0x2002 {
        return v4_reason(embedded_v4(seg[1], seg[2]));
    }
    Some(match seg[0] {
        s if s & 0xfe00 == 0xfc00 => "private (unique local) address",
        s if s & 0xffc0 == 0xfe80 => "link-local address",
        s if s & 0xffc0 == 0xfec0 => "site-local address",
        s if s & 0xff00 == 0xff00 => "multicast address",
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
        forbidden_reason(s.parse().unwrap())
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
}
