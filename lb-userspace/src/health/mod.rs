//! Health checks: real servers leave and rejoin by themselves.
//!
//! One tokio task per (virtual service, real server) probes at its interval
//! (after a warm-up that spreads the first checks over one interval) and
//! reports changes only: down after `fall` consecutive failures, up after
//! `rise` consecutive successes, and weight changes asked for by external
//! programs (exit 2..255) or agents (HAProxy agent-check: `75%`, `drain`, ...).
//! Every probe is bounded by its timeout (an external program is killed), so
//! a hung real server costs one timeout, never a stuck task.
//!
//! Check types: tcp (connect, optional send/expect), http and https (GET,
//! status range, body substring, regex and MD5 digest, Host header, SNI),
//! udp (payload, expected reply), dns (query, answer with NOERROR), icmp
//! (echo), external (a program), agent (HAProxy agent-check protocol).

mod agent;
mod external;
mod http;
mod icmp;
mod metrics;
mod policy;
mod supervisor;
mod task;
mod tcp;
mod udp;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::time::timeout;

pub use agent::parse_agent;
pub use metrics::{CheckMetrics, CheckSeries};
pub use policy::{effective_weight, OnFailure, ServicePolicy, Verdict};
pub use supervisor::Supervisor;
pub use task::{spawn, HealthEvent, Hysteresis};
pub use udp::dns_query;
use udp::qtype_code;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    Udp,
    Dns,
    Icmp,
    External,
    Agent,
}

/// A check as configured (YAML `health_check:`), with keepalived-like defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Port to probe (default: the service's port; required for agent).
    #[serde(default)]
    pub port: Option<u16>,
    /// Address to probe instead of the real server's.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Source address to bind the probe to.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval: f64,
    /// Seconds a probe may take (connect + request + reply, or the program).
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    /// Consecutive successes to go up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures to go down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Immediate retries of a failed probe before it counts as a failure.
    #[serde(default)]
    pub retry: u32,
    /// Seconds between those retries.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: f64,
    /// http/https: request path.
    #[serde(default = "default_path")]
    pub path: String,
    /// http/https: Host header (default: the probed address).
    #[serde(default)]
    pub host: Option<String>,
    /// https: server name sent in the TLS SNI (default: `host` if it is a name).
    #[serde(default)]
    pub sni: Option<String>,
    /// http/https: accepted status range, inclusive.
    #[serde(default = "default_status")]
    pub status: [u16; 2],
    /// http/https: a regular expression the body must match.
    #[serde(default)]
    pub regex: Option<String>,
    /// http/https: MD5 of the body, hex (keepalived's `digest`).
    #[serde(default)]
    pub digest: Option<String>,
    /// tcp/udp: bytes to send (escapes \r \n \t \\ \xHH).
    #[serde(default)]
    pub send: Option<String>,
    /// tcp/udp/http/https/agent: a string the reply must contain (escapes as `send`).
    #[serde(default)]
    pub expect: Option<String>,
    /// dns: the name to query.
    #[serde(default = "default_dns_name")]
    pub name: String,
    /// dns: query type (A, AAAA, NS, SOA, MX, TXT).
    #[serde(default = "default_dns_type")]
    pub qtype: String,
    /// external: program and arguments; `{address}` and `{port}` are replaced.
    #[serde(default)]
    pub command: Vec<String>,
}

fn default_interval() -> f64 {
    2.0
}
fn default_timeout() -> f64 {
    1.0
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}
fn default_retry_delay() -> f64 {
    0.2
}
fn default_path() -> String {
    "/".into()
}
fn default_status() -> [u16; 2] {
    [200, 299]
}
fn default_dns_name() -> String {
    ".".into()
}
fn default_dns_type() -> String {
    "SOA".into()
}

impl CheckSpec {
    /// A check of `kind` with every default.
    pub fn new(kind: CheckKind) -> CheckSpec {
        let mut s: CheckSpec = serde_yaml::from_str(&format!(
            "type: {}",
            serde_yaml::to_string(&kind).unwrap_or_default().trim()
        ))
        .expect("defaults");
        s.kind = kind;
        s
    }

