//! The YAML configuration (schema documented in docs/config.md, example in
//! deploy/lbd.yaml). Parsing rejects unknown keys and ill-typed values with
//! the file's line and column; semantic checks name the offending field.
//! Nothing is applied unless the whole file is valid.

use std::{net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

pub use crate::dataplane::{AttachMode, Limits};
use crate::{
    health::{CheckSpec, OnFailure},
    model::{Forward, Protocol, Scheduler},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    /// A syntax or type error, at its line and column (0 when the parser
    /// gives none and it cannot be found).
    #[error("{file}:{}{msg}", if *.line > 0 { format!("{}:{}: ", .line, .column) } else { " ".into() })]
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

mod depth;
mod export;
mod locate;
mod validate;

pub use export::{config_version, diff, export, sorted_checks, Running};

fn at_str(at: &Option<(usize, usize)>) -> String {
    match at {
        Some((l, c)) => format!("{l}:{c}:"),
        None => String::new(),
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
    /// false: declared and validated, but out of the table (Piranha's
    /// "deactivate"); `lbadm export` keeps it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

pub(crate) fn is_false(v: &bool) -> bool {
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
    /// Real servers may add themselves through the join API (`lbadm
    /// realserver join`), checked with the service's health_check.
    #[serde(default, skip_serializing_if = "is_false")]
    pub joinable: bool,
    /// false: declared and validated, but out of the table with its real
    /// servers and checks (Piranha's "deactivate"); `lbadm export` keeps it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
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
    /// How to attach (`--xdp-mode` overrides it; default auto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<AttachMode>,
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
    /// IPVS sloppy_tcp: any TCP packet (not only a SYN) without a
    /// connection entry starts a connection (a director taking over
    /// mid-stream); off, a non-SYN without entry goes to the kernel.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sloppy_tcp: bool,
    /// VLANs (802.1Q ids) whose tagged frames the director serves; tagged
    /// frames of other VLANs go to the kernel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<u16>,
    /// Connection synchronisation (the IPVS sync daemon; see docs/ha.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<crate::sync::SyncCfg>,
    /// VIPs announced by BGP through BIRD (directors behind ECMP; see
    /// docs/ecmp.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<crate::bgp::BgpCfg>,
    /// lbd's HTTP listener for Prometheus (`--metrics` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsCfg>,
    /// The web console on the metrics listener (docs/console.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<crate::console::ConsoleCfg>,
    /// The join API for real servers that register themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<crate::join::JoinCfg>,
    /// VRRP virtual routers (a pair of directors; see docs/ha.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<crate::vrrp::VrrpCfg>,
    /// Port groups (fwmark services' members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_groups: Vec<PortGroupCfg>,
    #[serde(default)]
    pub services: Vec<ServiceCfg>,
}

/// What a configuration declares inactive ([`Config::inactive`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inactive {
    pub services: std::collections::HashSet<crate::model::ServiceAddr>,
    pub reals: std::collections::HashSet<(crate::model::ServiceAddr, IpAddr)>,
}

/// `metrics:`: lbd's HTTP listener, where `/metrics` (and the console,
/// when configured) are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsCfg {
    /// ADDR:PORT to listen on (e.g. `127.0.0.1:9469`, `[::]:9469`).
    pub listen: std::net::SocketAddr,
    /// HTTPS instead of HTTP; with `client_ca`, only clients with a
    /// certificate it signed may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::listen::TlsCfg>,
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

impl TimeoutsCfg {
    /// (tcp, tcpfin, udp) in force under `t`: absent or 0 is the default.
    pub fn in_force(t: Option<TimeoutsCfg>) -> (u32, u32, u32) {
        use lb_common::tcp_state::{DEFAULT_TIMEOUTS as D, ESTABLISHED, FIN_WAIT, UDP};
        let or = |v: u32, i: u8| if v == 0 { D[i as usize] } else { v };
        let t = t.unwrap_or(TimeoutsCfg {
            tcp: 0,
            tcpfin: 0,
            udp: 0,
        });
        (
            or(t.tcp, ESTABLISHED),
            or(t.tcpfin, FIN_WAIT),
            or(t.udp, UDP),
        )
    }
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
}

#[cfg(test)]
mod tests;
