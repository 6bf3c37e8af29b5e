//! Real servers that register themselves: `lbadm realserver join` and
//! `leave` ask lbd, over an authenticated TCP API (a pre-shared token, or
//! mutual TLS), to add them to a service that accepts joins, or to drain
//! and remove them.
//!
//! The protocol is the control socket's: one JSON request per line, one
//! JSON response line, one exchange per connection. The joining address is
//! the connection's source address: a real server registers itself, never
//! another host. What joined is kept in a state file so that a restart (with
//! `--config` or without) keeps it.

pub mod client;
pub mod server;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use crate::listen::{read_certs, TlsCfg};
use crate::model::{fmt_addr_port, Protocol, ServiceAddr};

/// The join API's protocol version.
pub const JOIN_VERSION: u32 = 1;

/// `join:`: where the API listens and how it authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinCfg {
    /// ADDR:PORT to listen on (a management address of the director).
    pub listen: SocketAddr,
    /// A file holding the pre-shared token (first line; at least 16
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// TLS for the API; with `client_ca`, clients must present a
    /// certificate it signed (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsCfg>,
    /// The longest drain a `leave` may ask for, in seconds (default 3600).
    #[serde(default = "default_max_drain")]
    pub max_drain: u32,
    /// How many real servers may be joined at once, over every service
    /// (default 256): each takes a real-server slot and a health check.
    #[serde(default = "default_max_joined")]
    pub max_joined: u32,
    /// Where the joined real servers are kept (default
    /// `<state-dir>/<instance>.joined.json`, which is on tmpfs under
    /// /run: give a file on disk, e.g. /var/lib/lbd/joined.json, to keep
    /// them across reboots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
}

fn default_max_drain() -> u32 {
    3600
}

fn default_max_joined() -> u32 {
    256
}

impl JoinCfg {
    /// What is wrong with it, as (field, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let mutual = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if self.token_file.is_none() && !mutual {
            return Err((
                "join",
                "needs token_file, or tls with client_ca (mutual TLS): the join API is never open"
                    .into(),
            ));
        }
        if self.max_drain == 0 {
            return Err(("join.max_drain", "must be at least 1 second".into()));
        }
        Ok(())
    }

    /// The token, read from `token_file` (None without one).
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(p) = &self.token_file else {
            return Ok(None);
        };
        let t = read_token(p, "join.token_file")?;
        if t.len() < 16 {
            anyhow::bail!(
                "join.token_file {}: the token must be at least 16 characters",
                p.display()
            );
        }
        Ok(Some(t))
    }
}

/// A token file's first line, trimmed (`what` names it in errors).
pub fn read_token(p: &Path, what: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{what} {}: {e}", p.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// What a real server asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum JoinOp {
    /// Add me to `service` with `weight` (again: a new weight, and a drain
    /// in progress is cancelled).
    Join { service: ServiceAddr, weight: u32 },
    /// Drain me (weight 0) and remove me once my connections are done or
    /// `drain_s` seconds passed.
    Leave { service: ServiceAddr, drain_s: u32 },
    /// Where my registration stands.
    Status { service: ServiceAddr },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub version: u32,
    /// The pre-shared token (absent with mutual TLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(flatten)]
    pub op: JoinOp,
}

/// A registration as the director sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinStatus {
    pub service: ServiceAddr,
    pub address: IpAddr,
    /// Still in the table.
    pub joined: bool,
    pub weight: u32,
    /// Draining: removed when its connections are done or at this time
    /// (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_until: Option<u64>,
    pub active_conns: u64,
    pub inactive_conns: u64,
    /// Other services of the same VIP this address has joined (`leave`
    /// keeps the VIP on lo while there are any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_joined: Vec<ServiceAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum JoinResponse {
    Ok { status: JoinStatus },
    Error { message: String },
}

/// One joined real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedReal {
    pub weight: u32,
    /// When it joined (seconds since the epoch).
    pub since: u64,
    /// Set by `leave`: removed when drained or at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_until: Option<u64>,
}

/// Every joined real server, by (service, address); kept in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    pub reals: BTreeMap<(ServiceAddr, IpAddr), JoinedReal>,
}

#[derive(Serialize, Deserialize)]
struct JoinedFile {
    joined: Vec<(ServiceAddr, IpAddr, JoinedReal)>,
}

