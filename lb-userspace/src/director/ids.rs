//! Id allocation. A service keeps its id and a real server (service id,
//! address, port) keeps its slot for as long as it exists, so a weight change
//! or a restart never moves a known connection; new ones take the lowest
//! free id.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    codec::RealKey,
    plan::{PlanError, Published},
};
use crate::model::{RealSpec, ServiceAddr, Table};

/// Ids of the table's services: kept ones, then the lowest ids no current
/// service holds, then (only if nothing else is free) ids of services that
/// leave in this same change (their keys are deleted before anything is
/// written for the newcomer).
pub fn services(
    table: &Table,
    current: &BTreeMap<ServiceAddr, u32>,
    max: u32,
) -> Result<BTreeMap<ServiceAddr, u32>, PlanError> {
    let held: BTreeSet<u32> = current.values().copied().collect();
    let leaving = current
        .iter()
        .filter(|(a, _)| !table.services.contains_key(a))
        .map(|(_, id)| *id);
    let mut free = (0..max).filter(|i| !held.contains(i)).chain(leaving);
    let mut ids = BTreeMap::new();
    for a in table.services.keys() {
        let id = match current.get(a) {
            Some(id) => *id,
            None => free.next().ok_or(PlanError::ServicesFull {
                need: table.services.len(),
                max,
            })?,
        };
        ids.insert(*a, id);
    }
    Ok(ids)
}

/// The range of [`RealKey`]s of service `sid`.
pub fn of_service(sid: u32) -> std::ops::RangeInclusive<RealKey> {
    let lo = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let hi = IpAddr::V6(Ipv6Addr::from(u128::MAX));
    (sid, lo, 0)..=(sid, hi, u16::MAX)
}

/// Real-server slots.
pub struct RealSlots {
    /// Slot of every wanted real server.
    pub real_ids: BTreeMap<RealKey, u32>,
    /// Slots given out now (never used, or reclaimed).
    pub fresh: BTreeSet<u32>,
    /// Removed slots taken back for newcomers.
    pub reclaimed: BTreeSet<u32>,
}

/// Slots for `wanted`: a real server already in REALS keeps its slot (a
/// removed one comes back to it, with its connections); a new one takes the
/// lowest slot never in use, then a removed slot that no connection refers
/// to (`reclaimable`). Slots of removed real servers stay taken otherwise.
pub fn reals<T>(
    wanted: &[(RealKey, RealSpec, T)],
    cur: &Published,
    reclaimable: &BTreeSet<u32>,
    max: u32,
) -> Result<RealSlots, PlanError> {
    let mut out = RealSlots {
        real_ids: BTreeMap::new(),
        fresh: BTreeSet::new(),
        reclaimed: BTreeSet::new(),
    };
    let mut newcomers = BTreeSet::new();
    for (k, _, _) in wanted {
        match cur.real_ids.get(k) {
            Some(id) => {
                out.real_ids.insert(*k, *id);
            }
            None => {
                newcomers.insert(*k);
            }
        }
    }
    if newcomers.is_empty() {
        return Ok(out);
    }
    let in_use = cur.reals.len();
    // A reclaimable slot must not belong to a real server wanted back.
    let kept: BTreeSet<u32> = out.real_ids.values().copied().collect();
    let spare: Vec<u32> = reclaimable
        .iter()
        .copied()
        .filter(|i| cur.reals.contains_key(i) && !kept.contains(i))
        .collect();
    let free = (max as usize).saturating_sub(in_use) + spare.len();
    if newcomers.len() > free {
        return Err(PlanError::RealsFull {
            need: in_use + newcomers.len() - spare.len(),
            max,
        });
    }
    let mut unused = (0..max).filter(|i| !cur.reals.contains_key(i));
    let mut spare = spare.into_iter();
    for k in &newcomers {
        let id = match unused.next() {
            Some(id) => id,
            None => {
                let id = spare.next().expect("counted above");
                out.reclaimed.insert(id);
                id
            }
        };
        out.fresh.insert(id);
        out.real_ids.insert(*k, id);
    }
    Ok(out)
}
