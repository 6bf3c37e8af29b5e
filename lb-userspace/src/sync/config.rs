//! The YAML `sync:` section and ipvsadm's `--start-daemon` options.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::proto::{GROUP, MAXLEN, PORT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Backup,
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

fn d_roles() -> Vec<Role> {
    vec![Role::Master, Role::Backup]
}
fn d_group() -> IpAddr {
    IpAddr::V4(GROUP)
}
fn d_port() -> u16 {
    PORT
}
fn d_ttl() -> u8 {
    1
}
fn d_maxlen() -> u16 {
    MAXLEN as u16
}
fn d_refresh() -> u32 {
    60
}
fn d_rate() -> u32 {
    50_000
}

/// One sync daemon's settings (a role's, as ipvsadm gives them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncCfg {
    /// Both by default: a pair's directors each send what they serve and
    /// take in what the other serves.
    #[serde(default = "d_roles")]
    pub roles: Vec<Role>,
    /// Default: lbd's interface (`--mcast-interface`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// 0..255; a backup with syncid 0 takes every master's.
    #[serde(default)]
    pub syncid: u8,
    #[serde(default = "d_group")]
    pub group: IpAddr,
    #[serde(default = "d_port")]
    pub port: u16,
    #[serde(default = "d_ttl")]
    pub ttl: u8,
    /// Largest message (UDP payload).
    #[serde(default = "d_maxlen")]
    pub maxlen: u16,
    /// Unicast peers instead of the group (the backup then takes messages
    /// from these only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<IpAddr>,
    /// Seconds between refreshes of the entries seen since the last one.
    #[serde(default = "d_refresh")]
    pub refresh_period: u32,
    /// Records per second the master sends at most.
    #[serde(default = "d_rate")]
    pub max_rate: u32,
}

impl Default for SyncCfg {
    fn default() -> Self {
        SyncCfg {
            roles: d_roles(),
            interface: None,
            syncid: 0,
            group: d_group(),
            port: d_port(),
            ttl: d_ttl(),
            maxlen: d_maxlen(),
            peers: Vec::new(),
            refresh_period: d_refresh(),
            max_rate: d_rate(),
        }
    }
}

impl SyncCfg {
    /// Checks the section: (field, what is wrong).
    pub fn check(&self) -> Result<(), (String, String)> {
        let f = |field: &str, msg: &str| Err((format!("sync.{field}"), msg.to_string()));
        if self.roles.is_empty() {
            return f("roles", "master, backup or both");
        }
        if !self.group.is_multicast() {
            return f("group", "must be a multicast address");
        }
        if self.port == 0 {
            return f("port", "must be 1..65535");
        }
        if self.ttl == 0 {
            return f("ttl", "must be 1..255");
        }
        if !(64..=65507).contains(&(self.maxlen as u32)) {
            return f("maxlen", "must be 64..65507");
        }
        if self
            .peers
            .iter()
            .any(|p| p.is_ipv4() != self.group.is_ipv4())
        {
            return f("peers", "must be of the group's family");
        }
        if self.refresh_period == 0 || self.max_rate == 0 {
            return f(
                "refresh_period",
                "refresh_period and max_rate must be positive",
            );
        }
        Ok(())
    }
}
