//! The daemon's event loop: one task owns the [`Director`] (and so every map
//! handle) and serves control requests, neighbour refreshes, connection-table
//! sweeps and signals in turn.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    control::{self, Request, Response, MAX_REQUEST},
    director::Director,
    health::{self, CheckSpec, HealthEvent},
    model::{ServiceAddr, Table},
    neigh::Resolver,
};

pub struct Daemon {
    pub director: Director,
    pub resolver: Resolver,
    pub config_path: Option<PathBuf>,
    /// Health checks the configuration declares.
    pub checks: Vec<(ServiceAddr, IpAddr, CheckSpec)>,
    /// The configuration last applied (interface, mode and limits for
    /// `lbadm export`).
    pub base: Config,
}

type CheckKey = (ServiceAddr, IpAddr);

/// The running check tasks, kept in step with the table and the config.
struct Checker {
    tasks: HashMap<CheckKey, (CheckSpec, JoinHandle<()>)>,
    events: mpsc::Sender<HealthEvent>,
}

impl Checker {
    /// Starts checks for real servers present in `table`, stops the others
    /// (and the ones whose spec changed, which restart).
    fn reconcile(&mut self, wanted: &[(ServiceAddr, IpAddr, CheckSpec)], director: &mut Director) {
        let table = &director.table;
        let want: HashMap<CheckKey, &CheckSpec> = wanted
            .iter()
            .filter(|(s, r, _)| {
                table
                    .services
                    .get(s)
                    .is_some_and(|svc| svc.reals.keys().any(|(a, _)| a == r))
            })
            .map(|(s, r, c)| ((*s, *r), c))
            .collect();
        self.tasks.retain(|k, (spec, handle)| {
            let keep = want.get(k).is_some_and(|w| *w == spec);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (k, spec) in want {
            if !self.tasks.contains_key(&k) {
                // Warm-up: a stable phase per check spreads thousands of
                // checks over the first interval instead of one burst.
                let phase = {
                    use std::hash::{Hash, Hasher};
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    k.hash(&mut hasher);
                    (hasher.finish() % 1000) as f64 / 1000.0
                };
                let h = health::spawn(spec.clone(), k.0, k.1, phase, self.events.clone());
                self.tasks.insert(k, (spec.clone(), h));
            }
        }
        let running: std::collections::HashSet<CheckKey> = self.tasks.keys().copied().collect();
        if let Err(e) = director.retain_health(|s, r| running.contains(&(*s, *r))) {
            error!("applying health state: {e}");
        }
    }
}

type Job = (Request, oneshot::Sender<Response>);

/// One table-editing request (the ones a batch may hold) applied to `t`.
pub fn edit_table(t: &mut Table, req: Request) -> Result<(), String> {
    let r = match req {
        Request::AddService { service } => t.add_service(service),
        Request::EditService { service } => t.edit_service(service),
        Request::DelService { service } => t.del_service(&service),
        Request::Clear => {
            t.clear();
            Ok(())
        }
        Request::AddReal { service, real } => t.add_real(&service, real),
        Request::EditReal { service, real } => t.edit_real(&service, real),
        Request::DelReal { service, address } => t.del_real(&service, address),
        Request::SetGroup { fwmark, group } => t.set_group(fwmark, group),
        Request::DelGroup { fwmark } => t.del_group(fwmark),
        other => return Err(format!("{other:?} cannot be part of a batch")),
    };
    r.map_err(|e| e.to_string())
}

/// Applies one control request to the director.
pub fn handle(director: &mut Director, req: Request) -> Response {
    let mut t: Table = director.table.clone();
    let r = match req {
        Request::List => {
            return Response::Listing {
                listing: director.listing(),
            }
        }
        Request::ListConns { limit } => {
            return Response::Conns {
                conns: director.connections(limit.min(1_000_000)),
            }
        }
        Request::SetTimeouts { tcp, tcpfin, udp } => {
            director.set_timeouts(tcp, tcpfin, udp);
            return Response::Ok;
        }
        Request::GetTimeouts => {
            let (tcp, tcpfin, udp) = director.get_timeouts();
            return Response::Timeouts { tcp, tcpfin, udp };
        }
        Request::Counters => {
            return Response::Counters {
                counters: director.counters(),
            }
        }
        Request::Version => {
            return Response::Version {
                daemon: env!("CARGO_PKG_VERSION").to_string(),
                protocol: control::PROTOCOL_VERSION,
            }
        }
        Request::Zero { service } => {
            return match director.zero(service.as_ref()) {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        Request::Batch { requests } => {
            // ipvsadm -R: every line against a scratch table; the first
            // failure names its line and nothing is applied.
            let mut r = Ok(());
            for (i, req) in requests.into_iter().enumerate() {
                if let Err(e) = edit_table(&mut t, req) {
                    r = Err(format!("line {}: {e}", i + 1));
                    break;
                }
            }
            if let Err(message) = r {
                return Response::Error { message };
            }
            Ok(())
        }
        Request::Apply { .. } | Request::Export => {
            return Response::Error {
                message: "apply/export are served by the daemon loop".into(),
            }
        }
        edit => edit_table(&mut t, edit),
    };
    if let Err(message) = r {
        return Response::Error { message };
    }
    match director.apply(t) {
        Ok(()) => Response::Ok,
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    }
}

async fn serve_conn(stream: UnixStream, jobs: mpsc::Sender<Job>) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r.take(MAX_REQUEST as u64 + 2));
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let resp = Response::Error {
                    message: format!("unreadable request: {e}"),
                };
                let _ = write_resp(&mut w, &resp).await;
                return;
            }
        }
        let too_long = !line.ends_with('\n') && line.len() > MAX_REQUEST;
        let resp = match control::decode_request(line.trim_end()) {
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if jobs.send((req, tx)).await.is_err() {
                    return;
                }
                rx.await.unwrap_or(Response::Error {
                    message: "daemon is shutting down".into(),
                })
            }
            Err(message) => Response::Error { message },
        };
        let failed = matches!(resp, Response::Error { .. });
        if write_resp(&mut w, &resp).await.is_err() || too_long || (failed && !line.ends_with('\n'))
        {
            return;
        }
        reader.get_mut().set_limit(MAX_REQUEST as u64 + 2);
    }
}

