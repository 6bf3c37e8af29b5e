//! Following the kernel's neighbour table: notifications move a real
//! server's MAC as soon as the kernel learns it; a periodic dump is the
//! safety net. Last-known MACs survive a flushed table and a link flap
//! (marked stale and re-resolved at once); only a failed resolution takes a
//! real server's MAC away.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use tracing::{error, info, warn};

use super::{
    neigh::{follow, Neigh, NeighEvent},
    Daemon,
};

/// What the daemon knows of the neighbour table beyond the director's MACs.
#[derive(Debug, Default)]
pub struct Neighbours {
    /// The NIC is up with carrier.
    pub link_up: bool,
    /// Last-known MACs kept while their entry is missing, being re-resolved.
    pub stale: BTreeSet<IpAddr>,
}

impl Neighbours {
    /// The MACs of `wanted` after what the table says (`seen`), starting
    /// from `macs`; stale marks follow. A failed resolution while the link is
    /// down says nothing about the real server and is ignored.
    pub fn fold(
        &mut self,
        macs: &HashMap<IpAddr, [u8; 6]>,
        wanted: &BTreeSet<IpAddr>,
        seen: &[(IpAddr, Neigh)],
    ) -> Vec<(IpAddr, Option<[u8; 6]>)> {
        let mut out = Vec::new();
        for &(a, n) in seen {
            if !wanted.contains(&a) {
                continue;
            }
            let n = match n {
                Neigh::Failed if !self.link_up => Neigh::Missing,
                n => n,
            };
            let known = macs.get(&a).copied();
            let next = follow(known, n);
            match n {
                Neigh::Usable(_) | Neigh::Failed => {
                    self.stale.remove(&a);
                }
                Neigh::Missing | Neigh::Pending => {
                    if next.is_some() && self.stale.insert(a) {
                        info!(real = %a, "real server's neighbour entry gone: last-known MAC kept while it is resolved again");
                    }
                }
            }
            if next != known {
                out.push((a, next));
            }
        }
        self.stale.retain(|a| wanted.contains(a));
        out
    }
}

impl Daemon {
    /// Commits what the neighbour table says of some real servers.
    fn follow_neighbours(&mut self, seen: &[(IpAddr, Neigh)]) {
        let wanted = self.director.inputs().addresses();
        let updates = self
            .neighbours
            .fold(&self.director.inputs().macs, &wanted, seen);
        if updates.is_empty() {
            return;
        }
        if let Err(e) = self.director.set_macs(&updates) {
            error!("applying real-server MACs (retried at the next neighbour dump): {e}");
        }
    }

    /// Dumps the neighbour table for every real server (provoking resolution
    /// of the unresolved and stale ones) and follows it.
    pub(super) async fn refresh_neighbours(&mut self) {
        let wanted = self.director.inputs().addresses();
        if wanted.is_empty() {
            return;
        }
        match self.resolver.resolve(&wanted).await {
            Ok(seen) => self.follow_neighbours(&seen),
            Err(e) => warn!("neighbour table dump failed: {e}"),
        }
    }

    /// Whether the periodic dump should run every second (something is
    /// unresolved or stale) rather than as a slow safety net.
    pub(super) fn neighbours_unsettled(&self) -> bool {
        let inp = self.director.inputs();
        !self.neighbours.stale.is_empty()
            || inp.addresses().iter().any(|a| !inp.macs.contains_key(a))
    }

    /// Handles a batch of notifications from the kernel.
    pub(super) async fn neighbour_events(&mut self, events: Vec<NeighEvent>) {
        let mut seen = Vec::new();
        let mut resync = false;
        for ev in events {
            match ev {
                NeighEvent::Seen(a, n) => seen.push((a, n)),
                NeighEvent::Link(up) if up != self.neighbours.link_up => {
                    self.neighbours.link_up = up;
                    if up {
                        info!(iface = %self.resolver.iface, "link up: resolving every real server again");
                        resync = true;
                    } else {
                        warn!(iface = %self.resolver.iface, "link down: last-known real-server MACs kept");
                    }
                }
                NeighEvent::Link(_) => {}
                NeighEvent::Resync => {
                    warn!("neighbour notifications lost: dumping the table again");
                    resync = true;
                }
            }
        }
        // An entry that went away is resolved again at once.
        if self.neighbours.link_up {
            let wanted = self.director.inputs().addresses();
            for (a, n) in &seen {
                if *n == Neigh::Missing && wanted.contains(a) {
                    self.resolver.provoke(*a);
                }
            }
        }
        self.follow_neighbours(&seen);
        if resync {
            self.refresh_neighbours().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_link_flap_keeps_macs_and_marks_them_stale_until_confirmed() {
        let r = ip("192.0.2.11");
        let wanted = BTreeSet::from([r]);
        let macs = HashMap::from([(r, A)]);
        let mut n = Neighbours {
            link_up: false,
            ..Default::default()
        };
        // Flushed with the link, and a probe that failed while it was down.
        assert!(n.fold(&macs, &wanted, &[(r, Neigh::Missing)]).is_empty());
        assert!(n.fold(&macs, &wanted, &[(r, Neigh::Failed)]).is_empty());
        assert!(n.stale.contains(&r));
        // Back up: the answer confirms it.
        n.link_up = true;
        assert!(n.fold(&macs, &wanted, &[(r, Neigh::Usable(A))]).is_empty());
        assert!(n.stale.is_empty());
    }

    #[test]
    fn a_new_mac_moves_at_once_and_a_failed_resolution_clears() {
        let r = ip("192.0.2.11");
        let other = ip("192.0.2.99");
        let wanted = BTreeSet::from([r]);
        let macs = HashMap::from([(r, A)]);
        let mut n = Neighbours {
            link_up: true,
            ..Default::default()
        };
        assert_eq!(
            n.fold(
                &macs,
                &wanted,
                &[(r, Neigh::Usable(B)), (other, Neigh::Usable(B))]
            ),
            vec![(r, Some(B))]
        );
        assert_eq!(
            n.fold(&macs, &wanted, &[(r, Neigh::Failed)]),
            vec![(r, None)]
        );
    }
}
