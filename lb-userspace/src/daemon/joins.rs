//! Joined real servers: merged into every configuration applied, added by
//! `join`, drained and removed by `leave`, kept in a state file.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{info, warn};

use super::{Daemon, Desired};
use crate::{
    config::Config,
    health::CheckSpec,
    join::{server::JoinJob, service_name, JoinOp, JoinResponse, JoinStatus, Joined, JoinedReal},
    model::{Forward, RealSpec, ServiceAddr},
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

/// Adds `(svc, address)` with `weight` to `next` (or sets its weight), with
/// the service's check.
fn put(
    next: &mut Desired,
    svc: &ServiceAddr,
    address: IpAddr,
    weight: u32,
    check: &Option<CheckSpec>,
) -> Result<(), String> {
    let r = real(svc, address, weight);
    let t = &mut next.table;
    let known = t
        .services
        .get(svc)
        .is_some_and(|s| s.reals.contains_key(&(address, svc.port)));
    let done = if known {
        t.edit_real(svc, r)
    } else {
        t.add_real(svc, r)
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
    /// The joined real servers merged into `next` (the configuration `c`
    /// about to be applied): those whose service still takes joins. Returns
    /// the ones kept; the others are logged.
    pub(super) fn merge_joined(&self, c: &Config, next: &mut Desired) -> Joined {
        let joinable = c.joinable();
        let mut kept = Joined::default();
        for ((svc, a), j) in &self.joined.reals {
            let Some(check) = joinable.get(svc) else {
                warn!(service = %svc, real = %a, "a joined real server goes: its service no longer takes joins");
                continue;
            };
            let declared = next
                .table
                .services
                .get(svc)
                .is_some_and(|s| s.reals.contains_key(&(*a, svc.port)));
            if declared {
                // The configuration names it now: the file wins.
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

    /// Joined entries whose real server left the table (an ipvsadm-style
    /// `-d`, a `-D` of its service) are forgotten.
    pub(super) fn prune_joined(&mut self) {
        let table = &self.director.inputs().table;
        let before = self.joined.reals.len();
        self.joined.reals.retain(|(svc, a), _| {
            table
                .services
                .get(svc)
                .is_some_and(|s| s.reals.contains_key(&(*a, svc.port)))
        });
        if self.joined.reals.len() != before {
            self.save_joined();
        }
    }

    pub(super) fn save_joined(&self) {
        if let Err(e) = self.joined.save(&self.joined_file) {
            warn!(file = %self.joined_file.display(), "saving the joined real servers: {e:#}");
        }
    }

    /// Where `(svc, address)` stands: connection counts from a walk of the
    /// table now when `fresh`, else from the last sweep.
    fn join_status(&mut self, svc: &ServiceAddr, address: IpAddr, fresh: bool) -> JoinStatus {
        let listing = if fresh {
            self.director.listing()
        } else {
            self.director.listing_of_last_sweep().0
        };
        status_in(&listing, &self.joined, svc, address)
    }

    /// Whether `a` may join: of the VIP's family, on the NIC's LAN.
    async fn may_join(&self, svc: &ServiceAddr, a: IpAddr) -> Result<(), String> {
        if a.is_ipv4() != svc.address.is_ipv4() {
            return Err(format!(
                "{a} is not of the VIP's address family (connect to the director over IPv{})",
                if svc.address.is_ipv4() { 4 } else { 6 }
            ));
        }
        let nets = self
            .resolver
            .all_addresses()
            .await
            .map_err(|e| e.to_string())?;
        let on_lan = nets.iter().any(|(i, n, len)| {
            *i == self.resolver.ifindex && crate::diagnose::director::in_prefix(&a, n, *len)
        });
        if !on_lan {
            return Err(format!(
                "{a} is not on a subnet of {} (direct routing needs the real servers on the director's LAN)",
                self.resolver.iface
            ));
        }
        Ok(())
    }

    /// One request of the join API.
    pub(super) async fn join_job(&mut self, job: JoinJob) {
        let peer = job.peer;
        let r = match job.op {
            JoinOp::Join { service, weight } => self.join(service, peer, weight).await,
            JoinOp::Leave { service, drain_s } => self.leave(service, peer, drain_s).await,
            JoinOp::Status { service } => Ok(self.join_status(&service, peer, false)),
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
        let Some(check) = self.joinable.get(&svc).cloned() else {
            return Err(format!(
                "{name} takes no joins (joinable: true in its configuration)"
            ));
        };
        if weight > 65535 {
            return Err(format!("weight {weight} out of range (0..=65535)"));
        }
        self.may_join(&svc, a).await?;
        let declared = self
            .director
            .inputs()
            .table
            .services
            .get(&svc)
            .is_some_and(|s| s.reals.contains_key(&(a, svc.port)));
        if declared && !self.joined.reals.contains_key(&(svc, a)) {
            return Err(format!(
                "{a} is a real server of {name} in the configuration: change it there"
            ));
        }
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
        self.save_state();
        info!(service = %svc, real = %a, weight, "real server joined");
        Ok(self.join_status(&svc, a, false))
    }

    async fn leave(
        &mut self,
        svc: ServiceAddr,
        a: IpAddr,
        drain_s: u32,
    ) -> Result<JoinStatus, String> {
        let name = service_name(&svc);
        if !self.joined.reals.contains_key(&(svc, a)) {
            return Err(format!("{a} has not joined {name}"));
        }
        let max = self.base.join.as_ref().map(|j| j.max_drain).unwrap_or(3600);
        let drain = drain_s.min(max);
        let mut next = self.desired();
        let check = self.joinable.get(&svc).cloned().flatten();
        put(&mut next, &svc, a, 0, &check)?;
        self.change(next).await.map_err(|e| e.to_string())?;
        if let Some(j) = self.joined.reals.get_mut(&(svc, a)) {
            j.draining_until = Some(now_unix() + u64::from(drain));
        }
        self.save_joined();
        self.save_state();
        info!(service = %svc, real = %a, drain_s = drain, "real server leaving: draining (weight 0)");
        // Removed by the sweep tick (its counts are fresh there) once
        // drained: counts of the last sweep may predate its connections.
        Ok(self.join_status(&svc, a, true))
    }

    /// Removes the draining real servers whose connections are done (as of
    /// the sweep just made: call it right after one) or whose drain time is
    /// up.
    pub(super) async fn finish_leaves(&mut self) {
        let draining: Vec<_> = self
            .joined
            .reals
            .iter()
            .filter_map(|(k, j)| j.draining_until.map(|t| (*k, t)))
            .collect();
        if draining.is_empty() {
            return;
        }
        let now = now_unix();
        let mut done = Vec::new();
        let (listing, _) = self.director.listing_of_last_sweep();
        for ((svc, a), until) in draining {
            let active = status_in(&listing, &self.joined, &svc, a).active_conns;
            if active == 0 {
                done.push((svc, a, "drained".to_string()));
            } else if now >= until {
                done.push((svc, a, format!("drain time up with {active} connection(s)")));
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
        self.save_state();
    }
}

/// Where `(svc, address)` stands in `listing`.
fn status_in(
    listing: &crate::control::Listing,
    joined: &Joined,
    svc: &ServiceAddr,
    address: IpAddr,
) -> JoinStatus {
    let view = listing
        .services
        .iter()
        .find(|s| s.spec.addr == *svc)
        .and_then(|s| s.reals.iter().find(|r| r.spec.address == address));
    JoinStatus {
        service: *svc,
        address,
        joined: joined.reals.contains_key(&(*svc, address)),
        weight: view.map(|r| r.spec.weight).unwrap_or(0),
        draining_until: joined
            .reals
            .get(&(*svc, address))
            .and_then(|j| j.draining_until),
        active_conns: view.map(|r| r.active_conns).unwrap_or(0),
        inactive_conns: view.map(|r| r.inactive_conns).unwrap_or(0),
    }
}

/// The joinable services of a configuration, for [`Daemon`]'s field.
pub(super) type Joinable = HashMap<ServiceAddr, Option<CheckSpec>>;
