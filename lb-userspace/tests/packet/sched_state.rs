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

pub const TESTS: &[Test] = tests![
    thresholds_stop_new_connections_until_below_the_lower_one,
    lblc_sticks_to_a_server_per_destination_until_it_is_overloaded,
];
