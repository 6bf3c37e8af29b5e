//! A real server's findings (`lbadm diagnose --realserver`, `lbadm
//! realserver check --verbose`): what LVS direct routing needs of it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result};
use futures::TryStreamExt as _;

use super::Finding;
use crate::{model::Protocol, netif::host_prefix};

/// A socket in /proc/net/{tcp,udp}[6]: local address, port, state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub addr: IpAddr,
    pub port: u16,
    /// TCP_LISTEN is 0x0A; a bound UDP socket is 0x07 (TCP_CLOSE).
    pub state: u8,
}

/// The sockets of one /proc/net/{tcp,tcp6,udp,udp6} file.
pub fn parse_proc_net(text: &str) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = u8::from_str_radix(f.nth(1)?, 16).ok()?;
            let (a, p) = local.split_once(':')?;
            let port = u16::from_str_radix(p, 16).ok()?;
            // Each 32-bit word is printed in host order.
            let words: Option<Vec<u32>> = (0..a.len() / 8)
                .map(|i| u32::from_str_radix(&a[i * 8..i * 8 + 8], 16).ok())
                .collect();
            let words = words?;
            let addr = match words.len() {
                1 => IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes())),
                4 => {
                    let mut b = [0u8; 16];
                    for (i, w) in words.iter().enumerate() {
                        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
                    }
                    // An IPv4-mapped address is the IPv4 one.
                    IpAddr::V6(Ipv6Addr::from(b)).to_canonical()
                }
                _ => return None,
            };
            Some(Socket { addr, port, state })
        })
        .collect()
}

/// The interface of the default route in /proc/net/route (IPv4) or
/// /proc/net/ipv6_route (IPv6) text.
pub fn default_route_dev(text: &str, v6: bool) -> Option<String> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if v6 {
            // dest, dest_len, src, src_len, next hop, metric, refcnt, use, flags, dev
            (f.len() >= 10 && f[0].chars().all(|c| c == '0') && f[1] == "00" && f[9] != "lo")
                .then(|| f[9].to_string())
        } else {
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
        }
    })
}

/// What a real server is, as far as direct routing for one VIP goes.
#[derive(Debug, Clone, Default)]
pub struct RealServerFacts {
    pub vip: Option<IpAddr>,
    /// The service's port and protocol (None: no listening check).
    pub port: Option<(Protocol, u16)>,
    /// Where the VIP should be (lo).
    pub dev: String,
    /// Interfaces holding the VIP.
    pub vip_on: Vec<String>,
    /// (interface or "all", arp_ignore, arp_announce) for all and each NIC.
    pub arp: Vec<(String, u32, u32)>,
    /// (interface or "all", rp_filter).
    pub rp_filter: Vec<(String, u32)>,
    /// The default route's interface for the VIP's family.
    pub default_dev: Option<String>,
    /// Sockets of the service's protocol.
    pub sockets: Vec<Socket>,
}

/// Judges `f`.
pub fn judge(f: &RealServerFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(vip) = f.vip else {
        return out;
    };
    let dev = &f.dev;
    let pfx = host_prefix(&vip);
    if f.vip_on.iter().any(|d| d == dev) {
        out.push(Finding::ok(format!("VIP {vip} is on {dev}")));
    } else {
        out.push(Finding::error(
            format!("VIP {vip} is not on {dev}: packets the director forwards to this server (addressed to the VIP) are not accepted"),
            format!("lbadm realserver up --vip {vip}   (or: ip addr add {vip}/{pfx} dev {dev})"),
        ));
    }
    for d in f.vip_on.iter().filter(|d| *d != dev && *d != "lo") {
        out.push(Finding::error(
            format!("VIP {vip} is on {d}: this server answers ARP/ND for the VIP there and takes the clients' traffic from the director"),
            format!("ip addr del {vip}/{pfx} dev {d}; lbadm realserver up --vip {vip}"),
        ));
    }
    if vip.is_ipv4() {
        arp(f, vip, &mut out);
    }
    if vip.is_ipv4() {
        // (rp_filter is IPv4's; IPv6 has no such sysctl.)
        rp_filter(f, &mut out);
    }
    match &f.default_dev {
        Some(d) => out.push(Finding::ok(format!(
            "default route via {d}: replies go to clients directly"
        ))),
        None => out.push(Finding::error(
            format!("no {} default route in the main table: in direct routing this server answers clients itself, and its replies have no way out (unless a policy-routing table takes them)", if vip.is_ipv4() { "IPv4" } else { "IPv6" }),
            "ip route add default via ROUTER (the clients' router on this server's LAN, not the director)",
        )),
    }
    listening(f, vip, &mut out);
    out
}

