//! [`Maps`] with faults on purpose: fails the n-th write and can look at
//! the maps after every write. Tests wrap the real maps or [`super::MemMaps`]
//! in it to check that a commit restores everything when a write fails, and
//! that the data plane forwards after every single write.

use lb_common::{ConnKey, ConnValue, ServiceKey, ServiceValue};

use super::{Limits, Maps, MapsError, Slot, Value};

/// Called after each successful write with the maps and the write's index.
pub type AfterWrite<M> = Box<dyn FnMut(&mut M, usize)>;

pub struct Faulty<M> {
    pub inner: M,
    /// Fail the write with this index (counted from the first write).
    pub fail_at: Option<usize>,
    /// Fail every write from this index on (a rollback then fails too).
    pub fail_from: Option<usize>,
    /// Writes attempted so far.
    pub writes: usize,
    pub after_write: Option<AfterWrite<M>>,
}

impl<M> Faulty<M> {
    pub fn new(inner: M) -> Faulty<M> {
        Faulty {
            inner,
            fail_at: None,
            fail_from: None,
            writes: 0,
            after_write: None,
        }
    }

    /// Fails the `n`-th write from now on (0 = the next one).
    pub fn fail_in(&mut self, n: usize) {
        self.fail_at = Some(self.writes + n);
    }
}

impl<M: Maps> Maps for Faulty<M> {
    fn limits(&self) -> &Limits {
        self.inner.limits()
    }
    fn read(&self, slot: Slot) -> Result<Value, MapsError> {
        self.inner.read(slot)
    }
    fn write(&mut self, slot: Slot, value: &Value) -> Result<(), MapsError> {
        let n = self.writes;
        self.writes += 1;
        if self.fail_at == Some(n) || self.fail_from.is_some_and(|f| n >= f) {
            return Err(MapsError::Injected(n));
        }
        self.inner.write(slot, value)?;
        if let Some(f) = self.after_write.as_mut() {
            f(&mut self.inner, n);
        }
        Ok(())
    }
    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, MapsError> {
        self.inner.services()
    }
    fn conns(&self) -> Vec<(ConnKey, ConnValue)> {
        self.inner.conns()
    }
    fn conn(&self, key: &ConnKey) -> Option<ConnValue> {
        self.inner.conn(key)
    }
    fn remove_conn(&mut self, key: &ConnKey) {
        self.inner.remove_conn(key)
    }
    fn update_conn(&mut self, key: ConnKey, value: ConnValue) {
        self.inner.update_conn(key, value)
    }
    fn forget_in_lblc(&mut self, ids: &std::collections::BTreeSet<u32>) {
        self.inner.forget_in_lblc(ids)
    }
    fn counter(&self, index: u32) -> u64 {
        self.inner.counter(index)
    }
}

/// Every slot the director writes, read back: what a test compares before
/// and after a failed commit.
pub fn snapshot<M: Maps>(maps: &M) -> Vec<(Slot, Value)> {
    let l = maps.limits().clone();
    let mut slots: Vec<Slot> = Vec::new();
    if let Ok(services) = maps.services() {
        // Sorted: a hash map's iteration order changes when keys go and come back.
        let keys: std::collections::BTreeSet<_> = services.into_iter().map(|(k, _)| k).collect();
        slots.extend(keys.into_iter().map(Slot::Service));
    }
    slots.extend((0..l.max_services.saturating_mul(2)).map(Slot::Ring));
    slots.extend((0..l.maglev_chunks()).map(Slot::Chunk));
    slots.extend((0..lb_common::VIP_FILTER_WORDS).map(Slot::VipFilter));
    slots.extend((0..l.max_services).map(Slot::SvcStats));
    for i in 0..l.max_reals {
        slots.extend([
            Slot::Real(i),
            Slot::Load(i),
            Slot::Closed(i),
            Slot::Over(i),
            Slot::RsStats(i),
        ]);
    }
    slots.extend((0..4096).map(Slot::Vlan));
    slots.push(Slot::Config);
    slots
        .into_iter()
        .map(|s| (s, maps.read(s).expect("reading a slot")))
        .collect()
}
