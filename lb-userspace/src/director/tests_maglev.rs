//! Large Maglev tables (mh with more than 40 turns): placed in MAGLEV
//! chunks before the ring slot that points at them, double-buffered like
//! rings, recovered after a restart, given back when their service goes,
//! and a smaller table when the map is full.

use lb_common::{svc_flags, MAGLEV_CHUNK, RING_SIZE};

use super::tests::{check_forwarding, director, inputs, limits, replay, table};
use super::*;
use crate::dataplane::{MemMaps, Slot, Value};

/// An mh service on port `port` with `n` real servers (2001:db8:1::1..n).
fn mh(port: u16, n: u16) -> String {
    let reals: Vec<String> = (1..=n)
        .map(|i| format!("{{address: \"2001:db8:1::{i:x}\"}}"))
        .collect();
    format!(
        "  - {{protocol: tcp, address: \"2001:db8::100\", port: {port}, scheduler: mh,\n     real_servers: [{}]}}\n",
        reals.join(", ")
    )
}

fn yaml(services: &[(u16, u16)]) -> String {
    let mut y = String::from("services:\n");
    for (port, n) in services {
        y.push_str(&mh(*port, *n));
    }
    y
}

/// (service id, live generation, flags) of the service on `port`.
fn value_of(d: &Director<impl crate::dataplane::Maps>, port: u16) -> lb_common::ServiceValue {
    *d.published()
        .services
        .iter()
        .find(|(k, _)| u16::from_be(k.port) == port)
        .map(|(_, v)| v)
        .expect("service")
}

/// No two runs of the published state overlap.
fn disjoint(d: &Director<impl crate::dataplane::Maps>) {
    let mut runs: Vec<_> = d.published().chunks.values().copied().collect();
    runs.sort();
    for w in runs.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "{runs:?}");
    }
}

#[test]
fn a_large_table_is_written_in_chunks_before_its_ring_slot_points_at_it() {
    let mut d = director(limits(16, 256));
    d.apply(inputs(table(&yaml(&[(80, 50)])))).unwrap();
    let v = value_of(&d, 80);
    assert_ne!(v.flags & svc_flags::MAGLEV_LARGE, 0);
    let slot = v.id * 2 + (v.gen as u32 & 1);
    let (gen, ring) = &d.published().rings[&v.id];
    assert_eq!((*gen, ring.len()), (v.gen, 8191), "50 servers: 8,191 slots");
    let run = d.published().chunks[&slot];
    assert_eq!(run.1, 8);
    // The maps hold the table where the slot says, and the chunks were
    // written before the slot, the slot before the service.
    let log = &d.maps().inner.log;
    let at = |want: Slot| log.iter().position(|(s, _)| *s == want).unwrap();
    let header = at(Slot::Ring(slot));
    for c in run.0..run.0 + run.1 {
        assert!(at(Slot::Chunk(c)) < header);
    }
    let Value::Ring(r) = d.maps().read(Slot::Ring(slot)).unwrap() else {
        panic!()
    };
    assert_eq!((r.reals[0], r.reals[1]), (run.0, 8191));
    let Value::Chunk(c) = d.maps().read(Slot::Chunk(run.0 + 7)).unwrap() else {
        panic!()
    };
    assert_eq!(
        &c.reals[..8191 - 7 * MAGLEV_CHUNK],
        &ring[7 * MAGLEV_CHUNK..]
    );
    // Each of the 50 holds 163 or 164 slots (at most 1% over its share).
    let mut n = std::collections::BTreeMap::new();
    for id in ring {
        *n.entry(*id).or_insert(0u32) += 1;
    }
    assert_eq!(n.len(), 50);
    assert!(n.values().all(|&k| (163..=164).contains(&k)), "{n:?}");
}

