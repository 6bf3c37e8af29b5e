//! Following the kernel's neighbour table: notifications move a real
//! server's MAC as soon as the kernel learns it; a periodic dump is the
//! safety net (and re-reads the link state, and re-verifies entries the
//! kernel has not confirmed). Last-known MACs survive a flushed table and a
//! link flap, marked stale and resolved again at once; a failed resolution
//! takes a real server's MAC away, as does a stale mark not confirmed
//! within [`STALE_FOR`] of a working link.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::{error, info, warn};

use super::{
    neigh::{follow, Neigh, NeighEvent},
    Daemon,
};

/// How long a last-known MAC is kept without its entry once the link
/// works: resolution takes about 3 s (3 probes, 1 s apart).
pub const STALE_FOR: Duration = Duration::from_secs(30);

/// After the link comes back, failed resolutions are not believed for this
/// long: probes sent around the flap fail for want of a link, not of a
/// server.
pub const LINK_GRACE: Duration = Duration::from_secs(5);

/// What the daemon knows of the neighbour table beyond the director's MACs.
#[derive(Debug)]
pub struct Neighbours {
    /// The NIC is up with carrier.
    pub link_up: bool,
    /// Since when (None while down).
    pub up_since: Option<Instant>,
    /// Last-known MACs kept while their entry is missing, with when they
    /// were marked.
    pub stale: BTreeMap<IpAddr, Instant>,
    /// Why a MAC in force went, until the commit logs it.
    pub lost_why: BTreeMap<IpAddr, &'static str>,
}

impl Default for Neighbours {
    fn default() -> Self {
        Neighbours::new(true, Instant::now())
    }
}

impl Neighbours {
    pub fn new(link_up: bool, now: Instant) -> Neighbours {
        Neighbours {
            link_up,
            up_since: link_up.then_some(now),
            stale: BTreeMap::new(),
            lost_why: BTreeMap::new(),
        }
    }

    /// The link went up or down (returns whether that is news).
    pub fn link(&mut self, up: bool, now: Instant) -> bool {
        if up == self.link_up {
            return false;
        }
        self.link_up = up;
        self.up_since = up.then_some(now);
        true
    }

    /// Whether the link has worked for `d` at `now`.
    fn up_for(&self, d: Duration, now: Instant) -> bool {
        self.up_since.is_some_and(|t| now.duration_since(t) >= d)
    }

    /// Folds one thing the table said of `a` into `cur` (the MACs as they
    /// stand in this batch, over `macs`, the ones in force).
    pub fn see(
        &mut self,
        cur: &mut HashMap<IpAddr, Option<[u8; 6]>>,
        macs: &HashMap<IpAddr, [u8; 6]>,
        a: IpAddr,
        n: Neigh,
        now: Instant,
    ) {
        // A failure says nothing while the link is down or just back.
        let n = match n {
            Neigh::Failed if !self.up_for(LINK_GRACE, now) => Neigh::Missing,
            n => n,
        };
        let known = cur
            .get(&a)
            .copied()
            .unwrap_or_else(|| macs.get(&a).copied());
        let mut next = follow(known, n);
        if known.is_some() && next.is_none() {
            self.lost_why
                .insert(a, "its resolution failed (no ARP/ND answer)");
        }
        match n {
            Neigh::Usable(_) | Neigh::Failed => {
                self.stale.remove(&a);
            }
            Neigh::Missing | Neigh::Pending if next.is_some() => {
                let since = *self.stale.entry(a).or_insert_with(|| {
                    info!(real = %a, "real server's neighbour entry gone: last-known MAC kept while it is resolved again");
                    now
                });
                // Unconfirmed for too long on a working link: gone.
                let from = self.up_since.map_or(since, |u| u.max(since));
                if self.link_up && now.duration_since(from) >= STALE_FOR {
                    self.lost_why
                        .insert(a, "not confirmed within 30 s on a working link");
                    self.stale.remove(&a);
                    next = None;
                }
            }
            Neigh::Missing | Neigh::Pending => {}
        }
        cur.insert(a, next);
    }

