//! Announcing VIPs by BGP through BIRD 2 (docs/ecmp.md): several active
//! directors behind a router doing ECMP.
//!
//! lbd never speaks BGP. It writes one file that BIRD's configuration
//! includes, holding a static protocol with a route for each VIP it
//! announces now, and asks BIRD to reload (`birdc configure`, a soft
//! reconfiguration: the BGP sessions stay up and only the routes that
//! changed are announced or withdrawn). The operator's BIRD configuration
//! owns the sessions (peers, BFD, export filter); lbd owns which VIPs are
//! in the file: a VIP is there while the director can serve it (the
//! program is attached, the interface is up, the VIP's services hold
//! their quorum, VRRP does not stand it by) and the operator has not
//! drained it (`lbadm bgp drain`).
//!
//! This module holds the YAML `bgp:` section, the pure rendering of the
//! include file and the views `lbadm bgp` prints; [`bird`] runs birdc.

pub mod bird;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The speaker lbd drives (only BIRD 2: see docs/ecmp.md for why).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    #[default]
    Bird,
}

/// When a VIP carrying several services is announced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumRule {
    /// While at least one of its services holds its quorum.
    #[default]
    Any,
    /// While every one of its services does.
    All,
}

/// What lbd stopping does to the announcements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopRule {
    /// Keep them (a restart: the pinned program keeps forwarding), unless
    /// the system is shutting down.
    #[default]
    Keep,
    /// Withdraw them and wait until BIRD has taken the change.
    Withdraw,
}

fn d_birdc() -> PathBuf {
    PathBuf::from("birdc")
}
fn d_protocol() -> String {
    "lbd".into()
}
fn d_join_hold() -> f64 {
    2.0
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The YAML `bgp:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpCfg {
    #[serde(default, skip_serializing_if = "is_default")]
    pub speaker: Speaker,
    /// The birdc binary (default: `birdc` on the PATH).
    #[serde(default = "d_birdc")]
    pub birdc: PathBuf,
    /// BIRD's control socket (`birdc -s`; default: birdc's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// The file lbd writes and BIRD's configuration includes (default:
    /// `<state-dir>/<instance>.bird.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<PathBuf>,
    /// The static protocol holding the IPv4 VIPs; IPv6 ones are in
    /// `<protocol>6`. The BGP export filter names them.
    #[serde(default = "d_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub quorum: QuorumRule,
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_stop: StopRule,
    /// Seconds a director joining (a VIP it did not announce before this
    /// lbd started) waits before announcing while a sync backup runs, so
    /// that the peers' connections are known before ECMP moves any here.
    #[serde(default = "d_join_hold")]
    pub join_hold: f64,
    /// The VIPs this director may announce.
    #[serde(default)]
    pub announce: Vec<Announce>,
}

/// One VIP to announce (as a /32 or /128).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    pub address: IpAddr,
    /// Standard communities, "ASN:VALUE" (16 bits each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Large communities, "ASN:DATA1:DATA2" (32 bits each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<String>,
    /// LOCAL_PREF (sent to iBGP peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Next hop to announce instead of the session's own address (BIRD
    /// uses it with `next hop keep` in the BGP channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
}

