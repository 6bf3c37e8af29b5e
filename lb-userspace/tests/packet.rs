//! Packet tests: the real XDP object under BPF_PROG_TEST_RUN, with the maps
//! filled by the daemon's own code (Director::apply). Needs root.

mod common;

use std::collections::HashMap;

use common::*;
use lb_userspace::{
    director::{addr_bytes, service_key},
    model::RealSpec,
};

const TABLE: &str = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: udp, address: 192.0.2.100, port: 53, scheduler: mh,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
  - {protocol: tcp, address: 192.0.2.101, port: 0, persistent: 360, scheduler: mh,
     real_servers: [{address: 192.0.2.13}]}
  - {protocol: tcp, address: "2001:db8::100", port: 443, scheduler: rr,
     real_servers: [{address: "2001:db8::11"}]}
  - {protocol: tcp, address: 192.0.2.102, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.14}]}
  - {protocol: tcp, address: 192.0.2.103, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11, weight: 0}]}
"#;

fn director() -> TestDirector {
    TestDirector::new(
        table(TABLE),
        &[
            ("192.0.2.11", Some(rs_mac(11))),
            ("192.0.2.12", Some(rs_mac(12))),
            ("192.0.2.13", Some(rs_mac(13))),
            // 192.0.2.14 deliberately unresolved
            ("2001:db8::11", Some(rs_mac(0x61))),
        ],
    )
}

/// Asserts a forwarded frame: MACs rewritten, everything after them untouched.
fn assert_forwarded(input: &[u8], out: &[u8], rs: [u8; 6]) {
    assert_eq!(out.len(), input.len(), "length changed");
    assert_eq!(&out[0..6], &rs, "destination MAC must be the real server's");
    assert_eq!(
        &out[6..12],
        &DIRECTOR_MAC,
        "source MAC must be the director's"
    );
    assert_eq!(
        &out[12..],
        &input[12..],
        "bytes after the MACs must be untouched"
    );
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    /// For XDP_TX: the set of acceptable real-server MACs.
    to: &'static [u8],
    /// Counter that must go up by one.
    counter: &'static str,
}

