//! The commit on the real maps: unchanged applies publish nothing, a
//! failure at any write leaves every map as it was, and the program forwards
//! after every single write of a commit.

use lb_userspace::{dataplane::snapshot, director::codec::service_key, model::RealSpec};

use crate::{common::*, fixture::*, tests, Test};

fn reapplying_an_unchanged_table_republishes_nothing() {
    let mut t = director();
    let gens = |t: &TestDirector| -> Vec<(u8, u32)> {
        t.d.table()
            .services
            .keys()
            .map(|a| {
                let v = t.service(&service_key(a)).unwrap();
                (v.gen, v.ring_len)
            })
            .collect()
    };
    let before = gens(&t);
    let same = t.d.table().clone();
    t.d.set_table(same).unwrap();
    assert_eq!(gens(&t), before, "an identical apply flipped a ring");
    // One weight change in the mh service with two real servers
    // republishes exactly that service's ring.
    let mut tab = t.d.table().clone();
    let (idx, svc) = tab
        .services
        .iter()
        .enumerate()
        .find(|(_, (_, s))| {
            s.spec.scheduler == lb_userspace::model::Scheduler::Mh && s.reals.len() == 2
        })
        .map(|(i, (a, _))| (i, *a))
        .unwrap();
    let r = *tab.services[&svc].reals.values().next().unwrap();
    tab.edit_real(&svc, RealSpec { weight: 5, ..r }).unwrap();
    t.d.set_table(tab).unwrap();
    let after = gens(&t);
    let flipped: Vec<usize> = (0..before.len())
        .filter(|i| before[*i].0 != after[*i].0)
        .collect();
    assert_eq!(flipped, vec![idx], "before {before:?} after {after:?}");
    // rr ignores weights: a weight change there leaves the ring alone.
    let mut tab = t.d.table().clone();
    let rr = *tab.services.keys().next().unwrap();
    let r = *tab.services[&rr].reals.values().next().unwrap();
    tab.edit_real(&rr, RealSpec { weight: 7, ..r }).unwrap();
    t.d.set_table(tab).unwrap();
    assert_eq!(gens(&t)[0], after[0]);
}

/// [`TABLE`] changed in every way the planner handles: a scheduler, a real
/// server removed and one added (unresolved), a weight, a service deleted,
/// a port group added.
const CHANGED: &str = r#"
port_groups:
  - {name: shop, fwmark: 7, members: [{protocol: tcp, address: 192.0.2.104, port: 80},
                                      {protocol: tcp, address: 192.0.2.104, port: 443}]}
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: wrr,
     real_servers: [{address: 192.0.2.11, weight: 3}, {address: 192.0.2.13}, {address: 192.0.2.16}]}
  - {protocol: udp, address: 192.0.2.100, port: 53, scheduler: mh,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12, weight: 4}]}
  - {protocol: tcp, address: 192.0.2.101, port: 0, persistent: 360, scheduler: mh,
     real_servers: [{address: 192.0.2.13}, {address: 192.0.2.12}]}
  - {port_group: shop, scheduler: lc, persistent: 300,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
"#;

fn a_failed_write_at_any_step_leaves_every_map_as_it_was() {
    pin_to_cpu0();
    let mut t = director();
    let known = open(&mut t, "192.0.2.100", 41000, 80);
    let next = table(CHANGED);
    let mut failures = 0;
    for k in 0.. {
        let before = snapshot(t.d.maps());
        let listing = t.d.listing();
        t.d.maps_mut().fail_in(k);
        if t.d.set_table(next.clone()).is_ok() {
            break;
        }
        failures += 1;
        assert!(snapshot(t.d.maps()) == before, "write {k}: a map changed");
        assert_eq!(t.d.listing(), listing, "write {k}: the listing changed");
        // The known flow goes on where it was.
        let (a, out) = t.run(&tcp("203.0.113.10", 41000, "192.0.2.100", 80, ACK).frame());
        assert_eq!((a, out[5]), (XDP_TX, known), "write {k}");
        assert!(k < 1000, "the commit never succeeds");
    }
    assert!(
        failures > 15,
        "only {failures} writes: not a change of every kind"
    );
    assert_eq!(t.d.table(), &next);
    let (a, out) = t.run(&tcp("203.0.113.10", 41000, "192.0.2.100", 80, ACK).frame());
    assert_eq!((a, out[5]), (XDP_TX, known), "after the commit");
}

fn every_write_of_a_commit_leaves_the_data_plane_forwarding() {
    pin_to_cpu0();
    let mut t = director();
    // A known flow on a real server that keeps its MAC.
    let (port, known) = (42000..42010)
        .map(|p| (p, open(&mut t, "192.0.2.100", p, 80)))
        .find(|(_, rs)| *rs != 12)
        .unwrap();
    // Services in both tables: new connections to each (every slot of the
    // rr ring) are forwarded after every write, and the known flow stays
    // where it is.
    let checked = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let seen = checked.clone();
    t.d.maps_mut().after_write = Some(Box::new(move |dp, n| {
        for i in 0..3u16 {
            let p = 43000 + n as u16 * 4 + i;
            // Each service's real servers in either table: nobody else's.
            for (what, f, reals) in [
                (
                    "tcp 80",
                    tcp("203.0.113.10", p, "192.0.2.100", 80, SYN),
                    &[11, 12, 13][..],
                ),
                (
                    "udp 53",
                    udp("203.0.113.10", p, "192.0.2.100", 53),
                    &[11, 12],
                ),
                (
                    "port 0",
                    tcp("203.0.113.10", p, "192.0.2.101", 8443, SYN),
                    &[12, 13],
                ),
            ] {
                let (a, out) = dp.test_run(&f.frame()).unwrap();
                assert_eq!(
                    a, XDP_TX,
                    "after write {n}: a new connection to {what} was not forwarded"
                );
                assert!(
                    reals.contains(&out[5]),
                    "after write {n}: {what} went to real server {}",
                    out[5]
                );
            }
        }
        let f = tcp("203.0.113.10", port, "192.0.2.100", 80, ACK).frame();
        let (a, out) = dp.test_run(&f).unwrap();
        assert_eq!(
            (a, out[5]),
            (XDP_TX, known),
            "after write {n}: the known flow moved"
        );
        seen.set(seen.get() + 1);
    }));
    // Every kind of table change, and a real server's MAC lost with it:
    // its slot must leave the rings before it is marked unresolved.
    let mut next = t.d.inputs().clone();
    next.table = table(CHANGED);
    next.macs.remove(&"192.0.2.12".parse().unwrap());
    t.d.apply(next).unwrap();
    let mut back = t.d.inputs().clone();
    back.table = table(TABLE);
    back.macs.insert("192.0.2.12".parse().unwrap(), rs_mac(12));
    t.d.apply(back).unwrap();
    assert!(checked.get() > 20, "{} writes checked", checked.get());
}

pub const TESTS: &[Test] = tests![
    reapplying_an_unchanged_table_republishes_nothing,
    a_failed_write_at_any_step_leaves_every_map_as_it_was,
    every_write_of_a_commit_leaves_the_data_plane_forwarding,
];
