//! The control protocol between `lbd` and its clients (`lbadm`, or any tool).
//!
//! Transport: a Unix stream socket, mode 0600 (root only). Framing: one JSON
//! object per line, both ways; one request, one response, per line. Every
//! request carries `"version": 1`; a request with another version, a line
//! longer than [`MAX_REQUEST`] bytes or malformed JSON gets an error response
//! and the connection is closed. Documented in docs/control-protocol.md.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::model::{PortGroup, RealSpec, ServiceAddr, ServiceSpec, Table};

pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted request line: room for `apply` of a configuration of
/// 1,000 services x 100 real servers (about 3 MB of YAML) several times over.
pub const MAX_REQUEST: usize = 32 << 20;
pub const DEFAULT_SOCKET: &str = "/run/lbd/lbd.sock";

/// What `lbadm vrrp` asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VrrpAction {
    #[default]
    List,
    Release,
    Resume,
}

/// What `lbadm bgp` asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BgpAction {
    #[default]
    List,
    Drain,
    Resume,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    AddService {
        service: ServiceSpec,
    },
    EditService {
        service: ServiceSpec,
    },
    DelService {
        service: ServiceAddr,
    },
    Clear,
    AddReal {
        service: ServiceAddr,
        real: RealSpec,
    },
    EditReal {
        service: ServiceAddr,
        real: RealSpec,
    },
    DelReal {
        service: ServiceAddr,
        address: std::net::IpAddr,
    },
    /// The table with counters and connection counts.
    List,
    /// Connection entries and persistence templates (at most `limit`).
    ListConns {
        limit: usize,
    },
    /// Director-wide counters (verdicts of the XDP program).
    Counters,
    /// ipvsadm --set: TCP established, TCP FIN_WAIT and UDP timeouts in
    /// seconds; 0 leaves a value unchanged.
    SetTimeouts {
        tcp: u32,
        tcpfin: u32,
        udp: u32,
    },
    /// ipvsadm --timeout.
    GetTimeouts,
    /// ipvsadm -Z: zero the counters of one service, or of all.
    Zero {
        #[serde(default)]
        service: Option<ServiceAddr>,
    },
    /// Declare (or replace) the port group of fwmark `fwmark`.
    SetGroup {
        fwmark: u32,
        group: PortGroup,
    },
    /// Remove a port group (its fwmark service then matches nothing).
    DelGroup {
        fwmark: u32,
    },
    /// Several table changes applied together or not at all (ipvsadm -R).
    Batch {
        requests: Vec<Request>,
        /// The input line of each request, for error messages (absent:
        /// numbered from 1).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lines: Vec<usize>,
    },
    /// Apply a whole YAML configuration (`lbadm apply -f`): validated, the
    /// difference to the running state applied at once. `file` names it in
    /// error messages. With `dry_run`, only the difference is reported.
    Apply {
        yaml: String,
        file: String,
        #[serde(default)]
        dry_run: bool,
        /// Who asks (the console's user), for the log line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Refused unless the running configuration still exports to
        /// YAML with this version ([`crate::config::config_version`]):
        /// a change made against a configuration read earlier cannot undo
        /// one made since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_unchanged: Option<String>,
    },
    /// The running state as a YAML configuration (`lbadm export`).
    Export,
    /// `--start-daemon ROLE`: one sync daemon role with its settings.
    StartDaemon {
        role: crate::sync::Role,
        cfg: crate::sync::SyncCfg,
    },
    /// `--stop-daemon ROLE`.
    StopDaemon {
        role: crate::sync::Role,
    },
    /// `-L --daemon`: the sync daemons running.
    Daemons,
    /// VRRP routers: list (`lbadm vrrp`), or hand over / take part again
    /// (`lbadm vrrp release|resume [NAME]`; no name: every router).
    Vrrp {
        #[serde(default)]
        action: VrrpAction,
        #[serde(default)]
        name: Option<String>,
    },
    /// BGP announcements: list (`lbadm bgp`), withdraw (`drain [VIP]`; no
    /// VIP: the whole director) or announce again (`resume [VIP]`).
    Bgp {
        #[serde(default)]
        action: BgpAction,
        #[serde(default)]
        vip: Option<std::net::IpAddr>,
    },
    /// Daemon and protocol version.
    Version,
    /// `lbadm diagnose`: what is wrong with the director.
    Diagnose,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub conns: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
}

