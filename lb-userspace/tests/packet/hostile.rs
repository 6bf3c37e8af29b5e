//! Packets an attacker or an odd network sends: bare ACKs, ICMP errors,
//! fragments, IPv6 extension-header chains.

use lb_common::tcp_state;
use lb_userspace::dataplane::Maps;

use crate::{common::*, tests, Test};

const RR3: &str = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11, upper_threshold: 3}, {address: 192.0.2.12, upper_threshold: 3}, {address: 192.0.2.13, upper_threshold: 3}]}
  - {protocol: udp, address: 192.0.2.100, port: 53, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.101, port: 80, scheduler: mh,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: "2001:db8::100", port: 443, scheduler: rr,
     real_servers: [{address: "2001:db8::11"}]}
"#;

fn director() -> TestDirector {
    let mut macs = RS3.to_vec();
    macs.push(("2001:db8::11", Some(rs_mac(0x61))));
    TestDirector::new(table(RR3), &macs)
}

fn spoofed_acks_create_no_entry_and_count_toward_no_server() {
    pin_to_cpu0();
    let mut t = director();
    // Five bare ACKs (IPVS with sloppy_tcp=0): to the kernel, no entry.
    for p in 0..5 {
        let (a, _) = t.run(&tcp("198.51.100.66", 7000 + p, "192.0.2.100", 80, ACK).frame());
        assert_eq!(a, XDP_PASS);
    }
    assert_eq!(t.counter("pass_tcp_no_conn"), 5);
    assert!(t.d.maps().conns().is_empty(), "an ACK created an entry");
    let l = t.d.listing();
    let counted: u64 = l.services[0]
        .reals
        .iter()
        .map(|r| r.active_conns + r.inactive_conns)
        .sum();
    assert_eq!(counted, 0);
    // No server is overloaded by them: nine real connections go through.
    for p in 0..9 {
        open(&mut t, "192.0.2.100", 8000 + p, 80);
    }
    assert_eq!(t.counter("drop_overloaded"), 0);
    // sloppy_tcp (a director taking over mid-stream): an ACK starts a
    // connection (here on the mh service, which would otherwise forward it
    // without an entry).
    t.d.change(|i| i.sloppy_tcp = true).unwrap();
    let (a, _) = t.run(&tcp("198.51.100.66", 7100, "192.0.2.101", 80, ACK).frame());
    assert_eq!(a, XDP_TX);
    assert_eq!(t.counter("conn_new"), 10);
    assert_eq!(t.counter("fwd_stateless"), 0);
}

fn an_mh_flow_that_lost_its_entry_keeps_its_server_without_a_new_one() {
    pin_to_cpu0();
    let mut t = director();
    let rs = open(&mut t, "192.0.2.101", 9000, 80);
    let (k, _) = t.d.maps().conns().into_iter().next().unwrap();
    t.d.maps_mut().remove_conn(&k);
    for _ in 0..3 {
        let (a, out) = t.run(&tcp("203.0.113.10", 9000, "192.0.2.101", 80, ACK).frame());
        assert_eq!((a, out[5]), (XDP_TX, rs));
    }
    assert_eq!(t.counter("fwd_stateless"), 3);
    assert!(
        t.d.maps().conns().is_empty(),
        "a stateless forward created an entry"
    );
}

fn icmp_errors_follow_the_connection_they_are_about() {
    pin_to_cpu0();
    let mut t = director();
    let rs = open(&mut t, "192.0.2.100", 9100, 80);
    let before = t.conn(&t.d.maps().conns()[0].0).unwrap();
    for (ty, code) in [(3, 4), (11, 0), (3, 1)] {
        let f = icmp_error(
            "198.51.100.1",
            "192.0.2.100",
            80,
            "203.0.113.10",
            9100,
            ty,
            code,
        );
        let (a, out) = t.run(&f);
        assert_eq!(a, XDP_TX, "ICMP {ty}/{code}");
        assert_eq!(
            out[..6],
            rs_mac(rs),
            "ICMP {ty}/{code} to the flow's real server"
        );
        assert_eq!(out[12..], f[12..], "the ICMP packet is forwarded untouched");
    }
    assert_eq!(t.counter("icmp_forwarded"), 3);
    let after = t.conn(&t.d.maps().conns()[0].0).unwrap();
    assert_eq!(
        after.state, before.state,
        "an ICMP error moved the TCP state"
    );
    // Quoting another VIP than the one it is sent to: the kernel's.
    let mut f = icmp_error(
        "198.51.100.1",
        "192.0.2.100",
        80,
        "203.0.113.10",
        9100,
        3,
        4,
    );
    let n = f.len();
    f[n - 28 + 12] = 7; // the quoted source address (the VIP) changed
    assert_eq!(t.run(&f).0, XDP_PASS);
    // IPv6: packet too big about a known flow.
    let (a, _) = t.run(&tcp("2001:db8:ffff::10", 9200, "2001:db8::100", 443, SYN).frame());
    assert_eq!(a, XDP_TX);
    let f = icmp_error(
        "2001:db8:ffff::1",
        "2001:db8::100",
        443,
        "2001:db8:ffff::10",
        9200,
        2,
        0,
    );
    let (a, out) = t.run(&f);
    assert_eq!((a, &out[..6]), (XDP_TX, &rs_mac(0x61)[..]));
}

