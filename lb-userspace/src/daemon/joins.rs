//! Joined real servers: merged into every configuration applied, added by
//! `join`, drained and removed by `leave`, kept in a state file (and out
//! of the running state lbd saves and exports: the joined file is theirs).

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{info, warn};

use super::{Daemon, Desired};
use crate::{
    health::CheckSpec,
    join::{server::JoinJob, service_name, JoinOp, JoinResponse, JoinStatus, Joined, JoinedReal},
    model::{Forward, Protocol, RealSpec, ServiceAddr, Table},
};

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn real(svc: &ServiceAddr, address: IpAddr, weight: u32) -> RealSpec {
    RealSpec {
        u_threshold: 0,
        l_threshold: 0,
        address,
        port: svc.port,
        weight,
        forward: Forward::Route,
    }
}

/// Whether `t` has `address` as a real server of `svc`.
fn in_table(t: &Table, svc: &ServiceAddr, address: IpAddr) -> bool {
    t.services
        .get(svc)
        .is_some_and(|s| s.reals.contains_key(&(address, svc.port)))
}

/// Adds `(svc, address)` with `weight` to `next` (or sets its weight), with
/// the service's check.
fn put(
    next: &mut Desired,
    svc: &ServiceAddr,
    address: IpAddr,
    weight: u32,
    check: &Option<CheckSpec>,
) -> Result<(), String> {
    let t = &mut next.table;
    let done = match t
        .services
        .get(svc)
        .and_then(|s| s.reals.get(&(address, svc.port)))
    {
        // Thresholds an operator set (lbadm -e) stay.
        Some(r) => t.edit_real(svc, RealSpec { weight, ..*r }),
        None => t.add_real(svc, real(svc, address, weight)),
    };
    done.map_err(|e| e.to_string())?;
    if let Some(c) = check {
        if !next
            .checks
            .iter()
            .any(|(s, a, _)| s == svc && *a == address)
        {
            next.checks.push((*svc, address, c.clone()));
        }
    }
    Ok(())
}

/// Takes `(svc, address)` out of `next`, with its check.
fn take(next: &mut Desired, svc: &ServiceAddr, address: IpAddr) {
    let _ = next.table.del_real(svc, address);
    next.checks.retain(|(s, a, _)| !(s == svc && *a == address));
}

impl Daemon {
    /// The joined real servers merged into `next` (the configuration about
    /// to be applied, whose `joinable` services take joins): those whose
    /// service still takes joins and
    /// that the configuration does not name itself. Returns the ones kept;
    /// the others are logged. A start from the pinned maps alone (no
    /// configuration, `from_pins`) keeps them all: the maps serve them.
    pub(super) fn merge_joined(
        &self,
        joinable: &Joinable,
        inactive: &crate::config::Inactive,
        next: &mut Desired,
        from_pins: bool,
    ) -> Joined {
        if from_pins {
            return self.joined.clone();
        }
        let mut kept = Joined::default();
        for ((svc, a), j) in &self.joined.reals {
            if inactive.services.contains(svc) {
                // Kept for when the service is activated again, out of
                // the table meanwhile.
                kept.reals.insert((*svc, *a), j.clone());
                continue;
            }
            if inactive.reals.contains(&(*svc, *a)) {
                info!(service = %svc, real = %a, "a joined real server is declared inactive in the configuration: the file's entry is in force");
                continue;
            }
            let Some(check) = joinable.get(svc) else {
                warn!(service = %svc, real = %a, "a joined real server goes: its service no longer takes joins");
                continue;
            };
            if in_table(&next.table, svc, *a) {
                info!(service = %svc, real = %a, "a joined real server is now in the configuration: the file's entry is in force");
                continue;
            }
            let w = if j.draining_until.is_some() {
                0
            } else {
                j.weight
            };
            if let Err(e) = put(next, svc, *a, w, check) {
                warn!(service = %svc, real = %a, "a joined real server goes: {e}");
                continue;
            }
            kept.reals.insert((*svc, *a), j.clone());
        }
        kept
    }

    /// After an lbadm edit: joined entries whose real server left the
    /// table (`-d`, `-D` of its service) are forgotten, and a weight set
    /// with `-e` is the joined server's from now on.
    pub(super) fn prune_joined(&mut self) {
        let table = &self.director.inputs().table;
        let dormant = self.base.inactive().services;
        let before = self.joined.clone();
        self.joined.reals.retain(|(svc, a), j| {
            if dormant.contains(svc) && !table.services.contains_key(svc) {
                return true; // kept until the service is active again
            }
            let Some(r) = table
                .services
                .get(svc)
                .and_then(|s| s.reals.get(&(*a, svc.port)))
            else {
                return false;
            };
            if j.draining_until.is_none() {
                j.weight = r.weight;
            }
            true
        });
        if self.joined != before {
            self.save_joined();
        }
    }

