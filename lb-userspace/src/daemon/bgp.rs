//! The daemon's side of BGP: deciding, after every event, which VIPs this
//! director announces; `lbadm bgp drain|resume` (kept across restarts in
//! the state directory); what lbd stopping does.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Daemon;
use crate::bgp::{
    bird::{Handle, Status, Want},
    decide, BgpCfg, BgpView, Decisions, StopRule, VipFacts, VipView,
};

/// What the operator drained, as kept in `<instance>.bgp.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drained {
    /// The whole director.
    #[serde(default)]
    pub director: bool,
    #[serde(default)]
    pub vips: BTreeSet<IpAddr>,
}

/// The daemon's BGP state.
pub struct Bgp {
    cfg: Option<BgpCfg>,
    handle: Option<Handle>,
    include: PathBuf,
    state_dir: PathBuf,
    instance: String,
    drained: Drained,
    drain_file: PathBuf,
    gen: u64,
    /// When this lbd started, and what the include file announced then.
    started: std::time::Instant,
    announced_before: Option<BTreeSet<IpAddr>>,
}

impl Bgp {
    /// The record of a drain that cannot be read keeps the director
    /// drained (announcing by mistake is the worse error).
    pub fn new(state_dir: &Path, instance: &str) -> Bgp {
        let drain_file = state_dir.join(format!("{instance}.bgp.json"));
        let unreadable = |e: String| {
            warn!(
                "BGP: {} unreadable ({e}): the director stays drained until `lbadm bgp resume`",
                drain_file.display()
            );
            Drained {
                director: true,
                ..Default::default()
            }
        };
        let drained = match std::fs::read(&drain_file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Drained::default(),
            Err(e) => unreadable(e.to_string()),
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| unreadable(e.to_string())),
        };
        Bgp {
            cfg: None,
            handle: None,
            include: PathBuf::new(),
            state_dir: state_dir.to_path_buf(),
            instance: instance.to_string(),
            drained,
            drain_file,
            gen: 0,
            started: std::time::Instant::now(),
            announced_before: None,
        }
    }

    fn save_drained(&self) -> Result<(), String> {
        let text = serde_json::to_string(&self.drained).map_err(|e| e.to_string())?;
        crate::files::write_whole(&self.drain_file, text.as_bytes())
            .map_err(|e| format!("recording the drain in {}: {e}", self.drain_file.display()))
    }
}

/// What `lbadm bgp` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgpCommand {
    List,
    Drain,
    Resume,
}

impl Daemon {
    /// The `bgp:` section in force (start and every apply). Removing the
    /// section withdraws every VIP (the include file stays, empty, for
    /// BIRD's configuration that includes it).
    pub(super) fn bgp_configure(&mut self, cfg: Option<BgpCfg>) {
        let cfg = match (cfg, &self.bgp.cfg) {
            (Some(c), _) => c,
            (None, Some(old)) => BgpCfg {
                announce: Vec::new(),
                ..old.clone()
            },
            (None, None) => {
                // A previous lbd's file still announcing, and no section
                // now to say where BIRD is: say so.
                let include = self
                    .bgp
                    .state_dir
                    .join(format!("{}.bird.conf", self.bgp.instance));
                let text = std::fs::read_to_string(&include).unwrap_or_default();
                if !crate::bgp::announced_in(&text).is_empty() {
                    warn!(include = %include.display(), "BGP: a previous lbd's include file still announces VIPs and this configuration has no bgp: section (apply one to withdraw them)");
                }
                return;
            }
        };
        let include = cfg.include_path(&self.bgp.state_dir, &self.bgp.instance);
        if self.bgp.cfg.is_some() && include != self.bgp.include {
            // Moved by an apply: the old file (lbd's, by its first line) goes,
            // or BIRD would load both (the same protocol twice).
            let old = std::fs::read_to_string(&self.bgp.include).unwrap_or_default();
            if old.starts_with(crate::bgp::HEADER) {
                if let Err(e) = std::fs::remove_file(&self.bgp.include) {
                    warn!(
                        "BGP: removing the previous include {}: {e}",
                        self.bgp.include.display()
                    );
                }
            }
        }
        self.bgp.include = include;
        let unsynced: Vec<String> = self
            .director
            .inputs()
            .table
            .services
            .values()
            .filter(|s| s.spec.scheduler != crate::model::Scheduler::Mh)
            .map(|s| s.spec.addr.to_string())
            .collect();
        if !cfg.announce.is_empty() && !unsynced.is_empty() && self.base.sync.is_none() {
            warn!(
                services = unsynced.join(","),
                "BGP without connection sync: flows of these non-mh services that ECMP moves to another director (one failing, joining or drained) are reset; add a sync: section"
            );
        }
        if self.bgp.announced_before.is_none() {
            let text = std::fs::read_to_string(&self.bgp.include).unwrap_or_default();
            self.bgp.announced_before = Some(crate::bgp::announced_in(&text));
        }
        self.bgp.cfg = Some(cfg);
        self.track_bgp();
    }

