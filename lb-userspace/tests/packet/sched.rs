//! The schedulers, packet by packet.

use std::collections::HashMap;

use crate::{common::*, tests, Test};

fn rr_and_wrr_spread_new_connections_by_weight() {
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

fn mh_is_consistent_per_client_and_mh_port_spreads_ports() {
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

fn least_connection_schedulers_follow_live_counts() {
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

fn failover_and_overflow_schedulers() {
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

fn source_hashing_with_and_without_fallback() {
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
    let svc80 = *t.d.table().services.keys().next().unwrap();
    let svc81 = *t.d.table().services.keys().nth(1).unwrap();
    let down: std::net::IpAddr = "192.0.2.12".parse().unwrap();
    t.d.set_health(svc80, down, verdict(false, None, "test"))
        .unwrap();
    t.d.set_health(svc81, down, verdict(false, None, "test"))
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

fn twos_picks_among_available_servers_and_balances() {
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

/// Both CPUs scheduling at once (two threads, each pinned to a CPU, each
/// running 50,000 SYNs through the program): rr and wrr 3:1 stay within 1%
/// of exact over 10^5 connections. The cursor is shared (the global rr
/// sequence IPVS shows: three requests, three servers) and its increment
/// is not atomic, so CPUs scheduling at the same instant may take the same
/// slot: this bounds what that costs.
fn rr_and_wrr_stay_within_one_percent_with_both_cpus_scheduling_at_once() {
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: wrr,
     real_servers: [{address: 192.0.2.11, weight: 3}, {address: 192.0.2.12, weight: 1}]}
"#;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut t = TestDirector::new(table(yaml), &RS3);
    let prog: &aya::programs::Xdp = t.d.maps_mut().inner.program().unwrap();
    let per_cpu = 50_000u32;
    for (dport, want) in [(80u16, [1u32, 1, 1]), (81, [3, 1, 0])] {
        let counts: Vec<HashMap<u8, u32>> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..2usize)
                .map(|cpu| {
                    s.spawn(move || {
                        pin_to_cpu(cpu % cpus);
                        let mut m: HashMap<u8, u32> = HashMap::new();
                        let mut out = vec![0u8; 256];
                        for i in 0..per_cpu {
                            let src = format!("203.0.{}.{}", 113 + cpu, i >> 16);
                            let f =
                                tcp(&src, (i & 0xffff) as u16, "192.0.2.100", dport, SYN).frame();
                            use aya::programs::{TestRun as _, TestRunOptions};
                            let r = prog
                                .test_run(TestRunOptions {
                                    data_in: Some(&f),
                                    data_out: Some(&mut out),
                                    ..Default::default()
                                })
                                .expect("BPF_PROG_TEST_RUN");
                            assert_eq!(r.return_value, XDP_TX);
                            *m.entry(out[5]).or_default() += 1;
                        }
                        m
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let total: u32 = want.iter().sum();
        for (k, rs) in [11u8, 12, 13].iter().enumerate() {
            let got: u32 = counts.iter().map(|m| m.get(rs).copied().unwrap_or(0)).sum();
            let ideal = 2 * per_cpu * want[k] / total;
            assert!(
                got.abs_diff(ideal) <= ideal / 100,
                "port {dport}: real server {rs} got {got} of {} (ideal {ideal}): {counts:?}",
                2 * per_cpu
            );
        }
    }
}

pub const TESTS: &[Test] = tests![
    rr_and_wrr_stay_within_one_percent_with_both_cpus_scheduling_at_once,
    rr_and_wrr_spread_new_connections_by_weight,
    mh_is_consistent_per_client_and_mh_port_spreads_ports,
    least_connection_schedulers_follow_live_counts,
    failover_and_overflow_schedulers,
    source_hashing_with_and_without_fallback,
    twos_picks_among_available_servers_and_balances,
];
