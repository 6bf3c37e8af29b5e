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
    bird::{Handle, Want},
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
    pub fn new(state_dir: &Path, instance: &str) -> Bgp {
        let drain_file = state_dir.join(format!("{instance}.bgp.json"));
        let drained = std::fs::read(&drain_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
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

    fn save_drained(&self) {
        let r = serde_json::to_vec(&self.drained)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&self.drain_file, b));
        if let Err(e) = r {
            warn!(
                "BGP: recording the drain in {}: {e}",
                self.drain_file.display()
            );
        }
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
            (None, None) => return,
        };
        self.bgp.include = cfg.include_path(&self.bgp.state_dir, &self.bgp.instance);
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
        let hold = cfg.join_hold - self.bgp.started.elapsed().as_secs_f64();
        let hold = (hold > 0.0 && self.syncd.backup_running()).then_some(hold);
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
                    joining: hold.filter(|_| {
                        !self
                            .bgp
                            .announced_before
                            .as_ref()
                            .is_some_and(|b| b.contains(&a.address))
                    }),
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
        let same = self.bgp.handle.as_ref().is_some_and(|h| {
            let w = h.want();
            w.decisions == decisions && w.cfg == cfg && w.include == include
        });
        if same {
            return self.bgp.gen;
        }
        for (a, why) in &decisions {
            let was = self
                .bgp
                .handle
                .as_ref()
                .map(|h| h.want().decisions.get(a).cloned());
            if was != Some(Some(why.clone())) {
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
        let (status, want) = match &self.bgp.handle {
            Some(h) => (h.status.borrow().clone(), Some(h.want())),
            None => (Default::default(), None),
        };
        let decisions = want
            .as_ref()
            .map(|w| w.decisions.clone())
            .unwrap_or_default();
        Some(BgpView {
            speaker: "bird".into(),
            include: self.bgp.include.clone(),
            drained: self.bgp.drained.director,
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
            error: status.error,
            reloads: status.reloads,
            sessions: status.sessions,
        })
    }

    /// `lbadm bgp [drain|resume] [VIP]`: answers once BIRD has taken the
    /// change (or after 5 s, with the error shown).
    pub(super) async fn bgp_command(
        &mut self,
        cmd: BgpCommand,
        vip: Option<IpAddr>,
    ) -> Result<BgpView, String> {
        let Some(cfg) = &self.bgp.cfg else {
            return Err("no bgp: section is configured".into());
        };
        if let Some(v) = vip {
            if !cfg.announce.iter().any(|a| a.address == v) {
                return Err(format!("{v} is not among bgp.announce"));
            }
        }
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
            info!(?vip, "BGP: {cmd:?} asked");
            self.bgp.save_drained();
            let gen = self.track_bgp();
            if let Some(h) = &self.bgp.handle {
                h.applied(gen, Duration::from_secs(5)).await;
            }
        }
        self.bgp_view()
            .ok_or_else(|| "no bgp: section is configured".into())
    }

    /// lbd stopping: the announcements stay (the pinned program keeps
    /// forwarding; a restart follows) unless `on_stop: withdraw` or the
    /// system is shutting down; then every VIP is withdrawn and lbd waits
    /// (up to 5 s) for BIRD to take it.
    pub(super) async fn bgp_stop(&mut self) {
        let Some(cfg) = self.bgp.cfg.clone() else {
            return;
        };
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
