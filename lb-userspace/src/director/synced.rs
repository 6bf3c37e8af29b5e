//! What the sync daemon needs of the director: the ids to translate
//! entries with, the entries to refresh, and the backup's inserts.

use std::net::IpAddr;

use lb_common::{conn_flags, tcp_state, vip_bit, ConnKey, ConnValue};

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

    /// Entries this director served and saw since `since_ns` (monotonic;
    /// 0: every one), for a refresh or a backup's full resync. Copies of a
    /// peer's entries are not sent back to it.
    pub fn entries_since(&self, since_ns: u64) -> Vec<(ConnKey, ConnValue)> {
        self.maps
            .conns()
            .into_iter()
            .filter(|(_, v)| v.last_seen_ns >= since_ns && v.flags & conn_flags::SYNCED == 0)
            .collect()
    }

    /// A backup's entries from its master: a newer record replaces the copy
    /// of the same connection, but never an entry this director serves
    /// (made or used by its own program). Returns how many were written.
    pub fn insert_synced(&mut self, entries: &[(ConnKey, ConnValue)]) -> usize {
        let mut n = 0;
        for (k, v) in entries {
            // A connection to an address the VIP prefilter passes (its VIP
            // lost its services since the record was bound) would never be
            // used, and its bit could not be kept for it.
            if v.state != tcp_state::TEMPLATE
                && !self.published.vip_bits.contains(&vip_bit(&k.daddr))
            {
                continue;
            }
            if self
                .maps
                .conn(k)
                .is_some_and(|old| old.flags & conn_flags::SYNCED == 0)
            {
                continue;
            }
            self.maps.update_conn(*k, *v);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{tcp_state, ConnKey, ConnValue};

    use crate::{
        dataplane::{Limits, Maps, MemMaps},
        director::Director,
    };

    /// A director whose maps hold `conns` (their addresses get prefilter
    /// bits at recovery).
    fn director(conns: &[(ConnKey, ConnValue)]) -> Director<MemMaps> {
        let mut maps = MemMaps::new(Limits {
            max_services: 4,
            max_reals: 4,
            max_conns: 64,
            max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
        });
        maps.state.conns.extend(conns.iter().copied());
        Director::recover(maps).unwrap()
    }

    fn entry(port: u16, synced: bool) -> (ConnKey, ConnValue) {
        let k = ConnKey {
            sport: port.to_be(),
            ..Default::default()
        };
        let v = ConnValue {
            real_id: 1,
            svc_id: 1,
            last_seen_ns: 100,
            state: tcp_state::ESTABLISHED,
            flags: if synced { super::conn_flags::SYNCED } else { 0 },
            ..Default::default()
        };
        (k, v)
    }

    /// Two directors running both roles must not send each other's entries
    /// back and forth (they would never expire), nor let a peer's copy
    /// replace a connection this director serves.
    #[test]
    fn copies_are_not_sent_back_and_never_replace_served_entries() {
        let (mine, served) = entry(1, false);
        let mut d = director(&[(mine, served)]);
        let (theirs, copy) = entry(2, true);
        assert_eq!(d.insert_synced(&[(theirs, copy)]), 1);
        let sent: Vec<_> = d.entries_since(0).into_iter().map(|(k, _)| k).collect();
        assert_eq!(sent, vec![mine], "only what this director serves is sent");
        // A peer's (older) record of a connection served here: ignored.
        let (_, mut stale) = entry(1, true);
        stale.state = tcp_state::FIN_WAIT;
        assert_eq!(d.insert_synced(&[(mine, stale)]), 0);
        assert_eq!(d.maps().conn(&mine).unwrap().state, tcp_state::ESTABLISHED);
        // A newer record of a copy replaces it.
        let mut newer = copy;
        newer.state = tcp_state::CLOSE;
        assert_eq!(d.insert_synced(&[(theirs, newer)]), 1);
        assert_eq!(d.maps().conn(&theirs).unwrap().state, tcp_state::CLOSE);
        // A record of a connection to an address the prefilter passes (no
        // service has it any more): not inserted.
        let (mut elsewhere, record) = entry(3, true);
        elsewhere.daddr[0] = 198;
        assert!(!d
            .published()
            .vip_bits
            .contains(&lb_common::vip_bit(&elsewhere.daddr)));
        assert_eq!(d.insert_synced(&[(elsewhere, record)]), 0);
    }
}