    pub(super) fn save_joined(&self) {
        if let Err(e) = self.joined.save(&self.joined_file) {
            warn!(file = %self.joined_file.display(), "saving the joined real servers: {e:#}");
        }
    }

    /// The table and checks without the joined real servers (what lbd saves
    /// and `lbadm export` prints: the joined file restores them).
    pub(super) fn without_joined(&self) -> (Table, Vec<(ServiceAddr, IpAddr, CheckSpec)>) {
        let mut table = self.director.inputs().table.clone();
        let mut checks = self.checks.clone();
        for (svc, a) in self.joined.reals.keys() {
            let _ = table.del_real(svc, *a);
            checks.retain(|(s, r, _)| !(s == svc && r == a));
        }
        (table, checks)
    }

    /// Where `(svc, address)` stands, with connection counts of the last
    /// sweep (no walk of the table).
    fn join_status(&self, svc: &ServiceAddr, address: IpAddr) -> JoinStatus {
        let t = &self.director.inputs().table;
        let spec = t
            .services
            .get(svc)
            .and_then(|s| s.reals.get(&(address, svc.port)));
        let counts = self
            .director
            .last_counts_of(svc, address, svc.port)
            .unwrap_or_default();
        let j = self.joined.reals.get(&(*svc, address));
        JoinStatus {
            service: *svc,
            address,
            joined: j.is_some(),
            weight: spec.map(|r| r.weight).unwrap_or(0),
            draining_until: j.and_then(|j| j.draining_until),
            active_conns: counts.active,
            inactive_conns: counts.inactive,
            also_joined: self
                .joined
                .reals
                .keys()
                .filter(|(s, a)| *a == address && s != svc && s.address == svc.address)
                .map(|(s, _)| *s)
                .collect(),
        }
    }

    /// Whether `a` may join `svc`: of the VIP's family, on the NIC's LAN,
    /// not link-local, not one of the director's addresses nor a VIP.
    async fn may_join(&self, svc: &ServiceAddr, a: IpAddr) -> Result<(), String> {
        if a.is_ipv4() != svc.address.is_ipv4() {
            return Err(format!(
                "{a} is not of the VIP's address family (connect to the director over IPv{})",
                if svc.address.is_ipv4() { 4 } else { 6 }
            ));
        }
        if let IpAddr::V6(v6) = a {
            if v6.is_unicast_link_local() {
                return Err(format!(
                    "{a} is link-local: join from a global address of the real server"
                ));
            }
        }
        let t = &self.director.inputs().table;
        if t.services
            .keys()
            .flat_map(|s| t.entries(s))
            .any(|s| s.address == a)
        {
            return Err(format!("{a} is a VIP"));
        }
        let nets = self
            .resolver
            .all_addresses()
            .await
            .map_err(|e| e.to_string())?;
        if nets.iter().any(|(_, n, _)| *n == a) {
            return Err(format!("{a} is an address of the director itself"));
        }
        let on_lan = nets
            .iter()
            .any(|(i, n, len)| *i == self.resolver.ifindex && crate::netif::in_prefix(&a, n, *len));
        if !on_lan {
            return Err(format!(
                "{a} is not on a subnet of {} (direct routing needs the real servers on the director's LAN)",
                self.resolver.iface
            ));
        }
        Ok(())
    }

    /// One request of the join API (dropped if its client gave up waiting:
    /// a request answered "timed out" is never applied after all).
    pub(super) async fn join_job(&mut self, job: JoinJob) {
        if job.reply.is_closed() {
            warn!(peer = %job.peer, "join API: a request whose client gave up waiting is dropped");
            return;
        }
        let peer = job.peer;
        let r = match job.op {
            JoinOp::Join { service, weight } => self.join(service, peer, weight).await,
            JoinOp::Leave { service, drain_s } => self.leave(service, peer, drain_s).await,
            JoinOp::Status { service } => Ok(self.join_status(&service, peer)),
        };
        let resp = match r {
            Ok(status) => JoinResponse::Ok { status },
            Err(message) => {
                warn!(%peer, "join API: refused: {message}");
                JoinResponse::Error { message }
            }
        };
        let _ = job.reply.send(resp);
    }

