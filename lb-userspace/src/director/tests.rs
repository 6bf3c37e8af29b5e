//! The planner and the commit on in-memory maps (no root): capacity edges,
//! a failure injected at every write step, the order of the writes, and the
//! bugs the old single-pass apply had.

use std::net::IpAddr;

use lb_common::{rs_flags, ServiceValue};

use super::*;
use crate::{
    config::Config,
    dataplane::{Faulty, Limits, MapsError, MemMaps, MemState},
    health::Verdict,
    model::{RealSpec, Scheduler},
};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn rs_mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0x10, n]
}

fn limits(services: u32, reals: u32) -> Limits {
    Limits {
        max_services: services,
        max_reals: reals,
        max_conns: 1024,
    }
}

fn table(yaml: &str) -> Table {
    Config::parse(yaml, "t.yaml")
        .unwrap()
        .table("t.yaml")
        .unwrap()
}

/// Inputs with every 192.0.2.x / 2001:db8::x real server resolved.
fn inputs(t: Table) -> Inputs {
    let mut i = Inputs {
        table: t,
        director_mac: MAC,
        ..Default::default()
    };
    for a in i.addresses() {
        let n = match a {
            IpAddr::V4(v) => v.octets()[3],
            IpAddr::V6(v) => v.octets()[15],
        };
        i.macs.insert(a, rs_mac(n));
    }
    i
}

fn director(l: Limits) -> Director<Faulty<MemMaps>> {
    Director::recover(Faulty::new(MemMaps::new(l))).unwrap()
}

const BASE: &str = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}
  - {protocol: udp, address: 192.0.2.100, port: 53, scheduler: mh,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
  - {protocol: tcp, address: 192.0.2.101, port: 80, scheduler: sh, flags: [sh-fallback],
     real_servers: [{address: 192.0.2.14}, {address: 192.0.2.15, weight: 0}]}
"#;

/// The same services changed in every way the planner handles: a real
/// server removed, one added, a weight changed, a scheduler changed, a
/// service deleted, a service and a port group added.
const CHANGED: &str = r#"
port_groups:
  - {name: shop, fwmark: 7, members: [{protocol: tcp, address: 192.0.2.102, port: 80},
                                      {protocol: tcp, address: 192.0.2.102, port: 443}]}
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: wrr,
     real_servers: [{address: 192.0.2.11, weight: 3}, {address: 192.0.2.13}, {address: 192.0.2.16}]}
  - {protocol: tcp, address: 192.0.2.101, port: 80, scheduler: sh, flags: [sh-fallback],
     real_servers: [{address: 192.0.2.14}, {address: 192.0.2.15, weight: 2}]}
  - {port_group: shop, scheduler: lc, persistent: 300,
     real_servers: [{address: 192.0.2.17}, {address: 192.0.2.18}]}
  - {protocol: udp, address: "2001:db8::100", port: 53, scheduler: mh,
     real_servers: [{address: "2001:db8::11"}]}
"#;

/// Every service entry's live ring refers only to slots of that service
/// that can take traffic (sh/dh buckets may hold unresolved or quiesced
/// ones, which the program skips, but never a removed or free slot).
fn check_forwarding(s: &MemState) -> Result<(), String> {
    for (k, v) in &s.services {
        if v.ring_len == 0 {
            continue;
        }
        let slot = v.id * 2 + (v.gen as u32 & 1);
        // A slot never written holds zeros (a ring of real server 0).
        let zero = Box::new(lb_common::Ring {
            reals: [0; lb_common::RING_SIZE],
        });
        let ring = s.rings.get(&slot).unwrap_or(&zero);
        let buckets = v.sched == lb_common::sched::SH || v.sched == lb_common::sched::DH;
        for id in &ring.reals[..v.ring_len as usize] {
            let r = s.reals.get(id).copied().unwrap_or_default();
            let mut need = rs_flags::IN_USE | rs_flags::MAC_VALID;
            if buckets {
                need = rs_flags::IN_USE;
            }
            if r.flags & need != need || r.flags & rs_flags::REMOVED != 0 {
                return Err(format!(
                    "{k:?}: ring {slot} points at slot {id} with flags {:#x}",
                    r.flags
                ));
            }
            if r.svc_id != v.id {
                return Err(format!("{k:?}: slot {id} belongs to service {}", r.svc_id));
            }
        }
    }
    Ok(())
}