fn parse_parts<const N: usize, T: std::str::FromStr>(s: &str) -> Option<[T; N]> {
    let parts: Vec<T> = s
        .split(':')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

/// A BIRD symbol: a letter or `_`, then letters, digits and `_`.
fn is_symbol(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

impl BgpCfg {
    /// The field at fault and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !is_symbol(&self.protocol) || self.protocol.len() > 63 {
            return Err((
                "bgp.protocol".into(),
                format!(
                    "{:?} is not a BIRD protocol name (a letter or _, then letters, digits, _; at most 63)",
                    self.protocol
                ),
            ));
        }
        if BIRD_KEYWORDS.contains(&self.protocol.to_ascii_lowercase().as_str()) {
            return Err((
                "bgp.protocol".into(),
                format!("{:?} is a BIRD keyword", self.protocol),
            ));
        }
        for (field, p) in [
            ("bgp.include", self.include.as_ref()),
            ("bgp.control_socket", self.control_socket.as_ref()),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() || p.file_name().is_none() {
                    return Err((
                        field.into(),
                        format!("{}: an absolute file path is needed", p.display()),
                    ));
                }
            }
        }
        if !(0.0..=600.0).contains(&self.join_hold) {
            return Err((
                "bgp.join_hold".into(),
                format!("{} s is out of range (0..=600)", self.join_hold),
            ));
        }
        if self.birdc.as_os_str().is_empty() {
            return Err(("bgp.birdc".into(), "empty path".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in self.announce.iter().enumerate() {
            let at = |f: &str| format!("bgp.announce[{i}].{f}");
            if a.address.is_unspecified() || a.address.is_multicast() {
                return Err((at("address"), format!("{} cannot be announced", a.address)));
            }
            if !seen.insert(a.address) {
                return Err((at("address"), format!("{} is announced twice", a.address)));
            }
            for (j, c) in a.communities.iter().enumerate() {
                if parse_parts::<2, u16>(c).is_none() {
                    return Err((
                        format!("{}[{j}]", at("communities")),
                        format!("{c:?} is not ASN:VALUE (two numbers 0..65535)"),
                    ));
                }
            }
            for (j, c) in a.large_communities.iter().enumerate() {
                if parse_parts::<3, u32>(c).is_none() {
                    return Err((
                        format!("{}[{j}]", at("large_communities")),
                        format!("{c:?} is not ASN:DATA1:DATA2 (three 32-bit numbers)"),
                    ));
                }
            }
            if let Some(nh) = a.next_hop {
                if nh.is_ipv4() != a.address.is_ipv4() {
                    return Err((
                        at("next_hop"),
                        format!("{nh} is not of {}'s family", a.address),
                    ));
                }
                if nh.is_unspecified()
                    || nh.is_multicast()
                    || nh.is_loopback()
                    || is_link_local(&nh)
                {
                    return Err((
                        at("next_hop"),
                        format!("{nh} cannot be a next hop (a global unicast address is needed)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The include file: configured, or in `state_dir`.
    pub fn include_path(&self, state_dir: &Path, instance: &str) -> PathBuf {
        self.include
            .clone()
            .unwrap_or_else(|| state_dir.join(format!("{instance}.bird.conf")))
    }
}

/// Words BIRD 2's configuration reserves that could be mistaken for a
/// protocol name (a name among them is a syntax error in the include).
const BIRD_KEYWORDS: &[&str] = &[
    "protocol",
    "static",
    "bgp",
    "ospf",
    "rip",
    "babel",
    "bfd",
    "kernel",
    "device",
    "direct",
    "pipe",
    "rpki",
    "radv",
    "perf",
    "mrt",
    "ipv4",
    "ipv6",
    "vpn4",
    "vpn6",
    "route",
    "filter",
    "function",
    "table",
    "template",
    "from",
    "define",
    "include",
    "router",
    "id",
    "import",
    "export",
    "all",
    "none",
    "where",
    "if",
    "then",
    "else",
    "accept",
    "reject",
    "return",
    "print",
    "true",
    "false",
    "on",
    "off",
    "yes",
    "no",
    "via",
    "blackhole",
    "unreachable",
    "prohibit",
    "debug",
    "log",
    "attribute",
    "neighbor",
    "local",
    "as",
    "case",
    "for",
    "do",
    "net",
    "proto",
    "source",
    "dest",
    "scope",
    "preference",
    "gw",
    "ifname",
    "ifindex",
];

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether each configured VIP is announced now: `None` yes, `Some(why)`
/// withdrawn.
pub type Decisions = BTreeMap<IpAddr, Option<String>>;

/// What the daemon knows of one VIP when it decides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VipFacts {
    /// Services on the VIP, and how many of them lost their quorum.
    pub services: usize,
    pub quorum_lost: usize,
    /// VRRP stands the VIP by (this director is its backup).
    pub standby: bool,
    /// Drained by `lbadm bgp drain` (the VIP, or the whole director).
    pub drained: bool,
    /// Within the join hold (see [`BgpCfg::join_hold`]).
    pub joining: bool,
}

/// Whether a VIP with `facts` is announced (None) or why not, on a
/// director whose program is attached (`attached`) on an interface that is
/// up (`link_up`).
pub fn decide(rule: QuorumRule, attached: bool, link_up: bool, f: &VipFacts) -> Option<String> {
    if !attached {
        return Some("the XDP program is not attached".into());
    }
    if f.drained {
        return Some("drained (lbadm bgp drain)".into());
    }
    if !link_up {
        return Some("the interface is down".into());
    }
    if f.standby {
        return Some("VRRP backup for this VIP".into());
    }
    if f.joining {
        return Some("joining: waiting join_hold for the sync peers' connections".into());
    }
    if f.services == 0 {
        return Some("no virtual service on this address".into());
    }
    let lost = match rule {
        QuorumRule::Any => f.quorum_lost == f.services,
        QuorumRule::All => f.quorum_lost > 0,
    };
    if lost {
        return Some(format!(
            "quorum lost on {} of {} services",
            f.quorum_lost, f.services
        ));
    }
    None
}

/// The first lines of every include file lbd writes.
pub const HEADER: &str = "# Written by lbd: the VIPs this director announces now. Do not edit;\n# lbd rewrites it and runs `birdc configure` (docs/ecmp.md).\n";

/// The include file for `decisions` (pure: the same decisions give the
/// same text, byte for byte, so an unchanged state costs no reload).
pub fn render(cfg: &BgpCfg, decisions: &Decisions) -> String {
    let mut out = String::from(HEADER);
    // Reasons are not written: a changed reason must not reload BIRD.
    for (a, why) in decisions {
        if why.is_some() {
            let _ = writeln!(out, "# withdrawn: {a} (lbadm bgp says why)");
        }
    }
    for (v4, name) in [
        (true, cfg.protocol.clone()),
        (false, format!("{}6", cfg.protocol)),
    ] {
        let _ = writeln!(out, "protocol static {name} {{");
        let _ = writeln!(out, "  {};", if v4 { "ipv4" } else { "ipv6" });
        for a in &cfg.announce {
            if a.address.is_ipv4() != v4 || decisions.get(&a.address) != Some(&None) {
                continue;
            }
            let len = if v4 { 32 } else { 128 };
            let dest = match a.next_hop {
                Some(nh) => format!("via {nh}"),
                None => "blackhole".into(),
            };
            let mut attrs = String::new();
            for c in &a.communities {
                if let Some([x, y]) = parse_parts::<2, u16>(c) {
                    let _ = write!(attrs, " bgp_community.add(({x},{y}));");
                }
            }
            for c in &a.large_communities {
                if let Some([x, y, z]) = parse_parts::<3, u32>(c) {
                    let _ = write!(attrs, " bgp_large_community.add(({x},{y},{z}));");
                }
            }
            if let Some(p) = a.local_pref {
                let _ = write!(attrs, " bgp_local_pref = {p};");
            }
            if attrs.is_empty() {
                let _ = writeln!(out, "  route {}/{len} {dest};", a.address);
            } else {
                let _ = writeln!(out, "  route {}/{len} {dest} {{{attrs} }};", a.address);
            }
        }
        out.push_str("}\n");
    }
    out
}

/// The VIPs an include file announces (what BIRD was told by the previous
/// lbd: they stay announced across a restart).
pub fn announced_in(text: &str) -> std::collections::BTreeSet<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("route "))
        .filter_map(|r| r.split('/').next()?.parse().ok())
        .collect()
}

/// One VIP as `lbadm bgp` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipView {
    pub address: IpAddr,
    pub announced: bool,
    /// Why not, when withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A BGP session of the speaker (`birdc show protocols`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub name: String,
    pub state: String,
    pub info: String,
}

/// `lbadm bgp` and the listing's `bgp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpView {
    pub speaker: String,
    pub include: PathBuf,
    /// The whole director is drained.
    pub drained: bool,
    pub vips: Vec<VipView>,
    /// BIRD has taken the latest decisions.
    pub in_effect: bool,
    /// The last reload's failure, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Reloads done since lbd started.
    pub reloads: u64,
    pub sessions: Vec<Session>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> BgpCfg {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn renders_only_announced_vips_with_their_attributes() {
        let c = cfg("announce:\n  - {address: 192.0.2.100, communities: ['65000:100'], large_communities: ['65000:1:2'], local_pref: 200}\n  - {address: 192.0.2.101, next_hop: 192.0.2.9}\n  - {address: '2001:db8::100'}\n");
        assert_eq!(c.check(), Ok(()));
        let mut d = Decisions::new();
        d.insert("192.0.2.100".parse().unwrap(), None);
        d.insert("192.0.2.101".parse().unwrap(), None);
        d.insert("2001:db8::100".parse().unwrap(), Some("drained".into()));
        let text = render(&c, &d);
        assert!(text.contains("  route 192.0.2.100/32 blackhole { bgp_community.add((65000,100)); bgp_large_community.add((65000,1,2)); bgp_local_pref = 200; };\n"), "{text}");
        assert!(
            text.contains("  route 192.0.2.101/32 via 192.0.2.9;\n"),
            "{text}"
        );
        assert!(text.contains("# withdrawn: 2001:db8::100 (lbadm bgp says why)\n"));
        // Another reason, the same file (no reload).
        let mut other = d.clone();
        other.insert("2001:db8::100".parse().unwrap(), Some("quorum".into()));
        assert_eq!(render(&c, &other), text);
        assert!(
            text.contains("protocol static lbd6 {\n  ipv6;\n}\n"),
            "{text}"
        );
        assert!(!text.contains("route 2001:db8::100"));
        // Same decisions, same bytes.
        assert_eq!(text, render(&c, &d.clone()));
        let back: Vec<String> = announced_in(&text).iter().map(|a| a.to_string()).collect();
        assert_eq!(back, ["192.0.2.100", "192.0.2.101"]);
    }

    #[test]
    fn bad_fields_are_named() {
        for (y, field) in [
            ("protocol: 'lb d'\nannounce: []", "bgp.protocol"),
            (
                "announce: [{address: 192.0.2.1}, {address: 192.0.2.1}]",
                "bgp.announce[1].address",
            ),
            (
                "announce: [{address: 192.0.2.1, communities: ['70000:1']}]",
                "bgp.announce[0].communities[0]",
            ),
            (
                "announce: [{address: 192.0.2.1, large_communities: ['1:2']}]",
                "bgp.announce[0].large_communities[0]",
            ),
            (
                "announce: [{address: 192.0.2.1, next_hop: '2001:db8::1'}]",
                "bgp.announce[0].next_hop",
            ),
            (
                "announce: [{address: 224.0.0.1}]",
                "bgp.announce[0].address",
            ),
            ("protocol: static\nannounce: []", "bgp.protocol"),
            ("include: relative.conf\nannounce: []", "bgp.include"),
            (
                "announce: [{address: 192.0.2.1, next_hop: 127.0.0.1}]",
                "bgp.announce[0].next_hop",
            ),
        ] {
            assert_eq!(cfg(y).check().unwrap_err().0, field, "{y}");
        }
        assert!(serde_yaml::from_str::<BgpCfg>("announce: []\nspeaker: frr").is_err());
    }

    #[test]
    fn decisions_follow_quorum_drain_link_and_vrrp() {
        let f = |services, quorum_lost| VipFacts {
            services,
            quorum_lost,
            ..Default::default()
        };
        assert_eq!(decide(QuorumRule::Any, true, true, &f(2, 1)), None);
        assert!(decide(QuorumRule::All, true, true, &f(2, 1))
            .unwrap()
            .contains("1 of 2"));
        assert!(decide(QuorumRule::Any, true, true, &f(2, 2)).is_some());
        assert!(decide(QuorumRule::Any, true, true, &f(0, 0)).is_some());
        assert!(decide(QuorumRule::Any, true, false, &f(1, 0))
            .unwrap()
            .contains("interface"));
        assert!(decide(QuorumRule::Any, false, true, &f(1, 0)).is_some());
        let drained = VipFacts {
            drained: true,
            ..f(1, 0)
        };
        assert!(decide(QuorumRule::Any, true, true, &drained)
            .unwrap()
            .contains("drain"));
        let standby = VipFacts {
            standby: true,
            ..f(1, 0)
        };
        assert!(decide(QuorumRule::Any, true, true, &standby)
            .unwrap()
            .contains("VRRP"));
        let joining = VipFacts {
            joining: true,
            ..f(1, 0)
        };
        assert!(decide(QuorumRule::Any, true, true, &joining)
            .unwrap()
            .contains("joining"));
    }
}
