//! Semantic checks of a configuration and what it declares: the table,
//! the health checks and policies. Errors name the field
//! (`services[1].real_servers[0].weight`); `Config::parse` adds its line
//! and column.

use std::net::IpAddr;

use super::{Config, ConfigError, Persistence, ServiceCfg};
use crate::{
    health::{CheckSpec, ServicePolicy},
    model::{
        ModelError, PortGroup, RealSpec, SchedFlags, ServiceAddr, ServiceSpec, Table,
        DEFAULT_PERSISTENCE,
    },
};

/// The first line whose prefix of the text already fails with `msg`, for
/// the parser's errors that carry no position (a second document, say):
/// found by bisection over the lines (a handful of parses). None if the
/// whole text does not fail so.
fn first_line_with(text: &str, msg: &str) -> Option<usize> {
    let ends: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| *c == '\n')
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let fails = |k: usize| {
        serde_yaml::from_str::<serde_yaml::Value>(&text[..ends[k - 1]])
            .is_err_and(|e| e.to_string() == msg)
    };
    let (mut lo, mut hi) = (1, ends.len());
    if !fails(hi) {
        return None;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

impl Config {
    pub(super) fn parse_unlocated(text: &str, file: &str) -> Result<Config, ConfigError> {
        if let Some((line, column)) = super::depth::too_deep(text) {
            return Err(ConfigError::Syntax {
                file: file.to_string(),
                line,
                column,
                msg: format!(
                    "nested deeper than {} levels: not a configuration lbd reads",
                    super::depth::MAX_DEPTH
                ),
            });
        }
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .or_else(|| first_line_with(text, &e.to_string()).map(|l| (l, 1)))
                .unwrap_or((0, 0));
            ConfigError::Syntax {
                file: file.to_string(),
                line,
                column,
                msg: e.to_string(),
            }
        })?;
        // Build the table once to run every semantic check.
        let table = cfg.table(file)?;
        for (i, s) in cfg.services.iter().enumerate() {
            let addr = cfg.service_addr(s, i, file)?;
            if addr.is_fwmark() {
                for (f, c) in
                    std::iter::once((format!("services[{i}].health_check"), &s.health_check)).chain(
                        s.real_servers.iter().enumerate().map(|(j, r)| {
                            (
                                format!("services[{i}].real_servers[{j}].health_check"),
                                &r.health_check,
                            )
                        }),
                    )
                {
                    if c.as_ref()
                        .is_some_and(|c| c.port.is_none() && c.needs_port())
                    {
                        return Err(ConfigError::Invalid {
                            at: None,
                            file: file.to_string(),
                            field: format!("{f}.port"),
                            msg: "required for a port group (it has no single port to check)"
                                .into(),
                        });
                    }
                }
            }
            let check = |field: String, c: &Option<CheckSpec>| match c {
                Some(c) => c.validate().map_err(|msg| ConfigError::Invalid {
                    at: None,
                    file: file.to_string(),
                    field,
                    msg,
                }),
                None => Ok(()),
            };
            check(format!("services[{i}].health_check"), &s.health_check)?;
            if let Some(sorry) = s.sorry_server {
                if sorry.is_ipv4() != addr.address.is_ipv4() {
                    return Err(ConfigError::Invalid {
                        at: None,
                        file: file.to_string(),
                        field: format!("services[{i}].sorry_server"),
                        msg: format!("{sorry} is not of the VIP's address family"),
                    });
                }
            }
            if s.joinable && addr.is_fwmark() {
                return Err(ConfigError::Invalid {
                    at: None,
                    file: file.to_string(),
                    field: format!("services[{i}].joinable"),
                    msg: "a port-group service takes no joins (join one of the group's ports' services instead)".into(),
                });
            }
            if s.joinable && cfg.join.is_none() {
                return Err(ConfigError::Invalid {
                    at: None,
                    file: file.to_string(),
                    field: format!("services[{i}].joinable"),
                    msg: "needs a join: section (the API real servers join through)".into(),
                });
            }
            if s.hysteresis > s.quorum {
                return Err(ConfigError::Invalid {
                    at: None,
                    file: file.to_string(),
                    field: format!("services[{i}].hysteresis"),
                    msg: format!("hysteresis {} exceeds quorum {}", s.hysteresis, s.quorum),
                });
            }
            for (j, r) in s.real_servers.iter().enumerate() {
                check(
                    format!("services[{i}].real_servers[{j}].health_check"),
                    &r.health_check,
                )?;
            }
        }
        let l = &cfg.limits;
        let invalid = |field: &str, msg: String| ConfigError::Invalid {
            at: None,
            file: file.to_string(),
            field: field.to_string(),
            msg,
        };
        if let Err((field, msg)) =
            crate::vrrp::config::check_all(&cfg.vrrp, cfg.interface.as_deref())
        {
            return Err(invalid(&field, msg));
        }
        if let Some(Err((field, msg))) = cfg.sync.as_ref().map(|s| s.check()) {
            return Err(invalid(&field, msg));
        }
        if let Some(Err((field, msg))) = cfg.join.as_ref().map(|j| j.check()) {
            return Err(invalid(field, msg));
        }
        if let Some(Err((field, msg))) = cfg.bgp.as_ref().map(|b| b.check()) {
            return Err(invalid(&field, msg));
        }
        if let Some(Err((field, msg))) = cfg.console.as_ref().map(|c| c.check()) {
            return Err(invalid(&field, msg));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in cfg.vlans.iter().enumerate() {
            if !(1..=4094).contains(v) {
                return Err(invalid(
                    &format!("vlans[{i}]"),
                    format!("VLAN id {v} out of range (1..=4094)"),
                ));
            }
            if !seen.insert(*v) {
                return Err(invalid(
                    &format!("vlans[{i}]"),
                    format!("VLAN {v} is listed twice"),
                ));
            }
        }
        if l.max_services == 0 || l.max_reals == 0 || l.max_conns == 0 {
            return Err(invalid("limits", "limits must be greater than 0".into()));
        }
        let keys = table.slots_needed();
        if keys > l.max_services as usize {
            return Err(invalid(
                "services",
                format!(
                    "{} services (port-group members counted) exceed limits.max_services={}",
                    keys, l.max_services
                ),
            ));
        }
        Ok(cfg)
    }

    /// The service a `services[i]` entry declares.
    pub fn service_addr(
        &self,
        s: &ServiceCfg,
        i: usize,
        file: &str,
    ) -> Result<ServiceAddr, ConfigError> {
        let invalid = |f: &str, msg: String| ConfigError::Invalid {
            at: None,
            file: file.to_string(),
            field: format!("services[{i}]{f}"),
            msg,
        };
        let group = match (&s.port_group, s.fwmark) {
            (Some(_), Some(_)) => {
                return Err(invalid("", "give port_group or fwmark, not both".into()))
            }
            (Some(name), None) => Some(
                self.port_groups
                    .iter()
                    .find(|g| &g.name == name)
                    .ok_or_else(|| {
                        invalid(
                            ".port_group",
                            format!("no port group named '{name}' (declare it under port_groups)"),
                        )
                    })?,
            ),
            (None, Some(m)) => Some(self.port_groups.iter().find(|g| g.fwmark == m).ok_or_else(
                || {
                    invalid(
                        ".fwmark",
                        format!("no port group with fwmark {m} (declare it under port_groups)"),
                    )
                },
            )?),
            (None, None) => None,
        };
        match (group, s.protocol, s.address, s.port) {
            (Some(g), None, None, None) => Ok(ServiceAddr::fwmark(
                g.fwmark,
                g.members.first().is_some_and(|m| m.address.is_ipv6()),
            )),
            (Some(_), ..) => Err(invalid(
                "",
                "a port-group service takes no protocol, address or port (its members have them)"
                    .into(),
            )),
            (None, Some(p), Some(a), Some(port)) => Ok(ServiceAddr::new(p, a, port)),
            (None, ..) => Err(invalid(
                "",
                "needs protocol, address and port (or port_group)".into(),
            )),
        }
    }

    /// The health checks this configuration declares: (service, real server,
    /// check), the real server's own check overriding the service's.
    pub fn checks(&self) -> Vec<(ServiceAddr, IpAddr, CheckSpec)> {
        let mut v = Vec::new();
        for (addr, s) in self.services_with_addr().filter(|(_, s)| s.active) {
            for r in s.real_servers.iter().filter(|r| r.active) {
                if let Some(c) = r.health_check.as_ref().or(s.health_check.as_ref()) {
                    v.push((addr, r.address, c.clone()));
                }
            }
        }
        v
    }

    /// The services that take joins, with the check a joined real server
    /// gets (the service's).
    pub fn joinable(&self) -> std::collections::HashMap<ServiceAddr, Option<CheckSpec>> {
        self.services_with_addr()
            .filter(|(_, s)| s.joinable && s.active)
            .map(|(addr, s)| (addr, s.health_check.clone()))
            .collect()
    }

    /// Each service that names a valid address, with it.
    fn services_with_addr(&self) -> impl Iterator<Item = (ServiceAddr, &ServiceCfg)> {
        self.services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((self.service_addr(s, i, "").ok()?, s)))
    }

    /// What is declared inactive: services, and real servers of active
    /// services (joined servers of these are kept, not put in the table).
    pub fn inactive(&self) -> super::Inactive {
        let mut out = super::Inactive::default();
        for (addr, s) in self.services_with_addr() {
            if !s.active {
                out.services.insert(addr);
                continue;
            }
            for r in s.real_servers.iter().filter(|r| !r.active) {
                out.reals.insert((addr, r.address));
            }
        }
        out
    }

    /// Health policy (on_failure, sorry server, quorum) per service.
    pub fn policies(&self) -> std::collections::HashMap<ServiceAddr, ServicePolicy> {
        self.services_with_addr()
            .filter(|(_, s)| s.active)
            .map(|(addr, s)| {
                (
                    addr,
                    ServicePolicy {
                        on_failure: s.on_failure,
                        sorry_server: s.sorry_server,
                        quorum: s.quorum,
                        hysteresis: s.hysteresis,
                    },
                )
            })
            .collect()
    }

    /// The service table this configuration declares.
    pub fn table(&self, file: &str) -> Result<Table, ConfigError> {
        let mut t = Table::default();
        for (i, g) in self.port_groups.iter().enumerate() {
            let invalid = |f: &str, msg: String| ConfigError::Invalid {
                at: None,
                file: file.to_string(),
                field: format!("port_groups[{i}]{f}"),
                msg,
            };
            if self.port_groups[..i].iter().any(|o| o.name == g.name) {
                return Err(invalid(
                    ".name",
                    format!("duplicate port group name '{}'", g.name),
                ));
            }
            if t.groups.contains_key(&g.fwmark) {
                return Err(invalid(".fwmark", format!("duplicate fwmark {}", g.fwmark)));
            }
            if g.members.is_empty() {
                return Err(invalid(
                    ".members",
                    "a port group needs at least one member".into(),
                ));
            }
            let group = PortGroup {
                name: g.name.clone(),
                members: g
                    .members
                    .iter()
                    .map(|m| ServiceAddr::new(m.protocol, m.address, m.port))
                    .collect(),
            };
            t.set_group(g.fwmark, group).map_err(|e| match e {
                ModelError::Fwmark => invalid(".fwmark", e.to_string()),
                e => invalid(".members", e.to_string()),
            })?;
        }
        for (i, s) in self.services.iter().enumerate() {
            let field = format!("services[{i}]");
            let invalid = |f: String, e: String| ConfigError::Invalid {
                at: None,
                file: file.to_string(),
                field: f,
                msg: e,
            };
            let flags = SchedFlags::parse(&s.flags.join(","))
                .map_err(|e| invalid(format!("{field}.flags"), e))?;
            let persistent = match s.persistent {
                None | Some(Persistence::Enabled(false)) => None,
                Some(Persistence::Enabled(true)) => Some(DEFAULT_PERSISTENCE),
                Some(Persistence::Seconds(n)) => Some(n),
            };
            let spec = ServiceSpec {
                addr: self.service_addr(s, i, file)?,
                scheduler: s.scheduler,
                flags,
                persistent,
                netmask: s.netmask,
                one_packet: s.one_packet,
            };
            t.add_service(spec.clone()).map_err(|e| match e {
                ModelError::ServiceExists => {
                    invalid(field.clone(), format!("duplicate service {}", spec.addr))
                }
                e => invalid(field.clone(), e.to_string()),
            })?;
            for (j, r) in s.real_servers.iter().enumerate() {
                let rs = RealSpec {
                    u_threshold: r.upper_threshold,
                    l_threshold: r.lower_threshold,
                    address: r.address,
                    port: spec.addr.port,
                    weight: r.weight,
                    forward: r.forward,
                };
                t.add_real(&spec.addr, rs).map_err(|e| {
                    let f = format!("{field}.real_servers[{j}]");
                    match e {
                        ModelError::Weight(_) => invalid(format!("{f}.weight"), e.to_string()),
                        ModelError::Thresholds(..) => {
                            invalid(format!("{f}.lower_threshold"), e.to_string())
                        }
                        ModelError::RealExists => {
                            invalid(f, format!("duplicate real server {}", r.address))
                        }
                        e => invalid(f, e.to_string()),
                    }
                })?;
            }
        }
        // Inactive services and real servers were validated with the
        // rest (a duplicate is still one); they stay out of the table.
        let inactive = self.inactive();
        for addr in &inactive.services {
            let _ = t.del_service(addr);
        }
        for (addr, r) in &inactive.reals {
            let _ = t.del_real(addr, *r);
        }
        Ok(t)
    }
}