#[test]
fn packet_table() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let mut t = director();
    let mut truncated_l3 = tcp("203.0.113.10", 1000, "192.0.2.100", 80, SYN).frame();
    truncated_l3.truncate(14 + 10);
    let mut truncated_tcp = tcp("203.0.113.10", 1000, "192.0.2.100", 80, SYN).frame();
    truncated_tcp.truncate(14 + 20 + 8);
    let mut bad_ihl = tcp("203.0.113.10", 1000, "192.0.2.100", 80, SYN).frame();
    bad_ihl[14] = 0x43;
    let mut options_past_end = tcp("203.0.113.10", 1000, "192.0.2.100", 80, SYN).frame();
    options_past_end[14] = 0x4f; // IHL 15 = 60 bytes of header, frame too short
    options_past_end.truncate(14 + 40);
    let arp = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CLIENT_SIDE_MAC);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0; 28]);
        f
    };
    let cases = vec![
        Case {
            name: "VIP hit, new TCP flow",
            frame: tcp("203.0.113.10", 40000, "192.0.2.100", 80, SYN).frame(),
            action: XDP_TX,
            to: &[11, 12, 13],
            counter: "conn_new",
        },
        Case {
            name: "UDP to an mh service",
            frame: udp("203.0.113.10", 5000, "192.0.2.100", 53).frame(),
            action: XDP_TX,
            to: &[11, 12],
            counter: "tx",
        },
        Case {
            name: "VLAN-tagged VIP hit keeps its tag",
            frame: Pkt {
                vlan: Some(42),
                ..tcp("203.0.113.10", 40001, "192.0.2.100", 80, SYN)
            }
            .frame(),
            action: XDP_TX,
            to: &[11, 12, 13],
            counter: "tx",
        },
        Case {
            name: "IPv4 options are skipped to find the ports",
            frame: Pkt {
                ip_options: 8,
                ..tcp("203.0.113.10", 40002, "192.0.2.100", 80, SYN)
            }
            .frame(),
            action: XDP_TX,
            to: &[11, 12, 13],
            counter: "tx",
        },
        Case {
            name: "IPv6 VIP hit",
            frame: tcp("2001:db8:ffff::10", 40003, "2001:db8::100", 443, SYN).frame(),
            action: XDP_TX,
            to: &[0x61],
            counter: "tx",
        },
        Case {
            name: "port-0 service matches any port",
            frame: tcp("203.0.113.10", 40004, "192.0.2.101", 8443, SYN).frame(),
            action: XDP_TX,
            to: &[13],
            counter: "tx",
        },
        Case {
            name: "non-VIP address passes",
            frame: tcp("203.0.113.10", 40005, "192.0.2.2", 22, SYN).frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_not_vip",
        },
        Case {
            name: "VIP on a port without a service passes",
            frame: tcp("203.0.113.10", 40006, "192.0.2.100", 22, SYN).frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_not_vip",
        },
        Case {
            name: "UDP to a TCP-only port passes",
            frame: udp("203.0.113.10", 40007, "192.0.2.100", 80).frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_not_vip",
        },
        Case {
            name: "ARP passes",
            frame: arp,
            action: XDP_PASS,
            to: &[],
            counter: "pass_not_ip",
        },
        Case {
            name: "IPv4 fragment passes",
            frame: Pkt {
                frag: 0x2000,
                ..tcp("203.0.113.10", 40008, "192.0.2.100", 80, SYN)
            }
            .frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_fragment",
        },
        Case {
            name: "IPv6 extension header passes",
            frame: Pkt {
                v6_next: Some(0),
                ..tcp("2001:db8:ffff::10", 40009, "2001:db8::100", 443, SYN)
            }
            .frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_ipv6_ext",
        },
        Case {
            name: "truncated IPv4 header is dropped",
            frame: truncated_l3,
            action: XDP_DROP,
            to: &[],
            counter: "drop_malformed",
        },
        Case {
            name: "truncated TCP header is dropped",
            frame: truncated_tcp,
            action: XDP_DROP,
            to: &[],
            counter: "drop_malformed",
        },
        Case {
            name: "IHL below 5 is dropped",
            frame: bad_ihl,
            action: XDP_DROP,
            to: &[],
            counter: "drop_malformed",
        },
        Case {
            name: "IPv4 options beyond the frame are dropped",
            frame: options_past_end,
            action: XDP_DROP,
            to: &[],
            counter: "drop_malformed",
        },
        Case {
            name: "only real server unresolved: dropped, never a wrong MAC",
            frame: tcp("203.0.113.10", 40010, "192.0.2.102", 80, SYN).frame(),
            action: XDP_DROP,
            to: &[],
            counter: "drop_no_real",
        },
        Case {
            name: "only real server quiescent (weight 0): dropped",
            frame: tcp("203.0.113.10", 40011, "192.0.2.103", 80, SYN).frame(),
            action: XDP_DROP,
            to: &[],
            counter: "drop_no_real",
        },
    ];
    let mut failures = Vec::new();
    for c in cases {
        let before = t.counter(c.counter);
        let (action, out) = t.run(&c.frame);
        let after = t.counter(c.counter);
        let mut problems = Vec::new();
        if action != c.action {
            problems.push(format!("action {action}, want {}", c.action));
        }
        if after != before + 1 {
            problems.push(format!("counter {} went {before} -> {after}", c.counter));
        }
        if c.action == XDP_TX && action == XDP_TX {
            let ok = c.to.iter().any(|n| out[0..6] == rs_mac(*n));
            if !ok {
                problems.push(format!(
                    "sent to {:02x?}, not one of {:?}",
                    &out[0..6],
                    c.to
                ));
            }
            assert_forwarded(&c.frame, &out, out[0..6].try_into().unwrap());
        } else if out != c.frame {
            problems.push("frame modified although not forwarded".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn known_flow_stays_on_its_real_server_after_weight_changes() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let mut t = director();
    let syn = tcp("203.0.113.10", 41000, "192.0.2.100", 80, SYN).frame();
    let (a, out) = t.run(&syn);
    assert_eq!(a, XDP_TX);
    let first: [u8; 6] = out[0..6].try_into().unwrap();
    let n = first[5];
    // Quiesce the chosen server: weight 0 means no new connections...
    let svc = *t.d.table.services.keys().next().unwrap();
    let mut tab = t.d.table.clone();
    tab.edit_real(
        &svc,
        RealSpec {
            u_threshold: 0,
            l_threshold: 0,
            weight: 0,
            ..*tab.services[&svc]
                .reals
                .values()
                .find(|r| r.address.to_string() == format!("192.0.2.{n}"))
                .unwrap()
        },
    )
    .unwrap();
    t.d.apply(tab).unwrap();
    // ...but the established flow keeps going to it.
    for flags in [ACK, ACK | 0x08, ACK] {
        let f = tcp("203.0.113.10", 41000, "192.0.2.100", 80, flags).frame();
        let (a, out) = t.run(&f);
        assert_eq!(a, XDP_TX);
        assert_forwarded(&f, &out, first);
    }
    // New flows never reach the quiesced server.
    for port in 42000..42030 {
        let f = tcp("203.0.113.10", port, "192.0.2.100", 80, SYN).frame();
        let (a, out) = t.run(&f);
        assert_eq!(a, XDP_TX);
        assert_ne!(&out[0..6], &first, "new flow sent to a weight-0 server");
    }
    // Removing it from the service entirely: the flow still continues.
    let mut tab = t.d.table.clone();
    tab.del_real(&svc, format!("192.0.2.{n}").parse().unwrap())
        .unwrap();
    t.d.apply(tab).unwrap();
    let f = tcp("203.0.113.10", 41000, "192.0.2.100", 80, ACK).frame();
    let (a, out) = t.run(&f);
    assert_eq!(a, XDP_TX);
    assert_forwarded(&f, &out, first);
}

#[test]
fn rr_and_wrr_spread_new_connections_by_weight() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: wrr,
     real_servers: [{address: 192.0.2.11, weight: 3}, {address: 192.0.2.12, weight: 1},
                    {address: 192.0.2.13, weight: 0}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    let count = |t: &mut TestDirector, dport: u16| {
        let mut m: HashMap<u8, u32> = HashMap::new();
        for i in 0..400u16 {
            let f = tcp("203.0.113.10", 10000 + i, "192.0.2.100", dport, SYN).frame();
            let (a, out) = t.run(&f);
            assert_eq!(a, XDP_TX);
            *m.entry(out[5]).or_default() += 1;
        }
        m
    };
    let wrr = count(&mut t, 80);
    assert_eq!(
        (wrr.get(&11), wrr.get(&12), wrr.get(&13)),
        (Some(&300), Some(&100), None)
    );
    let rr = count(&mut t, 81);
    let mut v: Vec<u32> = rr.values().copied().collect();
    v.sort();
    assert_eq!(v.len(), 3);
    assert!(v[2] - v[0] <= 1, "rr uneven: {rr:?}");
}

#[test]
fn mh_is_consistent_per_client_and_mh_port_spreads_ports() {
    if !require_root() {
        return;
    }
    let yaml = r#"
services:
  - {protocol: udp, address: 192.0.2.100, port: 53, scheduler: mh,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: udp, address: 192.0.2.100, port: 54, scheduler: mh, flags: [mh-port],
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    // Without mh-port: every port of one client lands on one real server.
    let mut seen = std::collections::BTreeSet::new();
    for p in 0..50 {
        let (_, out) = t.run(&udp("203.0.113.10", 20000 + p, "192.0.2.100", 53).frame());
        seen.insert(out[5]);
    }
    assert_eq!(
        seen.len(),
        1,
        "mh without mh-port split one client: {seen:?}"
    );
    // Different clients spread over all three.
    let mut spread = std::collections::BTreeSet::new();
    for c in 1..60 {
        let (_, out) = t.run(&udp(&format!("203.0.113.{c}"), 20000, "192.0.2.100", 53).frame());
        spread.insert(out[5]);
    }
    assert_eq!(spread.len(), 3);
    // With mh-port: one client's ports spread.
    let mut ports = std::collections::BTreeSet::new();
    for p in 0..60 {
        let (_, out) = t.run(&udp("203.0.113.10", 30000 + p, "192.0.2.100", 54).frame());
        ports.insert(out[5]);
    }
    assert_eq!(ports.len(), 3, "mh-port did not spread ports");
}

#[test]
fn tcp_states_counters_and_port_reuse() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let mut t = director();
    let key = |sport: u16| lb_common::ConnKey {
        saddr: addr_bytes(&"203.0.113.10".parse().unwrap()).0,
        daddr: addr_bytes(&"192.0.2.100".parse().unwrap()).0,
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto: 6,
        family: 4,
        _pad: [0; 2],
    };
    let state = |t: &TestDirector| t.d.dp.conns.get(&key(43000), 0).unwrap().state;
    use lb_common::tcp_state::*;
    let mut bytes = 0u64;
    for (flags, want) in [
        (SYN, SYN_RECV),
        (ACK, ESTABLISHED),
        (ACK | 0x08, ESTABLISHED),
        (FIN | ACK, FIN_WAIT),
        (ACK, FIN_WAIT),
        (RST, CLOSE),
    ] {
        let f = tcp("203.0.113.10", 43000, "192.0.2.100", 80, flags).frame();
        bytes += (f.len() - 14) as u64;
        assert_eq!(t.run(&f).0, XDP_TX);
        assert_eq!(state(&t), want, "after flags {flags:#x}");
    }
    let l = t.d.listing();
    let svc = &l.services[0];
    assert_eq!(svc.stats.conns, 1);
    assert_eq!(svc.stats.in_packets, 6);
    assert_eq!(svc.stats.in_bytes, bytes);
    let inactive: u64 = svc.reals.iter().map(|r| r.inactive_conns).sum();
    assert_eq!(inactive, 1, "a CLOSE entry counts as InActConn");
    // A new SYN on the closed entry starts a new connection.
    let reuse = t.counter("conn_reuse");
    let f = tcp("203.0.113.10", 43000, "192.0.2.100", 80, SYN).frame();
    assert_eq!(t.run(&f).0, XDP_TX);
    assert_eq!(t.counter("conn_reuse"), reuse + 1);
    assert_eq!(state(&t), SYN_RECV);
    let f = tcp("203.0.113.10", 43000, "192.0.2.100", 80, ACK).frame();
    t.run(&f);
    let l = t.d.listing();
    let active: u64 = l.services[0].reals.iter().map(|r| r.active_conns).sum();
    assert_eq!(active, 1);
    assert_eq!(l.services[0].stats.conns, 2);
    // The service key helper matches what the program looks up.
    assert!(t
        .d
        .dp
        .services
        .get(&service_key(&l.services[0].spec.addr), 0)
        .is_ok());
}

#[test]
fn restart_recovers_ids_and_connections_from_pins() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let pins = PinDir::new("restart");
    let dir = pins.0.clone();
    let limits = lb_userspace::config::Limits {
        max_services: 8,
        max_reals: 16,
        max_conns: 1024,
    };
    let macs: Vec<(std::net::IpAddr, Option<[u8; 6]>)> = [11u8, 12, 13]
        .iter()
        .map(|n| (format!("192.0.2.{n}").parse().unwrap(), Some(rs_mac(*n))))
        .collect();
    let load = || {
        let mut dp = lb_userspace::dataplane::Dataplane::load(&dir, &limits).unwrap();
        dp.set_director_mac(DIRECTOR_MAC).unwrap();
        lb_userspace::director::Director::recover(dp).unwrap()
    };
    let mut d1 = load();
    d1.update_macs(&macs).unwrap();
    d1.apply(table(TABLE)).unwrap();
    let f = tcp("203.0.113.10", 44000, "192.0.2.100", 80, SYN).frame();
    let (_, out) = d1.dp.test_run(&f).unwrap();
    let first = out[5];
    drop(d1);
    // A new daemon: the same config reapplied with rr (which would pick
    // another server for a new flow) keeps the known flow where it was.
    let mut d2 = load();
    d2.apply(table(TABLE)).unwrap();
    for _ in 0..3 {
        let f = tcp("203.0.113.10", 44000, "192.0.2.100", 80, ACK).frame();
        let (a, out) = d2.dp.test_run(&f).unwrap();
        assert_eq!(a, XDP_TX);
        assert_eq!(out[5], first, "flow moved after restart");
    }
    drop(d2);
}

#[test]
fn reapplying_an_unchanged_table_republishes_nothing() {
    if !require_root() {
        return;
    }
    let mut t = director();
    let gens = |t: &TestDirector| -> Vec<(u8, u32)> {
        t.d.table
            .services
            .keys()
            .map(|a| {
                let v = t.d.dp.services.get(&service_key(a), 0).unwrap();
                (v.gen, v.ring_len)
            })
            .collect()
    };
    let before = gens(&t);
    let same = t.d.table.clone();
    t.d.apply(same).unwrap();
    assert_eq!(gens(&t), before, "an identical apply flipped a ring");
    // One weight change in the mh service with two real servers
    // republishes exactly that service's ring.
    let mut tab = t.d.table.clone();
    let (idx, svc) = tab
        .services
        .iter()
        .enumerate()
        .find(|(_, (_, s))| {
            s.spec.scheduler == lb_userspace::model::Scheduler::Mh && s.reals.len() == 2
        })
        .map(|(i, (a, _))| (i, *a))
        .unwrap();
    let r = *tab.services[&svc].reals.values().next().unwrap();
    tab.edit_real(&svc, RealSpec { weight: 5, ..r }).unwrap();
    t.d.apply(tab).unwrap();
    let after = gens(&t);
    let flipped: Vec<usize> = (0..before.len())
        .filter(|i| before[*i].0 != after[*i].0)
        .collect();
    assert_eq!(flipped, vec![idx], "before {before:?} after {after:?}");
    // rr ignores weights: a weight change there leaves the ring alone.
    let mut tab = t.d.table.clone();
    let rr = *tab.services.keys().next().unwrap();
    let r = *tab.services[&rr].reals.values().next().unwrap();
    tab.edit_real(&rr, RealSpec { weight: 7, ..r }).unwrap();
    t.d.apply(tab).unwrap();
    assert_eq!(gens(&t)[0], after[0]);
}

#[test]
fn health_verdicts_weights_quorum_and_sorry_server() {
    use lb_userspace::health::{ServicePolicy, WeightChange};
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: wrr,
     real_servers: [{address: 192.0.2.11, weight: 2}, {address: 192.0.2.12, weight: 2},
                    {address: 192.0.2.13, weight: 2}]}
"#;
    let macs = [
        ("192.0.2.11", Some(rs_mac(11))),
        ("192.0.2.12", Some(rs_mac(12))),
        ("192.0.2.13", Some(rs_mac(13))),
        ("192.0.2.99", Some(rs_mac(99))),
    ];
    let mut t = TestDirector::new(table(yaml), &macs);
    let svc = *t.d.table.services.keys().next().unwrap();
    t.d.set_policies(
        [(
            svc,
            ServicePolicy {
                sorry_server: Some("192.0.2.99".parse().unwrap()),
                quorum: 3,
                hysteresis: 1,
                ..Default::default()
            },
        )]
        .into(),
    );
    let tab = t.d.table.clone();
    t.d.apply(tab).unwrap();
    let mut port = 50000u16;
    let mut spread = |t: &mut TestDirector, n: u16| {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..n {
            port += 1;
            let (a, out) = t.run(&tcp("203.0.113.10", port, "192.0.2.100", 80, SYN).frame());
            assert_eq!(a, XDP_TX);
            *seen.entry(out[5]).or_insert(0u32) += 1;
        }
        seen
    };
    let ip = |n: u8| -> std::net::IpAddr { format!("192.0.2.{n}").parse().unwrap() };
    assert_eq!(
        spread(&mut t, 12).keys().copied().collect::<Vec<_>>(),
        vec![11, 12, 13]
    );
    // Agent: rs11 at 50% (weight 1 of 2), rs12 drained.
    t.d.set_health(
        svc,
        ip(11),
        true,
        Some(WeightChange::Percent(50)),
        "agent: 50%".into(),
    )
    .unwrap();
    t.d.set_health(
        svc,
        ip(12),
        true,
        Some(WeightChange::Percent(0)),
        "agent: drain".into(),
    )
    .unwrap();
    let s = spread(&mut t, 30);
    assert_eq!(
        (s.get(&11), s.get(&12), s.get(&13)),
        (Some(&10), None, Some(&20)),
        "{s:?}"
    );
    // External program: absolute weight.
    t.d.set_health(
        svc,
        ip(12),
        true,
        Some(WeightChange::Absolute(4)),
        "exit 6".into(),
    )
    .unwrap();
    assert!(spread(&mut t, 14).get(&12).copied().unwrap_or(0) >= 7);
    t.d.set_health(svc, ip(11), true, None, "ok".into())
        .unwrap();
    t.d.set_health(svc, ip(12), true, None, "ok".into())
        .unwrap();
    // Down one by one: healthy weight 4, then 2 (2 + 1 >= 3: quorum kept).
    t.d.set_health(svc, ip(11), false, None, "HTTP 503".into())
        .unwrap();
    t.d.set_health(svc, ip(12), false, None, "HTTP 503".into())
        .unwrap();
    assert_eq!(
        spread(&mut t, 6).keys().copied().collect::<Vec<_>>(),
        vec![13]
    );
    assert!(!t.d.sorry_active(&svc));
    // All down: quorum lost, the sorry server takes every new connection.
    t.d.set_health(svc, ip(13), false, None, "connect timeout 1 s".into())
        .unwrap();
    assert_eq!(
        spread(&mut t, 6).keys().copied().collect::<Vec<_>>(),
        vec![99]
    );
    assert!(t.d.sorry_active(&svc));
    let l = t.d.listing();
    assert!(l.services[0]
        .reals
        .iter()
        .any(|r| r.spec.address == ip(99) && r.in_service));
    // One back (healthy 2 < quorum + hysteresis 4): still the sorry server.
    t.d.set_health(svc, ip(11), true, None, "ok".into())
        .unwrap();
    assert_eq!(
        spread(&mut t, 4).keys().copied().collect::<Vec<_>>(),
        vec![99]
    );
    // Two back (4): quorum regained, the sorry server gets nothing new.
    t.d.set_health(svc, ip(12), true, None, "ok".into())
        .unwrap();
    assert_eq!(
        spread(&mut t, 8).keys().copied().collect::<Vec<_>>(),
        vec![11, 12]
    );
    assert!(!t.d.sorry_active(&svc));
}

