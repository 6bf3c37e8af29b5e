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
    on_stop: BTreeMap<String, (OnStop, f64)>,
    /// Routers resuming as master after a restart (their VIPs were still
    /// on the interface).
    resuming: BTreeSet<String>,
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
    pub async fn new(cfgs: &[VrrpCfg], iface: &str, record_file: PathBuf) -> Ha {
        let record = vrrp::read_record(&record_file);
        let (events_tx, events) = mpsc::channel(64);
        let mut ha = Ha {
            routers: Vec::new(),
            events,
            events_tx,
            standby: BTreeSet::new(),
            told: BTreeMap::new(),
            on_stop: BTreeMap::new(),
            resuming: BTreeSet::new(),
            record_file,
            record,
        };
        for c in cfgs {
            let on = c.interface.as_deref().unwrap_or(iface);
            if ha.recorded_master(c) && vips_still_on(on, &c.virtual_addresses).await {
                ha.resuming.insert(c.name.clone());
            } else {
                ha.standby.extend(c.virtual_addresses.iter().copied());
            }
        }
        ha
    }

    /// Whether router `c` was master when the previous lbd stopped, less
    /// than [`vrrp::RESUME_WITHIN_S`] ago.
    fn recorded_master(&self, c: &VrrpCfg) -> bool {
        matches!(self.record.get(&c.name), Some((State::Master, t)) if unix_now().saturating_sub(*t) <= vrrp::RESUME_WITHIN_S)
    }

    /// Starts every router of `cfgs` (interface: theirs or lbd's).
    pub async fn start(&mut self, cfgs: &[VrrpCfg], iface: &str) -> Result<()> {
        for c in cfgs {
            let resume = self.resuming.contains(&c.name);
            let on = c.interface.as_deref().unwrap_or(iface);
            let h = match vrrp::task::start(c.clone(), on, resume, self.events_tx.clone()).await {
                Ok(h) => h,
                Err(e) => {
                    // lbd will not run: the routers already started hand
                    // over rather than leave VIPs with no daemon.
                    for h in self.routers.drain(..) {
                        let (done, wait) = oneshot::channel();
                        if h.cmds
                            .send(Cmd::Shutdown { hold: None, done })
                            .await
                            .is_ok()
                        {
                            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
                        }
                    }
                    return Err(e);
                }
            };
            if resume {
                info!(router = c.name, "VRRP: resuming as master after a restart");
            }
            self.on_stop
                .insert(c.name.clone(), (c.on_stop, c.restart_hold));
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
                let ok = self.commit_standby();
                let _ = done.send(ok);
            }
            Event::Backup { vips } => {
                self.ha.standby.extend(vips);
                self.commit_standby();
            }
            Event::Changed { name, state } => {
                let was = self.ha.record.get(&name).map(|r| r.0);
                if was == Some(State::Fault) && state == State::Backup {
                    // Back on the link: what the peers served meanwhile.
                    self.syncd.ask_resync();
                }
                self.ha.record.insert(name, (state, unix_now()));
                vrrp::write_record(&self.ha.record_file, &self.ha.record);
            }
        }
    }

    /// Whether the data plane now follows `ha.standby`.
    fn commit_standby(&mut self) -> bool {
        let standby = self.ha.standby.clone();
        match self.director.change(|i| i.standby = standby) {
            Ok(_) => true,
            Err(e) => {
                error!("switching the data plane for VRRP: {e}");
                false
            }
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
            let (done, wait) = oneshot::channel();
            let cmd = if release {
                Cmd::Release(done)
            } else {
                Cmd::Resume(done)
            };
            if h.cmds.send(cmd).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
            }
        }
        match (found, name) {
            (true, _) => Ok(()),
            (false, Some(n)) => Err(format!("no VRRP router named {n}")),
            (false, None) => Err("no VRRP router is configured".into()),
        }
    }

    /// lbd stopping: each master holds (a restart: VRRPv3 backups are told
    /// to wait `restart_hold`) or hands over (priority 0) as its `on_stop`
    /// says, and always hands over when the system itself is shutting
    /// down; after a hand-over the data plane stands by for its VIPs. A
    /// held master is recorded as master now, for the next lbd.
    pub(super) async fn vrrp_stop(&mut self) {
        let shutting_down = system_stopping();
        for h in &self.ha.routers {
            let hold = match self.ha.on_stop.get(&h.name) {
                Some((OnStop::Hold, secs)) if !shutting_down => {
                    Some(Duration::from_secs_f64(*secs))
                }
                _ => None,
            };
            let (done, wait) = oneshot::channel();
            let sent = tokio::time::timeout(
                Duration::from_secs(1),
                h.cmds.send(Cmd::Shutdown { hold, done }),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                warn!(router = h.name, "VRRP router did not take the stop");
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(2), wait).await {
                Ok(Ok(true)) if hold.is_some() => {
                    self.ha
                        .record
                        .insert(h.name.clone(), (State::Master, unix_now()));
                }
                Ok(_) => {}
                Err(_) => warn!(router = h.name, "VRRP router did not stop in time"),
            }
        }
        vrrp::write_record(&self.ha.record_file, &self.ha.record);
        while let Ok(ev) = self.ha.events.try_recv() {
            self.vrrp_event(ev);
        }
    }
}

/// Whether the system is shutting down (systemd says "stopping"): a
/// master then hands over rather than hold for a restart that is not
/// coming.
pub(super) fn system_stopping() -> bool {
    std::process::Command::new("systemctl")
        .arg("is-system-running")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "stopping")
        .unwrap_or(false)
}

/// Whether every one of `vips` is on interface `iface` (a restarting
/// master's are; after a reboot they are not).
async fn vips_still_on(iface: &str, vips: &[IpAddr]) -> bool {
    let Ok(h) = crate::netif::netlink().await else {
        return false;
    };
    let Ok(idx) = crate::netif::ifindex(&h, iface).await else {
        return false;
    };
    match crate::netif::addresses(&h, idx).await {
        Ok(have) => vips.iter().all(|v| have.iter().any(|(a, _)| a == v)),
        Err(_) => false,
    }
}