fn fragments_of_a_datagram_all_go_to_one_real_server() {
    pin_to_cpu0();
    let mut t = director();
    // A new UDP flow whose first datagram is fragmented: the first fragment
    // is scheduled, the later ones follow it (rr would rotate otherwise).
    let first = Pkt {
        frag: 0x2000,
        ..udp("203.0.113.20", 5300, "192.0.2.100", 53)
    };
    let (a, out) = t.run(&first.frame());
    assert_eq!(a, XDP_TX);
    let rs = out[5];
    for off in [185u16, 370] {
        let later = Pkt {
            frag: off | if off < 370 { 0x2000 } else { 0 },
            ..udp("203.0.113.20", 5300, "192.0.2.100", 53)
        };
        let (a, out) = t.run(&later.frame());
        assert_eq!((a, out[5]), (XDP_TX, rs), "fragment at {off}");
    }
    assert_eq!(t.counter("frag_forwarded"), 2);
    // A fragmented segment of a known TCP flow follows the flow.
    let rs = open(&mut t, "192.0.2.100", 9300, 80);
    let seg = |frag| Pkt {
        frag,
        ..tcp("203.0.113.10", 9300, "192.0.2.100", 80, ACK)
    };
    assert_eq!(t.run(&seg(0x2000).frame()).1[5], rs);
    assert_eq!(t.run(&seg(0x0100).frame()).1[5], rs);
    // Later fragments to the director's own address are the kernel's (no
    // VIP has that address: the prefilter passes them)...
    let own = Pkt {
        frag: 0x0100,
        ..udp("203.0.113.20", 5300, "192.0.2.2", 53)
    };
    assert_eq!(t.run(&own.frame()).0, XDP_PASS);
    assert_eq!(t.counter("pass_not_vip_address"), 1);
    // ...and so is a later fragment to a VIP whose first was not seen.
    let unknown = Pkt {
        frag: 0x0100,
        ..udp("203.0.113.21", 5300, "192.0.2.100", 53)
    };
    assert_eq!(t.run(&unknown.frame()).0, XDP_PASS);
    assert_eq!(t.counter("pass_frag_unknown"), 1);
    // IPv6: the fragment header, first and later.
    let v6 = |off, more| Pkt {
        v6_chain: vec![44],
        v6_frag: (off, more, 77),
        ..tcp("2001:db8:ffff::20", 9400, "2001:db8::100", 443, SYN)
    };
    let (a, out) = t.run(&v6(0, true).frame());
    assert_eq!((a, out[5]), (XDP_TX, 0x61));
    let (a, out) = t.run(&v6(2, false).frame());
    assert_eq!((a, out[5]), (XDP_TX, 0x61), "the later IPv6 fragment");
}

fn ipv6_extension_header_chains_are_walked_within_a_bound() {
    pin_to_cpu0();
    let mut t = director();
    let chain = |v6_chain: Vec<u8>, sport| Pkt {
        v6_chain,
        ..tcp("2001:db8:ffff::30", sport, "2001:db8::100", 443, SYN)
    };
    let (a, _) = t.run(&chain(vec![0, 60, 43, 60], 9500).frame());
    assert_eq!(a, XDP_TX, "hop-by-hop, destination options, routing");
    let (a, _) = t.run(&chain(vec![0, 60, 43, 60, 60], 9501).frame());
    assert_eq!(a, XDP_PASS, "more headers than walked: the kernel's");
    assert_eq!(t.counter("pass_ipv6_ext"), 1);
    let entry =
        t.d.maps()
            .conns()
            .into_iter()
            .find(|(k, _)| u16::from_be(k.sport) == 9500);
    assert_eq!(entry.map(|(_, v)| v.state), Some(tcp_state::SYN_RECV));
}

pub const TESTS: &[Test] = tests![
    spoofed_acks_create_no_entry_and_count_toward_no_server,
    an_mh_flow_that_lost_its_entry_keeps_its_server_without_a_new_one,
    icmp_errors_follow_the_connection_they_are_about,
    fragments_of_a_datagram_all_go_to_one_real_server,
    ipv6_extension_header_chains_are_walked_within_a_bound,
];