    /// Every configured VIP: announced, or why not.
    fn bgp_decisions(&self) -> Decisions {
        let Some(cfg) = &self.bgp.cfg else {
            return Decisions::new();
        };
        let attached = self.attached.is_some();
        let hold =
            self.bgp.started.elapsed().as_secs_f64() < cfg.join_hold && self.syncd.backup_running();
        cfg.announce
            .iter()
            .map(|a| {
                let (services, quorum_lost) = self.director.quorum_counts(&[a.address]);
                let facts = VipFacts {
                    services,
                    quorum_lost,
                    standby: self.ha.standby.contains(&a.address),
                    drained: self.bgp.drained.director
                        || self.bgp.drained.vips.contains(&a.address),
                    joining: hold
                        && !self
                            .bgp
                            .announced_before
                            .as_ref()
                            .is_some_and(|b| b.contains(&a.address)),
                };
                let why = decide(cfg.quorum, attached, self.neighbours.link_up, &facts);
                (a.address, why)
            })
            .collect()
    }

    /// Tells BIRD's task of changed decisions (started with the first,
    /// once the program is attached). Returns the decisions' number.
    pub(super) fn track_bgp(&mut self) -> u64 {
        let Some(cfg) = self.bgp.cfg.clone() else {
            return self.bgp.gen;
        };
        if self.attached.is_none() {
            return self.bgp.gen;
        }
        let decisions = self.bgp_decisions();
        let include = self.bgp.include.clone();
        let before = self.bgp.handle.as_ref().map(|h| h.want());
        if before
            .as_ref()
            .is_some_and(|w| w.decisions == decisions && w.cfg == cfg && w.include == include)
        {
            return self.bgp.gen;
        }
        for (a, why) in &decisions {
            let was = before.as_ref().and_then(|w| w.decisions.get(a));
            if was != Some(why) {
                match why {
                    None => info!(vip = %a, "BGP: announcing"),
                    Some(w) => info!(vip = %a, "BGP: withdrawing: {w}"),
                }
            }
        }
        self.bgp.gen += 1;
        let want = Want {
            gen: self.bgp.gen,
            cfg,
            include,
            decisions,
        };
        match &self.bgp.handle {
            Some(h) => h.send(want),
            None => self.bgp.handle = Some(Handle::spawn(want)),
        }
        self.bgp.gen
    }

    pub(super) fn bgp_view(&self) -> Option<BgpView> {
        let cfg = self.bgp.cfg.as_ref()?;
        let (want, status) = match &self.bgp.handle {
            Some(h) => (Some(h.want()), h.status.borrow().clone()),
            None => (None, Status::default()),
        };
        Some(build_view(
            cfg,
            &self.bgp.include,
            self.bgp.drained.director,
            want.as_ref(),
            &status,
        ))
    }

