//! Scheduler tables ("rings"). The planner computes a ring of real-server
//! ids per service and publishes it whole (double-buffered), so the XDP
//! program never sees half a table; how each scheduler's ring is filled is
//! its [`RingKind`]:
//! - in order (rr), walked by a cursor;
//! - IPVS's weighted round-robin sequence (wrr), walked by a cursor;
//! - a Maglev lookup table (mh), indexed by the hash of the client address
//!   (and port with mh-port): `RING_SIZE` entries, or for more than 40
//!   turns (real servers, by weight) a prime of at least 100 entries per
//!   turn (capped at `MAGLEV_MAX`), so that no server holds more than 1%
//!   over its share; such a table lives in MAGLEV chunks (see `plan`);
//! - the available servers, compared by live counts in the program (the
//!   dynamic schedulers);
//! - 256 buckets over every server (sh, dh).

use std::collections::HashMap;

use lb_common::{MAGLEV_MAX, RING_SIZE};

use crate::model::{RingKind, Scheduler};

/// A real server eligible for new connections: weight > 0, MAC resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Real-server id (index into REALS).
    pub id: u32,
    /// Stable name used by Maglev to derive the permutation ("addr:port").
    pub name: String,
    pub weight: u32,
}

/// Builds the ring for `sched` from `candidates` (in ipvsadm order), a
/// Maglev table sized for the candidates themselves. Returns an empty ring
/// when there is no candidate.
pub fn build_ring(sched: Scheduler, candidates: &[Candidate]) -> Vec<u32> {
    let size = maglev_size(candidates.iter().map(|c| c.weight));
    build_ring_sized(sched, candidates, size)
}

/// [`build_ring`] with the Maglev table size given (see [`maglev_size`]:
/// the planner sizes a service's table by its configured real servers, so
/// that one failing a check does not change the size).
pub fn build_ring_sized(
    sched: Scheduler,
    candidates: &[Candidate],
    maglev_slots: usize,
) -> Vec<u32> {
    let kind = sched.ring();
    if kind == RingKind::Buckets {
        return hash_table(candidates);
    }
    let c: Vec<&Candidate> = candidates.iter().filter(|c| c.weight > 0).collect();
    if c.is_empty() {
        return Vec::new();
    }
    match kind {
        RingKind::InOrder => c.iter().take(RING_SIZE).map(|c| c.id).collect(),
        // The program compares the first MAX_DYNAMIC by live counts.
        RingKind::Dynamic => c
            .iter()
            .take(lb_common::sched::MAX_DYNAMIC)
            .map(|c| c.id)
            .collect(),
        RingKind::Weighted => wrr_sequence(&c),
        RingKind::Maglev => maglev(&c, maglev_slots),
        RingKind::Buckets => unreachable!("handled above"),
    }
}

/// The last ring built for each service id, with what it was built from:
/// an unchanged input is not rebuilt (a Maglev table costs milliseconds).
#[derive(Debug, Default)]
pub struct RingCache {
    built: HashMap<u32, (Scheduler, Vec<Candidate>, usize, Vec<u32>)>,
}

impl RingCache {
    /// The ring of service `id` for `sched` over `candidates` (a Maglev
    /// table of `maglev_slots`).
    pub fn ring(
        &mut self,
        id: u32,
        sched: Scheduler,
        candidates: Vec<Candidate>,
        maglev_slots: usize,
    ) -> Vec<u32> {
        if let Some((s, c, m, ring)) = self.built.get(&id) {
            if *s == sched && *c == candidates && *m == maglev_slots {
                return ring.clone();
            }
        }
        let ring = build_ring_sized(sched, &candidates, maglev_slots);
        self.built
            .insert(id, (sched, candidates, maglev_slots, ring.clone()));
        ring
    }
}

