//! One dispatch for every control request.

use anyhow::Result;

use super::{Daemon, Desired};
use crate::{
    config::{self, Config, TimeoutsCfg},
    control::{self, edit_table, Request, Response},
};

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

impl Daemon {
    /// Serves one control request.
    pub async fn dispatch(&mut self, req: Request) -> Response {
        let d = &mut self.director;
        match req {
            Request::List => {
                let mut listing = d.listing();
                for r in listing.services.iter_mut().flat_map(|s| s.reals.iter_mut()) {
                    r.mac_stale = self.neighbours.stale.contains(&r.spec.address);
                }
                Response::Listing { listing }
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
                d.set_timeouts(tcp, tcpfin, udp);
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
            } => {
                let r = match Config::parse(&yaml, &file) {
                    Ok(c) => self.apply_config(c, &file, dry_run).await,
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
                match self.change(next).await {
                    Ok(_) => {
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
    ) -> Result<Vec<String>> {
        let table = c.table(file)?;
        if c.limits != self.base.limits {
            anyhow::bail!(
                "{file}: limits differ from the running ones: they need a restart of lbd"
            );
        }
        let inp = self.director.inputs();
        let mut changes = config::diff(&inp.table, &table);
        if c.policies() != inp.policies {
            changes.push("~ health policies (on_failure, sorry server, quorum)".into());
        }
        if config::sorted_checks(c.checks()) != config::sorted_checks(self.checks.clone()) {
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
        if dry_run {
            return Ok(changes);
        }
        self.change(Desired::of(&c, table)).await?;
        let t = c.timeouts.unwrap_or(TimeoutsCfg {
            tcp: 0,
            tcpfin: 0,
            udp: 0,
        });
        self.director.set_timeouts(t.tcp, t.tcpfin, t.udp);
        self.base = c;
        self.save_state();
        Ok(changes)
    }

    /// `lbadm export`: the running state as YAML.
    pub fn export(&self) -> Result<String> {
        let inp = self.director.inputs();
        let c = config::export(
            &self.base,
            &config::Running {
                table: &inp.table,
                policies: &inp.policies,
                checks: &self.checks,
                timeouts: self.director.get_timeouts(),
                expire_nodest_conn: inp.expire_nodest,
                sloppy_tcp: inp.sloppy_tcp,
                vlans: &inp.vlans,
            },
        );
        let head = "# lbd configuration exported by `lbadm export` (the running state)\n";
        Ok(format!("{head}{}", serde_yaml::to_string(&c)?))
    }
}
