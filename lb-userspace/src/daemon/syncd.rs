//! The daemon's side of connection sync: the roles started and stopped
//! (YAML `sync:`, `lbadm --start-daemon/--stop-daemon`), the published ids
//! the translation follows, the backup's entries inserted, the master's
//! refreshes and full resyncs.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use lb_common::{ConnKey, ConnValue};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::Daemon;
use crate::{
    director::sweep::monotonic_ns,
    netif,
    sync::{
        backup::{self, SyncIn},
        master::{self, MasterOn},
        translate::IdMap,
        Role, SyncCfg, SyncStats, SyncView,
    },
};

struct BackupOn {
    on: MasterOn,
    task: tokio::task::JoinHandle<()>,
    stats: watch::Receiver<SyncStats>,
    /// Asks the masters for everything again.
    resync: mpsc::Sender<()>,
}

pub struct Syncd {
    master_on: watch::Sender<Option<MasterOn>>,
    master_stats: watch::Receiver<SyncStats>,
    refresh: mpsc::Sender<Vec<(ConnKey, ConnValue)>>,
    backup: Option<BackupOn>,
    pub incoming: mpsc::Receiver<SyncIn>,
    incoming_tx: mpsc::Sender<SyncIn>,
    ids: watch::Sender<Arc<IdMap>>,
    ids_at: u64,
    last_refresh: Instant,
    last_full: Option<Instant>,
    /// The program's ring buffer could be read (a master can run).
    can_master: bool,
}

impl Syncd {
    /// Spawns the master's reader over `ring` (idle until a master role
    /// starts).
    pub fn new(ring: Option<aya::maps::RingBuf<aya::maps::MapData>>) -> Syncd {
        let (master_on, on_rx) = watch::channel(None);
        let (stats_tx, master_stats) = watch::channel(SyncStats::default());
        let (refresh, refresh_rx) = mpsc::channel(16);
        let (ids, ids_rx) = watch::channel(Arc::new(IdMap::default()));
        let (incoming_tx, incoming) = mpsc::channel(1024);
        let can_master = match ring {
            Some(r) => match master::spawn(r, on_rx, ids_rx, refresh_rx, stats_tx) {
                Ok(()) => true,
                Err(e) => {
                    warn!("sync master unavailable: {e:#}");
                    false
                }
            },
            None => false,
        };
        Syncd {
            master_on,
            master_stats,
            refresh,
            backup: None,
            incoming,
            incoming_tx,
            ids,
            ids_at: u64::MAX,
            last_refresh: Instant::now(),
            last_full: None,
            can_master,
        }
    }

    pub fn backup_running(&self) -> bool {
        self.backup.is_some()
    }

    pub fn master_running(&self) -> bool {
        self.master_on.borrow().is_some()
    }

    pub fn views(&self) -> Vec<SyncView> {
        let mut v = Vec::new();
        if let Some(m) = self.master_on.borrow().as_ref() {
            v.push(SyncView {
                role: Role::Master,
                interface: m.iface.clone(),
                cfg: m.cfg.clone(),
                stats: self.master_stats.borrow().clone(),
            });
        }
        if let Some(b) = &self.backup {
            v.push(SyncView {
                role: Role::Backup,
                interface: b.on.iface.clone(),
                cfg: b.on.cfg.clone(),
                stats: b.stats.borrow().clone(),
            });
        }
        v
    }
}

impl Syncd {
    /// Asks the masters for every connection again (this director's link
    /// came back: what they made meanwhile is not here).
    pub fn ask_resync(&self) {
        if let Some(b) = &self.backup {
            let _ = b.resync.try_send(());
        }
    }
}

