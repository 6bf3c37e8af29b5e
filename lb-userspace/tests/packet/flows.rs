//! Known flows: they stay on their real server through edits and restarts; TCP states and counts.

use lb_userspace::{
    dataplane::Maps,
    director::codec::{addr_bytes, service_key},
    model::RealSpec,
};

use crate::{common::*, fixture::*, tests, Test};

fn known_flow_stays_on_its_real_server_after_weight_changes() {
    pin_to_cpu0();
    let mut t = director();
    let syn = tcp("203.0.113.10", 41000, "192.0.2.100", 80, SYN).frame();
    let (a, out) = t.run(&syn);
    assert_eq!(a, XDP_TX);
    let first: [u8; 6] = out[0..6].try_into().unwrap();
    let n = first[5];
    // Quiesce the chosen server: weight 0 means no new connections...
    let svc = *t.d.table().services.keys().next().unwrap();
    let mut tab = t.d.table().clone();
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
    t.d.set_table(tab).unwrap();
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
    let mut tab = t.d.table().clone();
    tab.del_real(&svc, format!("192.0.2.{n}").parse().unwrap())
        .unwrap();
    t.d.set_table(tab).unwrap();
    let f = tcp("203.0.113.10", 41000, "192.0.2.100", 80, ACK).frame();
    let (a, out) = t.run(&f);
    assert_eq!(a, XDP_TX);
    assert_forwarded(&f, &out, first);
}

fn tcp_states_counters_and_port_reuse() {
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
    let state = |t: &TestDirector| t.conn(&key(43000)).unwrap().state;
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
    assert!(t.service(&service_key(&l.services[0].spec.addr)).is_some());
}

fn restart_recovers_ids_and_connections_from_pins() {
    pin_to_cpu0();
    let pins = PinDir::new("restart");
    let dir = pins.0.clone();
    let limits = lb_userspace::config::Limits {
        max_services: 8,
        max_reals: 16,
        max_conns: 1024,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let macs: Vec<(std::net::IpAddr, Option<[u8; 6]>)> = [11u8, 12, 13]
        .iter()
        .map(|n| (format!("192.0.2.{n}").parse().unwrap(), Some(rs_mac(*n))))
        .collect();
    let load = || {
        let dp = lb_userspace::dataplane::Dataplane::load(&dir, &limits).unwrap();
        let mut d = lb_userspace::director::Director::recover(dp).unwrap();
        d.set_director_mac(DIRECTOR_MAC).unwrap();
        d
    };
    let mut d1 = load();
    d1.set_macs(&macs).unwrap();
    d1.set_table(table(TABLE)).unwrap();
    let f = tcp("203.0.113.10", 44000, "192.0.2.100", 80, SYN).frame();
    let (_, out) = d1.maps_mut().test_run(&f).unwrap();
    let first = out[5];
    drop(d1);
    // A new daemon: the same config reapplied with rr (which would pick
    // another server for a new flow) keeps the known flow where it was.
    let mut d2 = load();
    d2.set_table(table(TABLE)).unwrap();
    for _ in 0..3 {
        let f = tcp("203.0.113.10", 44000, "192.0.2.100", 80, ACK).frame();
        let (a, out) = d2.maps_mut().test_run(&f).unwrap();
        assert_eq!(a, XDP_TX);
        assert_eq!(out[5], first, "flow moved after restart");
    }
    drop(d2);
}

fn evictions_of_established_connections_are_counted() {
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
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let mut t = TestDirector::with_limits(table(yaml), &macs, limits);
    t.d.sweep(true);
    assert_eq!(t.counter("conn_evicted_established"), 0);
    // 400 established connections in a 128-entry table.
    for p in 0..400u16 {
        t.run(&tcp("203.0.113.10", 20000 + p, "192.0.2.100", 80, SYN).frame());
        t.run(&tcp("203.0.113.10", 20000 + p, "192.0.2.100", 80, ACK).frame());
    }
    let live = t.d.maps().conns().len() as u64;
    assert!(live <= 128);
    t.d.sweep(true);
    // Shown once two sweeps in a row agree (a connection opening during a
    // walk moves the balance for one sweep only).
    assert_eq!(t.counter("conn_evicted_established"), 0);
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

/// The connection table holds its configured size whichever CPU the flows
/// arrive on: here all of them on one.
fn the_connection_table_holds_its_size_from_one_cpu() {
    pin_to_cpu0();
    let limits = lb_userspace::config::Limits {
        max_services: 8,
        max_reals: 16,
        max_conns: 4096,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let mut t = TestDirector::with_limits(table(TABLE), &RS3, limits);
    for i in 0..4096u32 {
        let src = format!("198.51.{}.{}", 100 + i / 250, i % 250 + 1);
        let f = tcp(&src, 10000 + (i % 50000) as u16, "192.0.2.100", 80, SYN).frame();
        assert_eq!(t.run(&f).0, XDP_TX);
    }
    let present = t.d.maps().conns().len();
    assert!(
        present >= 4096 * 95 / 100,
        "{present} of 4096 entries kept (per-CPU LRU lists would keep 4096 / CPUs)"
    );
}

/// The sweep and the listings read the connection table in batches
/// (BPF_MAP_LOOKUP_BATCH): the same entries, each once, as a walk by key,
/// over a table of tens of thousands of entries in many buckets.
fn the_batch_read_of_the_connection_table_matches_a_walk_by_key() {
    let mut t = TestDirector::with_limits(
        table(TABLE),
        &[("192.0.2.11", Some(rs_mac(11)))],
        lb_userspace::config::Limits {
            max_services: 16,
            max_reals: 64,
            max_conns: 1 << 17,
            max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
        },
    );
    let mut rng = crate::rng::Rng::new(7);
    let n = 50_000u32;
    for i in 0..n {
        let k = lb_common::ConnKey {
            saddr: addr_bytes(&std::net::IpAddr::from((rng.next() as u32).to_be_bytes())).0,
            daddr: addr_bytes(&"192.0.2.100".parse().unwrap()).0,
            sport: (i as u16).to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let v = lb_common::ConnValue {
            real_id: i,
            svc_id: 1,
            last_seen_ns: u64::from(i),
            state: 3,
            flags: 0,
            _pad: [0; 2],
            timeout: 0,
        };
        t.d.maps_mut().inner.update_conn(k, v);
    }
    let mut batch =
        t.d.maps()
            .inner
            .conns_batch()
            .expect("BPF_MAP_LOOKUP_BATCH");
    let mut by_key = t.d.maps().inner.conns_by_key();
    assert!(
        batch.len() as u32 > n * 9 / 10,
        "{} of {n} entries",
        batch.len()
    );
    let order = |a: &(lb_common::ConnKey, lb_common::ConnValue)| a.1.real_id;
    batch.sort_by_key(order);
    by_key.sort_by_key(order);
    assert_eq!(batch.len(), by_key.len());
    assert!(
        batch == by_key,
        "the batch read differs from the walk by key"
    );
    let mut ids: Vec<u32> = batch.iter().map(|e| e.1.real_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), batch.len(), "an entry read twice");
    assert_eq!(t.d.maps().inner.conn_count(), batch.len());
}

pub const TESTS: &[Test] = tests![
    the_batch_read_of_the_connection_table_matches_a_walk_by_key,
    the_connection_table_holds_its_size_from_one_cpu,
    known_flow_stays_on_its_real_server_after_weight_changes,
    tcp_states_counters_and_port_reuse,
    restart_recovers_ids_and_connections_from_pins,
    evictions_of_established_connections_are_counted,
];