    async fn join(
        &mut self,
        svc: ServiceAddr,
        a: IpAddr,
        weight: u32,
    ) -> Result<JoinStatus, String> {
        let name = service_name(&svc);
        let Some(check) = self.base.joinable().get(&svc).cloned() else {
            return Err(format!(
                "{name} takes no joins (joinable: true in its configuration)"
            ));
        };
        if weight > crate::model::MAX_WEIGHT {
            return Err(crate::model::ModelError::Weight(weight).to_string());
        }
        let known = self.joined.reals.contains_key(&(svc, a));
        if !known && in_table(&self.director.inputs().table, &svc, a) {
            return Err(format!(
                "{a} is a real server of {name} in the configuration: change it there"
            ));
        }
        let max = self.base.join.as_ref().map(|j| j.max_joined).unwrap_or(0);
        if !known && self.joined.reals.len() >= max as usize {
            return Err(format!(
                "{max} real servers have joined already (join.max_joined)"
            ));
        }
        self.may_join(&svc, a).await?;
        let mut next = self.desired();
        put(&mut next, &svc, a, weight, &check)?;
        self.change(next).await.map_err(|e| e.to_string())?;
        let since = self
            .joined
            .reals
            .get(&(svc, a))
            .map(|j| j.since)
            .unwrap_or_else(now_unix);
        self.joined.reals.insert(
            (svc, a),
            JoinedReal {
                weight,
                since,
                draining_until: None,
            },
        );
        self.save_joined();
        info!(service = %svc, real = %a, weight, "real server joined");
        Ok(self.join_status(&svc, a))
    }

    async fn leave(
        &mut self,
        svc: ServiceAddr,
        a: IpAddr,
        drain_s: u32,
    ) -> Result<JoinStatus, String> {
        let name = service_name(&svc);
        let Some(j) = self.joined.reals.get(&(svc, a)) else {
            return Err(format!("{a} has not joined {name}"));
        };
        if j.draining_until.is_some() {
            // Asked again (a client that lost its answer): the drain runs.
            return Ok(self.join_status(&svc, a));
        }
        let max = self.base.join.as_ref().map(|j| j.max_drain).unwrap_or(3600);
        let drain = drain_s.min(max);
        let mut next = self.desired();
        let check = self.base.joinable().get(&svc).cloned().flatten();
        put(&mut next, &svc, a, 0, &check)?;
        self.change(next).await.map_err(|e| e.to_string())?;
        if let Some(j) = self.joined.reals.get_mut(&(svc, a)) {
            j.draining_until = Some(now_unix() + u64::from(drain));
        }
        self.save_joined();
        info!(service = %svc, real = %a, drain_s = drain, "real server leaving: draining (weight 0)");
        // Removed by the sweep tick once drained: its counts are fresh
        // there (the last sweep's may predate connections just opened).
        Ok(self.join_status(&svc, a))
    }

    /// Removes the draining real servers whose connections are done (as of
    /// the sweep just made: call it right after one) or whose drain time is
    /// up. TCP waits for its ESTABLISHED connections; UDP for every entry
    /// (a datagram flow has no end but its timeout).
    pub(super) async fn finish_leaves(&mut self) {
        let now = now_unix();
        let mut done = Vec::new();
        for ((svc, a), j) in &self.joined.reals {
            let Some(until) = j.draining_until else {
                continue;
            };
            let c = self
                .director
                .last_counts_of(svc, *a, svc.port)
                .unwrap_or_default();
            let left = match svc.protocol {
                Protocol::Udp => c.active + c.inactive,
                _ => c.active,
            };
            if left == 0 {
                done.push((*svc, *a, "drained".to_string()));
            } else if now >= until {
                done.push((*svc, *a, format!("drain time up with {left} connection(s)")));
            }
        }
        if done.is_empty() {
            return;
        }
        let mut next = self.desired();
        for (svc, a, _) in &done {
            take(&mut next, svc, *a);
        }
        if let Err(e) = self.change(next).await {
            warn!("removing drained real servers (retried at the next sweep): {e}");
            return;
        }
        for (svc, a, why) in done {
            self.joined.reals.remove(&(svc, a));
            info!(service = %svc, real = %a, "real server left: {why}");
        }
        self.save_joined();
    }
}

/// The joinable services of a configuration, for [`Daemon`]'s field.
pub(super) type Joinable = HashMap<ServiceAddr, Option<CheckSpec>>;
