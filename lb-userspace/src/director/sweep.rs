//! The connection-table sweep: counts live entries per real server
//! (ActiveConn = ESTABLISHED, InActConn = every other state, templates
//! apart, as ipvsadm shows them), finds expired ones, and re-bases the
//! program's connection counts (RS_LOAD - RS_CLOSED) on what it observed.
//! [`walk`] decides; [`super::Director::sweep`] executes.

use std::collections::{BTreeSet, HashMap};

use lb_common::{mask_addr, tcp_state, vip_bit, ConnKey, ConnValue};

/// Connection counts per real-server slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnCounts {
    pub active: u64,
    pub inactive: u64,
    /// Persistence templates pointing at the real server.
    pub persistent: u64,
}

impl ConnCounts {
    fn add(&mut self, state: u8) {
        if state == tcp_state::ESTABLISHED {
            self.active += 1;
        } else {
            self.inactive += 1;
        }
    }
}

/// Per-state timeouts in seconds ([`tcp_state`] indices, then UDP).
pub type Timeouts = [u32; 12];

/// Seconds an entry lives without traffic.
pub fn timeout_s(timeouts: &Timeouts, v: &ConnValue) -> u64 {
    if v.state == tcp_state::TEMPLATE {
        return v.timeout as u64;
    }
    timeouts
        .get(v.state as usize)
        .copied()
        .unwrap_or(tcp_state::DEFAULT_TIMEOUTS[tcp_state::UDP as usize]) as u64
}

pub fn expired(timeouts: &Timeouts, v: &ConnValue, now: u64) -> bool {
    now.saturating_sub(v.last_seen_ns) > timeout_s(timeouts, v) * 1_000_000_000
}

/// What one walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Live entries per real-server slot.
    pub counts: HashMap<u32, ConnCounts>,
    /// Entries to delete, with the value they were judged on.
    pub expired: Vec<(ConnKey, ConnValue)>,
    /// What the expired entries counted, per slot.
    pub expired_counts: HashMap<u32, ConnCounts>,
    /// Templates whose timer ran out while they still control connections:
    /// re-armed (IPVS does the same).
    pub rearm: Vec<(ConnKey, ConnValue)>,
    /// VIP prefilter bits of the destinations of the entries (expired ones
    /// included).
    pub vip_bits: BTreeSet<u32>,
}

/// Walks `entries` at time `now`. `prefixes` gives each service id's
/// persistence prefix; connections of `removed` slots expire at once with
/// `expire_nodest`. An entry listed twice (a hash map's iteration starts
/// over when the entry it stands on is deleted meanwhile) counts once.
pub fn walk(
    entries: Vec<(ConnKey, ConnValue)>,
    now: u64,
    timeouts: &Timeouts,
    prefixes: &HashMap<u32, u8>,
    removed: &BTreeSet<u32>,
    expire_nodest: bool,
) -> Walk {
    let mut w = Walk::default();
    let mut templates = Vec::new();
    // (service, masked client) of live connections, to keep their templates.
    let mut clients: BTreeSet<(u32, [u8; 16])> = BTreeSet::new();
    // The prefilter's bits as words while walking (a set insert per entry
    // would cost the sweep ~0.1 s per million entries).
    let mut vip_words = vec![0u64; lb_common::VIP_FILTER_WORDS as usize];
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (k, v) in entries {
        if !seen.insert(k) {
            continue;
        }
        if v.state == tcp_state::TEMPLATE {
            templates.push((k, v));
            continue;
        }
        // (Expired ones too: a packet may refresh one before it is deleted.)
        let b = vip_bit(&k.daddr);
        vip_words[(b / 64) as usize] |= 1u64 << (b % 64);
        let nodest = expire_nodest && removed.contains(&v.real_id);
        if nodest || expired(timeouts, &v, now) {
            w.expired.push((k, v));
            w.expired_counts.entry(v.real_id).or_default().add(v.state);
            continue;
        }
        if let Some(p) = prefixes.get(&v.svc_id) {
            clients.insert((v.svc_id, mask_addr(&k.saddr, *p)));
        }
        w.counts.entry(v.real_id).or_default().add(v.state);
    }
    for (k, mut v) in templates {
        if expired(timeouts, &v, now) {
            if !clients.contains(&(v.svc_id, k.saddr)) {
                w.expired.push((k, v));
                continue;
            }
            v.last_seen_ns = now;
            w.rearm.push((k, v));
        }
        w.counts.entry(v.real_id).or_default().persistent += 1;
    }
    w.vip_bits = (0..lb_common::VIP_FILTER_WORDS * 64)
        .filter(|b| vip_words[(b / 64) as usize] & (1u64 << (b % 64)) != 0)
        .collect();
    w
}

