//! ipvsadm-compatible listings, printed from a [`Listing`].

use std::fmt::Write as _;

use super::names::Names;
use crate::{
    control::{ConnView, Listing, RealView, ServiceView},
    model::{fmt_addr_port, Protocol, ServiceAddr, ServiceSpec},
};

/// ipvsadm's listing options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fmt {
    /// -n: numeric addresses and ports (else names from the local files).
    pub numeric: bool,
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub exact: bool,
    pub nosort: bool,
    /// lbadm's own: health state columns.
    pub health: bool,
}

/// ipvsadm's print_largenum: 9 columns, K/M/G/T above 10^8 unless --exact.
pub fn largenum(i: u64, exact: bool) -> String {
    if exact {
        let len = i.to_string().len();
        let w = if len <= 8 { 9 } else { len + 1 };
        return format!("{i:>w$}");
    }
    if i < 100_000_000 {
        format!("{i:>9}")
    } else if i < 1_000_000_000 {
        format!("{:>8}K", i / 1000)
    } else if i < 100_000_000_000 {
        format!("{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        format!("{:>8}G", i / 1_000_000_000)
    } else {
        format!("{:>8}T", i / 1_000_000_000_000)
    }
}

/// `addr:port` as ipvsadm prints it: numerically, or with names from the
/// local hosts and services files.
fn addr_port(a: &std::net::IpAddr, port: u16, proto: Protocol, f: &Fmt, names: &Names) -> String {
    if f.numeric {
        return fmt_addr_port(a, port);
    }
    let host = names.host_of(a).unwrap_or_else(|| a.to_string());
    let host = if a.is_ipv6() {
        format!("[{host}]")
    } else {
        host
    };
    let port = names
        .service_of(port, proto)
        .unwrap_or_else(|| port.to_string());
    format!("{host}:{port}")
}

/// The service's name as ipvsadm prints it in listings ("TCP  a:p",
/// "FWM  7") or in rules ("-t a:p", "-f 7").
/// A service as an ipvsadm rule names it, numerically: `-t VIP:PORT`,
/// `-u ...`, `-f MARK [-6]` (for a fix a message suggests).
pub fn rule_service(a: &ServiceAddr) -> String {
    let f = Fmt {
        numeric: true,
        ..Default::default()
    };
    svc_name(a, true, &f, &Names::default())
}

fn svc_name(a: &ServiceAddr, rule: bool, f: &Fmt, names: &Names) -> String {
    if a.is_fwmark() {
        let v6 = a.address.is_ipv6();
        return match (rule, v6) {
            (true, false) => format!("-f {}", a.fwmark),
            (true, true) => format!("-f {} -6", a.fwmark),
            (false, false) => format!("FWM  {}", a.fwmark),
            (false, true) => format!("FWM  {} IPv6", a.fwmark),
        };
    }
    let v = addr_port(&a.address, a.port, a.protocol, f, names);
    if rule {
        let opt = if a.protocol == Protocol::Tcp {
            "-t"
        } else {
            "-u"
        };
        return format!("{opt} {v}");
    }
    let mut s = format!("{}  {v}", a.protocol.upper());
    if a.address.is_ipv4() {
        s.truncate(33);
    }
    s
}

fn real_name(svc: &ServiceAddr, r: &RealView, rule: bool, f: &Fmt, names: &Names) -> String {
    let mut d = addr_port(&r.spec.address, r.spec.port, svc.protocol, f, names);
    if !rule && svc.address.is_ipv4() {
        d.truncate(28);
    }
    d
}

/// The netmask as -M / "mask" print it, None for a full-length one.
fn mask(spec: &ServiceSpec) -> Option<String> {
    let a = &spec.addr;
    let full = if a.address.is_ipv4() { 32 } else { 128 };
    let p = spec.prefix();
    if p == full {
        return None;
    }
    Some(if a.address.is_ipv4() {
        let m = if p == 0 {
            0
        } else {
            u32::MAX << (32 - p as u32)
        };
        std::net::Ipv4Addr::from(m).to_string()
    } else {
        p.to_string()
    })
}

/// `ipvsadm -S` (`-Sn` with `f.numeric`): the rules that rebuild the table,
/// in ipvsadm-save's order (-A then its -a lines, services sorted), with
/// -x/-y when a threshold is set. Port groups' members are not rules of
/// ipvsadm's (iptables marks them): `lbadm export` carries them.
pub fn rules(l: &Listing, f: &Fmt) -> String {
    let names = Names::system();
    let mut out = String::new();
    for svc in sorted(l, f) {
        let spec = &svc.spec;
        let name = svc_name(&spec.addr, true, f, names);
        let _ = write!(out, "-A {name} -s {}", spec.scheduler);
        if let Some(t) = spec.persistent {
            let _ = write!(out, " -p {t}");
            if let Some(m) = mask(spec) {
                let _ = write!(out, " -M {m}");
            }
        }
        if spec.one_packet {
            out.push_str(" -o");
        }
        if !spec.flags.is_empty() {
            let _ = write!(out, " -b {}", spec.flags.names().join(","));
        }
        out.push('\n');
        for r in reals(svc, f) {
            let _ = write!(
                out,
                "-a {name} -r {} -g -w {}",
                real_name(&spec.addr, r, true, f, names),
                r.spec.weight
            );
            if r.spec.u_threshold != 0 {
                let _ = write!(out, " -x {}", r.spec.u_threshold);
            }
            if r.spec.l_threshold != 0 {
                let _ = write!(out, " -y {}", r.spec.l_threshold);
            }
            out.push('\n');
        }
    }
    out
}

/// Services in ipvsadm's order (sorted; --nosort: creation order, as the
/// data plane's service ids were handed out).
fn sorted<'a>(l: &'a Listing, f: &Fmt) -> Vec<&'a ServiceView> {
    let mut v: Vec<&ServiceView> = l.services.iter().collect();
    if f.nosort {
        v.sort_by_key(|s| s.id);
    }
    v
}

