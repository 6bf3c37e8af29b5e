//! What the sync daemon needs of the director: the ids to translate
//! entries with, the entries to refresh, and the backup's inserts.

use std::net::IpAddr;

use lb_common::{ConnKey, ConnValue};

use super::{codec::bytes_addr, Director};
use crate::{dataplane::Maps, sync::translate::IdMap};

impl<M: Maps> Director<M> {
    /// The published ids, for translating entries to records and back.
    pub fn sync_ids(&self) -> IdMap {
        let p = &self.published;
        let mut m = IdMap {
            timeouts: self.timeouts,
            ..Default::default()
        };
        for (k, v) in &p.services {
            m.services.insert(*k, (v.id, v.fwmark));
            if v.fwmark != 0 {
                m.by_fwmark.insert(v.fwmark, v.id);
                m.fwmark_of.insert(v.id, v.fwmark);
            }
        }
        for (id, r) in &p.reals {
            m.reals.insert(*id, *r);
            let a: IpAddr = bytes_addr(&r.addr, r.family);
            m.real_of.entry((r.svc_id, a)).or_insert(*id);
        }
        m
    }

    /// Entries seen since `since_ns` (monotonic; 0: every entry), for a
    /// refresh or a backup's full resync.
    pub fn entries_since(&self, since_ns: u64) -> Vec<(ConnKey, ConnValue)> {
        self.maps
            .conns()
            .into_iter()
            .filter(|(_, v)| v.last_seen_ns >= since_ns)
            .collect()
    }

    /// A backup's entries from its master (written as they come: a newer
    /// record replaces the entry).
    pub fn insert_synced(&mut self, entries: &[(ConnKey, ConnValue)]) {
        for (k, v) in entries {
            self.maps.update_conn(*k, *v);
        }
    }
}
