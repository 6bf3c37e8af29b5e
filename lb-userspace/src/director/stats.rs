//! Traffic statistics: the per-service and per-real-server counters, the
//! rate estimator (ipvsadm --rate), zeroing (ipvsadm -Z) and the
//! director-wide counters.

use std::collections::HashMap;

use lb_common::{counter, Stats};

use super::{monotonic_ns, Director};
use crate::{
    control::RateView,
    dataplane::{sum, Maps, Slot, Value},
    model::{ModelError, ServiceAddr},
};

/// Per-second rates of connections, packets and bytes, estimated as the
/// IPVS estimator does: a sample every 2 s, smoothed (avg += (rate - avg) / 4).
#[derive(Debug, Default)]
pub struct RateEstimator {
    last: HashMap<(bool, u32), (u64, Stats)>,
    /// (connections, packets, bytes) per second, by (is_real, id).
    avg: HashMap<(bool, u32), (f64, f64, f64)>,
}

impl RateEstimator {
    pub fn sample(&mut self, key: (bool, u32), now_ns: u64, s: Stats) {
        if let Some((t, prev)) = self.last.get(&key) {
            let dt = now_ns.saturating_sub(*t) as f64 / 1e9;
            if dt < 0.5 {
                return;
            }
            let r = (
                s.conns.saturating_sub(prev.conns) as f64 / dt,
                s.packets.saturating_sub(prev.packets) as f64 / dt,
                s.bytes.saturating_sub(prev.bytes) as f64 / dt,
            );
            let a = self.avg.entry(key).or_insert(r);
            a.0 += (r.0 - a.0) / 4.0;
            a.1 += (r.1 - a.1) / 4.0;
            a.2 += (r.2 - a.2) / 4.0;
        }
        self.last.insert(key, (now_ns, s));
    }

    pub fn get(&self, key: (bool, u32)) -> RateView {
        let (c, p, b) = self.avg.get(&key).copied().unwrap_or_default();
        RateView {
            cps: c.round() as u64,
            in_pps: p.round() as u64,
            in_bps: b.round() as u64,
        }
    }

    fn forget(&mut self, key: (bool, u32)) {
        self.last.remove(&key);
        self.avg.remove(&key);
    }
}

impl<M: Maps> Director<M> {
    /// Statistics of a service id (`real` false) or a real-server slot.
    pub fn stats(&self, real: bool, id: u32) -> Stats {
        let slot = if real {
            Slot::RsStats(id)
        } else {
            Slot::SvcStats(id)
        };
        self.maps.read(slot).map(|v| sum(&v)).unwrap_or_default()
    }

    pub(super) fn rate(&self, real: bool, id: u32) -> RateView {
        self.rates.get((real, id))
    }

    /// Takes a rate-estimator sample of every service and real server
    /// (called by the daemon every 2 s).
    pub fn sample_rates(&mut self) {
        let now = monotonic_ns();
        let svcs: Vec<u32> = self.published.svc_ids.values().copied().collect();
        let reals: Vec<u32> = self.published.real_ids.values().copied().collect();
        for (real, ids) in [(false, svcs), (true, reals)] {
            for id in ids {
                let st = self.stats(real, id);
                self.rates.sample((real, id), now, st);
            }
        }
    }

    /// ipvsadm -Z: zero the packet, byte and connection counters of one
    /// service (and its real servers) or of all.
    pub fn zero(&mut self, svc: Option<&ServiceAddr>) -> Result<(), ModelError> {
        let ids: Vec<u32> = match svc {
            Some(a) => vec![*self.published.svc_ids.get(a).ok_or(ModelError::NoService)?],
            None => self.published.svc_ids.values().copied().collect(),
        };
        let reals: Vec<u32> = self
            .published
            .real_ids
            .iter()
            .filter(|((sid, _, _), _)| ids.contains(sid))
            .map(|(_, id)| *id)
            .collect();
        let zero = Value::Stats(Vec::new());
        for id in &ids {
            let _ = self.maps.write(Slot::SvcStats(*id), &zero);
            self.rates.forget((false, *id));
        }
        for id in reals {
            let _ = self.maps.write(Slot::RsStats(id), &zero);
            self.rates.forget((true, id));
        }
        Ok(())
    }

    /// The program's counters plus the daemon's: connection entries evicted
    /// by the LRU (all, and established ones), as found by the sweeps.
    /// Every one only grows while lbd runs (`tx` included, see
    /// [`Director::forwarded`]).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut c: Vec<(String, u64)> = counter::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let v = if i as u32 == counter::TX {
                    self.forwarded()
                } else {
                    self.maps.counter(i as u32)
                };
                (name.to_string(), v)
            })
            .collect();
        c.push(("conn_evicted".into(), self.evictions.shown.0));
        c.push(("conn_evicted_established".into(), self.evictions.shown.1));
        c
    }

    /// Packets forwarded (the program does not count them on the hot path:
    /// the services' packet counters are summed), as a counter that never
    /// goes back: each service slot adds what it grew by since the last
    /// reading, or all it holds if it was zeroed (`lbadm -Z`) or reused.
    pub fn forwarded(&self) -> u64 {
        let mut g = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let (total, last) = &mut *g;
        let mut seen = HashMap::new();
        for v in self.published.services.values() {
            let now = self.stats(false, v.id).packets;
            let before = last.get(&v.id).copied();
            *total += match before {
                Some(b) if now >= b => now - b,
                _ => now,
            };
            seen.insert(v.id, now);
        }
        *last = seen;
        *total
    }
}
