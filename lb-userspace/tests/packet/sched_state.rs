//! Schedulers with state: thresholds (-x/-y) and lblc.

use crate::{common::*, tests, Test};

/// Closes a connection (RST) and lets the sweep collect it.
fn close_and_collect(t: &mut TestDirector, vip: &str, sports: &[u16], dport: u16) {
    for s in sports {
        t.run(&tcp("203.0.113.10", *s, vip, dport, RST).frame());
    }
    t.d.timeouts[lb_common::tcp_state::CLOSE as usize] = 0;
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.d.sweep(true);
}

fn thresholds_stop_new_connections_until_below_the_lower_one() {
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11, upper_threshold: 2, lower_threshold: 1},
                    {address: 192.0.2.12}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: wlc,
     real_servers: [{address: 192.0.2.11, upper_threshold: 1}, {address: 192.0.2.12, upper_threshold: 1}]}
"#;
    let mut t = TestDirector::new(table(yaml), &RS3);
    // rr alternates until rs11 holds 2 connections (its upper threshold).
    let got: Vec<u8> = (0..6)
        .map(|i| open(&mut t, "192.0.2.100", 1000 + i, 80))
        .collect();
    assert_eq!(got, vec![11, 12, 11, 12, 12, 12], "rs11 is overloaded at 2");
    // One of rs11's two closes: 1 is not below the lower threshold (1).
    close_and_collect(&mut t, "192.0.2.100", &[1000], 80);
    assert_eq!(
        open(&mut t, "192.0.2.100", 1100, 80),
        12,
        "still overloaded at 1"
    );
    // The other closes: 0 < 1 clears the flag; rs11 takes connections again.
    close_and_collect(&mut t, "192.0.2.100", &[1002], 80);
    let after: Vec<u8> = (0..2)
        .map(|i| open(&mut t, "192.0.2.100", 1200 + i, 80))
        .collect();
    assert!(
        after.contains(&11),
        "rs11 back below its lower threshold: {after:?}"
    );
    // wlc: each server takes one, then every server is overloaded.
    let mut w: Vec<u8> = (0..2)
        .map(|i| open(&mut t, "192.0.2.100", 2000 + i, 81))
        .collect();
    w.sort();
    assert_eq!(w, vec![11, 12]);
    let before = t.counter("drop_overloaded");
    let (a, _) = t.run(&tcp("203.0.113.10", 2100, "192.0.2.100", 81, SYN).frame());
    assert_eq!(a, XDP_DROP, "every real server is over its threshold");
    assert_eq!(t.counter("drop_overloaded"), before + 1);
    // The listing shows the thresholds.
    let l = t.d.listing();
    let r = &l.services[0].reals[0].spec;
    assert_eq!((r.u_threshold, r.l_threshold), (2, 1));
}