/// Rates per second, as ipvsadm --rate shows them (estimated over 2 s
/// samples, smoothed as the IPVS estimator does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateView {
    pub cps: u64,
    pub in_pps: u64,
    pub in_bps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub up: bool,
    /// Why (the last transition's cause, e.g. "HTTP 503").
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealView {
    /// Slot of the real server in the data plane (--nosort order).
    #[serde(default)]
    pub id: u32,
    pub spec: RealSpec,
    /// Health-check state (None: not checked).
    pub health: Option<HealthView>,
    /// The weight in force: 0 while the health check says down.
    pub effective_weight: u32,
    /// False when a failed check removed it (on_failure: remove): ipvsadm's
    /// listing then omits it, as with keepalived.
    pub in_service: bool,
    pub active_conns: u64,
    pub inactive_conns: u64,
    /// Persistence templates pointing at it (ipvsadm --persistent-conn).
    pub persistent_conns: u64,
    pub stats: StatsView,
    #[serde(default)]
    pub rate: RateView,
    /// MAC address from the neighbour table, if resolved.
    pub mac: Option<String>,
    /// The MAC is the last known one: its neighbour entry went away (link
    /// flap, flushed table) and is being resolved again.
    #[serde(default)]
    pub mac_stale: bool,
    /// The service's sorry server, listed while the quorum is lost (no
    /// check runs for it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sorry: bool,
}

#[cfg(test)]
impl RealView {
    /// For tests: `a`:80 with `weight` (in force), in service, unchecked,
    /// its MAC known, no connection.
    pub fn test(a: &str, weight: u32) -> RealView {
        RealView {
            id: 0,
            rate: Default::default(),
            spec: RealSpec {
                u_threshold: 0,
                l_threshold: 0,
                address: a.parse().unwrap(),
                port: 80,
                weight,
                forward: crate::model::Forward::Route,
            },
            active_conns: 0,
            inactive_conns: 0,
            stats: StatsView::default(),
            mac: Some("02:00:00:00:00:0b".into()),
            mac_stale: false,
            persistent_conns: 0,
            health: None,
            effective_weight: weight,
            in_service: true,
            sorry: false,
        }
    }
}

impl RealView {
    /// Why new connections cannot go to it (None: they can). The sorry
    /// server counts as usable here; callers that count real servers set
    /// it aside.
    pub fn why_unusable(&self) -> Option<String> {
        match &self.health {
            Some(h) if !h.up => Some(format!("down ({})", h.reason)),
            _ if !self.in_service => Some("removed by its check".into()),
            _ if self.effective_weight == 0 => Some("weight 0".into()),
            _ if self.mac.is_none() => Some("MAC unresolved".into()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Id of the service in the data plane (--nosort order).
    #[serde(default)]
    pub id: u32,
    pub spec: ServiceSpec,
    pub stats: StatsView,
    #[serde(default)]
    pub rate: RateView,
    pub reals: Vec<RealView>,
}

/// A change put in force by an apply or an lbadm edit, as logged (the
/// console's recent changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Seconds since the epoch.
    pub unix: u64,
    /// What applied it and who: "configuration /etc/lbd/lbd.yaml applied",
    /// "configuration console applied by console user alice from
    /// 192.0.2.1", "table edited by lbadm".
    pub what: String,
    /// Its lines, as `lbadm apply --dry-run` prints them.
    pub changes: Vec<String>,
}

/// One connection entry as `ipvsadm -Lnc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnView {
    pub protocol: String,
    /// Seconds until it expires.
    pub expire_s: u64,
    pub state: String,
    pub client: String,
    #[serde(rename = "virtual")]
    pub virtual_: String,
    pub real: String,
    /// A persistence template (client port 0).
    pub template: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Size of the connection table (ipvsadm's "size=").
    pub conn_table_size: u32,
    pub services: Vec<ServiceView>,
    /// Port groups as (fwmark, group) pairs, by fwmark (a list: JSON
    /// object keys are strings, and integer keys do not survive serde's
    /// internally tagged responses).
    #[serde(default)]
    pub groups: Vec<(u32, PortGroup)>,
    /// VRRP routers (state, master, priority, last transition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<crate::vrrp::VrrpView>,
    /// Connection sync daemons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<crate::sync::SyncView>,
    /// BGP announcements (when a `bgp:` section is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<crate::bgp::BgpView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Listing {
        listing: Listing,
    },
    Conns {
        conns: Vec<ConnView>,
    },
    Counters {
        counters: Vec<(String, u64)>,
    },
    Version {
        daemon: String,
        protocol: u32,
    },
    Timeouts {
        tcp: u32,
        tcpfin: u32,
        udp: u32,
    },
    /// What an apply changed (or would change, with dry_run): one line each.
    Applied {
        changes: Vec<String>,
    },
    Export {
        yaml: String,
    },
    Vrrp {
        routers: Vec<crate::vrrp::VrrpView>,
    },
    Daemons {
        daemons: Vec<crate::sync::SyncView>,
    },
    Bgp {
        bgp: crate::bgp::BgpView,
    },
    Diagnosis {
        findings: Vec<crate::diagnose::Finding>,
    },
    Error {
        message: String,
    },
}

/// Applies one table-editing request (or a batch of them, which stops at
/// the first failure and names its line) to `t`.
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
        Request::Batch { requests, lines } => {
            // ipvsadm -R: every line against a scratch table; the first
            // failure names its line and nothing is applied.
            for (i, req) in requests.into_iter().enumerate() {
                let line = lines.get(i).copied().unwrap_or(i + 1);
                if matches!(req, Request::Batch { .. }) {
                    return Err(format!("line {line}: a batch cannot hold a batch"));
                }
                edit_table(t, req).map_err(|e| format!("line {line}: {e}"))?;
            }
            return Ok(());
        }
        other => return Err(format!("{other:?} does not edit the table")),
    };
    r.map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to lbd at {path}: {cause} (is lbd running? see --socket / LB_SOCKET)")]
    Connect { path: String, cause: std::io::Error },
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response from lbd: {0}")]
    Decode(#[from] serde_json::Error),
}