#[test]
fn persistence_templates_netmask_port_zero_and_one_packet() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr, persistent: 360, netmask: 24,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.101, port: 0, scheduler: rr, persistent: 1,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: udp, address: 192.0.2.100, port: 53, scheduler: rr, one_packet: true,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    let to = |t: &mut TestDirector, src: &str, sport: u16, dst: &str, dport: u16| -> u8 {
        let (a, out) = t.run(&tcp(src, sport, dst, dport, SYN).frame());
        assert_eq!(a, XDP_TX);
        out[5]
    };
    // Every connection of a client, and of its /24, follows the template.
    let first = to(&mut t, "203.0.113.10", 1000, "192.0.2.100", 80);
    for p in 1001..1010 {
        assert_eq!(to(&mut t, "203.0.113.10", p, "192.0.2.100", 80), first);
    }
    assert_eq!(
        to(&mut t, "203.0.113.77", 2000, "192.0.2.100", 80),
        first,
        "same /24"
    );
    assert_eq!(t.counter("persist_new"), 1);
    assert_eq!(t.counter("persist_hit"), 10);
    // Another network gets its own template (rr moves on).
    let other = to(&mut t, "198.51.100.5", 3000, "192.0.2.100", 80);
    assert_ne!(other, first);
    // -Lnc shows the templates with client port 0 and state NONE.
    let conns = t.d.connections(100);
    let tpl: Vec<_> = conns.iter().filter(|c| c.template).collect();
    assert_eq!(tpl.len(), 2, "{conns:?}");
    assert!(tpl.iter().any(|c| c.client == "203.0.113.0:0"
        && c.virtual_ == "192.0.2.100:80"
        && c.state == "NONE"
        && c.real == format!("192.0.2.{first}:80")));
    let l = t.d.listing();
    let pc: u64 = l.services[0].reals.iter().map(|r| r.persistent_conns).sum();
    assert_eq!(pc, 2);
    // Quiescing the template's real server keeps its persistent clients on
    // it (IPVS); removing it sends them elsewhere.
    let svc = *t.d.table.services.keys().next().unwrap();
    let ip: std::net::IpAddr = format!("192.0.2.{first}").parse().unwrap();
    let mut tab = t.d.table.clone();
    let r = tab.services[&svc].reals[&(ip, 80)];
    tab.edit_real(&svc, RealSpec { weight: 0, ..r }).unwrap();
    t.d.apply(tab).unwrap();
    assert_eq!(to(&mut t, "203.0.113.10", 1100, "192.0.2.100", 80), first);
    let mut tab = t.d.table.clone();
    tab.del_real(&svc, ip).unwrap();
    t.d.apply(tab).unwrap();
    assert_ne!(to(&mut t, "203.0.113.10", 1101, "192.0.2.100", 80), first);

    // Port-0 service: all ports of the VIP go to one real server.
    let any = to(&mut t, "203.0.113.20", 4000, "192.0.2.101", 443);
    for (sp, dp) in [(4001, 80), (4002, 8080), (4003, 22)] {
        assert_eq!(to(&mut t, "203.0.113.20", sp, "192.0.2.101", dp), any);
    }
    // The template (timeout 1 s) outlives its timeout while a connection of
    // its client lives, then goes.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    t.d.sweep(true);
    let has_tpl = |t: &mut TestDirector| {
        t.d.connections(1000)
            .iter()
            .any(|c| c.template && c.virtual_ == "192.0.2.101:0")
    };
    assert!(
        has_tpl(&mut t),
        "template dropped while its connections live"
    );
    // Its connections expire; the re-armed template lasts one more timeout.
    t.d.timeouts = [0; 12];
    t.d.sweep(true);
    assert!(has_tpl(&mut t));
    std::thread::sleep(std::time::Duration::from_millis(1300));
    t.d.sweep(true);
    assert!(!has_tpl(&mut t), "expired template kept");

    // One-packet scheduling: every datagram scheduled on its own, no entry.
    let before = t.d.dp.conns.keys().count();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (a, out) = t.run(&udp("203.0.113.30", 5353, "192.0.2.100", 53).frame());
        assert_eq!(a, XDP_TX);
        seen.insert(out[5]);
    }
    assert_eq!(seen.len(), 3, "one flow spread by rr: {seen:?}");
    assert_eq!(t.d.dp.conns.keys().count(), before, "-o created entries");
}

