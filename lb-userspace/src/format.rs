//! ipvsadm-compatible listings, printed from a [`Listing`].

use std::fmt::Write as _;

use crate::{
    control::{ConnView, Listing},
    model::{fmt_addr_port, ServiceSpec},
};

/// The version string ipvsadm prints; tools that parse the header expect it.
pub const IPVS_VERSION: &str = "1.2.1";

fn service_line(spec: &ServiceSpec) -> String {
    let a = &spec.addr;
    let mut s = format!(
        "{}  {} {}",
        a.protocol.upper(),
        fmt_addr_port(&a.address, a.port),
        spec.scheduler
    );
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

fn render(l: &Listing, health: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version {IPVS_VERSION} (size={})",
        l.conn_table_size
    );
    out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn");
    if health {
        out.push_str(" Health ConfW  Reason");
    }
    out.push('\n');
    for svc in &l.services {
        out.push_str(&service_line(&svc.spec));
        out.push('\n');
        for r in svc.reals.iter().filter(|r| r.in_service) {
            let _ = write!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                fmt_addr_port(&r.spec.address, r.spec.port),
                r.spec.forward.ipvsadm_name(),
                r.effective_weight,
                r.active_conns,
                r.inactive_conns
            );
            if health {
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
    out
}

/// `ipvsadm -Ln`: the weight column shows the weight in force (0 while a
/// health check holds the real server down, as keepalived's
/// inhibit_on_failure does); removed ones are not listed.
pub fn list(l: &Listing) -> String {
    render(l, false)
}

/// `lbadm -Ln --health`: ipvsadm's rows plus Health, configured weight and
/// the reason of the last transition.
pub fn list_health(l: &Listing) -> String {
    render(l, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        control::{HealthView, RealView, ServiceView, StatsView},
        model::*,
    };

    fn real(a: &str, port: u16, w: u32, act: u64, inact: u64) -> RealView {
        RealView {
            spec: RealSpec {
                u_threshold: 0,
                l_threshold: 0,
                address: a.parse().unwrap(),
                port,
                weight: w,
                forward: Forward::Route,
            },
            active_conns: act,
            inactive_conns: inact,
            stats: StatsView::default(),
            mac: None,
            persistent_conns: 0,
            health: None,
            effective_weight: w,
            in_service: true,
        }
    }

    #[test]
    fn list_matches_ipvsadm_byte_for_byte() {
        let l = Listing {
            conn_table_size: 4096,
            services: vec![
                ServiceView {
                    spec: ServiceSpec {
                        addr: ServiceAddr {
                            fwmark: 0,
                            protocol: Protocol::Tcp,
                            address: "10.0.0.100".parse().unwrap(),
                            port: 80,
                        },
                        scheduler: Scheduler::Wrr,
                        flags: SchedFlags::default(),
                        persistent: Some(360),
                        netmask: None,
                        one_packet: false,
                    },
                    stats: StatsView::default(),
                    reals: vec![real("10.0.0.11", 80, 1, 3, 12)],
                },
                ServiceView {
                    spec: ServiceSpec {
                        addr: ServiceAddr {
                            fwmark: 0,
                            protocol: Protocol::Udp,
                            address: "2001:db8::100".parse().unwrap(),
                            port: 53,
                        },
                        scheduler: Scheduler::Mh,
                        flags: SchedFlags {
                            mh_fallback: true,
                            mh_port: true,
                            ..Default::default()
                        },
                        persistent: None,
                        netmask: None,
                        one_packet: false,
                    },
                    stats: StatsView::default(),
                    reals: vec![real("2001:db8::11", 53, 65535, 0, 0)],
                },
            ],
        };
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.100:80 wrr persistent 360
  -> 10.0.0.11:80                 Route   1      3          12        
UDP  [2001:db8::100]:53 mh (mh-fallback,mh-port)
  -> [2001:db8::11]:53            Route   65535  0          0         
";
        assert_eq!(list(&l), want);
    }

    #[test]
    fn connection_listing_and_service_flags_match_ipvsadm() {
        let conns = vec![
            ConnView {
                protocol: "TCP".into(),
                expire_s: 899,
                state: "ESTABLISHED".into(),
                client: "192.0.2.7:51922".into(),
                virtual_: "10.0.0.100:80".into(),
                real: "10.0.0.11:80".into(),
                template: false,
            },
            ConnView {
                protocol: "TCP".into(),
                expire_s: 360,
                state: "NONE".into(),
                client: "192.0.2.0:0".into(),
                virtual_: "10.0.0.100:0".into(),
                real: "10.0.0.11:0".into(),
                template: true,
            },
        ];
        assert_eq!(
            list_conns(&conns),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination\n\
             TCP 14:59  ESTABLISHED 192.0.2.7:51922    10.0.0.100:80      10.0.0.11:80\n\
             TCP 06:00  NONE        192.0.2.0:0        10.0.0.100:0       10.0.0.11:0\n"
        );
        let spec = ServiceSpec {
            addr: ServiceAddr {
                fwmark: 0,
                protocol: Protocol::Udp,
                address: "10.0.0.100".parse().unwrap(),
                port: 53,
            },
            scheduler: Scheduler::Rr,
            flags: SchedFlags::default(),
            persistent: Some(600),
            netmask: Some(24),
            one_packet: true,
        };
        assert_eq!(
            service_line(&spec),
            "UDP  10.0.0.100:53 rr persistent 600 mask 255.255.255.0 ops"
        );
    }

    #[test]
    fn health_shows_in_weight_and_in_the_extra_listing() {
        let mut down = real("10.0.0.12", 80, 5, 1, 0);
        down.health = Some(HealthView {
            up: false,
            reason: "HTTP 503".into(),
        });
        down.effective_weight = 0;
        let mut removed = real("10.0.0.13", 80, 1, 0, 0);
        removed.health = Some(HealthView {
            up: false,
            reason: "connection refused".into(),
        });
        removed.effective_weight = 0;
        removed.in_service = false;
        let l = Listing {
            conn_table_size: 4096,
            services: vec![ServiceView {
                spec: ServiceSpec {
                    addr: ServiceAddr {
                        fwmark: 0,
                        protocol: Protocol::Tcp,
                        address: "10.0.0.100".parse().unwrap(),
                        port: 80,
                    },
                    scheduler: Scheduler::Rr,
                    flags: SchedFlags::default(),
                    persistent: None,
                    netmask: None,
                    one_packet: false,
                },
                stats: StatsView::default(),
                reals: vec![real("10.0.0.11", 80, 1, 2, 0), down, removed],
            }],
        };
        let plain = list(&l);
        assert!(
            plain.contains(
                "  -> 10.0.0.12:80                 Route   0      1          0         \n"
            ),
            "{plain}"
        );
        assert!(!plain.contains("10.0.0.13"), "{plain}");
        let h = list_health(&l);
        assert!(h.contains("InActConn Health ConfW  Reason\n"), "{h}");
        assert!(h.contains("10.0.0.12:80                 Route   0      1          0          down   5      HTTP 503\n"), "{h}");
        assert!(h.contains("10.0.0.11:80                 Route   1      2          0          -      1      \n"), "{h}");
    }
}