/// Replays `writes` on a copy of `from`, checking after each one that the
/// data plane forwards correctly and that no key present before and after
/// is missing in between.
fn replay(from: &MemState, to: &MemState, writes: &[(crate::dataplane::Slot, Value)]) {
    let mut m = MemMaps::new(limits(64, 64));
    m.state = from.clone();
    for (i, (slot, value)) in writes.iter().enumerate() {
        m.write(*slot, value).unwrap();
        if let Err(e) = check_forwarding(&m.state) {
            panic!("after write {} ({slot:?}): {e}", i + 1);
        }
        for k in from.services.keys().filter(|k| to.services.contains_key(k)) {
            assert!(
                m.state.services.contains_key(k),
                "after write {}: {k:?} vanished",
                i + 1
            );
        }
    }
    assert_eq!(m.state.services, to.services);
    assert_eq!(m.state.reals, to.reals);
}

#[test]
fn every_intermediate_state_of_a_commit_forwards() {
    let mut d = director(limits(64, 64));
    let empty = d.maps().inner.state.clone();
    d.apply(inputs(table(BASE))).unwrap();
    let base = d.maps().inner.state.clone();
    check_forwarding(&base).unwrap();
    replay(&empty, &base, &d.maps().inner.log);
    d.maps_mut().inner.log.clear();
    let mut next = inputs(table(CHANGED));
    // A MAC lost and a health verdict in the same change.
    next.macs.remove(&"192.0.2.13".parse().unwrap());
    let svc = *next.table.services.keys().next().unwrap();
    next.health.insert(
        (svc, "192.0.2.16".parse().unwrap()),
        Verdict {
            up: false,
            weight: None,
            reason: "test".into(),
        },
    );
    let n = d.apply(next).unwrap();
    let changed = d.maps().inner.state.clone();
    assert_eq!(n, d.maps().inner.log.len());
    replay(&base, &changed, &d.maps().inner.log);
    // Removed real servers stay, flagged, for their connections.
    let removed: Vec<u32> = d.published().removed().collect();
    assert_eq!(
        removed.len(),
        3,
        "192.0.2.12 twice (two services), and the udp one: {removed:?}"
    );
    // And back: the reverse change forwards at every step too.
    d.maps_mut().inner.log.clear();
    d.apply(inputs(table(BASE))).unwrap();
    replay(&changed, &d.maps().inner.state.clone(), &d.maps().inner.log);
}

#[test]
fn rings_are_written_before_the_flip_and_removals_after_it() {
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    d.maps_mut().inner.log.clear();
    let mut t = d.table().clone();
    let svc = *t.services.keys().next().unwrap();
    t.del_real(&svc, "192.0.2.12".parse().unwrap()).unwrap();
    d.set_table(t).unwrap();
    let log: Vec<_> = d.maps().inner.log.iter().map(|(s, _)| *s).collect();
    let ring = log.iter().position(|s| matches!(s, Slot::Ring(_))).unwrap();
    let flip = log
        .iter()
        .position(|s| matches!(s, Slot::Service(_)))
        .unwrap();
    let removed = log.iter().position(|s| matches!(s, Slot::Real(_))).unwrap();
    assert!(ring < flip && flip < removed, "{log:?}");
    assert_eq!(log.len(), 3, "one ring, one flip, one removal: {log:?}");
}

