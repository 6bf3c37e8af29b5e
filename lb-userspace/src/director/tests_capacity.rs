//! The planner's capacity edges: services, port-group members and real
//! servers refused before the first write, slots taken back only when no
//! connection or live ring uses them.

use lb_common::ServiceValue;

use super::tests::*;
use super::*;
use crate::{
    dataplane::{Maps, MemMaps},
    model::{RealSpec, Scheduler},
};

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