/// Connection entries the LRU evicted, as a running balance over sweeps
/// (all, and ESTABLISHED ones), and what is shown of it.
#[derive(Debug, Default)]
pub struct Evictions {
    pub all: i64,
    pub active: i64,
    /// The balances at the previous sweep.
    prev: (i64, i64),
    /// What `lbadm counters` and /metrics show: never decreasing, and
    /// only what two sweeps in a row agree on. A connection that opens or
    /// changes state during a walk moves the balance by one for one sweep
    /// (taken back at the next); the minimum of two sweeps filters that.
    pub shown: (u64, u64),
    pub active_reported: u64,
}

impl Evictions {
    /// Called at the end of each collecting sweep.
    pub fn settle(&mut self) {
        let agreed = |now: i64, prev: i64| now.min(prev).max(0) as u64;
        let all = agreed(self.all, self.prev.0);
        let active = agreed(self.active, self.prev.1);
        self.shown = (self.shown.0.max(all), self.shown.1.max(active));
        self.prev = (self.all, self.active);
    }
}

/// Monotonic clock in ns, the clock bpf_ktime_get_coarse_ns() reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_evictions_never_go_back_and_ignore_one_sweep_blips() {
        let mut e = Evictions::default();
        let mut shown = Vec::new();
        // Balance per sweep: a blip of +1 (a connection opened during a
        // walk), taken back, then real evictions, then a blip of -1.
        for (all, active) in [
            (0, 0),
            (1, 1),
            (0, 0),
            (5, 2),
            (5, 2),
            (4, 1),
            (5, 2),
            (9, 3),
            (9, 3),
        ] {
            e.all = all;
            e.active = active;
            e.settle();
            shown.push(e.shown);
        }
        assert_eq!(
            shown,
            vec![
                (0, 0),
                (0, 0),
                (0, 0),
                (0, 0),
                (5, 2),
                (5, 2),
                (5, 2),
                (5, 2),
                (9, 3)
            ]
        );
    }

    fn conn(port: u16, real: u32, state: u8, age_s: u64, now: u64) -> (ConnKey, ConnValue) {
        let mut k = ConnKey::default();
        k.saddr[..4].copy_from_slice(&[203, 0, 113, 10]);
        k.sport = port;
        (
            k,
            ConnValue {
                real_id: real,
                svc_id: 0,
                last_seen_ns: now - age_s * 1_000_000_000,
                state,
                flags: 0,
                _pad: [0; 2],
                timeout: 0,
            },
        )
    }

    #[test]
    fn counts_expires_and_keeps_templates_with_live_clients() {
        let now = 10_000 * 1_000_000_000;
        let t = tcp_state::DEFAULT_TIMEOUTS;
        let mut template = conn(0, 1, tcp_state::TEMPLATE, 400, now);
        template.1.timeout = 360;
        let mut lonely = conn(0, 2, tcp_state::TEMPLATE, 400, now);
        lonely.0.saddr[3] = 99;
        lonely.1.timeout = 360;
        let entries = vec![
            conn(1, 1, tcp_state::ESTABLISHED, 10, now),
            conn(2, 1, tcp_state::SYN_RECV, 10, now),
            conn(3, 2, tcp_state::CLOSE, 11, now),
            conn(4, 3, tcp_state::ESTABLISHED, 10, now),
            template,
            lonely,
        ];
        let prefixes = HashMap::from([(0, 32)]);
        let removed = BTreeSet::from([3]);
        let w = walk(entries.clone(), now, &t, &prefixes, &removed, false);
        assert_eq!(
            w.counts[&1],
            ConnCounts {
                active: 1,
                inactive: 1,
                persistent: 1
            }
        );
        assert_eq!(
            w.expired.len(),
            2,
            "CLOSE after 10 s, and the lonely template"
        );
        // Listed twice (iteration restarted): counted once.
        let mut twice = entries.clone();
        twice.extend(entries.iter().take(2).copied());
        let w2 = walk(twice, now, &t, &prefixes, &removed, false);
        assert_eq!(w2.counts, w.counts);
        assert_eq!(w2.expired.len(), w.expired.len());
        assert_eq!(w.expired_counts[&2].inactive, 1);
        assert_eq!(
            w.rearm.len(),
            1,
            "the template of a live client is re-armed"
        );
        assert_eq!(w.rearm[0].1.last_seen_ns, now);
        let w = walk(entries, now, &t, &prefixes, &removed, true);
        assert_eq!(w.expired_counts[&3].active, 1, "expire_nodest_conn");
    }
}