#[test]
fn a_failure_at_any_write_leaves_the_maps_and_the_listing_as_they_were() {
    let mut probe = director(limits(64, 64));
    probe.apply(inputs(table(BASE))).unwrap();
    let before_log = probe.maps().inner.log.len();
    probe.apply(inputs(table(CHANGED))).unwrap();
    let steps = probe.maps().inner.log.len() - before_log;
    assert!(steps > 15, "a change of every kind: {steps} writes");
    for fail in 0..steps {
        let mut d = director(limits(64, 64));
        d.apply(inputs(table(BASE))).unwrap();
        let maps = d.maps().inner.state.clone();
        let published = d.published().clone();
        let listing = d.listing();
        d.maps_mut().fail_in(fail);
        let e = d.apply(inputs(table(CHANGED))).unwrap_err();
        assert!(
            matches!(&e, ApplyError::Commit(c) if c.restored && matches!(c.cause, MapsError::Injected(_))),
            "write {fail}: {e}"
        );
        assert_eq!(d.maps().inner.state, maps, "write {fail}: the maps changed");
        assert_eq!(d.published(), &published, "write {fail}");
        assert_eq!(d.listing(), listing, "write {fail}: the listing changed");
        // Nothing is stuck: the same change then goes through.
        d.maps_mut().fail_at = None;
        d.apply(inputs(table(CHANGED))).unwrap();
        check_forwarding(&d.maps().inner.state).unwrap();
    }
}

#[test]
fn health_and_mac_changes_are_transactional_too() {
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    let maps = d.maps().inner.state.clone();
    let svc = *d.table().services.keys().next().unwrap();
    let real: IpAddr = "192.0.2.11".parse().unwrap();
    let down = Verdict {
        up: false,
        weight: None,
        reason: "connection refused".into(),
    };
    d.maps_mut().fail_in(0);
    assert!(d.set_health(svc, real, Some(down.clone())).is_err());
    assert_eq!(d.maps().inner.state, maps);
    assert!(
        d.is_up(&svc, &real),
        "a verdict that was not committed is not in force"
    );
    d.maps_mut().fail_in(1);
    assert!(d.set_macs(&[(real, None)]).is_err());
    assert_eq!(d.maps().inner.state, maps);
    assert_eq!(d.mac(&real), Some(rs_mac(11)));
    d.maps_mut().fail_at = None;
    assert!(d.set_health(svc, real, Some(down)).unwrap());
    assert!(!d.is_up(&svc, &real));
}

/// `n` tcp services on 192.0.2.100 ports 1.., each with the given reals.
fn services(n: u16, reals: &[&str]) -> String {
    let rs: Vec<String> = reals.iter().map(|a| format!("{{address: {a}}}")).collect();
    let mut y = String::from("services:\n");
    for p in 1..=n {
        y += &format!(
            "  - {{protocol: tcp, address: 192.0.2.100, port: {p}, scheduler: wlc, real_servers: [{}]}}\n",
            rs.join(", ")
        );
    }
    y
}

#[test]
fn capacity_is_checked_before_the_first_write() {
    let mut d = director(limits(4, 8));
    d.apply(inputs(table(&services(4, &["192.0.2.11", "192.0.2.12"]))))
        .unwrap();
    let maps = d.maps().inner.state.clone();
    let writes = d.maps().writes;
    // One service too many.
    let e = d
        .apply(inputs(table(&services(5, &["192.0.2.11"]))))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ApplyError::Plan(PlanError::ServicesFull { need: 5, max: 4 })
        ),
        "{e}"
    );
    // One real server too many (8 slots, 4 services x 3 reals).
    let e = d
        .apply(inputs(table(&services(
            4,
            &["192.0.2.11", "192.0.2.12", "192.0.2.13"],
        ))))
        .unwrap_err();
    assert!(
        matches!(e, ApplyError::Plan(PlanError::RealsFull { max: 8, .. })),
        "{e}"
    );
    // Port-group members count as services.
    let group = "port_groups:\n  - {name: g, fwmark: 1, members: [{protocol: tcp, address: 192.0.2.9, port: 1}, {protocol: tcp, address: 192.0.2.9, port: 2}]}\n";
    let mut t = table(&services(3, &["192.0.2.11"]));
    let g = table(&format!(
        "{group}services:\n  - {{port_group: g, scheduler: rr}}\n"
    ));
    t.groups = g.groups.clone();
    t.services.extend(g.services);
    let e = d.apply(inputs(t)).unwrap_err();
    assert!(
        matches!(e, ApplyError::Plan(PlanError::ServicesFull { need: 5, .. })),
        "{e}"
    );
    assert_eq!(d.maps().writes, writes, "nothing was written");
    assert_eq!(d.maps().inner.state, maps);
}