/// arp_ignore >= 1 and arp_announce >= 2 in force (the maximum of `all`
/// and the interface's) on every NIC.
fn arp(f: &RealServerFacts, vip: IpAddr, out: &mut Vec<Finding>) {
    let all = f
        .arp
        .iter()
        .find(|(n, _, _)| n == "all")
        .map(|(_, i, a)| (*i, *a));
    let (ai, aa) = all.unwrap_or((0, 0));
    let mut bad = Vec::new();
    for (nic, i, a) in f.arp.iter().filter(|(n, _, _)| n != "all") {
        let (ei, ea) = (ai.max(*i), aa.max(*a));
        if ei < 1 || ea < 2 {
            bad.push(format!("{nic} (arp_ignore {ei}, arp_announce {ea})"));
        }
    }
    if bad.is_empty() {
        out.push(Finding::ok(
            "ARP suppression in force on every NIC (arp_ignore >= 1, arp_announce >= 2)",
        ));
    } else {
        out.push(Finding::error(
            format!("ARP is not suppressed on {}: this server may answer ARP for the VIP and take the clients' traffic from the director", bad.join(", ")),
            format!("lbadm realserver up --vip {vip}   (or: sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2)"),
        ));
    }
}

/// Strict reverse-path filtering on a NIC the default route does not use.
fn rp_filter(f: &RealServerFacts, out: &mut Vec<Finding>) {
    let all = f
        .rp_filter
        .iter()
        .find(|(n, _)| n == "all")
        .map(|(_, v)| *v)
        .unwrap_or(0);
    for (nic, v) in f.rp_filter.iter().filter(|(n, _)| n != "all" && n != "lo") {
        let eff = all.max(*v);
        if eff == 1 && f.default_dev.as_deref().is_some_and(|d| d != nic) {
            let d = f.default_dev.as_deref().unwrap_or("?");
            out.push(Finding::warning(
                format!("rp_filter is strict on {nic} while the default route leaves by {d}: packets from clients that the director forwards in on {nic} are dropped (their route back is not {nic})"),
                format!("sysctl -w net.ipv4.conf.{nic}.rp_filter=2 net.ipv4.conf.all.rp_filter=2   (loose), if clients' packets arrive on {nic}"),
            ));
        }
    }
}

