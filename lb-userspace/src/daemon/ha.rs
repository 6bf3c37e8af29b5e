//! The daemon's side of VRRP: starting the routers, carrying out what they
//! ask of the data plane (active for a master's VIPs, standby for a
//! backup's), the tracked quorum, `lbadm vrrp`, the restart record, and
//! what a master does when lbd stops.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::Daemon;
use crate::vrrp::{
    self,
    task::{Cmd, Event, Handle},
    OnStop, State, VrrpCfg, VrrpView,
};

/// The daemon's VRRP state.
pub struct Ha {
    pub routers: Vec<Handle>,
    pub events: mpsc::Receiver<Event>,
    events_tx: mpsc::Sender<Event>,
    /// VIPs the data plane stands by for.
    pub standby: BTreeSet<IpAddr>,
    /// What each router was last told of its lost quorum.
    told: BTreeMap<String, usize>,
    on_stop: BTreeMap<String, OnStop>,
    record_file: PathBuf,
    record: vrrp::Record,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Ha {
    /// Before the routers start: every VIP of a router that will not
    /// resume as master stands by from lbd's first commit.
    pub fn new(cfgs: &[VrrpCfg], record_file: PathBuf) -> Ha {
        let record = vrrp::read_record(&record_file);
        let (events_tx, events) = mpsc::channel(64);
        let mut ha = Ha {
            routers: Vec::new(),
            events,
            events_tx,
            standby: BTreeSet::new(),
            told: BTreeMap::new(),
            on_stop: BTreeMap::new(),
            record_file,
            record,
        };
        for c in cfgs {
            if !ha.resumes(c) {
                ha.standby.extend(c.virtual_addresses.iter().copied());
            }
        }
        ha
    }

    /// Whether router `c` was master within [`vrrp::RESUME_WITHIN_S`] of
    /// now, per the previous lbd's record (a restart).
    fn resumes(&self, c: &VrrpCfg) -> bool {
        matches!(self.record.get(&c.name), Some((State::Master, t)) if unix_now().saturating_sub(*t) <= vrrp::RESUME_WITHIN_S)
    }

    /// Starts every router of `cfgs` (interface: theirs or lbd's).
    pub async fn start(&mut self, cfgs: &[VrrpCfg], iface: &str, mac: [u8; 6]) -> Result<()> {
        for c in cfgs {
            let resume = self.resumes(c);
            let on = c.interface.as_deref().unwrap_or(iface);
            let h = vrrp::task::start(c.clone(), on, mac, resume, self.events_tx.clone()).await?;
            if resume {
                info!(router = c.name, "VRRP: resuming as master after a restart");
            }
            self.on_stop.insert(c.name.clone(), c.on_stop);
            self.routers.push(h);
        }
        Ok(())
    }

    pub fn views(&self) -> Vec<VrrpView> {
        self.routers
            .iter()
            .map(|h| h.status.borrow().clone())
            .collect()
    }
}

impl Daemon {
    /// What a router asks: the data plane follows its state.
    pub(super) fn vrrp_event(&mut self, ev: Event) {
        match ev {
            Event::Master { vips, done } => {
                for v in &vips {
                    self.ha.standby.remove(v);
                }
                self.commit_standby();
                let _ = done.send(());
            }
            Event::Backup { vips } => {
                self.ha.standby.extend(vips);
                self.commit_standby();
            }
            Event::Changed { name, state } => {
                self.ha.record.insert(name, (state, unix_now()));
                vrrp::write_record(&self.ha.record_file, &self.ha.record);
            }
        }
    }

    fn commit_standby(&mut self) {
        let standby = self.ha.standby.clone();
        if let Err(e) = self.director.change(|i| i.standby = standby) {
            error!("switching the data plane for VRRP (retried at the next change): {e}");
        }
    }

    /// Tells each router how many services on its VIPs lost their quorum.
    pub(super) async fn track_quorum(&mut self) {
        for h in &self.ha.routers {
            let n = self.director.quorum_lost_on(&h.vips);
            if self.ha.told.get(&h.name) != Some(&n) {
                self.ha.told.insert(h.name.clone(), n);
                let _ = h.cmds.send(Cmd::QuorumLost(n)).await;
            }
        }
    }

    /// `lbadm vrrp release|resume [NAME]`.
    pub(super) async fn vrrp_command(
        &mut self,
        release: bool,
        name: Option<String>,
    ) -> Result<(), String> {
        let mut found = false;
        for h in &self.ha.routers {
            if name.as_ref().is_some_and(|n| *n != h.name) {
                continue;
            }
            found = true;
            let cmd = if release { Cmd::Release } else { Cmd::Resume };
            let _ = h.cmds.send(cmd).await;
        }
        match (found, name) {
            (true, _) => Ok(()),
            (false, Some(n)) => Err(format!("no VRRP router named {n}")),
            (false, None) => Err("no VRRP router is configured".into()),
        }
    }

    /// lbd stopping: each master holds (a restart: VRRPv3 backups are told
    /// to wait) or hands over (priority 0) as its `on_stop` says; after a
    /// hand-over the data plane stands by for its VIPs.
    pub(super) async fn vrrp_stop(&mut self) {
        for h in &self.ha.routers {
            let hold = self.ha.on_stop.get(&h.name).copied() != Some(OnStop::Release);
            let (done, wait) = oneshot::channel();
            if h.cmds.send(Cmd::Shutdown { hold, done }).await.is_ok()
                && tokio::time::timeout(Duration::from_secs(2), wait)
                    .await
                    .is_err()
            {
                warn!(router = h.name, "VRRP router did not stop in time");
            }
        }
        while let Ok(ev) = self.ha.events.try_recv() {
            self.vrrp_event(ev);
        }
    }
}