#[test]
fn least_connection_schedulers_follow_live_counts() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: lc,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: wlc,
     real_servers: [{address: 192.0.2.11, weight: 1}, {address: 192.0.2.12, weight: 2}]}
  - {protocol: tcp, address: 192.0.2.100, port: 82, scheduler: nq,
     real_servers: [{address: 192.0.2.11, weight: 100}, {address: 192.0.2.12, weight: 1}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    // Opens an established connection (SYN, ACK); returns its real server.
    let tally = |v: &[u8]| {
        let mut m = std::collections::BTreeMap::new();
        for x in v {
            *m.entry(*x).or_insert(0u32) += 1;
        }
        m
    };
    // lc: long-lived connections spread evenly.
    let lc: Vec<u8> = (0..30)
        .map(|i| open(&mut t, "192.0.2.100", 1000 + i, 80))
        .collect();
    assert_eq!(
        tally(&lc).values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
    // wlc 1:2 — twice as many on the weight-2 server.
    let wlc: Vec<u8> = (0..30)
        .map(|i| open(&mut t, "192.0.2.100", 2000 + i, 81))
        .collect();
    let m = tally(&wlc);
    assert!(
        (9..=11).contains(&m[&11]) && (19..=21).contains(&m[&12]),
        "{m:?}"
    );
    // nq: an idle server first, whatever the weights.
    assert_eq!(open(&mut t, "192.0.2.100", 3000, 82), 11);
    assert_eq!(open(&mut t, "192.0.2.100", 3001, 82), 12, "rs12 was idle");
    // Close rs11's lc connections and
    // let them expire; the daemon's sweep re-bases the counts and rs11 is
    // the least loaded again.
    for (i, who) in lc.iter().enumerate() {
        if *who == 11 {
            t.run(&tcp("203.0.113.10", 1000 + i as u16, "192.0.2.100", 80, RST).frame());
        }
    }
    // CLOSE entries still count (inactive) until they expire.
    let l = t.d.listing();
    let rs11 = l.services[0]
        .reals
        .iter()
        .find(|r| r.spec.address.to_string() == "192.0.2.11")
        .unwrap();
    assert!(rs11.inactive_conns >= 10, "{rs11:?}");
    t.d.timeouts[lb_common::tcp_state::CLOSE as usize] = 0;
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.d.sweep(true);
    let next: Vec<u8> = (0..5)
        .map(|i| open(&mut t, "192.0.2.100", 4000 + i, 80))
        .collect();
    assert!(next.iter().all(|x| *x == 11), "after expiry: {next:?}");
}

#[test]
fn failover_and_overflow_schedulers() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: fo,
     real_servers: [{address: 192.0.2.11, weight: 5}, {address: 192.0.2.12, weight: 10},
                    {address: 192.0.2.13, weight: 10}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: ovf,
     real_servers: [{address: 192.0.2.11, weight: 2}, {address: 192.0.2.12, weight: 3}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    let open = |t: &mut TestDirector, sport: u16, dport: u16| -> Option<u8> {
        let (a, out) = t.run(&tcp("203.0.113.10", sport, "192.0.2.100", dport, SYN).frame());
        if a != XDP_TX {
            return None;
        }
        t.run(&tcp("203.0.113.10", sport, "192.0.2.100", dport, ACK).frame());
        Some(out[5])
    };
    // fo: always the first highest-weight server, whatever its load.
    for p in 0..5 {
        assert_eq!(open(&mut t, 1000 + p, 80), Some(12));
    }
    // ovf: the highest weight until its active connections reach the
    // weight, then the next; when all overflow, nothing.
    let got: Vec<Option<u8>> = (0..6).map(|p| open(&mut t, 2000 + p, 81)).collect();
    assert_eq!(
        got,
        vec![Some(12), Some(12), Some(12), Some(11), Some(11), None]
    );
}

#[test]
fn source_hashing_with_and_without_fallback() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: sh,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: sh, flags: [sh-fallback],
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.100, port: 82, scheduler: sh, flags: [sh-port],
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.100, port: 83, scheduler: dh,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    let mut sport = 10000u16;
    let mut to = |t: &mut TestDirector, client: &str, dport: u16| -> Option<u8> {
        sport += 1;
        let (a, out) = t.run(&tcp(client, sport, "192.0.2.100", dport, SYN).frame());
        (a == XDP_TX).then_some(out[5])
    };
    let clients: Vec<String> = (1..=60).map(|i| format!("203.0.113.{i}")).collect();
    // A client always lands on the same server; clients spread over all.
    let before: Vec<u8> = clients.iter().map(|c| to(&mut t, c, 80).unwrap()).collect();
    for (c, b) in clients.iter().zip(&before) {
        assert_eq!(to(&mut t, c, 80), Some(*b));
    }
    assert_eq!(
        before
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    // sh-port: one client's ports spread.
    let ports: std::collections::BTreeSet<u8> = (0..40)
        .map(|_| to(&mut t, "203.0.113.1", 82).unwrap())
        .collect();
    assert_eq!(ports.len(), 3);
    // dh: every client of one destination on one server.
    let dh: std::collections::BTreeSet<u8> =
        clients.iter().map(|c| to(&mut t, c, 83).unwrap()).collect();
    assert_eq!(dh.len(), 1);
    // rs12 goes down: without fallback its clients are refused, the others
    // stay where they were; with sh-fallback its clients move, the others stay.
    let svc80 = *t.d.table.services.keys().next().unwrap();
    let svc81 = *t.d.table.services.keys().nth(1).unwrap();
    let down: std::net::IpAddr = "192.0.2.12".parse().unwrap();
    t.d.set_health(svc80, down, false, None, "test".into())
        .unwrap();
    t.d.set_health(svc81, down, false, None, "test".into())
        .unwrap();
    let fb_before: Vec<u8> = clients.iter().map(|c| to(&mut t, c, 81).unwrap()).collect();
    for (i, c) in clients.iter().enumerate() {
        let now = to(&mut t, c, 80);
        if before[i] == 12 {
            assert_eq!(now, None, "client of a down server without fallback");
        } else {
            assert_eq!(now, Some(before[i]), "an unaffected client moved");
        }
        assert_ne!(fb_before[i], 12);
        if before[i] != 12 {
            assert_eq!(
                fb_before[i], before[i],
                "fallback moved an unaffected client"
            );
        }
    }
}

#[test]
fn evictions_of_established_connections_are_counted() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
"#;
    let macs = [
        ("192.0.2.11", Some(rs_mac(11))),
        ("192.0.2.12", Some(rs_mac(12))),
    ];
    let limits = lb_userspace::config::Limits {
        max_services: 4,
        max_reals: 8,
        max_conns: 128,
    };
    let mut t = TestDirector::with_limits(table(yaml), &macs, limits);
    t.d.sweep(true);
    assert_eq!(t.counter("conn_evicted_established"), 0);
    // 400 established connections in a 128-entry table.
    for p in 0..400u16 {
        t.run(&tcp("203.0.113.10", 20000 + p, "192.0.2.100", 80, SYN).frame());
        t.run(&tcp("203.0.113.10", 20000 + p, "192.0.2.100", 80, ACK).frame());
    }
    let live = t.d.dp.conns.keys().count() as u64;
    assert!(live <= 128);
    t.d.sweep(true);
    let evicted = t.counter("conn_evicted_established");
    assert_eq!(
        evicted,
        400 - live,
        "every evicted established entry is counted"
    );
    assert_eq!(t.counter("conn_evicted"), 400 - live);
    // Closing and expiring normally is not eviction.
    let before = t.counter("conn_evicted");
    t.d.timeouts = [0; 12];
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.d.sweep(true);
    assert_eq!(t.counter("conn_evicted"), before);
}

#[test]
fn twos_picks_among_available_servers_and_balances() {
    if !require_root() {
        return;
    }
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: twos,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13, weight: 0}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    let mut seen = std::collections::BTreeMap::new();
    for p in 0..60u16 {
        let (a, out) = t.run(&tcp("203.0.113.10", 30000 + p, "192.0.2.100", 80, SYN).frame());
        assert_eq!(a, XDP_TX);
        t.run(&tcp("203.0.113.10", 30000 + p, "192.0.2.100", 80, ACK).frame());
        *seen.entry(out[5]).or_insert(0u32) += 1;
    }
    assert_eq!(seen.get(&13), None, "weight 0 chosen: {seen:?}");
    // Two choices keep the load close: neither server gets two thirds.
    assert!(seen.values().all(|n| (20..=40).contains(n)), "{seen:?}");
}