impl Daemon {
    /// Starts `role` with `cfg` (interface: its own or lbd's).
    pub(super) async fn sync_start(&mut self, role: Role, mut cfg: SyncCfg) -> Result<()> {
        cfg.check().map_err(|(f, m)| anyhow!("{f}: {m}"))?;
        if cfg.group.is_ipv6() && cfg.maxlen == crate::sync::proto::MAXLEN as u16 {
            cfg.maxlen = 1452; // 1500 - IPv6 - UDP headers, as IPVS
        }
        let iface = cfg
            .interface
            .clone()
            .unwrap_or_else(|| self.resolver.iface.clone());
        let h = netif::netlink().await?;
        let ifindex = netif::ifindex(&h, &iface).await?;
        let on = MasterOn {
            cfg,
            iface,
            ifindex,
        };
        match role {
            Role::Master => {
                if self.syncd.master_running() {
                    return Err(anyhow!("Daemon has already run"));
                }
                if !self.syncd.can_master {
                    return Err(anyhow!("the program's sync ring buffer is unavailable"));
                }
                self.director
                    .change(|i| i.sync_master = true)
                    .map_err(|e| anyhow!("{e}"))?;
                self.syncd.master_on.send_replace(Some(on.clone()));
            }
            Role::Backup => {
                if self.syncd.backup.is_some() {
                    return Err(anyhow!("Daemon has already run"));
                }
                let nets = netif::addresses(&h, ifindex).await?;
                let (stats_tx, stats) = watch::channel(SyncStats::default());
                let (resync, resync_rx) = mpsc::channel(1);
                let task = backup::spawn(backup::Backup {
                    cfg: on.cfg.clone(),
                    iface: on.iface.clone(),
                    ifindex,
                    nets,
                    resync: resync_rx,
                    ids: self.syncd.ids.subscribe(),
                    out: self.syncd.incoming_tx.clone(),
                    stats: stats_tx,
                })?;
                self.syncd.backup = Some(BackupOn {
                    on: on.clone(),
                    task,
                    stats,
                    resync,
                });
            }
        }
        info!(
            role = role.name(),
            iface = on.iface,
            syncid = on.cfg.syncid,
            "sync daemon started"
        );
        Ok(())
    }

    pub(super) fn sync_stop(&mut self, role: Role) -> Result<()> {
        match role {
            Role::Master => {
                if !self.syncd.master_running() {
                    return Err(anyhow!("No daemon is running"));
                }
                self.syncd.master_on.send_replace(None);
                self.director
                    .change(|i| i.sync_master = false)
                    .map_err(|e| anyhow!("{e}"))?;
            }
            Role::Backup => match self.syncd.backup.take() {
                Some(b) => b.task.abort(),
                None => return Err(anyhow!("No daemon is running")),
            },
        }
        info!(role = role.name(), "sync daemon stopped");
        Ok(())
    }

    /// What the backup hands over: entries to insert, or a resync request
    /// (everything, at most every 5 s).
    pub(super) async fn sync_in(&mut self, m: SyncIn) {
        match m {
            SyncIn::Entries(e) => {
                self.director.insert_synced(&e);
            }
            SyncIn::ResyncRequest => {
                let recent = self
                    .syncd
                    .last_full
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
                if self.syncd.master_running() && !recent {
                    self.syncd.last_full = Some(Instant::now());
                    let all = self.director.entries_since(0);
                    info!(entries = all.len(), "sync: a backup asked for everything");
                    let _ = self.syncd.refresh.send(all).await;
                }
            }
        }
    }

    /// Housekeeping after each event: the ids follow the commits, and the
    /// master refreshes what was seen in the last period.
    pub(super) async fn sync_tick(&mut self) {
        if self.director.commits() != self.syncd.ids_at {
            self.syncd.ids_at = self.director.commits();
            self.syncd
                .ids
                .send_replace(Arc::new(self.director.sync_ids()));
        }
        let period = match self.syncd.master_on.borrow().as_ref() {
            Some(m) => Duration::from_secs(m.cfg.refresh_period as u64),
            None => return,
        };
        if self.syncd.last_refresh.elapsed() >= period {
            self.syncd.last_refresh = Instant::now();
            let since = monotonic_ns().saturating_sub(period.as_nanos() as u64);
            let recent = self.director.entries_since(since);
            if !recent.is_empty() {
                let _ = self.syncd.refresh.send(recent).await;
            }
        }
    }
}