/// Real servers in ipvsadm's order (sorted by address and port; --nosort:
/// slot order), the ones a failed check removed left out.
fn reals<'a>(s: &'a ServiceView, f: &Fmt) -> Vec<&'a RealView> {
    let mut v: Vec<&RealView> = s.reals.iter().filter(|r| r.in_service).collect();
    if f.nosort {
        v.sort_by_key(|r| r.id);
    }
    v
}

/// Every `ipvsadm -L` form: plain, --stats, --rate, --thresholds,
/// --persistent-conn (with --exact, --nosort, -n), plus lbadm's --health.
pub fn listing(l: &Listing, f: &Fmt) -> String {
    let names = Names::system();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version {IPVS_VERSION} (size={})",
        l.conn_table_size
    );
    if f.stats {
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if f.rate {
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if f.thresholds {
        let _ = writeln!(
            out,
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if f.persistent_conn {
        let _ = writeln!(
            out,
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else {
        out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
        out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn");
        if f.health {
            out.push_str(" Health ConfW  Reason");
        }
        out.push('\n');
    }
    let n = |v: u64| largenum(v, f.exact);
    // Five counters in print_largenum columns (Out* are 0 in DR: the
    // director never sees replies).
    let five = |v: [u64; 5]| v.iter().map(|x| largenum(*x, f.exact)).collect::<String>();
    for svc in sorted(l, f) {
        let name = svc_name(&svc.spec.addr, false, f, names);
        if f.stats {
            let st = &svc.stats;
            let _ = writeln!(
                out,
                "{name:<33}{}",
                five([st.conns, st.in_packets, 0, st.in_bytes, 0])
            );
        } else if f.rate {
            let r = &svc.rate;
            let _ = writeln!(out, "{name:<33}{}", five([r.cps, r.in_pps, 0, r.in_bps, 0]));
        } else {
            out.push_str(&service_line_named(&svc.spec, &name));
            out.push('\n');
        }
        for r in reals(svc, f) {
            let d = real_name(&svc.spec.addr, r, false, f, names);
            if f.stats {
                let st = &r.stats;
                let _ = writeln!(
                    out,
                    "  -> {d:<28}{}",
                    five([st.conns, st.in_packets, 0, st.in_bytes, 0])
                );
            } else if f.rate {
                let rt = &r.rate;
                let _ = writeln!(
                    out,
                    "  -> {d:<28} {:>8} {:>8} {:>8}{}{}",
                    rt.cps,
                    rt.in_pps,
                    0,
                    n(rt.in_bps),
                    n(0)
                );
            } else if f.thresholds {
                let _ = writeln!(
                    out,
                    "  -> {d:<28} {:<10} {:<10} {:<10} {:<10}",
                    r.spec.u_threshold, r.spec.l_threshold, r.active_conns, r.inactive_conns
                );
            } else if f.persistent_conn {
                let _ = writeln!(
                    out,
                    "  -> {d:<28} {:<9} {:<11} {:<10} {:<10}",
                    r.effective_weight, r.persistent_conns, r.active_conns, r.inactive_conns
                );
            } else {
                let _ = write!(
                    out,
                    "  -> {d:<28} {:<7} {:<6} {:<10} {:<10}",
                    r.spec.forward.ipvsadm_name(),
                    r.effective_weight,
                    r.active_conns,
                    r.inactive_conns
                );
                if f.health {
                    let (state, reason) = match &r.health {
                        None => ("-", String::new()),
                        Some(h) if h.up => ("up", h.reason.clone()),
                        Some(h) => ("down", h.reason.clone()),
                    };
                    let _ = write!(out, " {state:<6} {:<6} {reason}", r.spec.weight);
                }
                out.push('\n');
            }
        }
    }
    out
}

/// The version string ipvsadm prints; tools that parse the header expect it.
pub const IPVS_VERSION: &str = "1.2.1";

#[cfg(test)]
fn service_line(spec: &ServiceSpec) -> String {
    let names = Names::default();
    let f = Fmt {
        numeric: true,
        ..Default::default()
    };
    service_line_named(spec, &svc_name(&spec.addr, false, &f, &names))
}

fn service_line_named(spec: &ServiceSpec, name: &str) -> String {
    let a = &spec.addr;
    let mut s = format!("{name} {}", spec.scheduler);
    if !spec.flags.is_empty() {
        let _ = write!(s, " ({})", spec.flags.names().join(","));
    }
    if let Some(t) = spec.persistent {
        let _ = write!(s, " persistent {t}");
        let full = if a.address.is_ipv4() { 32 } else { 128 };
        let p = spec.prefix();
        if p != full {
            if a.address.is_ipv4() {
                let m = if p == 0 {
                    0
                } else {
                    u32::MAX << (32 - p as u32)
                };
                let _ = write!(s, " mask {}", std::net::Ipv4Addr::from(m));
            } else {
                let _ = write!(s, " mask {p}");
            }
        }
    }
    if spec.one_packet {
        s.push_str(" ops");
    }
    s
}

/// `ipvsadm -Lnc`: connection entries; templates show client port 0.
pub fn list_conns(conns: &[ConnView]) -> String {
    let mut out = String::from("IPVS connection entries\npro expire state       source             virtual            destination\n");
    for c in conns {
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.protocol,
            format!("{:02}:{:02}", c.expire_s / 60, c.expire_s % 60),
            c.state,
            c.client,
            c.virtual_,
            c.real
        );
    }
    out
}

/// `ipvsadm -Ln`: the weight column shows the weight in force (0 while a
/// health check holds the real server down, as keepalived's
/// inhibit_on_failure does); removed ones are not listed.
pub fn list(l: &Listing) -> String {
    listing(
        l,
        &Fmt {
            numeric: true,
            ..Default::default()
        },
    )
}

/// `lbadm vrrp`: one line per router.
pub fn vrrp(routers: &[crate::vrrp::VrrpView]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = format!(
        "{:<12} {:<8} {:>4} {:<7} {:>4} {:>4} {:<24} {:>9} {:>8} {:>8} {}\n",
        "Name",
        "Iface",
        "VRID",
        "State",
        "Prio",
        "Eff",
        "Master",
        "Since",
        "AdvTx",
        "AdvRx",
        "VIPs"
    );
    for r in routers {
        let state = match (r.state, r.released) {
            (crate::vrrp::State::Master, _) => "MASTER",
            (crate::vrrp::State::Backup, true) => "RELEASED",
            (crate::vrrp::State::Backup, false) => "BACKUP",
            (crate::vrrp::State::Fault, _) => "FAULT",
        };
        let master = r
            .master
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-".into());
        let vips: Vec<String> = r.virtual_addresses.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:>4} {:<7} {:>4} {:>4} {:<24} {:>8}s {:>8} {:>8} {}",
            r.name,
            r.interface,
            r.virtual_router_id,
            state,
            r.priority,
            r.effective_priority,
            master,
            now.saturating_sub(r.since_unix),
            r.adverts_sent,
            r.adverts_received,
            vips.join(",")
        );
        for (why, n) in &r.refused {
            let _ = writeln!(out, "  refused {n}: {why}");
        }
    }
    out
}

/// `lbadm -Ln --health`: ipvsadm's rows plus Health, configured weight and
/// the reason of the last transition.
pub fn list_health(l: &Listing) -> String {
    listing(
        l,
        &Fmt {
            numeric: true,
            health: true,
            ..Default::default()
        },
    )
}

/// `lbadm bgp`: one line per VIP, then the speaker and its sessions.
pub fn bgp(b: &crate::bgp::BgpView) -> String {
    let mut out = format!("{:<40} {:<10} {}\n", "VIP", "State", "Reason");
    for v in &b.vips {
        let state = if v.announced {
            "announced"
        } else {
            "withdrawn"
        };
        let _ = writeln!(
            out,
            "{:<40} {:<10} {}",
            v.address.to_string(),
            state,
            v.reason.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        out,
        "Speaker {} (include {}): {}{}",
        b.speaker,
        b.include.display(),
        match (&b.error, b.in_effect) {
            (Some(e), _) => format!("NOT IN EFFECT: {e}"),
            (None, true) => "in effect".into(),
            (None, false) => "reloading".into(),
        },
        if b.drained { "; director drained" } else { "" }
    );
    if !b.sessions.is_empty() {
        let _ = writeln!(out, "{:<16} {:<8} Info", "Session", "State");
        for s in &b.sessions {
            let _ = writeln!(out, "{:<16} {:<8} {}", s.name, s.state, s.info);
        }
    }
    out
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
