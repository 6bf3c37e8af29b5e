//! The planner and the commit on in-memory maps (no root): capacity edges,
//! a failure injected at every write step, the order of the writes, and the
//! bugs the old single-pass apply had.

use std::net::IpAddr;

use lb_common::rs_flags;

use super::*;
use crate::{
    config::Config,
    dataplane::{Faulty, Limits, MapsError, MemMaps, MemState},
    health::Verdict,
    model::{RealSpec, Scheduler},
};

pub(super) const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

pub(super) fn rs_mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0x10, n]
}

pub(super) fn limits(services: u32, reals: u32) -> Limits {
    Limits {
        max_services: services,
        max_reals: reals,
        max_conns: 1024,
        // Room for two generations of two 8,191-slot tables, and a little.
        max_maglev_slots: 40 * 1024,
    }
}

pub(super) fn table(yaml: &str) -> Table {
    Config::parse(yaml, "t.yaml")
        .unwrap()
        .table("t.yaml")
        .unwrap()
}

/// Inputs with every 192.0.2.x / 2001:db8::x real server resolved.
pub(super) fn inputs(t: Table) -> Inputs {
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

pub(super) fn director(l: Limits) -> Director<Faulty<MemMaps>> {
    Director::recover(Faulty::new(MemMaps::new(l))).unwrap()
}

pub(super) const BASE: &str = r#"
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
pub(super) const CHANGED: &str = r#"
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
pub(super) fn check_forwarding(s: &MemState) -> Result<(), String> {
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
        let mut ids = ring.reals[..v.ring_len as usize].to_vec();
        if v.flags & lb_common::svc_flags::MAGLEV_LARGE != 0 {
            // The slot says where the table is: every slot of it counts.
            let (first, len) = (ring.reals[0], ring.reals[1] as usize);
            if len <= lb_common::RING_SIZE {
                return Err(format!("{k:?}: large table of {len} slots"));
            }
            ids = (first..first + len.div_ceil(lb_common::MAGLEV_CHUNK) as u32)
                .flat_map(|c| match s.chunks.get(&c) {
                    Some(c) => c.reals.to_vec(),
                    // (A chunk never written: no real server.)
                    None => vec![u32::MAX; lb_common::MAGLEV_CHUNK],
                })
                .take(len)
                .collect();
        }
        for id in &ids {
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
pub(super) fn replay(from: &MemState, to: &MemState, writes: &[(crate::dataplane::Slot, Value)]) {
    let mut m = MemMaps::new(limits(64, 256));
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

/// The mh ring of `d`'s only service as real-server addresses.
fn mh_ring_addresses(d: &Director<Faulty<MemMaps>>) -> Vec<IpAddr> {
    let p = d.published();
    let by_slot: std::collections::BTreeMap<u32, IpAddr> =
        p.real_ids.iter().map(|((_, a, _), id)| (*id, *a)).collect();
    let (_, ring) = p.rings.values().next().expect("one ring");
    ring.iter().map(|id| by_slot[id]).collect()
}

/// ECMP needs no shared state for mh: two directors whose real servers got
/// other slots, in another order, through another history, build the same
/// ring (the same real server for every client hash).
#[test]
fn mh_rings_are_identical_across_directors_whatever_the_history() {
    let svc = |reals: &str| {
        format!("services:\n  - {{protocol: tcp, address: 192.0.2.100, port: 80, scheduler: mh, real_servers: [{reals}]}}\n")
    };
    let mut a = director(limits(4, 16));
    a.apply(inputs(table(&svc(
        "{address: 192.0.2.11}, {address: 192.0.2.12, weight: 2}, {address: 192.0.2.13}",
    ))))
    .unwrap();
    let mut b = director(limits(4, 16));
    b.apply(inputs(table(&svc(
        "{address: 192.0.2.19}, {address: 192.0.2.13}",
    ))))
    .unwrap();
    b.apply(inputs(table(&svc(
        "{address: 192.0.2.13}, {address: 192.0.2.12, weight: 2}, {address: 192.0.2.11}",
    ))))
    .unwrap();
    assert_ne!(
        a.published().real_ids.values().collect::<Vec<_>>(),
        b.published().real_ids.values().collect::<Vec<_>>(),
        "the slots differ"
    );
    let (ra, rb) = (mh_ring_addresses(&a), mh_ring_addresses(&b));
    assert_eq!(ra.len(), lb_common::RING_SIZE);
    assert_eq!(ra, rb);
}
