//! The order of a commit's writes: every intermediate state forwards
//! correctly (see the module documentation of `plan`).

use std::collections::{BTreeMap, BTreeSet};

use lb_common::{rs_flags, RealServer, MAGLEV_CHUNK};

use super::{
    per_service::ServicePlan,
    plan::{Delta, Published},
};
use crate::dataplane::{Slot, Value, Write};

/// Whether `new` takes away something `old` had (in use, MAC, not removed).
pub(super) fn loses_capability(old: &RealServer, new: &RealServer) -> bool {
    let usable = |r: &RealServer| {
        r.flags & (rs_flags::IN_USE | rs_flags::MAC_VALID | rs_flags::REMOVED)
            == rs_flags::IN_USE | rs_flags::MAC_VALID
    };
    let in_use =
        |r: &RealServer| r.flags & rs_flags::IN_USE != 0 && r.flags & rs_flags::REMOVED == 0;
    (usable(old) && !usable(new)) || (in_use(old) && !in_use(new))
}

/// The writes of `delta` against `cur`, in commit order.
pub(super) fn writes(
    cur: &Published,
    delta: &Delta,
    plans: &[ServicePlan],
    fresh: &BTreeSet<u32>,
    new_ids: &BTreeSet<u32>,
) -> Vec<Write> {
    let mut w = Vec::new();
    let mut put = |slot, value| w.push(Write { slot, value });
    // 1. the director's settings, the VLANs it serves
    if let Some(c) = delta.config {
        put(Slot::Config, Value::Config(c));
    }
    if let Some(vlans) = &delta.vlans {
        for v in vlans.symmetric_difference(&cur.vlans) {
            put(Slot::Vlan(*v), Value::Word(vlans.contains(v) as u32));
        }
    }
    // ...and the VIP prefilter's new bits (each word: old | new)
    let words = |bits: &BTreeSet<u32>| {
        let mut w: BTreeMap<u32, u64> = BTreeMap::new();
        for b in bits {
            *w.entry(b / 64).or_default() |= 1u64 << (b % 64);
        }
        w
    };
    let vip_words = delta
        .vip_bits
        .as_ref()
        .map(|new| (words(&cur.vip_bits), words(new)));
    if let Some((old, new)) = &vip_words {
        for (i, n) in new {
            let o = old.get(i).copied().unwrap_or(0);
            if o | n != o {
                put(Slot::VipFilter(*i), Value::Bits(o | n));
            }
        }
    }
    // 2. keys that leave
    for (k, v) in &delta.services {
        if v.is_none() {
            put(Slot::Service(*k), Value::Service(None));
        }
    }
    // 3. new service ids start with zero statistics
    for id in new_ids {
        put(Slot::SvcStats(*id), Value::Stats(Vec::new()));
    }
    // 4. real servers that are new or gain capability
    let mut later = Vec::new();
    for (id, r) in &delta.reals {
        let Some(r) = r else { continue };
        if fresh.contains(id) {
            // A (re)used slot starts with no connections and no history.
            put(Slot::Load(*id), Value::Load(Default::default()));
            put(Slot::Closed(*id), Value::Load(Default::default()));
            put(Slot::Over(*id), Value::Word(0));
            put(Slot::RsStats(*id), Value::Stats(Vec::new()));
            put(Slot::Real(*id), Value::Real(*r));
            continue;
        }
        match cur.reals.get(id) {
            Some(old) if old == r => {}
            Some(old) if loses_capability(old, r) => later.push((*id, *r)),
            _ => put(Slot::Real(*id), Value::Real(*r)),
        }
    }
    // 5. standby rings (a large Maglev table: its chunks, then the slot
    // that says where they are)
    for p in plans {
        match (&p.standby, p.standby_at) {
            (Some((slot, ring)), Some(first)) => {
                for (i, part) in (first..).zip(ring.chunks(MAGLEV_CHUNK)) {
                    put(Slot::Chunk(i), Value::chunk(part));
                }
                put(Slot::Ring(*slot), Value::ring(&[first, ring.len() as u32]));
            }
            (Some((slot, ring)), None) => put(Slot::Ring(*slot), Value::ring(ring)),
            (None, _) => {}
        }
    }
    // 6. services: new entries and flips
    for (k, v) in &delta.services {
        if let Some(v) = v {
            put(Slot::Service(*k), Value::Service(Some(*v)));
        }
    }
    // 7. real servers that lose capability
    for (id, r) in later {
        put(Slot::Real(id), Value::Real(r));
    }
    // 8. VIP prefilter bits that go
    if let Some((old, new)) = &vip_words {
        for (i, o) in old {
            let n = new.get(i).copied().unwrap_or(0);
            if o | n != n {
                put(Slot::VipFilter(*i), Value::Bits(n));
            }
        }
    }
    w
}