    /// `lbadm bgp [drain|resume] [VIP]`: the change is made and recorded
    /// now; the answer (once BIRD has taken it, or after 5 s with the
    /// error shown) is awaited off the daemon's loop.
    pub(super) fn bgp_request(
        &mut self,
        cmd: BgpCommand,
        vip: Option<IpAddr>,
    ) -> Result<impl std::future::Future<Output = BgpView> + Send + 'static, String> {
        let Some(cfg) = self.bgp.cfg.clone() else {
            return Err("no bgp: section is configured".into());
        };
        if let Some(v) = vip {
            if !cfg.announce.iter().any(|a| a.address == v) {
                return Err(format!("{v} is not among bgp.announce"));
            }
        }
        let before = self.bgp.drained.clone();
        let d = &mut self.bgp.drained;
        match (cmd, vip) {
            (BgpCommand::List, _) => {}
            (BgpCommand::Drain, None) => d.director = true,
            (BgpCommand::Drain, Some(v)) => {
                d.vips.insert(v);
            }
            (BgpCommand::Resume, None) => *d = Drained::default(),
            (BgpCommand::Resume, Some(v)) => {
                if d.director {
                    return Err(format!(
                        "the whole director is drained: `lbadm bgp resume` first ({v} alone cannot be resumed)"
                    ));
                }
                d.vips.remove(&v);
            }
        }
        if cmd != BgpCommand::List {
            if let Err(e) = self.bgp.save_drained() {
                self.bgp.drained = before;
                return Err(format!("{e}; nothing changed"));
            }
            info!(?vip, "BGP: {cmd:?} asked");
        }
        let gen = self.track_bgp();
        let waiter = self.bgp.handle.as_ref().map(|h| h.waiter(gen));
        let (include, director) = (self.bgp.include.clone(), self.bgp.drained.director);
        let within = if cmd == BgpCommand::List {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        };
        Ok(async move {
            match waiter {
                Some(w) => {
                    let (want, status) = w.wait(within).await;
                    build_view(&cfg, &include, director, Some(&want), &status)
                }
                None => build_view(&cfg, &include, director, None, &Status::default()),
            }
        })
    }

    /// lbd stopping: first what VRRP's stop changed (a hand-over stands
    /// VIPs by: they are withdrawn). The rest stays announced (the pinned
    /// program keeps forwarding; a restart follows) unless `on_stop:
    /// withdraw` or the system is shutting down; then every VIP is
    /// withdrawn. Either way lbd waits (up to 5 s) for BIRD to take it.
    pub(super) async fn bgp_stop(&mut self) {
        let Some(cfg) = self.bgp.cfg.clone() else {
            return;
        };
        let gen = self.track_bgp();
        if let Some(h) = &self.bgp.handle {
            h.applied(gen, Duration::from_secs(5)).await;
        }
        if cfg.on_stop != StopRule::Withdraw && !super::ha::system_stopping() {
            info!("lbd stopping: BGP announcements kept (the program keeps forwarding)");
            return;
        }
        let Some(h) = &self.bgp.handle else {
            return;
        };
        let mut want = h.want();
        for why in want.decisions.values_mut() {
            *why = Some("lbd stopped".into());
        }
        self.bgp.gen += 1;
        want.gen = self.bgp.gen;
        h.send(want);
        if h.applied(self.bgp.gen, Duration::from_secs(5)).await {
            info!("lbd stopping: every VIP withdrawn from BGP");
        } else {
            warn!("lbd stopping: BIRD did not take the withdrawal in 5 s");
        }
    }
}

/// What `lbadm bgp` shows: each configured VIP with the decision BIRD was
/// last asked to follow.
fn build_view(
    cfg: &BgpCfg,
    include: &Path,
    drained: bool,
    want: Option<&Want>,
    status: &Status,
) -> BgpView {
    let decisions = want.map(|w| w.decisions.clone()).unwrap_or_default();
    BgpView {
        speaker: "bird".into(),
        include: include.to_path_buf(),
        drained,
        vips: cfg
            .announce
            .iter()
            .map(|a| {
                let why = decisions
                    .get(&a.address)
                    .cloned()
                    .unwrap_or_else(|| Some("not decided yet".into()));
                VipView {
                    address: a.address,
                    announced: why.is_none(),
                    reason: why,
                }
            })
            .collect(),
        in_effect: want.is_some_and(|w| status.applied_gen >= w.gen),
        error: status.error.clone(),
        reloads: status.reloads,
        sessions: status.sessions.clone(),
    }
}