#[test]
fn a_batch_that_swaps_services_at_capacity_is_applied_whole() {
    // The old apply wrote service by service, new keys before removed ones:
    // at max_services a -R batch that changed one scheduler, deleted a
    // service and added another hit the full services map half way, leaving
    // the new scheduler in the maps and the old one in the listing.
    let mut d = director(limits(2, 8));
    d.apply(inputs(table(&services(2, &["192.0.2.11"]))))
        .unwrap();
    let mut t = d.table().clone();
    let (first, second) = {
        let mut k = t.services.keys();
        (*k.next().unwrap(), *k.next().unwrap())
    };
    let mut spec = t.services[&first].spec.clone();
    spec.scheduler = Scheduler::Rr;
    let mut extra = t.services[&first].spec.clone();
    extra.addr.port = 1000;
    let batch = vec![
        crate::control::Request::EditService { service: spec },
        crate::control::Request::DelService { service: second },
        crate::control::Request::AddService { service: extra },
    ];
    crate::control::edit_table(
        &mut t,
        crate::control::Request::Batch {
            requests: batch,
            lines: Vec::new(),
        },
    )
    .unwrap();
    d.set_table(t).unwrap();
    check_forwarding(&d.maps().inner.state).unwrap();
    let l = d.listing();
    let scheds: Vec<Scheduler> = l.services.iter().map(|s| s.spec.scheduler).collect();
    assert_eq!(scheds, [Scheduler::Rr, Scheduler::Wlc]);
    let in_maps: Vec<u8> = d
        .maps()
        .inner
        .state
        .services
        .iter()
        .map(|(k, v)| (u16::from_be(k.port), v.sched))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(in_maps, [lb_common::sched::RR, lb_common::sched::WLC]);
    // One more service than max_services is refused before any write.
    let maps = d.maps().inner.state.clone();
    let mut t = d.table().clone();
    let mut third = t.services[&first].spec.clone();
    third.addr.port = 2000;
    t.add_service(third).unwrap();
    let e = d.set_table(t).unwrap_err();
    assert!(
        matches!(
            e,
            ApplyError::Plan(PlanError::ServicesFull { need: 3, max: 2 })
        ),
        "{e}"
    );
    assert_eq!(d.maps().inner.state, maps);
    let v: &ServiceValue = d.maps().inner.state.services.values().next().unwrap();
    assert_eq!(v.sched, lb_common::sched::RR);
}

