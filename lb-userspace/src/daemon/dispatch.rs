//! One dispatch for every control request.

use anyhow::Result;

use super::{Daemon, Desired};
use crate::{
    config::{self, Config, ConfigError, TimeoutsCfg},
    control::{self, edit_table, BgpAction, HealthView, Request, Response, VrrpAction},
};

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

/// Changes kept for the console, and lines kept of each.
const HISTORY: usize = 50;
const HISTORY_LINES: usize = 20;

/// The answer to a control request: now, or later from a future run off
/// the daemon loop (what reads the kernel or asks BIRD must not hold it).
/// One per request, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Answer {
    Now(Response),
    Later(futures::future::BoxFuture<'static, Response>),
}

impl Daemon {
    /// Logs a change put in force, once, in apply's words, and keeps it
    /// among the last HISTORY (what changed nothing is logged, not kept).
    fn applied(&mut self, what: String, changes: Vec<String>) {
        if changes.is_empty() {
            tracing::info!("{what}: nothing changed");
            return;
        }
        tracing::info!(changes = changes.len(), "{what}: {}", changes.join("; "));
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        let mut changes = changes;
        if changes.len() > HISTORY_LINES {
            let more = changes.len() - HISTORY_LINES;
            changes.truncate(HISTORY_LINES);
            changes.push(format!("... and {more} more (in lbd's log)"));
        }
        self.history.push_back(control::ChangeRecord {
            unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            what,
            changes,
        });
    }

    /// Answers `req` (its configuration parsed already, for an apply).
    pub(super) async fn answer(
        &mut self,
        req: Request,
        parsed: Option<Result<Config, ConfigError>>,
    ) -> Answer {
        match req {
            Request::Diagnose => {
                let findings = self.diagnose_job();
                Answer::Later(Box::pin(async move {
                    Response::Diagnosis {
                        findings: findings.await,
                    }
                }))
            }
            Request::Bgp { action, vip } => match self.bgp_job(action, vip) {
                Ok(answer) => Answer::Later(Box::pin(answer)),
                Err(e) => Answer::Now(error(e)),
            },
            req => Answer::Now(self.dispatch(req, parsed).await),
        }
    }

    /// The listing as `lbadm -L` shows it: the director's (connection
    /// counts from a walk now when `fresh`, else from the last sweep) with
    /// the checks' latest word, stale MACs, VRRP, sync and BGP.
    pub(super) fn listing(&mut self, fresh: bool) -> control::Listing {
        let mut listing = if fresh {
            self.director.listing()
        } else {
            self.director.listing_of_last_sweep()
        };
        let checked: std::collections::HashSet<_> =
            self.checks.iter().map(|(s, r, _)| (*s, *r)).collect();
        for s in &mut listing.services {
            let svc = s.spec.addr;
            for r in &mut s.reals {
                r.mac_stale = self.neighbours.stale.contains_key(&r.spec.address);
                let key = (svc, r.spec.address);
                if r.health.is_none() && checked.contains(&key) {
                    // Checked, in force as up: the latest report.
                    r.health = Some(match self.supervisor.observed().get(&key) {
                        Some(v) => HealthView {
                            up: v.up,
                            reason: v.reason.clone(),
                        },
                        None => HealthView {
                            up: true,
                            reason: "no check result yet".into(),
                        },
                    });
                }
            }
        }
        listing.vrrp = self.ha.views();
        listing.sync = self.syncd.views();
        listing.bgp = self.bgp_view();
        listing
    }