fn lblc_sticks_to_a_server_per_destination_until_it_is_overloaded() {
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: lblc,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
  - {protocol: tcp, address: 192.0.2.101, port: 80, scheduler: lblcr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
"#;
    let mut t = TestDirector::new(table(yaml), &RS3);
    // lblc, weights 1: rs11 until it has more active connections than its
    // weight while rs12 is under half load; then rs12, kept even when
    // overloaded because nobody is under half load.
    let got: Vec<u8> = (0..6)
        .map(|i| open(&mut t, "192.0.2.100", 1000 + i, 80))
        .collect();
    assert_eq!(got, vec![11, 11, 12, 12, 12, 12]);
    // lblcr: the set grows to {rs11, rs12}; its least loaded member is used.
    let got: Vec<u8> = (0..5)
        .map(|i| open(&mut t, "192.0.2.101", 3000 + i, 80))
        .collect();
    assert_eq!(got, vec![11, 11, 12, 12, 11]);
}

/// An lblc destination remembers a real-server slot. Once the slot's
/// server is removed and the slot given to another service's newcomer, the
/// destination's next connection stays within its own service.
fn a_remembered_slot_that_now_serves_another_service_is_not_followed() {
    pin_to_cpu0();
    let limits = lb_userspace::config::Limits {
        max_services: 4,
        max_reals: 3,
        max_conns: 1024,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let macs = [
        ("192.0.2.11", Some(rs_mac(11))),
        ("192.0.2.12", Some(rs_mac(12))),
        ("192.0.2.13", Some(rs_mac(13))),
        ("192.0.2.14", Some(rs_mac(14))),
    ];
    let yaml = |lblc: &str, rr: &str| {
        format!(
            "services:\n  - {{protocol: tcp, address: 192.0.2.100, port: 80, scheduler: lblc, real_servers: [{lblc}]}}\n  - {{protocol: tcp, address: 192.0.2.101, port: 80, scheduler: rr, real_servers: [{rr}]}}\n"
        )
    };
    let mut t = TestDirector::with_limits(
        table(&yaml("{address: 192.0.2.12}", "{address: 192.0.2.13}")),
        &macs,
        limits,
    );
    // The VIP's lblc entry now names .12's slot.
    assert_eq!(open(&mut t, "192.0.2.100", 2000, 80), 12);
    // .12 leaves (for .11); its connection ends and is collected...
    t.d.set_table(table(&yaml(
        "{address: 192.0.2.11}",
        "{address: 192.0.2.13}",
    )))
    .unwrap();
    t.d.timeouts = [0; 12];
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.d.sweep(true);
    t.d.timeouts = lb_common::tcp_state::DEFAULT_TIMEOUTS;
    // ...so its slot is the only one for the rr service's newcomer.
    let svc = *t.d.table().services.keys().next().unwrap();
    let slot = t.d.published().real_ids[&(0, "192.0.2.12".parse().unwrap(), 80)];
    t.d.set_table(table(&yaml(
        "{address: 192.0.2.11}",
        "{address: 192.0.2.13}, {address: 192.0.2.14}",
    )))
    .unwrap();
    assert_eq!(
        t.d.published().real_ids[&(1, "192.0.2.14".parse().unwrap(), 80)],
        slot,
        "the slot was reused"
    );
    assert_eq!(t.d.table().services[&svc].reals.len(), 1);
    // The destination's next connection goes to its own service's server,
    // not to .14 (another service's, behind the remembered slot).
    assert_eq!(open(&mut t, "192.0.2.100", 2001, 80), 11);
}

/// A slot taken back for a newcomer of the same service does not inherit
/// the lblc destinations of the server it had.
fn a_reclaimed_slot_does_not_inherit_lblc_destinations() {
    pin_to_cpu0();
    let limits = lb_userspace::config::Limits {
        max_services: 4,
        max_reals: 3,
        max_conns: 1024,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let macs = [
        ("192.0.2.11", Some(rs_mac(11))),
        ("192.0.2.12", Some(rs_mac(12))),
        ("192.0.2.13", Some(rs_mac(13))),
        ("192.0.2.14", Some(rs_mac(14))),
    ];
    let yaml = |lblc: &str| {
        format!(
            "services:\n  - {{protocol: tcp, address: 192.0.2.100, port: 80, scheduler: lblc, real_servers: [{lblc}]}}\n  - {{protocol: tcp, address: 192.0.2.101, port: 80, scheduler: rr, real_servers: [{{address: 192.0.2.13}}]}}\n"
        )
    };
    let mut t = TestDirector::with_limits(table(&yaml("{address: 192.0.2.12}")), &macs, limits);
    assert_eq!(
        open(&mut t, "192.0.2.100", 3000, 80),
        12,
        "the VIP's entry names .12's slot"
    );
    // .12 leaves for .11, its connection is collected, then .14 joins and
    // takes .12's slot (the only one left).
    t.d.set_table(table(&yaml("{address: 192.0.2.11}")))
        .unwrap();
    t.d.timeouts = [0; 12];
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.d.sweep(true);
    t.d.timeouts = lb_common::tcp_state::DEFAULT_TIMEOUTS;
    let slot = t.d.published().real_ids[&(0, "192.0.2.12".parse().unwrap(), 80)];
    t.d.set_table(table(&yaml("{address: 192.0.2.11}, {address: 192.0.2.14}")))
        .unwrap();
    assert_eq!(
        t.d.published().real_ids[&(0, "192.0.2.14".parse().unwrap(), 80)],
        slot
    );
    // The destination is scheduled afresh (wlc: the first of equals, .11),
    // not sent to .14 behind the remembered slot.
    assert_eq!(open(&mut t, "192.0.2.100", 3001, 80), 11);
}

/// twos samples two slots of its weighted ring: weights 3:1 give about
/// 3:1 while the live counts agree; a pick over its threshold sends the
/// program to the available servers only, and with none it drops.
fn twos_follows_weights_and_skips_overloaded_servers() {
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: twos,
     real_servers: [{address: 192.0.2.11, weight: 3}, {address: 192.0.2.12, weight: 1}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: twos,
     real_servers: [{address: 192.0.2.11, upper_threshold: 2}, {address: 192.0.2.12},
                    {address: 192.0.2.13, upper_threshold: 2}]}
"#;
    let mut t = TestDirector::new(table(yaml), &RS3);
    let mut n11 = 0;
    for i in 0..400 {
        if open(&mut t, "192.0.2.100", 1000 + i, 80) == 11 {
            n11 += 1;
        }
    }
    // Exactly 3:1 is 300; two choices by load keep it close.
    assert!((270..=330).contains(&n11), "weight 3 got {n11} of 400");
    // Port 81: .11 and .13 take at most two each; the rest go to .12.
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..30 {
        *seen
            .entry(open(&mut t, "192.0.2.100", 3000 + i, 81))
            .or_insert(0u32) += 1;
    }
    assert!(seen.get(&11).copied().unwrap_or(0) <= 2, "{seen:?}");
    assert!(seen.get(&13).copied().unwrap_or(0) <= 2, "{seen:?}");
    assert!(seen[&12] >= 26, "{seen:?}");
}

pub const TESTS: &[Test] = tests![
    twos_follows_weights_and_skips_overloaded_servers,
    a_reclaimed_slot_does_not_inherit_lblc_destinations,
    a_remembered_slot_that_now_serves_another_service_is_not_followed,
    thresholds_stop_new_connections_until_below_the_lower_one,
    lblc_sticks_to_a_server_per_destination_until_it_is_overloaded,
];
