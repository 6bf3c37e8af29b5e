//! Id allocation. A service keeps its id and a real server (service id,
//! address, port) keeps its slot for as long as it exists, so a weight change
//! or a restart never moves a known connection; new ones take the lowest
//! free id.

use std::collections::{BTreeMap, BTreeSet};

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
    let wanted_keys: BTreeSet<RealKey> = wanted.iter().map(|(k, _, _)| *k).collect();
    let mut newcomers = Vec::new();
    for k in &wanted_keys {
        match cur.real_ids.get(k) {
            Some(id) => {
                out.real_ids.insert(*k, *id);
            }
            None => newcomers.push(*k),
        }
    }
    if newcomers.is_empty() {
        return Ok(out);
    }
    let taken: BTreeSet<u32> = cur.real_ids.values().copied().collect();
    // A reclaimable slot must not belong to a real server wanted back.
    let kept: BTreeSet<u32> = out.real_ids.values().copied().collect();
    let spare: Vec<u32> = reclaimable
        .iter()
        .copied()
        .filter(|i| taken.contains(i) && !kept.contains(i))
        .collect();
    let free = (max as usize).saturating_sub(taken.len()) + spare.len();
    if newcomers.len() > free {
        return Err(PlanError::RealsFull {
            need: taken.len() + newcomers.len() - spare.len(),
            max,
        });
    }
    let mut unused = (0..max).filter(|i| !taken.contains(i));
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
