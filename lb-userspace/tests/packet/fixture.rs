//! The table most packet tests use, and frame assertions.

use crate::common::*;

pub const TABLE: &str = r#"
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

pub fn director() -> TestDirector {
    let mut t = TestDirector::new(
        table(TABLE),
        &[
            ("192.0.2.11", Some(rs_mac(11))),
            ("192.0.2.12", Some(rs_mac(12))),
            ("192.0.2.13", Some(rs_mac(13))),
            // 192.0.2.14 deliberately unresolved
            ("2001:db8::11", Some(rs_mac(0x61))),
        ],
    );
    // VLAN 42 is served.
    t.d.change(|i| i.vlans = [42].into()).unwrap();
    t
}

/// Asserts a forwarded frame: MACs rewritten, everything after them untouched.
pub fn assert_forwarded(input: &[u8], out: &[u8], rs: [u8; 6]) {
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

pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub action: u32,
    /// For XDP_TX: the set of acceptable real-server MACs.
    pub to: &'static [u8],
    /// Counter that must go up by one.
    pub counter: &'static str,
}