/// Something listening on VIP:port (the VIP or a wildcard address).
fn listening(f: &RealServerFacts, vip: IpAddr, out: &mut Vec<Finding>) {
    let Some((proto, port)) = f.port else {
        return;
    };
    let want_state = if proto == Protocol::Udp { 0x07 } else { 0x0A };
    let on_port: Vec<&Socket> = f
        .sockets
        .iter()
        .filter(|s| s.port == port && s.state == want_state)
        .collect();
    let serves = on_port
        .iter()
        .any(|s| s.addr == vip || (s.addr.is_unspecified() && s.addr.is_ipv4() == vip.is_ipv4()));
    // An IPv6 wildcard takes IPv4 only if the socket is dual-stack, which
    // /proc does not tell (nginx's `listen [::]:80` is IPv6-only).
    let maybe = vip.is_ipv4()
        && on_port
            .iter()
            .any(|s| s.addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let what = if proto == Protocol::Udp {
        "bound"
    } else {
        "listening"
    };
    if !serves && maybe {
        out.push(Finding::warning(
            format!("{proto} port {port} is {what} only on [::]: it serves the IPv4 VIP {vip} only if that socket is dual-stack (nginx's `listen [::]:{port}` is IPv6-only unless ipv6only=off)"),
            format!("listen on 0.0.0.0:{port} (or {vip}:{port}) too, or make the socket dual-stack"),
        ));
        return;
    }
    if serves {
        out.push(Finding::ok(format!(
            "a {proto} socket is {what} on {}",
            crate::model::fmt_addr_port(&vip, port)
        )));
    } else if on_port.is_empty() {
        out.push(Finding::error(
            format!("nothing is {what} on {proto} port {port}: connections the director forwards here are refused"),
            "start the service, bound to the VIP or to every address (0.0.0.0 / [::])",
        ));
    } else {
        let addrs: Vec<String> = on_port
            .iter()
            .map(|s| crate::model::fmt_addr_port(&s.addr, s.port))
            .collect();
        out.push(Finding::error(
            format!("{proto} port {port} is {what} only on {}, not on the VIP {vip}: connections the director forwards here are refused", addrs.join(", ")),
            "bind the service to the VIP too, or to every address (0.0.0.0 / [::])",
        ));
    }
}

/// Reads the facts of this host (its network namespace) for `vip`.
pub async fn gather(
    vip: IpAddr,
    port: Option<(Protocol, u16)>,
    dev: &str,
    nics: &[String],
) -> Result<RealServerFacts> {
    let proc_root = Path::new("/proc");
    let read = |p: &str| std::fs::read_to_string(proc_root.join(p)).unwrap_or_default();
    let sysctl = |nic: &str, name: &str| -> u32 {
        read(&format!("sys/net/ipv4/conf/{nic}/{name}"))
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let mut f = RealServerFacts {
        vip: Some(vip),
        port,
        dev: dev.to_string(),
        ..Default::default()
    };
    let h = crate::netif::netlink().await?;
    let mut links = h.link().get().execute();
    let mut names = std::collections::HashMap::new();
    while let Some(l) = links.try_next().await.context("listing interfaces")? {
        for a in &l.attributes {
            if let rtnetlink::packet_route::link::LinkAttribute::IfName(n) = a {
                names.insert(l.header.index, n.clone());
            }
        }
    }
    for (idx, a, _) in crate::netif::all_addresses(&h).await? {
        if a == vip {
            f.vip_on.extend(names.get(&idx).cloned());
        }
    }
    f.vip_on.sort();
    for nic in std::iter::once("all").chain(nics.iter().map(String::as_str)) {
        f.arp.push((
            nic.to_string(),
            sysctl(nic, "arp_ignore"),
            sysctl(nic, "arp_announce"),
        ));
        f.rp_filter
            .push((nic.to_string(), sysctl(nic, "rp_filter")));
    }
    f.default_dev = if vip.is_ipv4() {
        default_route_dev(&read("net/route"), false)
    } else {
        default_route_dev(&read("net/ipv6_route"), true)
    };
    if let Some((proto, _)) = port {
        let base = if proto == Protocol::Udp { "udp" } else { "tcp" };
        f.sockets = parse_proc_net(&read(&format!("net/{base}")));
        f.sockets
            .extend(parse_proc_net(&read(&format!("net/{base}6"))));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::Level;

    #[test]
    fn proc_net_sockets_parse_in_both_families() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 6400020A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n";
        let s = parse_proc_net(tcp);
        assert_eq!(
            s,
            vec![
                Socket {
                    addr: "10.2.0.100".parse().unwrap(),
                    port: 80,
                    state: 0x0A
                },
                Socket {
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 8080,
                    state: 0x01
                },
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n   1: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 0\n";
        let s = parse_proc_net(tcp6);
        assert_eq!(s[0].addr, "::".parse::<IpAddr>().unwrap());
        assert_eq!(s[1].addr, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(s[1].port, 443);
    }

    #[test]
    fn the_default_route_is_found_in_either_family() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\neth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_dev(v4, false).as_deref(), Some("eth0"));
        assert_eq!(
            default_route_dev(&v4.lines().take(2).collect::<Vec<_>>().join("\n"), false),
            None
        );
        let v6 = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n";
        assert_eq!(default_route_dev(v6, true).as_deref(), Some("eth1"));
    }

    fn good() -> RealServerFacts {
        RealServerFacts {
            vip: Some("192.0.2.100".parse().unwrap()),
            port: Some((Protocol::Tcp, 80)),
            dev: "lo".into(),
            vip_on: vec!["lo".into()],
            arp: vec![("all".into(), 1, 2), ("eth0".into(), 0, 0)],
            rp_filter: vec![("all".into(), 0), ("eth0".into(), 1)],
            default_dev: Some("eth0".into()),
            sockets: vec![Socket {
                addr: "0.0.0.0".parse().unwrap(),
                port: 80,
                state: 0x0A,
            }],
        }
    }

    fn errors(f: &RealServerFacts) -> Vec<String> {
        judge(f)
            .into_iter()
            .filter(|x| x.level != Level::Ok)
            .map(|x| x.what)
            .collect()
    }

    #[test]
    fn a_well_set_up_real_server_has_no_finding() {
        assert_eq!(errors(&good()), Vec::<String>::new());
    }

    #[test]
    fn each_broken_thing_is_one_finding_with_its_fix() {
        let mut f = good();
        f.vip_on = vec!["eth0".into()];
        let e = errors(&f);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("not on lo") && e[1].contains("is on eth0"),
            "{e:?}"
        );

        let mut f = good();
        f.arp[0] = ("all".into(), 0, 2);
        let e = errors(&f);
        assert!(
            e.len() == 1 && e[0].contains("eth0 (arp_ignore 0, arp_announce 2)"),
            "{e:?}"
        );

        let mut f = good();
        f.default_dev = None;
        let e = errors(&f);
        assert!(
            e.len() == 1 && e[0].contains("no IPv4 default route"),
            "{e:?}"
        );

        let mut f = good();
        f.rp_filter.push(("eth1".into(), 1));
        let e = errors(&f);
        assert!(e.len() == 1 && e[0].contains("strict on eth1"), "{e:?}");

        let mut f = good();
        f.sockets[0].addr = "10.0.0.11".parse().unwrap();
        let e = errors(&f);
        assert!(
            e.len() == 1 && e[0].contains("only on 10.0.0.11:80"),
            "{e:?}"
        );

        let mut f = good();
        f.sockets.clear();
        let e = errors(&f);
        assert!(
            e.len() == 1 && e[0].contains("nothing is listening"),
            "{e:?}"
        );
        // An IPv6 wildcard may or may not take the IPv4 VIP.
        let mut f = good();
        f.sockets[0].addr = "::".parse().unwrap();
        let e = errors(&f);
        assert!(
            e.len() == 1 && e[0].contains("only if that socket is dual-stack"),
            "{e:?}"
        );
        // An IPv4-mapped VIP socket is the VIP's.
        let tcp6 = "  sl  local_address\n   0: 0000000000000000FFFF00006400020A:0050 00000000000000000000000000000000:0000 0A 0\n";
        let s = parse_proc_net(tcp6);
        assert_eq!(s[0].addr, "10.2.0.100".parse::<IpAddr>().unwrap());
    }
}