    /// What one `/metrics` scrape shows (no walk of the connection table):
    /// the daemon's part taken now, the kernel's read by the future.
    pub(super) fn snapshot_job(
        &mut self,
    ) -> impl std::future::Future<Output = crate::metrics::Snapshot> + Send + 'static {
        let mut snap = crate::metrics::Snapshot {
            history: self.history.iter().cloned().collect(),
            listing: self.listing(false),
            counters: self.director.counters(),
            conn_entries: self.director.last_sweep_entries(),
            attached: None,
            own_prog: self.director.maps_mut().program_id(),
        };
        let resolver = self.resolver.clone();
        // The kernel's word on the NIC's program (a pinned link lbd reused
        // says nothing of its mode), read off the loop.
        async move {
            snap.attached = match resolver.xdp().await {
                Ok(x) => x.map(|(mode, id)| (mode.to_string(), id)),
                Err(e) => {
                    tracing::debug!("reading the interface's XDP attachment: {e}");
                    None
                }
            };
            snap
        }
    }

    /// `lbadm bgp`: the change made now, the answer to await (BIRD taking
    /// it can take seconds: not on the daemon's loop).
    pub(super) fn bgp_job(
        &mut self,
        action: BgpAction,
        vip: Option<std::net::IpAddr>,
    ) -> Result<impl std::future::Future<Output = Response> + Send + 'static, String> {
        let cmd = match action {
            BgpAction::List => super::bgp::BgpCommand::List,
            BgpAction::Drain => super::bgp::BgpCommand::Drain,
            BgpAction::Resume => super::bgp::BgpCommand::Resume,
        };
        let view = self.bgp_request(cmd, vip)?;
        Ok(async move { Response::Bgp { bgp: view.await } })
    }

    /// Serves one control request.
    async fn dispatch(
        &mut self,
        req: Request,
        parsed: Option<Result<Config, ConfigError>>,
    ) -> Response {
        let d = &mut self.director;
        match req {
            Request::List => Response::Listing {
                listing: self.listing(true),
            },
            Request::StartDaemon { role, cfg } => match self.sync_start(role, cfg).await {
                Ok(()) => Response::Ok,
                Err(e) => error(format!("{e:#}")),
            },
            Request::StopDaemon { role } => match self.sync_stop(role) {
                Ok(()) => Response::Ok,
                Err(e) => error(format!("{e:#}")),
            },
            Request::Daemons => Response::Daemons {
                daemons: self.syncd.views(),
            },
            Request::Vrrp { action, name } => {
                let r = match action {
                    VrrpAction::List => Ok(()),
                    VrrpAction::Release => self.vrrp_command(true, name).await,
                    VrrpAction::Resume => self.vrrp_command(false, name).await,
                };
                match r {
                    Ok(()) => Response::Vrrp {
                        routers: self.ha.views(),
                    },
                    Err(e) => error(e),
                }
            }
            Request::ListConns { limit } => Response::Conns {
                conns: d.connections(limit.min(1_000_000)),
            },
            Request::Counters => Response::Counters {
                counters: d.counters(),
            },
            Request::Version => Response::Version {
                daemon: env!("CARGO_PKG_VERSION").to_string(),
                protocol: control::PROTOCOL_VERSION,
            },
            Request::GetTimeouts => {
                let (tcp, tcpfin, udp) = d.get_timeouts();
                Response::Timeouts { tcp, tcpfin, udp }
            }
            Request::SetTimeouts { tcp, tcpfin, udp } => {
                let was = d.get_timeouts();
                d.set_timeouts(tcp, tcpfin, udp);
                let now = d.get_timeouts();
                let changes = if now == was {
                    vec![]
                } else {
                    vec![format!(
                        "~ timeouts (tcp tcpfin udp) {} {} {} -> {} {} {}",
                        was.0, was.1, was.2, now.0, now.1, now.2
                    )]
                };
                self.applied("timeouts set by lbadm --set".into(), changes);
                self.save_state();
                Response::Ok
            }
            Request::Zero { service } => match d.zero(service.as_ref()) {
                Ok(()) => Response::Ok,
                Err(e) => error(e.to_string()),
            },
            Request::Export => match self.export() {
                Ok(yaml) => Response::Export { yaml },
                Err(e) => error(format!("{e:#}")),
            },
            Request::Apply {
                yaml,
                file,
                dry_run,
                by,
                if_unchanged,
            } => {
                if let Some(v) = if_unchanged {
                    match self.export() {
                        Ok(now) if config::config_version(&now) == v => {}
                        Ok(_) => {
                            return error(
                                "the running configuration changed since it was read (lbadm or another session changed it): reload and make the change again",
                            )
                        }
                        Err(e) => return error(format!("{e:#}")),
                    }
                }
                let parsed = parsed.unwrap_or_else(|| Config::parse(&yaml, &file));
                let r = match parsed {
                    Ok(c) => self.apply_config(c, &file, dry_run, by.as_deref()).await,
                    Err(e) => Err(e.into()),
                };
                match r {
                    Ok(changes) => Response::Applied { changes },
                    Err(e) => error(format!("{e:#}")),
                }
            }
            edit => {
                let mut next = self.desired();
                if let Err(e) = edit_table(&mut next.table, edit) {
                    return error(e);
                }
                let changes = config::diff(&self.director.inputs().table, &next.table);
                match self.change(next).await {
                    Ok(_) => {
                        self.applied("table edited by lbadm".into(), changes);
                        self.prune_joined();
                        self.save_state();
                        Response::Ok
                    }
                    Err(e) => error(e.to_string()),
                }
            }
        }
    }

    /// Applies a whole (validated) configuration: the table's difference,
    /// health policies, checks, timeouts and expire_nodest_conn, all or
    /// nothing. Limits, interface and mode need a restart and must match.
    /// Returns one line per change (only those, with `dry_run`).
    pub async fn apply_config(
        &mut self,
        c: Config,
        file: &str,
        dry_run: bool,
        by: Option<&str>,
    ) -> Result<Vec<String>> {
        let table = c.table(file)?;
        self.needs_restart(&c, file)?;
        let mut next = Desired::of(&c, table);
        let joinable = c.joinable();
        let joined = self.merge_joined(&joinable, &c.inactive(), &mut next, file.is_empty());
        let inp = self.director.inputs();
        let mut changes = config::diff(&inp.table, &next.table);
        if next.policies != inp.policies {
            changes.push("~ health policies (on_failure, sorry server, quorum)".into());
        }
        if config::sorted_checks(next.checks.clone()) != config::sorted_checks(self.checks.clone())
        {
            changes.push("~ health checks".into());
        }
        if c.expire_nodest_conn != inp.expire_nodest {
            changes.push(format!("~ expire_nodest_conn -> {}", c.expire_nodest_conn));
        }
        if c.sloppy_tcp != inp.sloppy_tcp {
            changes.push(format!("~ sloppy_tcp -> {}", c.sloppy_tcp));
        }
        let vlans: std::collections::BTreeSet<u16> = c.vlans.iter().copied().collect();
        if vlans != inp.vlans {
            changes.push(format!("~ vlans -> {vlans:?}"));
        }
        // The file is the truth for timeouts too: absent or 0 is the default.
        let timeouts = TimeoutsCfg::in_force(c.timeouts);
        let running = self.director.get_timeouts();
        if timeouts != running {
            changes.push(format!(
                "~ timeouts (tcp tcpfin udp) {} {} {} -> {} {} {}",
                running.0, running.1, running.2, timeouts.0, timeouts.1, timeouts.2
            ));
        }
        if c.bgp != self.base.bgp {
            changes.push("~ bgp (announced VIPs and their attributes)".into());
        }
        if joinable != self.base.joinable() {
            changes.push("~ services taking joins".into());
        }
        if dry_run {
            return Ok(changes);
        }
        self.change(next).await?;
        let mut what = if file.is_empty() {
            "configuration applied".to_string()
        } else {
            format!("configuration {file} applied")
        };
        if let Some(by) = by {
            what = format!("{what} by {by}");
        }
        self.applied(what, changes.clone());
        if joined != self.joined {
            self.joined = joined;
            self.save_joined();
        }
        self.bgp_configure(c.bgp.clone());
        self.director
            .set_timeouts(timeouts.0, timeouts.1, timeouts.2);
        self.base = c;
        self.save_state();
        Ok(changes)
    }

    /// Refuses a configuration whose limits, interface or XDP mode differ
    /// from the running ones (in `--dry-run` too): they need a restart.
    fn needs_restart(&self, c: &Config, file: &str) -> Result<()> {
        let restart = "needs a restart of lbd; the running state is unchanged";
        if c.limits != self.base.limits {
            anyhow::bail!("{file}: limits differ from the running ones: that {restart}");
        }
        if c.metrics != self.base.metrics {
            anyhow::bail!("{file}: metrics: changing the metrics listener {restart}");
        }
        if c.console != self.base.console {
            anyhow::bail!("{file}: console: changing the web console {restart}");
        }
        if c.join != self.base.join {
            anyhow::bail!("{file}: join: changing the join API {restart}");
        }
        if c.vrrp != self.base.vrrp {
            anyhow::bail!("{file}: vrrp: changing the VRRP routers {restart}");
        }
        if c.sync != self.base.sync {
            anyhow::bail!(
                "{file}: sync: changing the sync daemons {restart} (or use lbadm --start-daemon / --stop-daemon)"
            );
        }
        if let Some(i) = &c.interface {
            if c.interface != self.base.interface && *i != self.resolver.iface {
                anyhow::bail!(
                    "{file}: interface: {i}, but lbd runs on {}: moving to another interface {restart}",
                    self.resolver.iface
                );
            }
        }
        if let Some(m) = c.xdp_mode {
            use crate::dataplane::{AttachMode, Attached};
            // Auto is satisfied by either mode; native or generic by the
            // one in use (or asked for, for a link lbd found pinned).
            let in_use = match self.attached {
                Some(Attached::Native) => AttachMode::Native,
                Some(Attached::Generic) => AttachMode::Generic,
                _ => self.mode,
            };
            if c.xdp_mode != self.base.xdp_mode && m != AttachMode::Auto && m != in_use {
                let name = |m: AttachMode| format!("{m:?}").to_lowercase();
                anyhow::bail!(
                    "{file}: xdp_mode: {}, but lbd runs in {} mode: changing it {restart}",
                    name(m),
                    name(in_use)
                );
            }
        }
        Ok(())
    }

    /// `lbadm export`: the running state as YAML (joined real servers
    /// aside).
    pub fn export(&self) -> Result<String> {
        let inp = self.director.inputs();
        // Joined real servers are the joined file's, not the
        // configuration's.
        let (table, checks) = self.without_joined();
        let c = config::export(
            &self.base,
            &config::Running {
                table: &table,
                policies: &inp.policies,
                checks: &checks,
                timeouts: self.director.get_timeouts(),
                expire_nodest_conn: inp.expire_nodest,
                sloppy_tcp: inp.sloppy_tcp,
                vlans: &inp.vlans,
                joinable: &self.base.joinable(),
            },
        );
        let head = "# lbd configuration exported by `lbadm export` (the running state)\n";
        Ok(format!("{head}{}", serde_yaml::to_string(&c)?))
    }
}
