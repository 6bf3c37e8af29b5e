//! The YAML configuration (schema documented in docs/config.md, example in
//! deploy/lbd.yaml). Parsing rejects unknown keys and ill-typed values with
//! the file's line and column; semantic checks name the offending field.
//! Nothing is applied unless the whole file is valid.

use std::{net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    health::{CheckSpec, OnFailure, ServicePolicy},
    model::{
        Forward, ModelError, PortGroup, Protocol, RealSpec, SchedFlags, Scheduler, ServiceAddr,
        ServiceSpec, Table, DEFAULT_PERSISTENCE,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    #[error("{file}:{line}:{column}: {msg}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        msg: String,
    },
    /// A semantic mistake: the field's path, and its line and column when
    /// it can be found in the source.
    #[error("{file}:{} {field}: {msg}", at_str(.at))]
    Invalid {
        file: String,
        field: String,
        msg: String,
        at: Option<(usize, usize)>,
    },
}

mod locate;

fn at_str(at: &Option<(usize, usize)>) -> String {
    match at {
        Some((l, c)) => format!("{l}:{c}:"),
        None => String::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeCfg {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_services")]
    pub max_services: u32,
    #[serde(default = "default_max_reals")]
    pub max_reals: u32,
    #[serde(default = "default_max_conns")]
    pub max_conns: u32,
}

fn default_max_services() -> u32 {
    lb_common::DEFAULT_MAX_SERVICES
}
fn default_max_reals() -> u32 {
    lb_common::DEFAULT_MAX_REALS
}
fn default_max_conns() -> u32 {
    lb_common::DEFAULT_MAX_CONNS
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: default_max_services(),
            max_reals: default_max_reals(),
            max_conns: default_max_conns(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealCfg {
    pub address: IpAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Forwarding method; only `route` (direct routing) exists.
    #[serde(default)]
    pub forward: Forward,
    /// Upper connection threshold (ipvsadm -x; 0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upper_threshold: u32,
    /// Lower connection threshold (ipvsadm -y; 0 = 3/4 of the upper).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lower_threshold: u32,
    /// Overrides the service's health check for this real server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<CheckSpec>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCfg {
    /// (protocol, address, port) of a plain service...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// ...or the port group it serves, by name or by fwmark (ipvsadm -f).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Scheduler flags, as ipvsadm's -b: mh-port, mh-fallback.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Persistence timeout in seconds; `true` means ipvsadm's default (360).
    #[serde(default)]
    pub persistent: Option<Persistence>,
    /// Persistence granularity as a prefix length (ipvsadm -M): 24 = a /24 of clients.
    #[serde(default)]
    pub netmask: Option<u8>,
    /// One-packet scheduling for UDP (ipvsadm -o).
    #[serde(default)]
    pub one_packet: bool,
    #[serde(default)]
    pub real_servers: Vec<RealCfg>,
    /// Health check for every real server of the service.
    #[serde(default)]
    pub health_check: Option<CheckSpec>,
    /// What a failed check does: quiesce (weight 0) or remove.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// A server used only while the quorum is lost (no real server up, by default).
    #[serde(default)]
    pub sorry_server: Option<IpAddr>,
    /// Minimum total weight of healthy real servers; below it the sorry server takes over.
    #[serde(default = "default_quorum")]
    pub quorum: u32,
    /// Quorum lost below quorum - hysteresis, regained at quorum + hysteresis.
    #[serde(default)]
    pub hysteresis: u32,
}

fn default_quorum() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Persistence {
    Enabled(bool),
    Seconds(u32),
}

/// A port group: (protocol, address, port) entries served by one fwmark
/// service with shared persistence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroupCfg {
    pub name: String,
    /// The fwmark number (ipvsadm -f N).
    pub fwmark: u32,
    pub members: Vec<MemberCfg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberCfg {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The NIC to attach to (the `--interface` flag overrides it).
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub xdp_mode: XdpModeCfg,
    #[serde(default)]
    pub limits: Limits,
    /// Connection timeouts in seconds, as ipvsadm --set (0 = default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsCfg>,
    /// IPVS expire_nodest_conn: connections of a removed real server end
    /// (their next packet is dropped and the entry expired) instead of
    /// continuing until they close.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expire_nodest_conn: bool,
    /// Port groups (fwmark services' members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_groups: Vec<PortGroupCfg>,
    #[serde(default)]
    pub services: Vec<ServiceCfg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsCfg {
    /// TCP ESTABLISHED (default 900).
    #[serde(default)]
    pub tcp: u32,
    /// TCP FIN_WAIT (default 120).
    #[serde(default)]
    pub tcpfin: u32,
    /// UDP (default 300).
    #[serde(default)]
    pub udp: u32,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            file: file.clone(),
            cause,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates; a semantic error gets the line and column of
    /// its field.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::parse_unlocated(text, file).map_err(|e| match e {
            ConfigError::Invalid {
                file,
                field,
                msg,
                at: None,
            } => ConfigError::Invalid {
                at: locate::locate(text, &field),
                file,
                field,
                msg,
            },
            e => e,
        })
    }

    fn parse_unlocated(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
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
        if l.max_services == 0 || l.max_reals == 0 || l.max_conns == 0 {
            return Err(invalid("limits", "limits must be greater than 0".into()));
        }
        let keys: usize = table
            .services
            .keys()
            .map(|a| crate::director::keys_of(a, &table).len().max(1))
            .sum();
        if keys as u32 > l.max_services {
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
        for (i, s) in self.services.iter().enumerate() {
            let Ok(addr) = self.service_addr(s, i, "") else {
                continue;
            };
            for r in &s.real_servers {
                if let Some(c) = r.health_check.as_ref().or(s.health_check.as_ref()) {
                    v.push((addr, r.address, c.clone()));
                }
            }
        }
        v
    }

    /// Health policy (on_failure, sorry server, quorum) per service.
    pub fn policies(&self) -> std::collections::HashMap<ServiceAddr, ServicePolicy> {
        self.services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((self.service_addr(s, i, "").ok()?, s)))
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
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
interface: eth0
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: wrr
    health_check: {type: http, interval: 1, rise: 2, fall: 3}
    on_failure: quiesce
    real_servers:
      - address: 192.0.2.11
        weight: 3
      - address: 192.0.2.12
        health_check: {type: http, path: /health}
  - protocol: udp
    address: 2001:db8::100
    port: 53
    scheduler: mh
    flags: [mh-port]
    real_servers:
      - address: 2001:db8::11
"#;

    #[test]
    fn parses_the_example() {
        let c = Config::parse(GOOD, "t.yaml").unwrap();
        let t = c.table("t.yaml").unwrap();
        assert_eq!(t.services.len(), 2);
        let web = t.services.values().next().unwrap();
        assert_eq!(web.spec.scheduler, Scheduler::Wrr);
        let weights: Vec<u32> = web.reals.values().map(|r| r.weight).collect();
        assert_eq!(weights, vec![3, 1]);
        let checks = c.checks();
        assert_eq!(checks.len(), 2, "service check for both real servers");
        assert_eq!(checks[0].2.kind, crate::health::CheckKind::Http);
        assert_eq!(
            checks[1].2.path, "/health",
            "the real server's own check wins"
        );
    }

    #[test]
    fn port_groups_thresholds_and_their_mistakes() {
        let good = "port_groups:\n  - name: shop\n    fwmark: 7\n    members:\n      - {protocol: tcp, address: 192.0.2.100, port: 80}\n      - {protocol: tcp, address: 192.0.2.100, port: 443}\nservices:\n  - port_group: shop\n    scheduler: rr\n    persistent: 300\n    real_servers:\n      - {address: 192.0.2.11, upper_threshold: 10, lower_threshold: 5}\n";
        let c = Config::parse(good, "t.yaml").unwrap();
        let t = c.table("t.yaml").unwrap();
        let (a, s) = t.services.iter().next().unwrap();
        assert_eq!((a.fwmark, s.spec.persistent), (7, Some(300)));
        assert_eq!(t.groups[&7].members.len(), 2);
        let r = s.reals.values().next().unwrap();
        assert_eq!((r.u_threshold, r.l_threshold, r.port), (10, 5, 0));
        let e = err(&good.replace("port_group: shop", "port_group: shpo"));
        assert!(
            e.starts_with("t.yaml:8:5: services[0].port_group: no port group named 'shpo'"),
            "{e}"
        );
        let e = err(&good.replace("lower_threshold: 5", "lower_threshold: 50"));
        assert!(e.starts_with("t.yaml:12:") && e.contains("real_servers[0].lower_threshold: lower threshold 50 is above the upper threshold 10"), "{e}");
        let e = err(&format!(
            "{good}  - {{protocol: tcp, address: 192.0.2.100, port: 80}}\n"
        ));
        assert!(
            e.contains("services[1]: 192.0.2.100") || e.contains("is a member of port group 7"),
            "{e}"
        );
        let e = err(&good.replace(
            "    scheduler: rr\n",
            "    scheduler: rr\n    health_check: {type: http}\n",
        ));
        assert!(
            e.contains("services[0].health_check.port: required for a port group"),
            "{e}"
        );
        let e = err(&good.replace("port_group: shop", "port_group: shop\n    port: 80"));
        assert!(e.contains("takes no protocol, address or port"), "{e}");
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lbd.yaml");
        let c = Config::load(&p).unwrap();
        assert!(!c.services.is_empty());
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t.yaml").unwrap_err().to_string()
    }

    #[test]
    fn mistakes_are_reported_with_position_or_field() {
        let e = err("services:\n  - protocol: tcp\n    address: 192.0.2.100\n    port: 80\n    colour: red\n");
        assert!(
            e.starts_with("t.yaml:5:5: ") && e.contains("unknown field `colour`"),
            "{e}"
        );
        let e = err("services:\n  - protocol: tcp\n    address: 192.0.2.300\n    port: 80\n");
        assert!(
            e.starts_with("t.yaml:3:") && e.contains("invalid IP address"),
            "{e}"
        );
        let e = err("services:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n    scheduler: xyz\n");
        assert!(
            e.starts_with("t.yaml:5:") && e.contains("unknown variant `xyz`"),
            "{e}"
        );
        let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, real_servers: [{address: 192.0.2.11, weight: 70000}]}\n");
        assert_eq!(
            e,
            "t.yaml:2:88: services[0].real_servers[0].weight: weight 70000 out of range (0..=65535)"
        );
        let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80}\n  - {protocol: tcp, address: 192.0.2.1, port: 80}\n");
        assert_eq!(
            e,
            "t.yaml:3:6: services[1]: duplicate service tcp 192.0.2.1:80"
        );
        let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 0}\n");
        assert!(e.contains("services[0]: port 0 is only allowed"), "{e}");
        let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, scheduler: rr, flags: [mh-port]}\n");
        assert!(e.contains("services[0]: scheduler flag mh-port"), "{e}");
        let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, health_check: {type: http, interval: 0}}\n");
        assert!(e.contains("services[0].health_check: interval 0"), "{e}");
        let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, health_check: {type: ping}}\n");
        assert!(
            e.starts_with("t.yaml:2:") && e.contains("unknown variant `ping`"),
            "{e}"
        );
    }
}