/// One request, one response, synchronously (for lbadm).
pub fn call(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|cause| ClientError::Connect {
        path: socket.display().to_string(),
        cause,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(&Envelope {
        version: PROTOCOL_VERSION,
        request,
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut resp = String::new();
    reader.read_line(&mut resp)?;
    Ok(serde_json::from_str(&resp)?)
}

/// Decodes one request line (server side): version and shape checked.
pub fn decode_request(line: &str) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    match v.get("version").and_then(|v| v.as_u64()) {
        Some(n) if n == PROTOCOL_VERSION as u64 => {}
        Some(n) => {
            return Err(format!(
                "unsupported protocol version {n} (this lbd speaks {PROTOCOL_VERSION})"
            ))
        }
        None => return Err("request has no \"version\"".into()),
    }
    let env: Envelope = serde_json::from_value(v).map_err(|e| format!("malformed request: {e}"))?;
    Ok(env.request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let line = r#"{"version":1,"op":"del_service","service":{"protocol":"tcp","address":"192.0.2.100","port":80}}"#;
        let r = decode_request(line).unwrap();
        assert!(matches!(r, Request::DelService { .. }));
        let back = serde_json::to_string(&Envelope {
            version: 1,
            request: r,
        })
        .unwrap();
        assert_eq!(back, line);
        assert!(decode_request(r#"{"version":2,"op":"list"}"#)
            .unwrap_err()
            .contains("version 2"));
        assert!(decode_request(r#"{"op":"list"}"#)
            .unwrap_err()
            .contains("no \"version\""));
        assert!(decode_request(r#"{"version":1,"op":"explode"}"#)
            .unwrap_err()
            .contains("malformed"));
        assert!(decode_request("{{{").unwrap_err().contains("malformed"));
        let big = format!(
            r#"{{"version":1,"op":"list","x":"{}"}}"#,
            "a".repeat(MAX_REQUEST)
        );
        assert!(decode_request(&big).unwrap_err().contains("longer"));
    }

    #[test]
    fn a_listing_with_port_groups_survives_the_wire() {
        let group = PortGroup {
            name: "web".into(),
            members: vec![ServiceAddr::new(
                crate::model::Protocol::Tcp,
                "192.0.2.100".parse().unwrap(),
                80,
            )],
        };
        let r = Response::Listing {
            listing: Listing {
                conn_table_size: 1,
                services: vec![],
                groups: vec![(7, group)],
                vrrp: Vec::new(),
                sync: Vec::new(),
                bgp: None,
            },
        };
        let back: Response = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