    /// Whether the check probes a port (icmp and external ones do not).
    pub fn needs_port(&self) -> bool {
        !matches!(self.kind, CheckKind::Icmp | CheckKind::External)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.interval > 0.0 && self.interval <= 3600.0) {
            return Err(format!(
                "interval {} must be in (0, 3600] seconds",
                self.interval
            ));
        }
        if !(self.timeout > 0.0 && self.timeout <= 300.0) {
            return Err(format!(
                "timeout {} must be in (0, 300] seconds",
                self.timeout
            ));
        }
        if !(0.0..=60.0).contains(&self.retry_delay) {
            return Err(format!(
                "retry_delay {} must be in [0, 60] seconds",
                self.retry_delay
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err("rise and fall must be at least 1".into());
        }
        if self.retry > 10 {
            return Err(format!("retry {} must be at most 10", self.retry));
        }
        if self.status[0] > self.status[1] {
            return Err(format!("status range {:?} is empty", self.status));
        }
        if !self.path.starts_with('/') || self.path.contains(['\r', '\n', ' ']) {
            return Err(format!(
                "path {:?} must start with / and contain no spaces",
                self.path
            ));
        }
        if let Some(r) = &self.regex {
            regex::Regex::new(r).map_err(|e| format!("regex: {e}"))?;
        }
        if let Some(d) = &self.digest {
            if d.len() != 32 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("digest {d:?} must be 32 hex digits (MD5)"));
            }
        }
        for s in [&self.send, &self.expect].into_iter().flatten() {
            unescape(s)?;
        }
        match self.kind {
            CheckKind::External if self.command.is_empty() => {
                return Err("an external check needs `command`".into())
            }
            CheckKind::Agent if self.port.is_none() => {
                return Err("an agent check needs `port` (the agent's)".into())
            }
            CheckKind::Dns => {
                qtype_code(&self.qtype)?;
                dns_query(0, &self.name, 1)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Decodes \r \n \t \\ \0 and \xHH (Piranha nanny's and keepalived's escapes).
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut it = s.bytes().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let h: Vec<u8> = (0..2).filter_map(|_| it.next()).collect();
                let v = std::str::from_utf8(&h)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape in {s:?}"))?;
                out.push(v);
            }
            other => {
                return Err(format!(
                    "unknown escape \\{} in {s:?}",
                    other.map(|c| c as char).unwrap_or(' ')
                ))
            }
        }
    }
    Ok(out)
}

pub(crate) fn secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// A weight asked for by an external program or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightChange {
    /// Absolute weight (external program exit code - 2).
    Absolute(u32),
    /// Percentage of the configured weight (agent `75%`; `drain` = 0%).
    Percent(u32),
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// Weight asked for (None: the configured one).
    pub weight: Option<WeightChange>,
    /// Why: "connect timeout 1 s", "HTTP 503", "agent: drain"...
    pub reason: String,
}

impl Outcome {
    pub(crate) fn ok() -> Outcome {
        Outcome {
            ok: true,
            weight: None,
            reason: "check passed".into(),
        }
    }
    pub(crate) fn fail(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            weight: None,
            reason: reason.into(),
        }
    }
}

pub(crate) fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16)) as u16
}

/// One probe of `spec` against `target`.
pub async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let limit = Duration::from_secs_f64(spec.timeout);
    let work = async {
        match spec.kind {
            CheckKind::Tcp => tcp::probe(spec, target).await,
            CheckKind::Http | CheckKind::Https => http::probe(spec, target).await,
            CheckKind::Udp => udp::probe(spec, target).await,
            CheckKind::Dns => udp::probe_dns(spec, target).await,
            CheckKind::Icmp => icmp::probe(spec, target).await,
            CheckKind::External => external::probe(spec, target).await,
            CheckKind::Agent => agent::probe(spec, target).await,
        }
    };
    // External programs get exactly their timeout (they are killed); the
    // others are bounded here as a whole.
    match timeout(limit + Duration::from_millis(50), work).await {
        Ok(r) => r,
        Err(_) => Outcome::fail(format!("timeout {}", secs(spec.timeout))),
    }
}

#[cfg(test)]
mod tests;

/// The MD5 of `bytes`, lower-case hex (keepalived's `digest`; the
/// console's configuration versions).
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