/// The sh/dh bucket table, filled as ip_vs_sh_reassign does: the real
/// servers in order, each taking `weight` consecutive buckets (a weight-0
/// one takes one: the program skips it as unavailable), cycling. Built from
/// every real server of the service, available or not, so that a server
/// going down does not move anyone else's clients.
fn hash_table(c: &[Candidate]) -> Vec<u32> {
    if c.is_empty() {
        return Vec::new();
    }
    let mut t = Vec::with_capacity(lb_common::sched::HASH_BUCKETS);
    let (mut i, mut n) = (0usize, 0u32);
    while t.len() < lb_common::sched::HASH_BUCKETS {
        t.push(c[i].id);
        n += 1;
        if n >= c[i].weight {
            i = (i + 1) % c.len();
            n = 0;
        }
    }
    t
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The IPVS wrr sequence (ip_vs_wrr.c): the current weight starts at the
/// maximum and steps down by the gcd each full pass; a server is picked when
/// its weight is >= the current weight. One period has sum(w)/gcd entries.
/// When that exceeds the ring, weights are scaled down proportionally (each
/// kept >= 1): an approximation that keeps the ratios to within 1/RING_SIZE.
fn wrr_sequence(c: &[&Candidate]) -> Vec<u32> {
    let mut weights: Vec<u32> = c.iter().map(|c| c.weight).collect();
    let g = weights.iter().copied().fold(0, gcd);
    let total: u64 = weights.iter().map(|&w| (w / g) as u64).sum();
    if total > RING_SIZE as u64 {
        let sum: u64 = weights.iter().map(|&w| w as u64).sum();
        let budget = (RING_SIZE - c.len()) as u64;
        weights = weights
            .iter()
            .map(|&w| 1 + ((w as u64 * budget) / sum) as u32)
            .collect();
    }
    let g = weights.iter().copied().fold(0, gcd);
    let max = *weights.iter().max().unwrap_or(&0);
    let period: usize = weights.iter().map(|&w| (w / g) as usize).sum();
    let mut seq = Vec::with_capacity(period);
    let mut cw: i64 = 0;
    let mut i = c.len() - 1;
    while seq.len() < period {
        i = (i + 1) % c.len();
        if i == 0 {
            cw -= g as i64;
            if cw <= 0 {
                cw = max as i64;
            }
        }
        if weights[i] as i64 >= cw {
            seq.push(c[i].id);
        }
    }
    seq
}

/// Maglev table sizes: primes just under powers of two. A table's size
/// comes from this ladder so that adding or removing one server changes it
/// only when the count crosses a step (a new size moves almost every
/// client, as a new table), and so that every director derives the same
/// size from the same servers.
pub const MAGLEV_SIZES: [usize; 9] = [
    RING_SIZE, 8191, 16381, 32749, 65521, 131_071, 262_139, 524_287, MAGLEV_MAX,
];

/// The Maglev table size for real servers of `weights` (those above 0
/// count): a server's share is within one round's turns of its ideal, so
/// the smallest size of the ladder with at least 100 slots per turn of a
/// round (at most 1% over the share), or the largest.
pub fn maglev_size(weights: impl Iterator<Item = u32>) -> usize {
    let w: Vec<u32> = weights.filter(|w| *w > 0).collect();
    let turns: u64 = mh_turns(&w).iter().map(|t| *t as u64).sum();
    let want = turns.saturating_mul(100);
    MAGLEV_SIZES
        .into_iter()
        .find(|&m| m as u64 >= want)
        .unwrap_or(MAGLEV_MAX)
}

/// Turns per round of each weight, as ip_vs_mh: weight / gcd, shifted
/// right so that the largest fits in 6 bits, at least 1 for a weight above
/// 0.
fn mh_turns(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let max = weights.iter().map(|w| w / g).max().unwrap_or(0);
    let shift = (32 - max.leading_zeros()).saturating_sub(6);
    weights
        .iter()
        .map(|w| ((w / g) >> shift).max((*w > 0) as u32))
        .collect()
}

fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // final avalanche (splitmix64)
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Maglev table population (Eisenbud et al., NSDI 2016), weighted as the
/// kernel's ip_vs_mh: in each round a server takes weight/gcd turns.
pub fn maglev(c: &[&Candidate], m: usize) -> Vec<u32> {
    let n = c.len();
    let offset: Vec<usize> = c
        .iter()
        .map(|c| (fnv1a(c.name.as_bytes(), 0x5eed_0001) % m as u64) as usize)
        .collect();
    let skip: Vec<usize> = c
        .iter()
        .map(|c| (fnv1a(c.name.as_bytes(), 0x5eed_0002) % (m as u64 - 1) + 1) as usize)
        .collect();
    let weights: Vec<u32> = c.iter().map(|c| c.weight).collect();
    let turns = mh_turns(&weights);
    let mut next = vec![0usize; n];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'outer: loop {
        for i in 0..n {
            for _ in 0..turns[i] {
                let mut slot = (offset[i] + next[i] * skip[i]) % m;
                while table[slot] != u32::MAX {
                    next[i] += 1;
                    slot = (offset[i] + next[i] * skip[i]) % m;
                }
                table[slot] = c[i].id;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                id: i as u32 + 1,
                name: format!("192.0.2.{}:80", 11 + i),
                weight: w,
            })
            .collect()
    }

    fn counts(ring: &[u32]) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        for id in ring {
            *m.entry(*id).or_default() += 1;
        }
        m
    }

    #[test]
    fn wrr_matches_ipvs_sequence() {
        // IPVS wrr with weights 4,3,2: cw=4: A; cw=3: A B; cw=2: A B C; cw=1: A B C
        let ring = build_ring(Scheduler::Wrr, &cands(&[4, 3, 2]));
        assert_eq!(ring, vec![1, 1, 2, 1, 2, 3, 1, 2, 3]);
        // gcd stepping: 6:2 behaves as 3:1
        let ring = build_ring(Scheduler::Wrr, &cands(&[6, 2]));
        assert_eq!(ring, vec![1, 1, 1, 2]);
    }

    #[test]
    fn wrr_skips_quiescent_and_scales_huge_weights() {
        let ring = build_ring(Scheduler::Wrr, &cands(&[3, 1, 0]));
        let c = counts(&ring);
        assert_eq!((c[&1], c[&2], c.get(&3)), (3, 1, None));
        let ring = build_ring(Scheduler::Wrr, &cands(&[65535, 1, 30000]));
        assert!(ring.len() <= RING_SIZE);
        let c = counts(&ring);
        assert!(c[&2] >= 1);
        let ratio = c[&1] as f64 / c[&3] as f64;
        assert!((ratio - 65535.0 / 30000.0).abs() < 0.01, "{ratio}");
    }

    #[test]
    fn sh_buckets_follow_the_kernel_fill() {
        let t = build_ring(Scheduler::Sh, &cands(&[2, 0, 1]));
        assert_eq!(t.len(), 256);
        assert_eq!(&t[..8], &[1, 1, 2, 3, 1, 1, 2, 3]);
    }

    #[test]
    fn rr_is_servers_in_order() {
        assert_eq!(build_ring(Scheduler::Rr, &cands(&[5, 0, 1])), vec![1, 3]);
        assert!(build_ring(Scheduler::Rr, &cands(&[0, 0])).is_empty());
    }

    fn is_prime(n: usize) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn maglev_sizes_are_primes_and_give_100_slots_per_turn() {
        assert!(
            MAGLEV_SIZES.iter().all(|&m| is_prime(m)),
            "{MAGLEV_SIZES:?}"
        );
        assert!(MAGLEV_SIZES.windows(2).all(|w| w[0] < w[1]));
        let size = |weights: &[u32]| maglev_size(weights.iter().copied());
        assert_eq!(size(&[1; 40]), RING_SIZE);
        assert_eq!(size(&[1; 41]), 8191);
        assert_eq!(size(&[1; 1000]), 131_071);
        assert_eq!(size(&[1; 10_000]), MAGLEV_MAX);
        // Weights count by turns: 2:1 is 3 turns per pair; turns are
        // shifted to 6 bits as ip_vs_mh does (100:67 is not 167 turns).
        assert_eq!(size(&[4, 2].repeat(20)), 8191);
        assert_eq!(mh_turns(&[100, 67, 0]), vec![50, 33, 0]);
        assert_eq!(size(&[100, 67].repeat(25)), 262_139);
        assert_eq!(mh_turns(&[1, 1000]), vec![1, 62]);
        // One server more or less within a step keeps the size (and so
        // most clients on their server).
        assert_eq!(size(&[1; 999]), size(&[1; 1001]));
        // 1,000 servers: none more than 1% over its share.
        let ring = build_ring(Scheduler::Mh, &cands(&[1; 1000]));
        let most = *counts(&ring).values().max().unwrap() as f64;
        assert!(most / (ring.len() as f64 / 1000.0) - 1.0 <= 0.01, "{most}");
    }

    #[test]
    fn maglev_fills_evenly_and_by_weight() {
        let ring = build_ring(Scheduler::Mh, &cands(&[1, 1, 1]));
        assert_eq!(ring.len(), RING_SIZE);
        let c = counts(&ring);
        for id in 1..=3 {
            let share = c[&id] as f64 / RING_SIZE as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.01, "{id}: {share}");
        }
        let c = counts(&build_ring(Scheduler::Mh, &cands(&[3, 1])));
        let share = c[&1] as f64 / RING_SIZE as f64;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }

    #[test]
    fn maglev_moves_about_one_nth_when_a_server_leaves() {
        let all = cands(&[1; 10]);
        let before = build_ring(Scheduler::Mh, &all);
        let mut fewer = all.clone();
        fewer.remove(4);
        let after = build_ring(Scheduler::Mh, &fewer);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && **b != 5)
            .count();
        // Entries that belonged to the removed server must move; the others
        // should mostly stay (Maglev's minimal disruption).
        let removed_share = before.iter().filter(|&&b| b == 5).count();
        assert!((removed_share as f64 / RING_SIZE as f64 - 0.1).abs() < 0.02);
        assert!((moved as f64) < 0.05 * RING_SIZE as f64, "moved {moved}");
    }
}