#[test]
fn generations_take_their_own_runs_and_a_restart_keeps_the_table() {
    let mut d = director(limits(16, 256));
    d.apply(inputs(table(&yaml(&[(80, 50)])))).unwrap();
    let first = d.published().chunks.clone();
    // One server fewer: a new table in the standby slot, in other chunks
    // (the live table is still read).
    d.apply(inputs(table(&yaml(&[(80, 49)])))).unwrap();
    let second = d.published().chunks.clone();
    assert_eq!(second.len(), 2, "{second:?}");
    let runs: Vec<_> = second.values().collect();
    assert!(runs[0].0 + runs[0].1 <= runs[1].0 || runs[1].0 + runs[1].1 <= runs[0].0);
    // Back to 50: the standby slot's own run is reused, nothing more taken.
    d.apply(inputs(table(&yaml(&[(80, 50)])))).unwrap();
    assert_eq!(d.published().chunks, second);
    disjoint(&d);
    let v = value_of(&d, 80);
    let slot = v.id * 2 + (v.gen as u32 & 1);
    assert_eq!(d.published().chunks[&slot], first[&slot]);
    // A restart reads the live table back: the same apply writes nothing.
    let mut maps = MemMaps::new(limits(16, 256));
    maps.state = d.maps().inner.state.clone();
    let mut again = Director::recover(maps).unwrap();
    assert_eq!(again.published().rings, d.published().rings);
    assert_eq!(again.published().chunks[&slot], first[&slot]);
    let n = again.apply(inputs(table(&yaml(&[(80, 50)])))).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn a_deleted_service_gives_its_chunks_back_to_a_later_change() {
    // 36 chunks: two 8-chunk generations of two services fit, a third
    // service's table does not.
    let mut d = director(crate::dataplane::Limits {
        max_maglev_slots: 36 * 1024,
        ..limits(16, 256)
    });
    d.apply(inputs(table(&yaml(&[(80, 50), (81, 50)]))))
        .unwrap();
    d.apply(inputs(table(&yaml(&[(80, 49), (81, 49)]))))
        .unwrap();
    assert_eq!(d.published().chunks.len(), 4);
    let next = inputs(table(&yaml(&[(80, 49), (81, 49), (82, 50)])));
    let plan = d.plan(&next).unwrap();
    assert_eq!(plan.maglev_squeezed.len(), 1, "{:?}", plan.maglev_squeezed);
    assert_eq!(plan.maglev_squeezed[0].1, 8191);
    d.apply(next).unwrap();
    let v = value_of(&d, 82);
    assert_eq!(
        v.flags & svc_flags::MAGLEV_LARGE,
        0,
        "no room: a small table"
    );
    assert_eq!(d.published().rings[&v.id].1.len(), RING_SIZE);
    // Deleting 81 in the same change as growing 82 does not hand 81's
    // chunks to 82 (a packet may still read them)...
    d.apply(inputs(table(&yaml(&[(80, 49), (82, 51)]))))
        .unwrap();
    let v = value_of(&d, 82);
    assert_eq!(v.flags & svc_flags::MAGLEV_LARGE, 0);
    assert_eq!(d.published().chunks.len(), 2, "81's runs are free now");
    // ...a later change gets them.
    d.apply(inputs(table(&yaml(&[(80, 49), (82, 52)]))))
        .unwrap();
    let v = value_of(&d, 82);
    assert_ne!(v.flags & svc_flags::MAGLEV_LARGE, 0);
    assert_eq!(d.published().rings[&v.id].1.len(), 8191);
    disjoint(&d);
}

#[test]
fn a_server_failing_its_check_keeps_the_table_size() {
    // 41 servers: 8,191 slots; 40 of them up would be 4,093 if the size
    // followed the available servers, moving nearly every client.
    let mut d = director(limits(16, 256));
    let mut inp = inputs(table(&yaml(&[(80, 41)])));
    d.apply(inp.clone()).unwrap();
    let v = value_of(&d, 80);
    let before = d.published().rings[&v.id].1.clone();
    assert_eq!(before.len(), 8191);
    let svc = *inp.table.services.keys().next().unwrap();
    inp.health.insert(
        (svc, "2001:db8:1::7".parse().unwrap()),
        crate::health::Verdict {
            up: false,
            weight: None,
            reason: "test".into(),
        },
    );
    d.apply(inp).unwrap();
    let v = value_of(&d, 80);
    let after = &d.published().rings[&v.id].1;
    assert_eq!(after.len(), 8191);
    // Maglev: about the failed server's share moves, not the table.
    let moved = before.iter().zip(after).filter(|(a, b)| a != b).count();
    assert!(moved < 8191 / 41 * 3, "{moved} slots moved");
    disjoint(&d);
}

#[test]
fn every_intermediate_state_of_a_large_table_commit_forwards() {
    let mut d = director(limits(64, 256));
    let empty = d.maps().inner.state.clone();
    d.apply(inputs(table(&yaml(&[(80, 50)])))).unwrap();
    let first = d.maps().inner.state.clone();
    check_forwarding(&first).unwrap();
    replay(&empty, &first, &d.maps().inner.log);
    // A server leaves (the live table names it until the flip), then the
    // service shrinks to a small table, then grows again.
    for n in [49, 30, 60] {
        d.maps_mut().inner.log.clear();
        let before = d.maps().inner.state.clone();
        d.apply(inputs(table(&yaml(&[(80, n)])))).unwrap();
        let after = d.maps().inner.state.clone();
        check_forwarding(&after).unwrap();
        replay(&before, &after, &d.maps().inner.log);
        let v = value_of(&d, 80);
        assert_eq!(v.flags & svc_flags::MAGLEV_LARGE != 0, n > 40, "{n}");
    }
}

#[test]
fn while_an_older_program_may_run_no_large_table_is_started() {
    let mut d = director(limits(16, 256));
    let mut first = inputs(table(&yaml(&[(80, 50)])));
    first.small_maglev_only = true;
    d.apply(first.clone()).unwrap();
    let v = value_of(&d, 80);
    assert_eq!(v.flags & svc_flags::MAGLEV_LARGE, 0);
    assert_eq!(d.published().rings[&v.id].1.len(), RING_SIZE);
    // Once lbd's own program is attached: the large table.
    d.change(|i| i.small_maglev_only = false).unwrap();
    let v = value_of(&d, 80);
    assert_ne!(v.flags & svc_flags::MAGLEV_LARGE, 0);
    // A table already published stays large (the program that reads it
    // wrote it), and a change to it is made large too.
    let mut again = inputs(table(&yaml(&[(80, 49)])));
    again.small_maglev_only = true;
    d.apply(again).unwrap();
    let v = value_of(&d, 80);
    assert_ne!(v.flags & svc_flags::MAGLEV_LARGE, 0);
    assert_eq!(d.published().rings[&v.id].1.len(), 8191);
}
