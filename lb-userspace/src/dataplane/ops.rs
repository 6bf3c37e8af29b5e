//! Typed operations on the data plane's maps: the one interface through
//! which the director reads and writes them. [`super::Dataplane`] implements
//! it over the pinned BPF maps; [`super::MemMaps`] in memory, so that the
//! planner, the commit and the director are tested without root (the way
//! Katran's control plane has a testing mode).

use lb_common::{
    ConnKey, ConnValue, DirectorConfig, LblcValue, MaglevChunk, RealLoad, RealServer, Ring,
    ServiceKey, ServiceValue, Stats, MAGLEV_CHUNK,
};

use super::Limits;

/// One slot of a map that the director writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// SERVICES[key] (present or absent).
    Service(ServiceKey),
    /// RINGS[service id * 2 + generation].
    Ring(u32),
    /// MAGLEV[chunk]: part of a large Maglev table.
    Chunk(u32),
    /// VIP_FILTER[word]: 64 bits of the VIP prefilter.
    VipFilter(u32),
    /// REALS[real-server id].
    Real(u32),
    /// RS_LOAD[real-server id].
    Load(u32),
    /// RS_CLOSED[real-server id].
    Closed(u32),
    /// RS_OVER[real-server id].
    Over(u32),
    /// VLANS[VLAN id]: 1 if the director serves the VLAN.
    Vlan(u16),
    /// SVC_STATS[service id] (per CPU).
    SvcStats(u32),
    /// RS_STATS[real-server id] (per CPU).
    RsStats(u32),
    /// CONFIG[0].
    Config,
    /// HEARTBEAT[0]: when the daemon last re-based the connection counts.
    Heartbeat,
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Service(Option<ServiceValue>),
    Ring(Box<Ring>),
    Chunk(Box<MaglevChunk>),
    Real(RealServer),
    /// RS_LOAD or RS_CLOSED.
    Load(RealLoad),
    /// A 32-bit flag or count (RS_OVER, VLANS).
    Word(u32),
    /// 64 bits (VIP_FILTER).
    Bits(u64),
    /// One value per CPU; an empty list means zero on every CPU.
    Stats(Vec<Stats>),
    Config(DirectorConfig),
    /// A CLOCK_MONOTONIC time in ns.
    Time(u64),
}

impl Value {
    /// A ring holding `ids` (the rest zero).
    pub fn ring(ids: &[u32]) -> Value {
        let mut r = Box::new(Ring {
            reals: [0; lb_common::RING_SIZE],
        });
        r.reals[..ids.len()].copy_from_slice(ids);
        Value::Ring(r)
    }

    /// A MAGLEV chunk holding `ids` (the rest zero).
    pub fn chunk(ids: &[u32]) -> Value {
        let mut c = Box::new(MaglevChunk {
            reals: [0; MAGLEV_CHUNK],
        });
        c.reals[..ids.len()].copy_from_slice(ids);
        Value::Chunk(c)
    }

    /// Whether writing `self` over `old` would change nothing.
    pub fn same_as(&self, old: &Value) -> bool {
        match (self, old) {
            (Value::Stats(new), Value::Stats(old)) if new.is_empty() => {
                old.iter().all(|s| *s == Stats::default())
            }
            _ => self == old,
        }
    }
}

/// A write: `value` goes into `slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub slot: Slot,
    pub value: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("BPF map {name}: {cause}")]
    Map {
        name: &'static str,
        #[source]
        cause: aya::maps::MapError,
    },
    #[error("BPF map {name}: {cause}")]
    Io {
        name: &'static str,
        #[source]
        cause: std::io::Error,
    },
    #[error("{slot:?} does not fit {value}")]
    Mismatch { slot: Slot, value: &'static str },
    #[error("map {name} is full ({max} entries)")]
    Full { name: &'static str, max: u32 },
    #[error("{slot:?} is out of range")]
    OutOfRange { slot: Slot },
    #[error("injected failure at write {0}")]
    Injected(usize),
}

/// Typed access to the data plane's maps.
pub trait Maps {
    fn limits(&self) -> &Limits;
    /// The value in `slot` (a missing services-map key reads as absent).
    fn read(&self, slot: Slot) -> Result<Value, MapsError>;
    /// Writes `value` into `slot` (an absent service removes the key).
    fn write(&mut self, slot: Slot, value: &Value) -> Result<(), MapsError>;
    /// Every services-map entry.
    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, MapsError>;
    /// Every connection entry (templates included).
    fn conns(&self) -> Vec<(ConnKey, ConnValue)>;
    /// The connection entry of `key`.
    fn conn(&self, key: &ConnKey) -> Option<ConnValue>;
    fn remove_conn(&mut self, key: &ConnKey);
    /// Takes real-server slots `ids` out of the lblc/lblcr destination
    /// cache (before the slots are given to other real servers).
    fn forget_in_lblc(&mut self, ids: &std::collections::BTreeSet<u32>);
    fn update_conn(&mut self, key: ConnKey, value: ConnValue);
    /// The director-wide counter `index` ([`lb_common::counter`]), summed over CPUs.
    fn counter(&self, index: u32) -> u64;
}

/// `v` without the members in `ids` (None: no member left).
pub fn without(v: &LblcValue, ids: &std::collections::BTreeSet<u32>) -> Option<LblcValue> {
    let n = (v.n as usize).min(v.reals.len());
    let kept: Vec<u32> = v.reals[..n]
        .iter()
        .copied()
        .filter(|id| !ids.contains(id))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut out = *v;
    out.reals = [0; lb_common::sched::LBLCR_SET];
    out.reals[..kept.len()].copy_from_slice(&kept);
    out.n = kept.len() as u32;
    Some(out)
}

/// Sums a per-CPU statistics value.
pub fn sum(v: &Value) -> Stats {
    let mut s = Stats::default();
    if let Value::Stats(cpus) = v {
        for c in cpus {
            s.conns += c.conns;
            s.packets += c.packets;
            s.bytes += c.bytes;
        }
    }
    s
}