#[test]
fn a_slot_still_in_a_live_ring_is_never_given_to_another_service() {
    // S1 {A, B}, S2 {C, D}, REALS full. One change removes B from S1 and
    // adds E to S2: B's slot is in S1's live ring until the change's flip,
    // so E may not take it in the same change (it would get S1's new
    // connections in between); the next change may.
    let mut d = director(limits(4, 4));
    let two = "services:
  - {protocol: tcp, address: 192.0.2.100, port: 1, scheduler: rr, real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
  - {protocol: tcp, address: 192.0.2.100, port: 2, scheduler: rr, real_servers: [{address: 192.0.2.13}, {address: 192.0.2.14}]}
";
    d.apply(inputs(table(two))).unwrap();
    let both = two
        .replace(
            "{address: 192.0.2.11}, {address: 192.0.2.12}",
            "{address: 192.0.2.11}",
        )
        .replace(
            "{address: 192.0.2.13}, {address: 192.0.2.14}",
            "{address: 192.0.2.13}, {address: 192.0.2.14}, {address: 192.0.2.15}",
        );
    let maps = d.maps().inner.state.clone();
    let e = d.apply(inputs(table(&both))).unwrap_err();
    assert!(
        matches!(
            e,
            ApplyError::Plan(PlanError::RealsFull { need: 5, max: 4 })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("reused only by a later one"), "{e}");
    assert_eq!(d.maps().inner.state, maps);
    // Remove first, then add: the second change reuses the slot, and
    // every write of it keeps the rings pointing at their own service.
    let removed = two.replace(
        "{address: 192.0.2.11}, {address: 192.0.2.12}",
        "{address: 192.0.2.11}",
    );
    d.apply(inputs(table(&removed))).unwrap();
    let slot_b = d.published().real_ids[&(0, "192.0.2.12".parse().unwrap(), 1)];
    let before = d.maps().inner.state.clone();
    d.maps_mut().inner.log.clear();
    d.apply(inputs(table(&both))).unwrap();
    let after = d.maps().inner.state.clone();
    replay(&before, &after, &d.maps().inner.log);
    let slot_e = d.published().real_ids[&(1, "192.0.2.15".parse().unwrap(), 2)];
    assert_eq!(slot_b, slot_e, "the removed slot was reused");
}

#[test]
fn a_failed_rollback_reads_the_maps_back_and_the_next_change_repairs_them() {
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    // The third write fails, and so does every write after it (the
    // rollback's too).
    d.maps_mut().fail_from = Some(d.maps().writes + 2);
    let e = d.apply(inputs(table(CHANGED))).unwrap_err();
    assert!(matches!(&e, ApplyError::Commit(c) if !c.restored), "{e}");
    assert!(
        e.to_string().contains("restoring the maps failed too"),
        "{e}"
    );
    // The listing does not crash on the mixed state, and what the director
    // believes is what the maps hold.
    let _ = d.listing();
    let mut again = MemMaps::new(limits(16, 16));
    again.state = d.maps().inner.state.clone();
    let read_back = Director::recover(again).unwrap();
    let (theirs, mine) = (read_back.published(), d.published());
    assert_eq!(theirs.services, mine.services);
    assert_eq!(theirs.rings, mine.rings);
    assert_eq!(theirs.reals, mine.reals);
    assert_eq!(theirs.real_ids, mine.real_ids);
    // Ids the maps no longer show (a key the failed commit deleted) are
    // kept, so the service gets its id back.
    assert!(theirs
        .svc_ids
        .iter()
        .all(|(a, id)| mine.svc_ids.get(a) == Some(id)));
    // Once the maps accept writes again, the next change gets them right.
    d.maps_mut().fail_from = None;
    d.apply(inputs(table(BASE))).unwrap();
    check_forwarding(&d.maps().inner.state).unwrap();
    let mut fresh = director(limits(16, 16));
    fresh.apply(inputs(table(BASE))).unwrap();
    assert_eq!(
        d.maps().inner.state.services.keys().collect::<Vec<_>>(),
        fresh.maps().inner.state.services.keys().collect::<Vec<_>>()
    );
}

#[test]
fn connections_opened_on_a_failed_plans_slots_are_dropped() {
    // A commit that fails after its flip may have let the program open
    // connections on the slots the plan gave out; once the slots are free
    // again those entries would point at nothing, so they go (the client's
    // next packet is scheduled afresh).
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    let plan = d.plan(&inputs(table(CHANGED))).unwrap();
    let fresh = *plan.fresh.iter().next().unwrap();
    // How many writes the commit does (no-op writes are skipped).
    let mut copy = MemMaps::new(limits(16, 16));
    copy.state = d.maps().inner.state.clone();
    let mut probe = Director::recover(copy).unwrap();
    probe.apply(inputs(table(CHANGED))).unwrap();
    let steps = probe.maps().log.len();
    d.maps_mut().after_write = Some(Box::new(move |m: &mut MemMaps, _| {
        let v = lb_common::ConnValue {
            real_id: fresh,
            ..Default::default()
        };
        m.update_conn(lb_common::ConnKey::default(), v);
    }));
    d.maps_mut().fail_in(steps - 1);
    assert!(d.apply(inputs(table(CHANGED))).is_err());
    assert!(
        d.maps().conns().iter().all(|(_, v)| v.real_id != fresh),
        "an entry on a freed slot was kept"
    );
}

#[test]
fn a_full_real_server_table_reuses_slots_without_panicking() {
    // The old apply panicked ("capacity checked") when, with REALS full, a
    // real server was deleted and a batch re-added servers.
    let mut d = director(limits(4, 4));
    let full = services(1, &["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"]);
    d.apply(inputs(table(&full))).unwrap();
    let svc = *d.table().services.keys().next().unwrap();
    let mut t = d.table().clone();
    t.del_real(&svc, "192.0.2.14".parse().unwrap()).unwrap();
    d.set_table(t.clone()).unwrap();
    let slot = d.published().removed().next().unwrap();
    // Re-adding it takes its old slot back (its connections go on).
    d.set_table(table(&full)).unwrap();
    assert_eq!(d.published().removed().count(), 0);
    assert_eq!(
        d.published().real_ids[&(0, "192.0.2.14".parse().unwrap(), 1)],
        slot
    );
    // A different newcomer needs the removed slot: reclaimed while no
    // connection uses it...
    d.set_table(t.clone()).unwrap();
    let mut with_new = t.clone();
    let r = RealSpec {
        address: "192.0.2.15".parse().unwrap(),
        ..*t.services[&svc].reals.values().next().unwrap()
    };
    with_new.add_real(&svc, r).unwrap();
    let mut conn = lb_common::ConnValue {
        real_id: slot,
        ..Default::default()
    };
    conn.state = lb_common::tcp_state::ESTABLISHED;
    d.maps_mut().update_conn(Default::default(), conn);
    // ...refused while one does, nothing changed...
    let maps = d.maps().inner.state.clone();
    let e = d.set_table(with_new.clone()).unwrap_err();
    assert!(
        matches!(
            e,
            ApplyError::Plan(PlanError::RealsFull { need: 5, max: 4 })
        ),
        "{e}"
    );
    assert_eq!(d.maps().inner.state, maps);
    // ...and accepted once it ended: the slot starts afresh.
    d.maps_mut().remove_conn(&Default::default());
    d.maps_mut().inner.state.load.insert(
        slot,
        lb_common::RealLoad {
            active: 3,
            inactive: 1,
        },
    );
    d.set_table(with_new).unwrap();
    assert_eq!(
        d.published().real_ids[&(0, "192.0.2.15".parse().unwrap(), 1)],
        slot
    );
    assert!(
        !d.maps().inner.state.load.contains_key(&slot),
        "counts of the old server were kept"
    );
    check_forwarding(&d.maps().inner.state).unwrap();
}

#[test]
fn a_restart_recovers_what_the_maps_hold() {
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(CHANGED))).unwrap();
    d.apply(inputs(table(BASE))).unwrap();
    let mut maps = MemMaps::new(limits(16, 16));
    maps.state = d.maps().inner.state.clone();
    let mut again = Director::recover(maps).unwrap();
    let mut want = d.published().clone();
    want.quorum.clear();
    // Ids of services without a services-map key (none here) and quorum
    // states are not in the maps; everything else is.
    assert_eq!(again.published(), &want);
    for (a, m) in &d.inputs().macs {
        assert_eq!(again.inputs().macs.get(a), Some(m), "{a}");
    }
    // Re-applying the same table writes nothing at all.
    let n = again.apply(inputs(table(BASE))).unwrap();
    assert_eq!(n, 0, "{:?}", again.maps().log);
}

