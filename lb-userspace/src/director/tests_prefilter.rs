//! The VIP prefilter's bits in the planner and the commit: set before the
//! services that need them, cleared last, kept while the maps may hold
//! connections to a VIP, seeded from the connection table when the filter
//! is new.

use std::time::Duration;

use lb_common::{tcp_state, vip_bit, ConnKey, ConnValue, AF_INET, PROTO_TCP};

use super::codec::addr_bytes;
use super::tests::{director, inputs, limits, table, BASE};
use super::*;
use crate::dataplane::{MemMaps, Slot};

fn bit(a: &str) -> u32 {
    vip_bit(&addr_bytes(&a.parse().unwrap()).0)
}

const ONLY_100: &str = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}]}
"#;

#[test]
fn bits_come_before_the_services_and_go_after_everything() {
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    let want: BTreeSet<u32> = ["192.0.2.100", "192.0.2.101"]
        .iter()
        .map(|a| bit(a))
        .collect();
    assert_eq!(d.published().vip_bits, want);
    let log = &d.maps().inner.log;
    let first_service = log
        .iter()
        .position(|(s, _)| matches!(s, Slot::Service(_)))
        .unwrap();
    let last_bits = log
        .iter()
        .rposition(|(s, _)| matches!(s, Slot::VipFilter(_)))
        .unwrap();
    assert!(last_bits < first_service, "{log:?}");
    // .101 loses its services: its bit stays (connections may go on)...
    d.maps_mut().inner.log.clear();
    d.apply(inputs(table(ONLY_100))).unwrap();
    assert!(d.published().vip_bits.contains(&bit("192.0.2.101")));
    assert!(!d
        .maps()
        .inner
        .log
        .iter()
        .any(|(s, _)| matches!(s, Slot::VipFilter(_))));
    // ...until a sweep that began VIP_SETTLE later finds no entry to it;
    // then the bit goes, in a write of its own.
    d.sweep(true);
    assert!(d.published().vip_bits.contains(&bit("192.0.2.101")));
    std::thread::sleep(VIP_SETTLE + Duration::from_millis(50));
    d.maps_mut().inner.log.clear();
    d.sweep(true);
    assert_eq!(
        d.published().vip_bits,
        [bit("192.0.2.100")].into_iter().collect()
    );
    assert_eq!(words_in_maps(&d), d.published().vip_bits);
    let log = &d.maps().inner.log;
    assert!(
        matches!(log.last(), Some((Slot::VipFilter(_), _))),
        "{log:?}"
    );
    // Adding it back sets it again at once.
    d.apply(inputs(table(BASE))).unwrap();
    assert!(d.published().vip_bits.contains(&bit("192.0.2.101")));
}

#[test]
fn a_new_filter_is_seeded_from_the_connection_table() {
    // Maps from before the prefilter: a connection to a VIP no service has
    // any more, and an empty filter.
    let mut maps = MemMaps::new(limits(16, 16));
    let key = ConnKey {
        saddr: addr_bytes(&"203.0.113.10".parse().unwrap()).0,
        daddr: addr_bytes(&"192.0.2.150".parse().unwrap()).0,
        sport: 40000u16.to_be(),
        dport: 80u16.to_be(),
        proto: PROTO_TCP,
        family: AF_INET,
        _pad: [0; 2],
    };
    maps.state.conns.insert(
        key,
        ConnValue {
            state: tcp_state::ESTABLISHED,
            last_seen_ns: monotonic_ns(),
            ..Default::default()
        },
    );
    let mut d = Director::recover(maps).unwrap();
    d.apply(inputs(table(ONLY_100))).unwrap();
    let bits = &d.published().vip_bits;
    assert!(bits.contains(&bit("192.0.2.150")) && bits.contains(&bit("192.0.2.100")));
    assert_eq!(&words_in_maps(&d), bits, "the maps hold what is published");
}

/// The bits the VIP_FILTER words in the maps hold.
fn words_in_maps(d: &Director<impl crate::dataplane::Maps>) -> BTreeSet<u32> {
    (0..lb_common::VIP_FILTER_WORDS)
        .flat_map(|i| {
            let Ok(crate::dataplane::Value::Bits(w)) = d.maps().read(Slot::VipFilter(i)) else {
                panic!("word {i}")
            };
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i * 64 + b)
        })
        .collect()
}

#[test]
fn a_restart_lets_no_bit_go_before_a_settled_sweep() {
    // .101 had a service and a connection; the restarted daemon's first
    // configuration drops it. Its bit stays through an immediate sweep
    // (the previous daemon's last change is not known), and the maps hold
    // what is published at every step.
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    let mut maps = MemMaps::new(limits(16, 16));
    maps.state = d.maps().inner.state.clone();
    let mut again = Director::recover(maps).unwrap();
    let mut next = again.inputs().clone();
    next.table = inputs(table(ONLY_100)).table;
    again.apply(next).unwrap();
    again.sweep(true);
    assert!(again.published().vip_bits.contains(&bit("192.0.2.101")));
    assert_eq!(words_in_maps(&again), again.published().vip_bits);
    std::thread::sleep(VIP_SETTLE + Duration::from_millis(50));
    again.sweep(true);
    assert!(!again.published().vip_bits.contains(&bit("192.0.2.101")));
    assert_eq!(words_in_maps(&again), again.published().vip_bits);
}