    /// The changes a batch folded into `cur` makes to `macs`.
    pub fn updates(
        &mut self,
        cur: HashMap<IpAddr, Option<[u8; 6]>>,
        macs: &HashMap<IpAddr, [u8; 6]>,
        wanted: &BTreeSet<IpAddr>,
    ) -> Vec<(IpAddr, Option<[u8; 6]>)> {
        self.stale.retain(|a, _| wanted.contains(a));
        let mut out: Vec<_> = cur
            .into_iter()
            .filter(|(a, next)| wanted.contains(a) && macs.get(a).copied() != *next)
            .collect();
        out.sort();
        out
    }

    /// The MACs of `wanted` after what the table says (`seen`), starting
    /// from `macs`; stale marks follow.
    pub fn fold(
        &mut self,
        macs: &HashMap<IpAddr, [u8; 6]>,
        wanted: &BTreeSet<IpAddr>,
        seen: &[(IpAddr, Neigh)],
        now: Instant,
    ) -> Vec<(IpAddr, Option<[u8; 6]>)> {
        let mut cur = HashMap::new();
        for &(a, n) in seen.iter().filter(|(a, _)| wanted.contains(a)) {
            self.see(&mut cur, macs, a, n, now);
        }
        self.updates(cur, macs, wanted)
    }
}

impl Daemon {
    fn commit_macs(&mut self, updates: Vec<(IpAddr, Option<[u8; 6]>)>) {
        if updates.is_empty() {
            return;
        }
        let before = self.director.inputs().macs.clone();
        match self.director.set_macs(&updates) {
            Ok(_) => self.log_macs(&before),
            Err(e) => {
                error!("applying real-server MACs (retried at the next neighbour dump): {e}")
            }
        }
    }

    /// One line per real server whose MAC in force changed since `before`
    /// (resolved, changed, lost with the reason).
    pub(super) fn log_macs(&mut self, before: &HashMap<IpAddr, [u8; 6]>) {
        let inp = self.director.inputs();
        let wanted = inp.addresses();
        let fmt = crate::director::codec::fmt_mac;
        for a in &wanted {
            match (before.get(a), inp.macs.get(a)) {
                (None, Some(m)) => info!(real = %a, mac = %fmt(m), "real server's MAC resolved"),
                (Some(o), Some(m)) if o != m => warn!(
                    real = %a,
                    old = %fmt(o),
                    mac = %fmt(m),
                    "real server's MAC changed (a replaced NIC, or its address moved)"
                ),
                (Some(o), None) => {
                    let why = self
                        .neighbours
                        .lost_why
                        .get(a)
                        .copied()
                        .unwrap_or("its neighbour entry went");
                    warn!(real = %a, old = %fmt(o), "real server's MAC lost: {why}; nothing is forwarded to it until it answers again");
                }
                _ => {}
            }
        }
        self.neighbours.lost_why.clear();
    }

    fn link_changed(&mut self, up: bool) {
        if self.neighbours.link(up, Instant::now()) {
            if up {
                info!(iface = %self.resolver.iface, "link up: resolving every real server again");
            } else {
                warn!(iface = %self.resolver.iface, "link down: last-known real-server MACs kept");
            }
        }
    }

