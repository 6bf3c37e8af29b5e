//! The VIP prefilter through the real object: an address no VIP has is
//! passed before any lookup (counted apart); a VIP whose services are
//! deleted keeps its bit while connections to it go on, and loses it once
//! a sweep that began a second later finds none.

use lb_common::{vip_bit, ConnKey, AF_INET, PROTO_TCP};
use lb_userspace::{dataplane::Maps, director::codec::addr_bytes};

use crate::{common::*, tests, Test};

const TWO: &str = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}]}
  - {protocol: tcp, address: 192.0.2.101, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.12}]}
"#;

const ONE: &str = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}]}
"#;

fn bit_set(t: &TestDirector, addr: &str) -> bool {
    t.d.published()
        .vip_bits
        .contains(&vip_bit(&addr_bytes(&addr.parse().unwrap()).0))
}

fn a_deleted_vip_keeps_its_bit_while_connections_to_it_go_on() {
    pin_to_cpu0();
    let mut t = TestDirector::new(table(TWO), &RS3);
    // Neither VIP shares the bit of the address tested as "no VIP".
    assert!(bit_set(&t, "192.0.2.101") && !bit_set(&t, "192.0.2.2"));
    let (a, _) = t.run(&tcp("203.0.113.10", 40000, "192.0.2.2", 22, SYN).frame());
    assert_eq!(a, XDP_PASS);
    assert_eq!(t.counter("pass_not_vip_address"), 1);
    assert_eq!(t.counter("pass_not_vip"), 0);
    // A connection to .101, then its service goes.
    assert_eq!(open(&mut t, "192.0.2.101", 41000, 80), 12);
    t.d.set_table(table(ONE)).unwrap();
    assert!(
        bit_set(&t, "192.0.2.101"),
        "the bit must outlive the service"
    );
    let ack = tcp("203.0.113.10", 41000, "192.0.2.101", 80, ACK).frame();
    let (a, out) = t.run(&ack);
    assert_eq!((a, out[5]), (XDP_TX, 12), "the connection goes on");
    // A sweep right away lets nothing go (it may have missed an entry
    // being made as the service went)...
    t.d.sweep(true);
    assert!(bit_set(&t, "192.0.2.101"));
    // ...one a second later keeps the bit for the live connection...
    std::thread::sleep(lb_userspace::director::VIP_SETTLE + std::time::Duration::from_millis(100));
    t.d.sweep(true);
    assert!(bit_set(&t, "192.0.2.101"));
    assert_eq!(t.run(&ack).0, XDP_TX);
    // ...and once the connection is gone, the next sweep clears it.
    let key = ConnKey {
        saddr: addr_bytes(&"203.0.113.10".parse().unwrap()).0,
        daddr: addr_bytes(&"192.0.2.101".parse().unwrap()).0,
        sport: 41000u16.to_be(),
        dport: 80u16.to_be(),
        proto: PROTO_TCP,
        family: AF_INET,
        _pad: [0; 2],
    };
    assert!(t.conn(&key).is_some(), "{key:?}");
    t.d.maps_mut().remove_conn(&key);
    t.d.sweep(true);
    assert!(!bit_set(&t, "192.0.2.101"));
    let before = t.counter("pass_not_vip_address");
    assert_eq!(t.run(&ack).0, XDP_PASS);
    assert_eq!(t.counter("pass_not_vip_address"), before + 1);
    // The VIP still served is untouched.
    assert!(bit_set(&t, "192.0.2.100"));
    assert_eq!(open(&mut t, "192.0.2.100", 42000, 80), 11);
}

pub const TESTS: &[Test] = tests![a_deleted_vip_keeps_its_bit_while_connections_to_it_go_on];
