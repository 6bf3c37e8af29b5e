//! The VIP prefilter's bits beyond what the planner derives from the
//! services: the addresses connection entries still go to. A VIP that
//! loses its services keeps its bit while its connections go on; only a
//! sweep that began [`VIP_SETTLE`] after the last such loss, and found no
//! entry to the address, lets the bit go. At recovery the connection
//! table's destinations are ORed into the filter (a new map after an
//! upgrade, a filter left by another version).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use lb_common::vip_bit;
use tracing::{info, warn};

use super::{
    plan::{self, Inputs, Published},
    Director,
};
use crate::dataplane::{Maps, MapsError, Slot, Value};

/// How long after a VIP lost its services a sweep must begin to have seen
/// every entry to it: a packet that found the service just before the
/// commit may still be adding its entry just after.
pub const VIP_SETTLE: Duration = Duration::from_secs(1);

/// Sets the bits of every connection entry's destination (only adds).
pub(super) fn seed<M: Maps>(maps: &mut M, published: &mut Published) -> Result<(), MapsError> {
    let mut words: BTreeMap<u32, u64> = BTreeMap::new();
    for (k, _) in maps.conns() {
        let b = vip_bit(&k.daddr);
        if published.vip_bits.insert(b) {
            *words.entry(b / 64).or_default() |= 1u64 << (b % 64);
        }
    }
    for (i, add) in words {
        let Value::Bits(w) = maps.read(Slot::VipFilter(i))? else {
            continue;
        };
        maps.write(Slot::VipFilter(i), &Value::Bits(w | add))?;
    }
    Ok(())
}

/// Whether `next` takes the last service away from an address the maps
/// serve (judged against the maps, not the last inputs: after a restart or
/// a failed rollback those say nothing).
pub(super) fn loses_a_vip(published: &Published, next: &Inputs) -> bool {
    let served: BTreeSet<u32> = published
        .services
        .keys()
        .map(|k| vip_bit(&k.addr))
        .collect();
    !served.is_subset(&plan::service_vip_bits(&next.table))
}

impl<M: Maps> Director<M> {
    /// After a sweep that began at `started` and found entries going to
    /// `seen` (prefilter bits): the bits beyond the services' that entries
    /// still need. Only a sweep that began VIP_SETTLE after the last VIP
    /// lost its services may let bits go.
    pub(super) fn settle_vip_bits(&mut self, started: Instant, seen: &BTreeSet<u32>) {
        if self
            .vip_removed_at
            .is_some_and(|t| started < t + VIP_SETTLE)
        {
            return;
        }
        let services = plan::service_vip_bits(&self.inputs.table);
        let lingering: BTreeSet<u32> = seen.difference(&services).copied().collect();
        if self.inputs.vip_bits_settled && lingering == self.inputs.vip_bits_in_use {
            return;
        }
        let went = self.published.vip_bits.len();
        match self.change(|i| {
            i.vip_bits_in_use = lingering;
            i.vip_bits_settled = true;
        }) {
            Ok(_) => {
                self.vip_removed_at = None;
                let now = self.published.vip_bits.len();
                if now < went {
                    info!(
                        bits = went - now,
                        "VIP prefilter: addresses with no service and no connection left"
                    );
                }
            }
            Err(e) => warn!("VIP prefilter not updated: {e}"),
        }
    }
}
