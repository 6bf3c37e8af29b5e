//! Persistence templates, netmask, port 0, one-packet scheduling and port groups.

use lb_userspace::{dataplane::Maps, model::RealSpec};

use crate::{common::*, tests, Test};

fn persistence_templates_netmask_port_zero_and_one_packet() {
    pin_to_cpu0();
    let yaml = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr, persistent: 360, netmask: 24,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: tcp, address: 192.0.2.101, port: 0, scheduler: rr, persistent: 1,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: udp, address: 192.0.2.100, port: 53, scheduler: rr, one_packet: true,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
"#;
    let macs = RS3;
    let mut t = TestDirector::new(table(yaml), &macs);
    let to = |t: &mut TestDirector, src: &str, sport: u16, dst: &str, dport: u16| -> u8 {
        let (a, out) = t.run(&tcp(src, sport, dst, dport, SYN).frame());
        assert_eq!(a, XDP_TX);
        out[5]
    };
    // Every connection of a client, and of its /24, follows the template.
    let first = to(&mut t, "203.0.113.10", 1000, "192.0.2.100", 80);
    for p in 1001..1010 {
        assert_eq!(to(&mut t, "203.0.113.10", p, "192.0.2.100", 80), first);
    }
    assert_eq!(
        to(&mut t, "203.0.113.77", 2000, "192.0.2.100", 80),
        first,
        "same /24"
    );
    assert_eq!(t.counter("persist_new"), 1);
    assert_eq!(t.counter("persist_hit"), 10);
    // Another network gets its own template (rr moves on).
    let other = to(&mut t, "198.51.100.5", 3000, "192.0.2.100", 80);
    assert_ne!(other, first);
    // -Lnc shows the templates with client port 0 and state NONE.
    let conns = t.d.connections(100);
    let tpl: Vec<_> = conns.iter().filter(|c| c.template).collect();
    assert_eq!(tpl.len(), 2, "{conns:?}");
    assert!(tpl.iter().any(|c| c.client == "203.0.113.0:0"
        && c.virtual_ == "192.0.2.100:80"
        && c.state == "NONE"
        && c.real == format!("192.0.2.{first}:80")));
    let l = t.d.listing();
    let pc: u64 = l.services[0].reals.iter().map(|r| r.persistent_conns).sum();
    assert_eq!(pc, 2);
    // Quiescing the template's real server keeps its persistent clients on
    // it (IPVS); removing it sends them elsewhere.
    let svc = *t.d.table().services.keys().next().unwrap();
    let ip: std::net::IpAddr = format!("192.0.2.{first}").parse().unwrap();
    let mut tab = t.d.table().clone();
    let r = tab.services[&svc].reals[&(ip, 80)];
    tab.edit_real(&svc, RealSpec { weight: 0, ..r }).unwrap();
    t.d.set_table(tab).unwrap();
    assert_eq!(to(&mut t, "203.0.113.10", 1100, "192.0.2.100", 80), first);
    let mut tab = t.d.table().clone();
    tab.del_real(&svc, ip).unwrap();
    t.d.set_table(tab).unwrap();
    assert_ne!(to(&mut t, "203.0.113.10", 1101, "192.0.2.100", 80), first);

    // Port-0 service: all ports of the VIP go to one real server.
    let any = to(&mut t, "203.0.113.20", 4000, "192.0.2.101", 443);
    for (sp, dp) in [(4001, 80), (4002, 8080), (4003, 22)] {
        assert_eq!(to(&mut t, "203.0.113.20", sp, "192.0.2.101", dp), any);
    }
    // The template (timeout 1 s) outlives its timeout while a connection of
    // its client lives, then goes.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    t.d.sweep(true);
    let has_tpl = |t: &mut TestDirector| {
        t.d.connections(1000)
            .iter()
            .any(|c| c.template && c.virtual_ == "192.0.2.101:0")
    };
    assert!(
        has_tpl(&mut t),
        "template dropped while its connections live"
    );
    // Its connections expire; the re-armed template lasts one more timeout.
    t.d.timeouts = [0; 12];
    t.d.sweep(true);
    assert!(has_tpl(&mut t));
    std::thread::sleep(std::time::Duration::from_millis(1300));
    t.d.sweep(true);
    assert!(!has_tpl(&mut t), "expired template kept");

    // One-packet scheduling: every datagram scheduled on its own, no entry.
    let before = t.d.maps().conns().len();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (a, out) = t.run(&udp("203.0.113.30", 5353, "192.0.2.100", 53).frame());
        assert_eq!(a, XDP_TX);
        seen.insert(out[5]);
    }
    assert_eq!(seen.len(), 3, "one flow spread by rr: {seen:?}");
    assert_eq!(t.d.maps().conns().len(), before, "-o created entries");
}

fn a_port_group_shares_its_scheduler_and_persistence() {
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
    let mut tb = t.d.table().clone();
    let mut g = tb.groups[&7].clone();
    g.members.retain(|m| m.port != 443);
    tb.set_group(7, g).unwrap();
    t.d.set_table(tb).unwrap();
    let (v, _) = t.run(&tcp("203.0.113.20", 7000, "192.0.2.100", 443, SYN).frame());
    assert_eq!(v, XDP_PASS, "443 left the group");
    let (v, _) = t.run(&tcp("203.0.113.20", 7001, "192.0.2.100", 80, SYN).frame());
    assert_eq!(v, XDP_TX);
}

pub const TESTS: &[Test] = tests![
    persistence_templates_netmask_port_zero_and_one_packet,
    a_port_group_shares_its_scheduler_and_persistence,
];
