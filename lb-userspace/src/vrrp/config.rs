//! The YAML `vrrp:` section: one entry per virtual router, as keepalived's
//! `vrrp_instance` (names follow keepalived.conf where they exist).

use std::{collections::BTreeSet, net::IpAddr};

use serde::{Deserialize, Serialize};

fn d_priority() -> u8 {
    100
}
fn d_advert() -> u16 {
    100
}
fn d_version() -> u8 {
    3
}
fn d_true() -> bool {
    true
}
fn d_garp_delay() -> f64 {
    5.0
}
fn d_garp_repeat() -> u32 {
    5
}
fn d_quorum_weight() -> i32 {
    -50
}
fn d_one() -> f64 {
    1.0
}
fn d_rise_fall() -> u32 {
    1
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// What a master does when lbd stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    /// A restart: keep the VIPs and the data plane, and tell VRRPv3 backups
    /// (through the advert interval they adopt) to wait `restart_hold` for
    /// the next lbd. (When the system itself is shutting down, lbd releases
    /// instead.)
    #[default]
    Hold,
    /// Hand over at once (priority 0), as keepalived does when it stops.
    Release,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackInterface {
    pub name: String,
    /// Added to the priority while the interface is down (negative).
    pub weight: i32,
}

/// A tracked program (keepalived's vrrp_script): exit 0 is success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackCheck {
    pub command: Vec<String>,
    #[serde(default = "d_one")]
    pub interval: f64,
    #[serde(default = "d_one")]
    pub timeout: f64,
    /// Added to the priority while the check fails (negative).
    pub weight: i32,
    #[serde(default = "d_rise_fall")]
    pub rise: u32,
    #[serde(default = "d_rise_fall")]
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// Added to the priority for each virtual service on the router's VIPs
    /// whose quorum is lost (no real server can take a connection).
    #[serde(default = "d_quorum_weight")]
    pub quorum_weight: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<TrackInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<TrackCheck>,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            quorum_weight: d_quorum_weight(),
            interfaces: Vec::new(),
            checks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpCfg {
    pub name: String,
    /// Default: lbd's interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub virtual_router_id: u8,
    #[serde(default = "d_priority")]
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2: a multiple of 100).
    #[serde(default = "d_advert")]
    pub advert_int: u16,
    #[serde(default = "d_version")]
    pub version: u8,
    #[serde(default = "d_true")]
    pub preempt: bool,
    /// Seconds a higher-priority backup waits before taking over.
    #[serde(default, skip_serializing_if = "is_default")]
    pub preempt_delay: f64,
    /// Unicast peers instead of the multicast group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<IpAddr>,
    /// Source address of adverts (default: the interface's primary IPv4
    /// address, or its link-local IPv6 address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The VIPs the router owns (one family).
    pub virtual_addresses: Vec<IpAddr>,
    /// Seconds until the second burst of gratuitous ARPs / NAs (0: none).
    #[serde(default = "d_garp_delay")]
    pub garp_master_delay: f64,
    /// Gratuitous ARPs / NAs per VIP and burst.
    #[serde(default = "d_garp_repeat")]
    pub garp_master_repeat: u32,
    /// Seconds between refresh bursts while master (0: none).
    #[serde(default, skip_serializing_if = "is_default")]
    pub garp_master_refresh: f64,
    /// Milliseconds between two gratuitous ARPs / NAs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub garp_interval_ms: u32,
    #[serde(default)]
    pub track: Track,
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_stop: OnStop,
    /// With `on_stop: hold`: how long (seconds) backups wait for the next
    /// lbd before they take over (a restart takes about a second).
    #[serde(default = "d_hold")]
    pub restart_hold: f64,
}

fn d_hold() -> f64 {
    10.0
}

/// A mistake in `vrrp[i]`: the field and what is wrong.
pub type Mistake = (String, String);