async fn write_resp(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    resp: &Response,
) -> std::io::Result<()> {
    let mut s = serde_json::to_string(resp)
        .unwrap_or_else(|e| format!(r#"{{"result":"error","message":"{e}"}}"#));
    s.push('\n');
    w.write_all(s.as_bytes()).await
}

/// Creates the control socket: parent directory 0700, socket 0600.
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ok();
    }
    if path.exists() {
        // A stale socket from a previous run; refuse if someone is listening.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by a running lbd", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

impl Daemon {
    async fn refresh_neighbours(&mut self) {
        let wanted = self.director.wanted_addresses();
        if wanted.is_empty() {
            return;
        }
        match self.resolver.resolve(&wanted).await {
            Ok(updates) => {
                if let Err(e) = self.director.update_macs(&updates) {
                    error!("applying resolved MACs: {e}");
                }
            }
            Err(e) => warn!("neighbour table dump failed: {e}"),
        }
    }

    fn reload(&mut self) {
        let Some(p) = self.config_path.clone() else {
            warn!("SIGHUP without --config: nothing to reload");
            return;
        };
        let file = p.display().to_string();
        let res = Config::load(&p)
            .map_err(anyhow::Error::from)
            .and_then(|c| self.apply_config(c, &file, false));
        match res {
            Ok(changes) => {
                info!(config = %p.display(), changes = changes.len(), "configuration reloaded")
            }
            Err(e) => error!("reload refused, running state unchanged: {e:#}"),
        }
    }

    /// Applies a whole (validated) configuration: the table's difference,
    /// health policies, checks, timeouts and expire_nodest_conn, all or
    /// nothing. Limits, interface and mode need a restart and must match.
    pub fn apply_config(&mut self, c: Config, file: &str, dry_run: bool) -> Result<Vec<String>> {
        let table = c.table(file)?;
        if c.limits != self.base.limits {
            anyhow::bail!(
                "{file}: limits differ from the running ones: they need a restart of lbd"
            );
        }
        let mut changes = crate::apply::diff(&self.director.table, &table);
        let t = c.timeouts.unwrap_or(crate::config::TimeoutsCfg {
            tcp: 0,
            tcpfin: 0,
            udp: 0,
        });
        if c.policies() != *self.director.policies() {
            changes.push("~ health policies (on_failure, sorry server, quorum)".into());
        }
        if crate::apply::sorted_checks(c.checks())
            != crate::apply::sorted_checks(self.checks.clone())
        {
            changes.push("~ health checks".into());
        }
        if c.expire_nodest_conn != self.director.expire_nodest() {
            changes.push(format!("~ expire_nodest_conn -> {}", c.expire_nodest_conn));
        }
        if dry_run {
            return Ok(changes);
        }
        let old = self.director.policies().clone();
        self.director.set_policies(c.policies());
        if let Err(e) = self.director.apply(table) {
            self.director.set_policies(old);
            return Err(e.into());
        }
        self.director.set_timeouts(t.tcp, t.tcpfin, t.udp);
        self.director.set_expire_nodest(c.expire_nodest_conn)?;
        self.checks = c.checks();
        self.base = c;
        Ok(changes)
    }

    /// `lbadm export`: the running state as YAML.
    pub fn export(&self) -> Result<String> {
        let c = crate::apply::export(
            &self.base,
            &self.director.table,
            self.director.policies(),
            &self.checks,
            self.director.get_timeouts(),
            self.director.expire_nodest(),
        );
        let head = "# lbd configuration exported by `lbadm export` (the running state)\n";
        Ok(format!("{head}{}", serde_yaml::to_string(&c)?))
    }

    /// Control requests that need the whole daemon (config, checks).
    fn serve(&mut self, req: Request) -> Response {
        let r = match req {
            Request::Apply {
                yaml,
                file,
                dry_run,
            } => Config::parse(&yaml, &file)
                .map_err(anyhow::Error::from)
                .and_then(|c| self.apply_config(c, &file, dry_run))
                .map(|changes| Response::Applied { changes }),
            Request::Export => self.export().map(|yaml| Response::Export { yaml }),
            other => return handle(&mut self.director, other),
        };
        r.unwrap_or_else(|e| Response::Error {
            message: format!("{e:#}"),
        })
    }

    fn health_event(&mut self, ev: HealthEvent) {
        let what = if ev.up { "UP" } else { "DOWN" };
        let weight = match ev.weight {
            None => String::new(),
            Some(health::WeightChange::Absolute(w)) => format!(", weight {w}"),
            Some(health::WeightChange::Percent(p)) => format!(", weight {p}%"),
        };
        match self
            .director
            .set_health(ev.service, ev.real, ev.up, ev.weight, ev.reason.clone())
        {
            Ok(true) => info!(
                service = %ev.service,
                real = %ev.real,
                "real server {what}{weight}: {}",
                ev.reason
            ),
            Ok(false) => {}
            Err(e) => error!("applying a health transition: {e}"),
        }
    }

    /// Runs until SIGINT/SIGTERM. The XDP program and its maps stay pinned
    /// after exit, so forwarding continues while the daemon is down.
    pub async fn run(mut self, listener: UnixListener) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<Job>(64);
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(serve_conn(s, tx.clone()));
                    }
                    Err(e) => {
                        error!("control socket accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (htx, mut hrx) = mpsc::channel::<HealthEvent>(1024);
        let mut checker = Checker {
            tasks: HashMap::new(),
            events: htx,
        };
        checker.reconcile(&self.checks, &mut self.director);
        let mut neigh_tick = tokio::time::interval(Duration::from_secs(1));
        // The sweep collects expired entries and re-bases the dynamic
        // schedulers' connection counts: every 2 s (every 10 s beyond
        // 200,000 entries, where one walk costs about a second).
        let mut sweep_tick = tokio::time::interval(Duration::from_secs(2));
        let mut sweeps = 0u64;
        let mut big_table = false;
        let mut resolved_rounds = 0u32;
        loop {
            tokio::select! {
                Some((req, reply)) = rx.recv() => {
                    let changes = !matches!(
                        req,
                        Request::List
                            | Request::ListConns { .. }
                            | Request::Counters
                            | Request::Version
                            | Request::GetTimeouts
                            | Request::SetTimeouts { .. }
                            | Request::Zero { .. }
                            | Request::Export
                    );
                    let resp = self.serve(req);
                    let _ = reply.send(resp);
                    if changes {
                        // New real servers need their MACs now, not at the next tick.
                        self.refresh_neighbours().await;
                        checker.reconcile(&self.checks, &mut self.director);
                    }
                }
                Some(ev) = hrx.recv() => self.health_event(ev),
                _ = neigh_tick.tick() => {
                    // Every second while something is unresolved, else every 5 s.
                    let wanted = self.director.wanted_addresses();
                    let all = wanted.iter().all(|a| self.director.mac(a).is_some());
                    resolved_rounds = if all { resolved_rounds + 1 } else { 0 };
                    if !all || resolved_rounds.is_multiple_of(5) {
                        self.refresh_neighbours().await;
                    }
                }
                _ = sweep_tick.tick() => {
                    self.director.sample_rates();
                    sweeps += 1;
                    if !big_table || sweeps.is_multiple_of(5) {
                        let counts = self.director.sweep(true);
                        let live: u64 = counts.values().map(|c| c.active + c.inactive + c.persistent).sum();
                        big_table = live > 200_000;
                    }
                }
                _ = hup.recv() => {
                    self.reload();
                    checker.reconcile(&self.checks, &mut self.director);
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        info!("lbd stopping; the XDP program keeps forwarding from the pinned link");
        Ok(())
    }
}
