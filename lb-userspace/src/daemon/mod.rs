//! The daemon: one task owns the [`Director`] (and so every map handle) and
//! serves control requests, health events, neighbour refreshes,
//! connection-table sweeps and signals in turn.
//!
//! Every change to what is served goes through [`Daemon::change`]: lbd's
//! start, `lbadm apply`, SIGHUP, ipvsadm-style edits and `-R` batches. Health
//! transitions and MAC changes go through the director's same plan and
//! commit.

mod bgp;
mod diagnose;
mod dispatch;
mod ha;
mod joins;
pub mod neigh;
mod neighbours;
mod notify;
mod socket;
mod start;
mod syncd;

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use tokio::{
    net::UnixListener,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{error, info, warn};

pub use self::{
    socket::{bind_socket, parse_off_loop, Job},
    start::{start, state_file, Source, StartOptions},
};
use crate::{
    config::{Config, ConfigError},
    director::{ApplyError, Director},
    health::{CheckSpec, HealthEvent, ServicePolicy, Supervisor, Verdict, WeightChange},
    model::{ServiceAddr, Table},
};
use neigh::{NeighEvent, Resolver};
use neighbours::Neighbours;

/// What the operator wants served: the table and everything around it.
#[derive(Debug, Clone)]
pub struct Desired {
    pub table: Table,
    pub policies: std::collections::HashMap<ServiceAddr, ServicePolicy>,
    pub checks: Vec<(ServiceAddr, IpAddr, CheckSpec)>,
    pub expire_nodest: bool,
    pub sloppy_tcp: bool,
    pub vlans: std::collections::BTreeSet<u16>,
}

impl Desired {
    fn of(c: &Config, table: Table) -> Desired {
        Desired {
            table,
            policies: c.policies(),
            checks: c.checks(),
            expire_nodest: c.expire_nodest_conn,
            sloppy_tcp: c.sloppy_tcp,
            vlans: c.vlans.iter().copied().collect(),
        }
    }
}

pub struct Daemon {
    pub director: Director,
    resolver: Resolver,
    /// The kernel's neighbour and link notifications for the NIC (None once
    /// the subscription failed: the periodic dump then runs every second).
    neigh_events: Option<mpsc::UnboundedReceiver<NeighEvent>>,
    neighbours: Neighbours,
    /// The XDP attach mode lbd was started with, and how it attached.
    mode: crate::dataplane::AttachMode,
    attached: Option<crate::dataplane::Attached>,
    /// SIGHUPs so far (their readings are numbered).
    reloads: u64,
    /// Source MAC of forwarded frames (the NIC's).
    own_mac: [u8; 6],
    config_path: Option<PathBuf>,
    /// Where the running state is kept for a restart without `--config`.
    state_file: PathBuf,
    /// The configuration last applied (interface, mode and limits for
    /// `lbadm export`).
    base: Config,
    /// Health checks the configuration declares.
    checks: Vec<(ServiceAddr, IpAddr, CheckSpec)>,
    supervisor: Supervisor,
    health_events: mpsc::Receiver<HealthEvent>,
    /// VRRP routers and the data plane's standby VIPs.
    ha: ha::Ha,
    /// Connection synchronisation.
    syncd: syncd::Syncd,
    /// VIPs announced through BIRD.
    bgp: bgp::Bgp,
    /// Real servers that joined through the join API, and the file that
    /// keeps them (the services that take joins are `base`'s).
    joined: crate::join::Joined,
    joined_file: PathBuf,
    /// The data plane's counters at each sweep tick over the last minute
    /// (for `lbadm diagnose`: what moves now).
    counter_history: std::collections::VecDeque<(std::time::Instant, Vec<(String, u64)>)>,
    /// The last changes applied (the console shows them; lbd's log keeps
    /// them all).
    history: std::collections::VecDeque<crate::control::ChangeRecord>,
    /// Held for the daemon's life: one lbd per instance.
    _lock: crate::dataplane::InstanceLock,
}

impl Daemon {
    /// The one path that changes what is served: the director's inputs
    /// from `next` (with the verdicts of checks that keep running and the
    /// MACs of newcomers looked up first), planned and committed all or
    /// nothing; then the checks follow. On error nothing changed.
    async fn change(&mut self, next: Desired) -> Result<usize, ApplyError> {
        let wanted = Supervisor::wanted(&next.checks, &next.table);
        let mut inputs = self.director.inputs().clone();
        inputs.table = next.table;
        inputs.policies = next.policies;
        inputs.expire_nodest = next.expire_nodest;
        inputs.sloppy_tcp = next.sloppy_tcp;
        inputs.vlans = next.vlans;
        inputs.standby = self.ha.standby.clone();
        inputs.sync_master = self.syncd.master_running();
        inputs.director_mac = self.own_mac;
        inputs.small_maglev_only = self.attached.is_none();
        inputs.health = self.supervisor.verdicts_for(&wanted);
        // The neighbour table's word on every real server (newcomers, and
        // MACs recovered from the pins at start) goes into the same commit.
        let wanted_macs = inputs.addresses();
        let probe = self.neighbours.link_up;
        if let Ok(seen) = self.resolver.resolve(&wanted_macs, probe).await {
            let now = std::time::Instant::now();
            for (a, m) in self.neighbours.fold(&inputs.macs, &wanted_macs, &seen, now) {
                match m {
                    Some(mac) => inputs.macs.insert(a, mac),
                    None => inputs.macs.remove(&a),
                };
            }
        }
        let before = self.director.inputs().macs.clone();
        let n = self.director.apply(inputs)?;
        self.log_macs(&before);
        self.checks = next.checks;
        self.supervisor.reconcile(&wanted);
        Ok(n)
    }

    /// Records the running state (as `lbadm export` prints it) for a restart
    /// without `--config`: written whole to a new file, then renamed over
    /// the old one.
    fn save_state(&self) {
        let r = self.export().and_then(|yaml| {
            crate::files::write_whole(&self.state_file, yaml.as_bytes())?;
            Ok(())
        });
        if let Err(e) = r {
            warn!(file = %self.state_file.display(), "saving the running state: {e:#}");
        }
    }

    /// What is served now, to be edited.
    fn desired(&self) -> Desired {
        let inp = self.director.inputs();
        Desired {
            table: inp.table.clone(),
            policies: inp.policies.clone(),
            checks: self.checks.clone(),
            expire_nodest: inp.expire_nodest,
            sloppy_tcp: inp.sloppy_tcp,
            vlans: inp.vlans.clone(),
        }
    }

    /// Commits the verdicts the checks reported that are not in force yet
    /// (a commit that failed is retried here).
    fn sync_health(&mut self) {
        let behind: Vec<_> = self
            .supervisor
            .observed()
            .iter()
            .filter(|(k, v)| !v.same_effect(self.director.inputs().health.get(*k)))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for ((svc, real), v) in behind {
            match self.director.set_health(svc, real, Some(v.clone())) {
                Ok(true) => log_transition(&svc, &real, &v),
                Ok(false) => {}
                Err(e) => error!("applying a health transition (retried every second): {e}"),
            }
        }
    }

    /// A check's report: committed if it changes how the real server is
    /// served (a first "up" does not; the listing shows it from the
    /// supervisor's record).
    fn health_event(&mut self, ev: HealthEvent) {
        let Some(v) = self.supervisor.observe(&ev) else {
            return;
        };
        let key = (ev.service, ev.real);
        if v.same_effect(self.director.inputs().health.get(&key)) {
            return;
        }
        match self
            .director
            .set_health(ev.service, ev.real, Some(v.clone()))
        {
            Ok(true) => log_transition(&ev.service, &ev.real, &v),
            Ok(false) => {}
            Err(e) => error!("applying a health transition (retried every second): {e}"),
        }
    }

    /// SIGHUP: reads and parses `--config` off the loop; the result comes
    /// back through `done`, numbered: only the latest SIGHUP's is applied.
    fn reload(&mut self, done: &mpsc::Sender<Reloaded>) {
        let Some(p) = self.config_path.clone() else {
            warn!("SIGHUP without --config: nothing to reload");
            return;
        };
        self.reloads += 1;
        let (n, done) = (self.reloads, done.clone());
        tokio::task::spawn_blocking(move || {
            let _ = done.blocking_send((n, Config::load(&p)));
        });
    }

    /// Runs until SIGINT/SIGTERM, serving lbadm on `listener` and
    /// `/metrics` on `metrics`. The XDP program and its maps stay pinned
    /// after exit, so forwarding continues while the daemon is down.
    pub async fn run(
        mut self,
        listener: UnixListener,
        metrics: Option<crate::metrics::Prepared>,
        join: Option<crate::join::server::Prepared>,
    ) -> Result<()> {
        let (tx, mut jobs) = mpsc::channel::<Job>(64);
        let (reload_tx, mut reloads) = mpsc::channel::<Reloaded>(4);
        let (snapshot_tx, mut snapshots) = mpsc::channel::<crate::metrics::SnapshotRequest>(8);
        socket::serve(listener, tx.clone());
        let (join_tx, mut join_jobs) = mpsc::channel::<crate::join::server::JoinJob>(16);
        if let Some(p) = join {
            crate::join::server::serve(p, join_tx)?;
        }
        if let Some(p) = metrics {
            let addr = p.listener.local_addr()?;
            let scheme = if p.tls.is_some() { "https" } else { "http" };
            let console = self.base.console.clone().map(|c| {
                if !c.users.is_empty() && p.tls.is_none() && !addr.ip().is_loopback() {
                    warn!(
                        %addr,
                        "console: logins over plain HTTP: passwords and session cookies cross the network in clear (set metrics.tls, or listen on loopback behind a tunnel)"
                    );
                }
                info!(
                    url = %format!("{scheme}://{addr}/console"),
                    read_only = c.read_only || c.users.is_empty(),
                    "serving the web console"
                );
                crate::console::routes(c, tx.clone(), snapshot_tx.clone(), p.tls.is_some())
            });
            crate::metrics::serve(p, snapshot_tx, self.supervisor.metrics().clone(), console)?;
            info!(%addr, scheme, "serving /metrics");
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // Attached and applied (start did both): systemd may go on.
        notify::ready(self.director.table().services.len());
        let watchdog = notify::watchdog_period();
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut neigh_tick = tokio::time::interval(Duration::from_secs(1));
        // The sweep collects expired entries and re-bases the dynamic
        // schedulers' connection counts: every 2 s (every 10 s beyond
        // 200,000 entries, where one walk costs about a second).
        let mut sweep_tick = tokio::time::interval(Duration::from_secs(2));
        let mut sweeps = 0u64;
        let mut big_table = false;
        let mut quiet_rounds = 0u32;
        // The previous daemon's JUMP goes once packets in flight through its
        // program (replaced in the link at start) are surely done.
        let retire = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(retire);
        let mut retired = false;
        loop {
            tokio::select! {
                _ = &mut retire, if !retired => {
                    self.director.maps().retire_old_jumps();
                    retired = true;
                }
                Some(job) = jobs.recv() => match self.answer(job.req, job.parsed).await {
                    dispatch::Answer::Now(r) => {
                        let _ = job.reply.send(r);
                    }
                    dispatch::Answer::Later(answer) => {
                        tokio::spawn(async move {
                            let _ = job.reply.send(answer.await);
                        });
                    }
                },
                Some(job) = join_jobs.recv() => self.join_job(job).await,
                Some(scrape) = snapshots.recv() => {
                    let snapshot = self.snapshot_job();
                    tokio::spawn(async move {
                        let _ = scrape.send(snapshot.await);
                    });
                }
                Some(ev) = self.health_events.recv() => self.health_event(ev),
                Some(ev) = self.ha.events.recv() => self.vrrp_event(ev),
                Some(m) = self.syncd.incoming.recv() => self.sync_in(m).await,
                ev = recv_some(&mut self.neigh_events) => {
                    let Some(ev) = ev else {
                        warn!("neighbour notifications stopped: the neighbour table is now dumped every second");
                        self.neigh_events = None;
                        continue;
                    };
                    let mut batch = vec![ev];
                    while let Some(Ok(more)) = self.neigh_events.as_mut().map(|r| r.try_recv()) {
                        batch.push(more);
                    }
                    self.neighbour_events(batch).await;
                }
                _ = neigh_tick.tick() => {
                    self.sync_health();
                    // Notifications move MACs; this dump is the safety net:
                    // every second while something is unresolved or stale
                    // (or without notifications), else every 30 s.
                    let quiet = self.neigh_events.is_some() && !self.neighbours_unsettled();
                    quiet_rounds = if quiet { quiet_rounds + 1 } else { 0 };
                    if quiet_rounds.is_multiple_of(30) {
                        self.refresh_neighbours().await;
                    }
                }
                _ = sweep_tick.tick() => {
                    self.sample_counters();
                    self.director.heartbeat();
                    self.director.sample_rates();
                    sweeps += 1;
                    if !big_table || sweeps.is_multiple_of(5) {
                        let counts = self.director.sweep(true);
                        let live: u64 = counts.values().map(|c| c.active + c.inactive + c.persistent).sum();
                        big_table = live > 200_000;
                        self.finish_leaves().await;
                    }
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => notify::alive(),
                _ = hup.recv() => {
                    if self.config_path.is_some() {
                        notify::reloading();
                    }
                    self.reload(&reload_tx);
                }
                Some((n, loaded)) = reloads.recv() => {
                    if n != self.reloads {
                        continue; // a later SIGHUP's reading follows
                    }
                    let file = self.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                    let r = match loaded {
                        Ok(c) => self.apply_config(c, &file, false, None).await,
                        Err(e) => Err(e.into()),
                    };
                    match r {
                        // (apply_config logged what changed.)
                        Ok(_) => {}
                        Err(e) => error!("reload refused, running state unchanged: {e:#}"),
                    }
                    notify::reloaded(self.director.table().services.len());
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            self.track_quorum().await;
            self.track_bgp();
            self.sync_tick().await;
        }
        notify::stopping();
        self.vrrp_stop().await;
        self.bgp_stop().await;
        info!("lbd stopping; the XDP program keeps forwarding from the pinned link");
        Ok(())
    }
}

impl Daemon {
    /// Keeps a minute of counter samples (one per sweep tick).
    fn sample_counters(&mut self) {
        let now = std::time::Instant::now();
        self.counter_history
            .push_back((now, self.director.counters()));
        while self
            .counter_history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > COUNTER_WINDOW)
        {
            self.counter_history.pop_front();
        }
    }
}

/// How far back `lbadm diagnose` looks for counters that move.
const COUNTER_WINDOW: Duration = Duration::from_secs(60);

/// A SIGHUP's reading of the configuration, numbered.
type Reloaded = (u64, Result<Config, ConfigError>);

/// The next notification, or never if there is no subscription.
async fn recv_some(rx: &mut Option<mpsc::UnboundedReceiver<NeighEvent>>) -> Option<NeighEvent> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// One line per health transition in force, with its reason.
fn log_transition(svc: &ServiceAddr, real: &IpAddr, v: &Verdict) {
    let what = if v.up { "UP" } else { "DOWN" };
    let weight = match v.weight {
        None => String::new(),
        Some(WeightChange::Absolute(w)) => format!(", weight {w}"),
        Some(WeightChange::Percent(p)) => format!(", weight {p}%"),
    };
    info!(service = %svc, real = %real, "real server {what}{weight}: {}", v.reason);
}
