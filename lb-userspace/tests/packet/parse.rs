//! Parsing and verdicts: one row per kind of frame (Katran-style fixtures).

use crate::{common::*, fixture::*, tests, Test};

fn packet_table() {
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
            counter: "pass_not_vip_address",
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
            name: "IPv4 first fragment is scheduled like the datagram",
            frame: Pkt {
                frag: 0x2000,
                ..tcp("203.0.113.10", 40008, "192.0.2.100", 80, SYN)
            }
            .frame(),
            action: XDP_TX,
            to: &[11, 12, 13],
            counter: "conn_new",
        },
        Case {
            name: "IPv4 later fragment of an unknown datagram passes",
            frame: Pkt {
                frag: 0x0010,
                ..tcp("203.0.113.11", 40012, "192.0.2.100", 80, SYN)
            }
            .frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_frag_unknown",
        },
        Case {
            name: "IPv6 hop-by-hop header is walked",
            frame: Pkt {
                v6_next: Some(0),
                ..tcp("2001:db8:ffff::10", 40009, "2001:db8::100", 443, SYN)
            }
            .frame(),
            action: XDP_TX,
            to: &[0x61],
            counter: "conn_new",
        },
        Case {
            name: "IPv6 ESP passes",
            frame: Pkt {
                v6_next: Some(50),
                ..tcp("2001:db8:ffff::10", 40013, "2001:db8::100", 443, SYN)
            }
            .frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_ipv6_ext",
        },
        Case {
            name: "a frame for another MAC passes (a flooding bridge)",
            frame: Pkt {
                dst_mac: [2, 0, 0, 0, 0, 0x99],
                ..tcp("203.0.113.10", 40014, "192.0.2.100", 80, SYN)
            }
            .frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_other_mac",
        },
        Case {
            name: "a VLAN the director does not serve passes",
            frame: Pkt {
                vlan: Some(43),
                ..tcp("203.0.113.10", 40015, "192.0.2.100", 80, SYN)
            }
            .frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_vlan",
        },
        Case {
            name: "a bare ACK of no connection passes (sloppy_tcp off)",
            frame: tcp("203.0.113.10", 40016, "192.0.2.100", 80, ACK).frame(),
            action: XDP_PASS,
            to: &[],
            counter: "pass_tcp_no_conn",
        },
        Case {
            name: "an ACK of no connection to an mh service follows the ring",
            frame: tcp("203.0.113.10", 40017, "192.0.2.101", 8443, ACK).frame(),
            action: XDP_TX,
            to: &[13],
            counter: "fwd_stateless",
        },
        Case {
            name: "ICMP echo to the VIP passes",
            frame: icmp_error(
                "203.0.113.1",
                "192.0.2.100",
                80,
                "203.0.113.10",
                40018,
                8,
                0,
            ),
            action: XDP_PASS,
            to: &[],
            counter: "pass_icmp",
        },
        Case {
            name: "ICMP error about no known connection passes",
            frame: icmp_error(
                "203.0.113.1",
                "192.0.2.100",
                80,
                "203.0.113.10",
                40019,
                3,
                4,
            ),
            action: XDP_PASS,
            to: &[],
            counter: "pass_icmp",
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

pub const TESTS: &[Test] = tests![packet_table,];
