//! Health verdicts, quorum, sorry server and expire_nodest_conn in the data plane.

use crate::{common::*, tests, Test};

fn health_verdicts_weights_quorum_and_sorry_server() {
    use lb_userspace::health::{ServicePolicy, WeightChange};
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: wrr,
     real_servers: [{address: 192.0.2.11, weight: 2}, {address: 192.0.2.12, weight: 2},
                    {address: 192.0.2.13, weight: 2}]}
"#;
    let macs = [
        ("192.0.2.11", Some(rs_mac(11))),
        ("192.0.2.12", Some(rs_mac(12))),
        ("192.0.2.13", Some(rs_mac(13))),
        ("192.0.2.99", Some(rs_mac(99))),
    ];
    let mut t = TestDirector::new(table(yaml), &macs);
    let svc = *t.d.table().services.keys().next().unwrap();
    t.d.set_policies(
        [(
            svc,
            ServicePolicy {
                sorry_server: Some("192.0.2.99".parse().unwrap()),
                quorum: 3,
                hysteresis: 1,
                ..Default::default()
            },
        )]
        .into(),
    )
    .unwrap();
    let mut port = 50000u16;
    let mut spread = |t: &mut TestDirector, n: u16| {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..n {
            port += 1;
            let (a, out) = t.run(&tcp("203.0.113.10", port, "192.0.2.100", 80, SYN).frame());
            assert_eq!(a, XDP_TX);
            *seen.entry(out[5]).or_insert(0u32) += 1;
        }
        seen
    };
    let ip = |n: u8| -> std::net::IpAddr { format!("192.0.2.{n}").parse().unwrap() };
    assert_eq!(
        spread(&mut t, 12).keys().copied().collect::<Vec<_>>(),
        vec![11, 12, 13]
    );
    // Agent: rs11 at 50% (weight 1 of 2), rs12 drained.
    t.d.set_health(
        svc,
        ip(11),
        verdict(true, Some(WeightChange::Percent(50)), "agent: 50%"),
    )
    .unwrap();
    t.d.set_health(
        svc,
        ip(12),
        verdict(true, Some(WeightChange::Percent(0)), "agent: drain"),
    )
    .unwrap();
    let s = spread(&mut t, 30);
    assert_eq!(
        (s.get(&11), s.get(&12), s.get(&13)),
        (Some(&10), None, Some(&20)),
        "{s:?}"
    );
    // External program: absolute weight.
    t.d.set_health(
        svc,
        ip(12),
        verdict(true, Some(WeightChange::Absolute(4)), "exit 6"),
    )
    .unwrap();
    assert!(spread(&mut t, 14).get(&12).copied().unwrap_or(0) >= 7);
    t.d.set_health(svc, ip(11), verdict(true, None, "ok"))
        .unwrap();
    t.d.set_health(svc, ip(12), verdict(true, None, "ok"))
        .unwrap();
    // Down one by one: healthy weight 4, then 2 (2 + 1 >= 3: quorum kept).
    t.d.set_health(svc, ip(11), verdict(false, None, "HTTP 503"))
        .unwrap();
    t.d.set_health(svc, ip(12), verdict(false, None, "HTTP 503"))
        .unwrap();
    assert_eq!(
        spread(&mut t, 6).keys().copied().collect::<Vec<_>>(),
        vec![13]
    );
    assert!(!t.d.sorry_active(&svc));
    // All down: quorum lost, the sorry server takes every new connection.
    t.d.set_health(svc, ip(13), verdict(false, None, "connect timeout 1 s"))
        .unwrap();
    assert_eq!(
        spread(&mut t, 6).keys().copied().collect::<Vec<_>>(),
        vec![99]
    );
    assert!(t.d.sorry_active(&svc));
    let l = t.d.listing();
    assert!(l.services[0]
        .reals
        .iter()
        .any(|r| r.spec.address == ip(99) && r.in_service));
    // One back (healthy 2 < quorum + hysteresis 4): still the sorry server.
    t.d.set_health(svc, ip(11), verdict(true, None, "ok"))
        .unwrap();
    assert_eq!(
        spread(&mut t, 4).keys().copied().collect::<Vec<_>>(),
        vec![99]
    );
    // Two back (4): quorum regained, the sorry server gets nothing new.
    t.d.set_health(svc, ip(12), verdict(true, None, "ok"))
        .unwrap();
    assert_eq!(
        spread(&mut t, 8).keys().copied().collect::<Vec<_>>(),
        vec![11, 12]
    );
    assert!(!t.d.sorry_active(&svc));
}

fn expire_nodest_conn_ends_connections_of_removed_servers() {
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
"#;
    let mut t = TestDirector::new(table(yaml), &RS3);
    let a = open(&mut t, "192.0.2.100", 1000, 80);
    let b = open(&mut t, "192.0.2.100", 1001, 80);
    assert_eq!((a, b), (11, 12));
    // Remove rs11: by default its connection continues.
    let mut tb = t.d.table().clone();
    let svc = *tb.services.keys().next().unwrap();
    tb.del_real(&svc, "192.0.2.11".parse().unwrap()).unwrap();
    t.d.set_table(tb).unwrap();
    let (v, out) = t.run(&tcp("203.0.113.10", 1000, "192.0.2.100", 80, ACK).frame());
    assert_eq!((v, out[5]), (XDP_TX, 11), "continues to the removed server");
    // With expire_nodest_conn its next packet expires the entry and drops;
    // the retransmitted SYN goes to a real server still in the service.
    t.d.set_expire_nodest(true).unwrap();
    let (v, _) = t.run(&tcp("203.0.113.10", 1000, "192.0.2.100", 80, ACK).frame());
    assert_eq!(v, XDP_DROP);
    assert_eq!(t.counter("drop_expired_nodest"), 1);
    let (v, out) = t.run(&tcp("203.0.113.10", 1000, "192.0.2.100", 80, SYN).frame());
    assert_eq!((v, out[5]), (XDP_TX, 12));
    // rs12's own connection is untouched.
    let (v, out) = t.run(&tcp("203.0.113.10", 1001, "192.0.2.100", 80, ACK).frame());
    assert_eq!((v, out[5]), (XDP_TX, 12));
}

pub const TESTS: &[Test] = tests![
    health_verdicts_weights_quorum_and_sorry_server,
    expire_nodest_conn_ends_connections_of_removed_servers,
];