#[test]
fn an_unchanged_apply_writes_nothing_and_one_weight_one_ring() {
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    assert_eq!(d.apply(inputs(table(BASE))).unwrap(), 0);
    let mut t = d.table().clone();
    let mh = *t.services.keys().nth(2).unwrap();
    assert_eq!(t.services[&mh].spec.scheduler, Scheduler::Mh);
    let r = *t.services[&mh].reals.values().next().unwrap();
    t.edit_real(&mh, RealSpec { weight: 5, ..r }).unwrap();
    d.maps_mut().inner.log.clear();
    d.set_table(t).unwrap();
    let slots: Vec<Slot> = d.maps().inner.log.iter().map(|(s, _)| *s).collect();
    assert!(
        matches!(slots[..], [Slot::Real(_), Slot::Ring(_), Slot::Service(_)]),
        "{slots:?}"
    );
}

#[test]
fn planning_only_the_changed_services_equals_planning_them_all() {
    let mut d = director(limits(64, 64));
    let mut steps = vec![inputs(table(BASE)), inputs(table(CHANGED))];
    let mut i = inputs(table(CHANGED));
    let svc = *i.table.services.keys().next().unwrap();
    i.health.insert(
        (svc, "192.0.2.11".parse().unwrap()),
        Verdict {
            up: false,
            weight: None,
            reason: "down".into(),
        },
    );
    steps.push(i.clone());
    i.macs.remove(&"192.0.2.13".parse().unwrap());
    steps.push(i.clone());
    i.policies.insert(
        svc,
        crate::health::ServicePolicy {
            sorry_server: Some("192.0.2.99".parse().unwrap()),
            quorum: 5,
            ..crate::health::ServicePolicy::none()
        },
    );
    i.macs.insert("192.0.2.99".parse().unwrap(), rs_mac(99));
    steps.push(i.clone());
    i.expire_nodest = true;
    steps.push(i.clone());
    steps.push(inputs(table(BASE)));
    let l = limits(64, 64);
    for (n, next) in steps.into_iter().enumerate() {
        if n > 0 {
            let cur = d.published().clone();
            let none = std::collections::BTreeSet::new();
            let only = plan::plan(
                &next,
                Some(d.inputs()),
                &cur,
                &l,
                &none,
                &mut rings::RingCache::default(),
            )
            .unwrap();
            let all = plan::plan(
                &next,
                None,
                &cur,
                &l,
                &none,
                &mut rings::RingCache::default(),
            )
            .unwrap();
            assert_eq!(only.next(&cur), all.next(&cur), "step {n}");
            assert_eq!(only.writes, all.writes, "step {n}");
        }
        d.apply(next).unwrap();
        check_forwarding(&d.maps().inner.state).unwrap();
    }
}

