//! Where large Maglev tables live in the MAGLEV map: each generation of
//! each such service holds a run of consecutive chunks. The planner gives
//! out runs first-fit from what the published state leaves free; a run is
//! given back when its ring slot gets another table (that slot is the
//! standby one, which no packet reads) or its service goes, and is reused
//! only by a later plan (a packet that looked its service up before the
//! commit may still read it), as service ids and real-server slots are.

use std::collections::BTreeMap;

use lb_common::MAGLEV_CHUNK;

/// A run of chunks: (first chunk, number of chunks).
pub type Run = (u32, u32);

/// Chunks a table of `len` slots needs.
pub fn chunks_for(len: usize) -> u32 {
    len.div_ceil(MAGLEV_CHUNK) as u32
}

/// The free space of the MAGLEV map during one plan.
#[derive(Debug)]
pub(super) struct Chunks {
    /// Runs in use, by first chunk.
    used: BTreeMap<u32, u32>,
    capacity: u32,
}

impl Chunks {
    /// Every run of `published` is in use.
    pub(super) fn new(published: &BTreeMap<u32, Run>, capacity: u32) -> Chunks {
        Chunks {
            used: published.values().map(|(f, n)| (*f, *n)).collect(),
            capacity,
        }
    }

    /// The first run of `n` free chunks, now in use (None: no room).
    pub(super) fn take(&mut self, n: u32) -> Option<Run> {
        if n == 0 {
            return None;
        }
        let mut at = 0u32;
        for (&first, &len) in &self.used {
            if first > at && first - at >= n {
                break;
            }
            // (Overlapping runs, which only a damaged map could give,
            // are stepped over rather than trusted.)
            at = at.max(first.checked_add(len)?);
        }
        if at.checked_add(n)? > self.capacity {
            return None;
        }
        self.used.insert(at, n);
        Some((at, n))
    }

    /// Run `r` (the standby slot's old table) may be reused in this plan.
    pub(super) fn give_back(&mut self, r: Run) {
        if self.used.get(&r.0) == Some(&r.1) {
            self.used.remove(&r.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_first_fit_and_never_overlap() {
        let published = BTreeMap::from([(0, (0, 4)), (1, (10, 2))]);
        let mut c = Chunks::new(&published, 16);
        assert_eq!(c.take(6), Some((4, 6)), "the gap between the runs");
        assert_eq!(c.take(4), Some((12, 4)), "after the last run");
        assert_eq!(c.take(1), None, "full");
        c.give_back((10, 2));
        assert_eq!(c.take(3), None, "two free chunks are not three");
        assert_eq!(c.take(2), Some((10, 2)));
        assert_eq!(c.take(0), None);
        assert_eq!(chunks_for(131_071), 128);
        assert_eq!(chunks_for(1024), 1);
    }
}