impl VrrpCfg {
    /// Checks one router (index `i`).
    pub fn check(&self, i: usize) -> Result<(), Mistake> {
        let f = |field: &str, msg: String| Err((format!("vrrp[{i}].{field}"), msg));
        if self.name.is_empty() || self.name.len() > 32 {
            return f("name", "a name of 1 to 32 characters is required".into());
        }
        if self.virtual_router_id == 0 {
            return f("virtual_router_id", "must be 1..255".into());
        }
        if self.priority == 0 {
            return f("priority", "must be 1..255 (255: the address owner)".into());
        }
        if !matches!(self.version, 2 | 3) {
            return f("version", format!("{} is not 2 or 3", self.version));
        }
        if self.advert_int == 0 || self.advert_int > super::packet::MAX_INTERVAL_CS {
            return f("advert_int", "must be 1..4095 centiseconds".into());
        }
        if self.version == 2 && (!self.advert_int.is_multiple_of(100) || self.advert_int > 25500) {
            return f(
                "advert_int",
                "VRRPv2 counts whole seconds: a multiple of 100 cs".into(),
            );
        }
        let Some(first) = self.virtual_addresses.first() else {
            return f("virtual_addresses", "at least one VIP is required".into());
        };
        let v4 = first.is_ipv4();
        if self.virtual_addresses.iter().any(|a| a.is_ipv4() != v4) {
            return f(
                "virtual_addresses",
                "all of one family (one router per family)".into(),
            );
        }
        if self.virtual_addresses.len() > 255 {
            return f("virtual_addresses", "at most 255".into());
        }
        if !v4 && self.version == 2 {
            return f("version", "VRRPv2 is IPv4 only".into());
        }
        if self
            .unicast_peers
            .iter()
            .chain(self.source.iter())
            .any(|a| a.is_ipv4() != v4)
        {
            return f(
                "unicast_peers",
                "peers and source must be of the VIPs' family".into(),
            );
        }
        if !(1.0..=120.0).contains(&self.restart_hold) {
            return f("restart_hold", "must be 1..120 seconds".into());
        }
        for (name, v) in [
            ("preempt_delay", self.preempt_delay),
            ("garp_master_delay", self.garp_master_delay),
            ("garp_master_refresh", self.garp_master_refresh),
        ] {
            if !(0.0..=3600.0).contains(&v) {
                return f(name, "must be 0..3600 seconds".into());
            }
        }
        if self.garp_master_repeat > 100 || self.garp_interval_ms > 10_000 {
            return f(
                "garp_master_repeat",
                "at most 100 per burst, 10 s apart".into(),
            );
        }
        for (j, c) in self.track.checks.iter().enumerate() {
            if c.command.is_empty() {
                return f(
                    &format!("track.checks[{j}].command"),
                    "a program is required".into(),
                );
            }
            if !(c.interval > 0.0 && c.timeout > 0.0 && c.timeout <= 300.0) {
                return f(
                    &format!("track.checks[{j}]"),
                    "interval and timeout must be positive".into(),
                );
            }
        }
        Ok(())
    }

    pub fn family_v4(&self) -> bool {
        self.virtual_addresses.first().is_none_or(|a| a.is_ipv4())
    }
}

/// Checks the section as a whole: each router, unique names, unique
/// (interface, family, VRID), no VIP in two routers.
pub fn check_all(v: &[VrrpCfg], default_iface: Option<&str>) -> Result<(), Mistake> {
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut vips = BTreeSet::new();
    for (i, r) in v.iter().enumerate() {
        r.check(i)?;
        if !names.insert(&r.name) {
            return Err((
                format!("vrrp[{i}].name"),
                format!("{} is used twice", r.name),
            ));
        }
        let iface = r.interface.as_deref().or(default_iface).unwrap_or("");
        if !ids.insert((iface.to_string(), r.family_v4(), r.virtual_router_id)) {
            return Err((
                format!("vrrp[{i}].virtual_router_id"),
                format!("{} is used twice on {iface}", r.virtual_router_id),
            ));
        }
        for a in &r.virtual_addresses {
            if !vips.insert(*a) {
                return Err((
                    format!("vrrp[{i}].virtual_addresses"),
                    format!("{a} is in two routers"),
                ));
            }
        }
    }
    Ok(())
}