#[test]
fn the_table_read_back_from_the_maps_is_the_one_applied() {
    let mut d = director(limits(64, 64));
    d.apply(inputs(table(CHANGED))).unwrap();
    let back = d.table_in_maps();
    let applied = table(CHANGED);
    assert_eq!(back.services, applied.services);
    let members = |t: &Table| -> Vec<(u32, Vec<crate::model::ServiceAddr>)> {
        t.groups
            .iter()
            .map(|(m, g)| {
                let mut v = g.members.clone();
                v.sort();
                (*m, v)
            })
            .collect()
    };
    assert_eq!(members(&back), members(&applied));
    assert_eq!(back.groups[&7].name, "fwmark7");
    // Weights come back as in force: a down real server reads back at 0.
    let mut i = inputs(table(CHANGED));
    let svc = *i.table.services.keys().next().unwrap();
    i.health.insert(
        (svc, "192.0.2.11".parse().unwrap()),
        Verdict {
            up: false,
            weight: None,
            reason: "down".into(),
        },
    );
    d.apply(i).unwrap();
    let back = d.table_in_maps();
    let r = back.services[&svc].reals[&("192.0.2.11".parse().unwrap(), 80)];
    assert_eq!(r.weight, 0);
}

#[test]
fn the_sweep_keeps_an_entry_refreshed_after_it_was_judged_expired() {
    use lb_common::{tcp_state, ConnKey, ConnValue, RealLoad};
    let mut d = director(limits(16, 16));
    d.apply(inputs(table(BASE))).unwrap();
    let key = ConnKey {
        sport: 7,
        ..Default::default()
    };
    let judged = ConnValue {
        real_id: 0,
        state: tcp_state::CLOSE,
        last_seen_ns: sweep::monotonic_ns() - 60_000_000_000,
        ..Default::default()
    };
    d.maps_mut().update_conn(key, judged);
    // Slot 0 counted it, so the sweep writes RS_CLOSED before it deletes:
    // a packet of the flow arrives right then.
    d.maps_mut().inner.state.load.insert(
        0,
        RealLoad {
            active: 0,
            inactive: 1,
        },
    );
    d.maps_mut().after_write = Some(Box::new(move |m: &mut MemMaps, _| {
        let v = ConnValue {
            state: tcp_state::SYN_RECV,
            last_seen_ns: sweep::monotonic_ns(),
            ..judged
        };
        m.update_conn(key, v);
    }));
    d.sweep(true);
    let v = d.maps().conn(&key).expect("a refreshed entry was deleted");
    assert_eq!(v.state, tcp_state::SYN_RECV);
    // Left alone, an expired entry goes.
    d.maps_mut().after_write = None;
    d.maps_mut().update_conn(key, judged);
    d.sweep(true);
    assert!(d.maps().conn(&key).is_none());
}
