//! Packet tests for connection thresholds (-x/-y), lblc/lblcr, port groups
//! (fwmark services) and expire_nodest_conn: the real XDP object under
//! BPF_PROG_TEST_RUN, maps filled by Director::apply. Needs root.

mod common;

use common::*;
use lb_userspace::model::Table;

/// Closes a connection (RST) and lets the sweep collect it.
fn close_and_collect(t: &mut TestDirector, vip: &str, sports: &[u16], dport: u16) {
    for s in sports {
        t.run(&tcp("203.0.113.10", *s, vip, dport, RST).frame());
    }
    t.d.timeouts[lb_common::tcp_state::CLOSE as usize] = 0;
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.d.sweep(true);
}

#[test]
fn thresholds_stop_new_connections_until_below_the_lower_one() {
    if !require_root() {
        return;
    }
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

#[test]
fn lblc_sticks_to_a_server_per_destination_until_it_is_overloaded() {
    if !require_root() {
        return;
    }
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

#[test]
fn a_port_group_shares_its_scheduler_and_persistence() {
    if !require_root() {
        return;
    }
    pin_to_cpu0();
    let yaml = r#"
port_groups:
  - name: shop
    fwmark: 7
    members:
      - {protocol: tcp, address: 192.0.2.100, port: 80}
      - {protocol: tcp, address: 192.0.2.100, port: 443}
services:
  - {port_group: shop, scheduler: rr, persistent: 300,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
"#;
    let mut t = TestDirector::new(table(yaml), &RS3);
    // Three clients, each on :80 then :443: the same real server each time
    // (one template per client for the whole group), spread by rr.
    let mut seen = Vec::new();
    for (i, client) in ["203.0.113.10", "203.0.113.11", "203.0.113.12"]
        .iter()
        .enumerate()
    {
        let a = {
            let (v, out) = t.run(&tcp(client, 4000 + i as u16, "192.0.2.100", 80, SYN).frame());
            assert_eq!(v, XDP_TX);
            out[5]
        };
        for port in [443u16, 80, 443] {
            let (v, out) = t.run(&tcp(client, 5000 + i as u16, "192.0.2.100", port, SYN).frame());
            assert_eq!(v, XDP_TX);
            assert_eq!(out[5], a, "{client} :{port} must follow its template");
            t.run(&tcp(client, 5000 + i as u16, "192.0.2.100", port, RST).frame());
        }
        seen.push(a);
    }
    seen.sort();
    assert_eq!(seen, vec![11, 12, 13], "rr spreads the clients");
    // Not a member: passes to the kernel.
    let (v, _) = t.run(&tcp("203.0.113.10", 6000, "192.0.2.100", 8080, SYN).frame());
    assert_eq!(v, XDP_PASS);
    // The templates are the group's: protocol IP, the mark as the address.
    let conns = t.d.connections(100);
    let templates: Vec<_> = conns.iter().filter(|c| c.template).collect();
    assert_eq!(templates.len(), 3, "{conns:?}");
    assert!(
        templates
            .iter()
            .all(|c| c.protocol == "IP" && c.virtual_ == "0.0.0.7:0"),
        "{templates:?}"
    );
    // The listing names the service by its mark.
    let l = t.d.listing();
    assert_eq!(l.services[0].spec.addr.fwmark, 7);
    assert_eq!(l.groups[0].0, 7);
    assert_eq!(l.groups[0].1.members.len(), 2);
    // Removing a member from the group stops it matching; the rest stays.
    let mut tb = t.d.table.clone();
    let mut g = tb.groups[&7].clone();
    g.members.retain(|m| m.port != 443);
    tb.set_group(7, g).unwrap();
    t.d.apply(tb).unwrap();
    let (v, _) = t.run(&tcp("203.0.113.20", 7000, "192.0.2.100", 443, SYN).frame());
    assert_eq!(v, XDP_PASS, "443 left the group");
    let (v, _) = t.run(&tcp("203.0.113.20", 7001, "192.0.2.100", 80, SYN).frame());
    assert_eq!(v, XDP_TX);
}

#[test]
fn expire_nodest_conn_ends_connections_of_removed_servers() {
    if !require_root() {
        return;
    }
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
    let mut tb = t.d.table.clone();
    let svc = *tb.services.keys().next().unwrap();
    tb.del_real(&svc, "192.0.2.11".parse().unwrap()).unwrap();
    t.d.apply(tb).unwrap();
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

/// Every program stays well inside the verifier's budget (1,000,000
/// processed instructions): a scheduler change that multiplies the
/// verifier's states fails here, not at load time on a director.
#[test]
fn every_program_leaves_the_verifier_headroom() {
    if !require_root() {
        return;
    }
    let mut t = TestDirector::new(Table::default(), &[]);
    for name in ["lb", "lb_new", "lb_lblc", "lb_lblcr", "lb_lblcr_grow"] {
        let n = t.d.dp.verified_instructions(name).unwrap();
        assert!(n > 0, "{name}: the kernel reported no count");
        assert!(
            n < 250_000,
            "{name}: {n} instructions verified, a quarter of the budget"
        );
    }
}