    /// Re-reads the link, dumps the neighbour table for every real server
    /// (provoking resolution of the unresolved, stale and unconfirmed ones,
    /// if the link works) and follows it.
    pub(super) async fn refresh_neighbours(&mut self) {
        match self.resolver.link_up().await {
            Ok(up) => self.link_changed(up),
            Err(e) => warn!("reading the link state: {e}"),
        }
        let wanted = self.director.inputs().addresses();
        if wanted.is_empty() {
            return;
        }
        match self
            .resolver
            .resolve(&wanted, self.neighbours.link_up)
            .await
        {
            Ok(seen) => {
                let inp = self.director.inputs();
                let updates = self
                    .neighbours
                    .fold(&inp.macs, &wanted, &seen, Instant::now());
                self.commit_macs(updates);
            }
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

    /// Handles a batch of notifications from the kernel, in order.
    pub(super) async fn neighbour_events(&mut self, events: Vec<NeighEvent>) {
        let wanted = self.director.inputs().addresses();
        let macs = self.director.inputs().macs.clone();
        let mut cur = HashMap::new();
        let mut resync = false;
        let now = Instant::now();
        for ev in events {
            match ev {
                NeighEvent::Seen(a, n) if wanted.contains(&a) => {
                    // An entry that went away is resolved again at once.
                    if n == Neigh::Missing && self.neighbours.link_up {
                        self.resolver.provoke(a);
                    }
                    self.neighbours.see(&mut cur, &macs, a, n, now);
                }
                NeighEvent::Seen(..) => {}
                NeighEvent::Link(up) => {
                    resync |= up && !self.neighbours.link_up;
                    self.link_changed(up);
                }
                NeighEvent::Resync => {
                    warn!("neighbour notifications lost: dumping the table again");
                    resync = true;
                }
            }
        }
        let updates = self.neighbours.updates(cur, &macs, &wanted);
        self.commit_macs(updates);
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
        let t0 = Instant::now();
        let mut n = Neighbours::new(true, t0);
        n.link(false, t0);
        // Flushed with the link, and a probe that failed while it was down.
        assert!(n
            .fold(&macs, &wanted, &[(r, Neigh::Missing)], t0)
            .is_empty());
        let t1 = t0 + Duration::from_secs(60);
        assert!(n.fold(&macs, &wanted, &[(r, Neigh::Failed)], t1).is_empty());
        assert!(n.stale.contains_key(&r));
        // Back up: a failure of a probe sent around the flap is not
        // believed; the answer confirms the MAC.
        n.link(true, t1);
        let t2 = t1 + Duration::from_secs(2);
        assert!(n.fold(&macs, &wanted, &[(r, Neigh::Failed)], t2).is_empty());
        assert!(n
            .fold(&macs, &wanted, &[(r, Neigh::Usable(A))], t2)
            .is_empty());
        assert!(n.stale.is_empty());
    }

    #[test]
    fn a_new_mac_moves_at_once_and_a_failed_resolution_clears() {
        let r = ip("192.0.2.11");
        let other = ip("192.0.2.99");
        let wanted = BTreeSet::from([r]);
        let macs = HashMap::from([(r, A)]);
        let t0 = Instant::now();
        let mut n = Neighbours::new(true, t0 - Duration::from_secs(60));
        assert_eq!(
            n.fold(
                &macs,
                &wanted,
                &[(r, Neigh::Usable(B)), (other, Neigh::Usable(B))],
                t0
            ),
            vec![(r, Some(B))]
        );
        assert_eq!(
            n.fold(&macs, &wanted, &[(r, Neigh::Failed)], t0),
            vec![(r, None)]
        );
    }

    /// A batch is folded in order: what the table says last wins.
    #[test]
    fn a_batch_ends_where_the_table_ends() {
        let r = ip("192.0.2.11");
        let wanted = BTreeSet::from([r]);
        let macs = HashMap::from([(r, A)]);
        let t0 = Instant::now();
        let mut n = Neighbours::new(true, t0 - Duration::from_secs(60));
        let back = [(r, Neigh::Usable(B)), (r, Neigh::Usable(A))];
        assert!(n.fold(&macs, &wanted, &back, t0).is_empty());
        let revived = [(r, Neigh::Failed), (r, Neigh::Usable(A))];
        assert!(n.fold(&macs, &wanted, &revived, t0).is_empty());
        let gone = [(r, Neigh::Failed), (r, Neigh::Missing)];
        assert_eq!(n.fold(&macs, &wanted, &gone, t0), vec![(r, None)]);
        assert!(n.stale.is_empty(), "no stale mark without a MAC");
    }

    /// A last-known MAC not confirmed within STALE_FOR of a working link
    /// is dropped (a server gone for good, or a neighbour table full).
    #[test]
    fn a_stale_mark_expires_on_a_working_link() {
        let r = ip("192.0.2.11");
        let wanted = BTreeSet::from([r]);
        let macs = HashMap::from([(r, A)]);
        let t0 = Instant::now();
        let mut n = Neighbours::new(true, t0 - Duration::from_secs(60));
        assert!(n
            .fold(&macs, &wanted, &[(r, Neigh::Missing)], t0)
            .is_empty());
        let later = t0 + STALE_FOR - Duration::from_secs(1);
        assert!(n
            .fold(&macs, &wanted, &[(r, Neigh::Pending)], later)
            .is_empty());
        assert_eq!(
            n.fold(&macs, &wanted, &[(r, Neigh::Missing)], t0 + STALE_FOR),
            vec![(r, None)]
        );
    }
}
