//! While the daemon is down, nothing degrades: on stale connection counts
//! (no heartbeat for lb_common::HEARTBEAT_STALE_NS) the program fails open,
//! and persistence templates expire by themselves.

use lb_common::{tcp_state, HEARTBEAT_STALE_NS};
use lb_userspace::{
    dataplane::{Maps, Slot, Value},
    director::monotonic_ns,
};

use crate::{common::*, tests, Test};

/// As if the daemon stopped long enough ago.
fn stale(t: &mut TestDirector) {
    let old = monotonic_ns() - HEARTBEAT_STALE_NS - 1_000_000_000;
    t.d.maps_mut()
        .write(Slot::Heartbeat, &Value::Time(old))
        .unwrap();
}

fn thresholds_and_ovf_fail_open_on_stale_counts() {
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11, upper_threshold: 1}, {address: 192.0.2.12, upper_threshold: 1}]}
  - {protocol: tcp, address: 192.0.2.100, port: 81, scheduler: ovf,
     real_servers: [{address: 192.0.2.11, weight: 1}, {address: 192.0.2.12, weight: 1}]}
"#;
    let mut t = TestDirector::new(table(yaml), &RS3);
    for (port, base) in [(80, 1000), (81, 2000)] {
        open(&mut t, "192.0.2.100", base, port);
        open(&mut t, "192.0.2.100", base + 1, port);
    }
    // Fresh counts: both servers are full, new connections are refused.
    let syn = |p: u16, port| tcp("203.0.113.10", p, "192.0.2.100", port, SYN).frame();
    assert_eq!(t.run(&syn(1010, 80)).0, XDP_DROP, "thresholds apply");
    assert_eq!(t.run(&syn(2010, 81)).0, XDP_DROP, "ovf refuses");
    // The daemon is gone: counts may be stale (connections that ended are
    // only counted by its sweep), so neither refuses any more.
    stale(&mut t);
    assert_eq!(t.run(&syn(1011, 80)).0, XDP_TX, "thresholds fail open");
    assert_eq!(t.run(&syn(2011, 81)).0, XDP_TX, "ovf fails open (as fo)");
    // Back: the daemon's heartbeat makes them apply again.
    t.d.heartbeat();
    assert_eq!(t.run(&syn(1012, 80)).0, XDP_DROP);
}

fn a_template_past_its_timeout_expires_without_the_daemon() {
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr, persistent: 60,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
"#;
    let mut t = TestDirector::new(table(yaml), &RS3);
    open(&mut t, "192.0.2.100", 1000, 80);
    open(&mut t, "192.0.2.100", 1001, 80);
    assert_eq!((t.counter("persist_new"), t.counter("persist_hit")), (1, 1));
    // The template outlives its 60 s by more than the daemon's margin.
    let (k, mut v) =
        t.d.maps()
            .conns()
            .into_iter()
            .find(|(_, v)| v.state == tcp_state::TEMPLATE)
            .unwrap();
    v.last_seen_ns = monotonic_ns() - 60_000_000_000 - HEARTBEAT_STALE_NS - 1_000_000_000;
    t.d.maps_mut().update_conn(k, v);
    open(&mut t, "192.0.2.100", 1002, 80);
    assert_eq!(
        (t.counter("persist_new"), t.counter("persist_hit")),
        (2, 1),
        "the expired template was followed"
    );
}

pub const TESTS: &[Test] = tests![
    thresholds_and_ovf_fail_open_on_stale_counts,
    a_template_past_its_timeout_expires_without_the_daemon,
];
