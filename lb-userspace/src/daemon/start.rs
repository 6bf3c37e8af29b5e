//! Starting lbd: everything is validated before anything is touched; the
//! pinned maps are loaded (or created) and recovered; the configuration goes
//! through the same path as a reload; then the program is attached (or
//! swapped into the pinned link).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{neigh::Resolver, Daemon};
use crate::{
    config::Config,
    dataplane::{instance_dir, pinned_limits, AttachMode, Dataplane, InstanceLock},
    director::Director,
    health::{HealthEvent, Supervisor},
};

/// How lbd was asked to run.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub interface: String,
    pub instance: String,
    pub bpffs: PathBuf,
    pub mode: AttachMode,
    pub config_path: Option<PathBuf>,
    /// Where the running state is kept between restarts (`--state-dir`).
    pub state_dir: PathBuf,
}

impl StartOptions {
    /// The instance's state file.
    pub fn state_file(&self) -> PathBuf {
        state_file(&self.state_dir, &self.instance)
    }
}

/// Where instance `instance` keeps its running state in `state_dir`.
pub fn state_file(state_dir: &std::path::Path, instance: &str) -> PathBuf {
    state_dir.join(format!("{instance}.state.yaml"))
}

/// What lbd serves at start.
#[derive(Debug)]
pub enum Source {
    /// `--config FILE`: the file is the truth.
    File(PathBuf, Config),
    /// No `--config`: the running state saved by the previous daemon.
    Saved(PathBuf, Config),
    /// No `--config` and no saved state: the table the pinned maps serve
    /// (if any), with the limits they were made with.
    Pins,
}

impl Source {
    /// The configuration lbd starts from (none for the pins).
    pub fn config(&self) -> Option<&Config> {
        match self {
            Source::File(_, c) | Source::Saved(_, c) => Some(c),
            Source::Pins => None,
        }
    }
}

#[cfg(doc)]
use crate::dataplane::lock_instance;

/// Loads, recovers, applies what `source` says and attaches, holding the
/// instance's `lock` (see [`lock_instance`]). The returned daemon is ready
/// to `run`.
pub async fn start(opts: &StartOptions, source: Source, lock: InstanceLock) -> Result<Daemon> {
    let dir = instance_dir(&opts.bpffs, &opts.instance);
    let (mut config, file) = match source {
        Source::File(p, c) | Source::Saved(p, c) => (c, p.display().to_string()),
        Source::Pins => (
            Config {
                limits: pinned_limits(&dir).unwrap_or_default(),
                ..Config::default()
            },
            String::new(),
        ),
    };
    // Validated whole before anything is touched.
    config.table(&file)?;
    let resolver = Resolver::new(&opts.interface)
        .await
        .with_context(|| format!("interface {}", opts.interface))?;
    let own_mac = resolver.own_mac().await?;
    // Subscribed before the first dump, so that no change falls in between.
    let neigh_events = resolver
        .watch()
        .map_err(|e| {
            warn!("neighbour notifications unavailable, dumping the table every second: {e}")
        })
        .ok();
    let neighbours =
        super::neighbours::Neighbours::new(resolver.link_up().await?, std::time::Instant::now());
    let dp = Dataplane::load(&dir, &config.limits)
        .with_context(|| format!("loading the XDP program (pins in {})", dir.display()))?;
    let mut director = Director::recover(dp)?;
    let syncd = super::syncd::Syncd::new(director.maps_mut().take_sync());
    if file.is_empty() {
        let table = director.table_in_maps();
        if !table.services.is_empty() {
            warn!(
                services = table.services.len(),
                "no --config and no saved state: serving the table read back from the pinned maps (weights in force; health checks and policies are not in the maps)"
            );
        }
        let inp = director.inputs();
        config = crate::config::export(
            &config,
            &crate::config::Running {
                table: &table,
                policies: &Default::default(),
                checks: &[],
                timeouts: director.get_timeouts(),
                expire_nodest_conn: inp.expire_nodest,
                sloppy_tcp: inp.sloppy_tcp,
                vlans: &inp.vlans,
                joinable: &Default::default(),
            },
        );
    }
    let joined_file =
        crate::join::Joined::file(config.join.as_ref(), &opts.state_dir, &opts.instance);
    // A damaged file is refused (fix or remove it): starting without the
    // joined servers would drop them from the table and overwrite it.
    let joined = crate::join::Joined::load(&joined_file)
        .context("the joined real servers' file (fix it, or remove it to forget them)")?;
    let (events_tx, health_events) = mpsc::channel::<HealthEvent>(1024);
    // The VRRP routers' VIPs stand by from the first commit, unless a
    // router resumes as master after a restart.
    let ha = super::ha::Ha::new(
        &config.vrrp,
        &opts.interface,
        crate::vrrp::record_file(&opts.state_dir, &opts.instance),
    )
    .await;
    let mut daemon = Daemon {
        director,
        resolver,
        neigh_events,
        neighbours,
        mode: opts.mode,
        attached: None,
        reloads: 0,
        own_mac,
        config_path: opts.config_path.clone(),
        state_file: opts.state_file(),
        base: config.clone(),
        checks: Vec::new(),
        supervisor: Supervisor::new(events_tx),
        health_events,
        ha,
        syncd,
        bgp: super::bgp::Bgp::new(&opts.state_dir, &opts.instance),
        counter_history: Default::default(),
        history: Default::default(),
        joined,
        joined_file,
        _lock: lock,
    };
    daemon
        .apply_config(config, &file, false, None)
        .await
        .context("applying the configuration")?;
    // What the start put in force is all there is: recent changes start
    // empty.
    daemon.history.clear();
    let attached = daemon
        .director
        .maps_mut()
        .attach(&opts.interface, opts.mode)?;
    daemon.attached = Some(attached);
    // This build's program is the one attached now: mh services may get
    // their large Maglev tables (held back while an older program could
    // still be reading the maps).
    if let Err(e) = daemon.director.change(|i| i.small_maglev_only = false) {
        warn!("large Maglev tables are not in effect: {e}");
    }
    if let Some(s) = daemon.base.sync.clone() {
        for role in s.roles.clone() {
            daemon
                .sync_start(role, s.clone())
                .await
                .with_context(|| format!("starting the sync {} daemon", role.name()))?;
        }
    }
    let vrrp = daemon.base.vrrp.clone();
    daemon
        .ha
        .start(&vrrp, &opts.interface)
        .await
        .context("starting VRRP")?;
    // Announced once the program forwards.
    daemon.bgp_configure(daemon.base.bgp.clone());
    info!(
        iface = opts.interface,
        instance = opts.instance,
        ?attached,
        "lbd running"
    );
    Ok(daemon)
}