impl Joined {
    /// Where instance `instance` keeps them: `cfg`'s `state_file`, else in
    /// `state_dir`.
    pub fn file(cfg: Option<&JoinCfg>, state_dir: &Path, instance: &str) -> PathBuf {
        cfg.and_then(|c| c.state_file.clone())
            .unwrap_or_else(|| state_dir.join(format!("{instance}.joined.json")))
    }

    /// Reads `p` (absent: none joined).
    pub fn load(p: &Path) -> anyhow::Result<Joined> {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Joined::default()),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", p.display())),
        };
        let f: JoinedFile =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        Ok(Joined {
            reals: f.joined.into_iter().map(|(s, a, r)| ((s, a), r)).collect(),
        })
    }

    /// Writes `p` whole (a new file renamed over the old one).
    pub fn save(&self, p: &Path) -> anyhow::Result<()> {
        let f = JoinedFile {
            joined: self
                .reals
                .iter()
                .map(|((s, a), r)| (*s, *a, r.clone()))
                .collect(),
        };
        crate::files::write_whole(p, serde_json::to_string_pretty(&f)?.as_bytes())?;
        Ok(())
    }
}

/// `tcp:VIP:PORT` / `udp:[V6]:PORT` as `--service` gives it.
pub fn parse_service(s: &str) -> Result<ServiceAddr, String> {
    let (proto, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("{s}: expected tcp:VIP:PORT or udp:VIP:PORT"))?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        p => return Err(format!("{s}: unknown protocol {p} (tcp or udp)")),
    };
    let (address, port) = crate::cli::ipvsadm::parse_addr_port(rest)?;
    Ok(ServiceAddr::new(protocol, address, port))
}

/// A service as `--service` names it.
pub fn service_name(s: &ServiceAddr) -> String {
    let p = match s.protocol {
        Protocol::Udp => "udp",
        _ => "tcp",
    };
    format!("{p}:{}", fmt_addr_port(&s.address, s.port))
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_and_print_back() {
        for s in ["tcp:192.0.2.100:80", "udp:[2001:db8::1]:53"] {
            assert_eq!(service_name(&parse_service(s).unwrap()), s);
        }
        assert!(parse_service("sctp:192.0.2.1:80").is_err());
        assert!(parse_service("192.0.2.1:80").is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("0123456789abcdef", "0123456789abcdef"));
        assert!(!same_token("0123456789abcdef", "0123456789abcdeF"));
        assert!(!same_token("0123456789abcdef", "0123456789abcde"));
        assert!(!same_token("", "x"));
        assert!(same_token("", ""));
    }

    #[test]
    fn requests_travel_as_json_lines() {
        let r = JoinRequest {
            version: JOIN_VERSION,
            token: Some("t".into()),
            op: JoinOp::Leave {
                service: parse_service("tcp:192.0.2.100:80").unwrap(),
                drain_s: 30,
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"op\":\"leave\""), "{line}");
        assert_eq!(serde_json::from_str::<JoinRequest>(&line).unwrap(), r);
    }

    #[test]
    fn joined_servers_survive_the_file() {
        let dir = std::env::temp_dir().join(format!("lb-joined-{}", std::process::id()));
        let p = Joined::file(None, &dir, "eth1");
        assert_eq!(Joined::load(&p).unwrap(), Joined::default());
        let mut j = Joined::default();
        j.reals.insert(
            (
                parse_service("tcp:192.0.2.100:80").unwrap(),
                "192.0.2.21".parse().unwrap(),
            ),
            JoinedReal {
                weight: 3,
                since: 1,
                draining_until: Some(9),
            },
        );
        j.save(&p).unwrap();
        assert_eq!(Joined::load(&p).unwrap(), j);
        std::fs::write(&p, "{").unwrap();
        assert!(Joined::load(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_join_api_without_authentication_is_refused() {
        let mut c = JoinCfg {
            listen: "127.0.0.1:9470".parse().unwrap(),
            token_file: None,
            tls: None,
            max_drain: 3600,
            max_joined: 256,
            state_file: None,
        };
        assert_eq!(c.check().unwrap_err().0, "join");
        c.tls = Some(TlsCfg {
            cert: "c".into(),
            key: "k".into(),
            client_ca: None,
        });
        assert!(
            c.check().is_err(),
            "TLS without client certificates authenticates nobody"
        );
        c.tls.as_mut().unwrap().client_ca = Some("ca".into());
        assert!(c.check().is_ok());
    }
}
