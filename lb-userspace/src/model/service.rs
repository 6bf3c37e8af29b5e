//! A virtual service's identity and settings, and its real servers, as the
//! operator declares them (ipvsadm's -t/-u/-f, -s, -b, -p, -M, -o, -r, -w,
//! -x, -y).

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{ModelError, Scheduler};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }
    /// As ipvsadm prints it in listings.
    pub fn upper(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A virtual service's identity: (protocol, VIP, port), or a port group's
/// fwmark (ipvsadm -f N): then `address` is the unspecified address of the
/// group's family, `protocol` TCP and `port` 0, and the group's members
/// ([`Table::groups`]) say which (protocol, VIP, port) it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceAddr {
    /// Port group (fwmark) of the service; 0 = a plain (protocol, VIP, port).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fwmark: u32,
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl ServiceAddr {
    pub fn new(protocol: Protocol, address: IpAddr, port: u16) -> ServiceAddr {
        ServiceAddr {
            fwmark: 0,
            protocol,
            address,
            port,
        }
    }

    /// The service of port group `mark` (IPv6 with `v6`, as ipvsadm -f N -6).
    pub fn fwmark(mark: u32, v6: bool) -> ServiceAddr {
        ServiceAddr {
            fwmark: mark,
            protocol: Protocol::Tcp,
            address: if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            },
            port: 0,
        }
    }

    pub fn is_fwmark(&self) -> bool {
        self.fwmark != 0
    }

    /// ipvsadm's sort order: fwmark (plain services first), family,
    /// protocol, address, port.
    fn sort_key(&self) -> (u32, u8, Protocol, IpAddr, u16) {
        (
            self.fwmark,
            family_rank(&self.address),
            self.protocol,
            self.address,
            self.port,
        )
    }
}

impl Ord for ServiceAddr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}
impl PartialOrd for ServiceAddr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

pub(crate) fn family_rank(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

pub(crate) fn family_name(a: &IpAddr) -> &'static str {
    match a {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// `addr:port`, with IPv6 in brackets, as ipvsadm prints it.
pub fn fmt_addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_fwmark() {
            let v6 = if self.address.is_ipv6() { " ipv6" } else { "" };
            return write!(f, "fwmark {}{v6}", self.fwmark);
        }
        write!(
            f,
            "{} {}",
            self.protocol,
            fmt_addr_port(&self.address, self.port)
        )
    }
}

/// Scheduler flags (`-b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct SchedFlags {
    #[serde(default)]
    pub mh_fallback: bool,
    #[serde(default)]
    pub mh_port: bool,
    #[serde(default)]
    pub sh_fallback: bool,
    #[serde(default)]
    pub sh_port: bool,
}

impl SchedFlags {
    /// Parses a comma-separated list of named flags (YAML `flags`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut f = SchedFlags::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            match part {
                "mh-fallback" => f.mh_fallback = true,
                "mh-port" => f.mh_port = true,
                "sh-fallback" => f.sh_fallback = true,
                "sh-port" => f.sh_port = true,
                other => return Err(format!("unknown scheduler flag '{other}'")),
            }
        }
        Ok(f)
    }

    /// Parses ipvsadm's `-b` list for `scheduler`, as ipvsadm's
    /// parse_sched_flags: the named flags, and the generic `flag-1`,
    /// `flag-2`, `flag-3` (the kernel's SCHED1..3 bits: fallback and port
    /// for sh and mh). Returns the flags and the generic ones no scheduler
    /// of this director uses (accepted, as ipvsadm does, and ignored).
    pub fn parse_ipvsadm(s: &str, scheduler: Scheduler) -> Result<(Self, Vec<String>), String> {
        let mut named = Vec::new();
        let mut ignored = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let mapped = match (part, scheduler) {
                ("flag-1", Scheduler::Sh) => "sh-fallback",
                ("flag-2", Scheduler::Sh) => "sh-port",
                ("flag-1", Scheduler::Mh) => "mh-fallback",
                ("flag-2", Scheduler::Mh) => "mh-port",
                ("flag-1" | "flag-2" | "flag-3", _) => {
                    ignored.push(part.to_string());
                    continue;
                }
                (other, _) => other,
            };
            named.push(mapped);
        }
        let f = Self::parse(&named.join(",")).map_err(|e| {
            format!(
                "{e} (known: sh-fallback, sh-port, mh-fallback, mh-port, flag-1, flag-2, flag-3)"
            )
        })?;
        Ok((f, ignored))
    }
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.sh_fallback {
            v.push("sh-fallback");
        }
        if self.sh_port {
            v.push("sh-port");
        }
        if self.mh_fallback {
            v.push("mh-fallback");
        }
        if self.mh_port {
            v.push("mh-port");
        }
        v
    }
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }
}

/// A virtual service's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub addr: ServiceAddr,
    pub scheduler: Scheduler,
    #[serde(default)]
    pub flags: SchedFlags,
    /// Persistence timeout in seconds (`-p`).
    #[serde(default)]
    pub persistent: Option<u32>,
    /// Persistence granularity (`-M`) as a prefix length of the client
    /// address (default /32 for IPv4, /128 for IPv6).
    #[serde(default)]
    pub netmask: Option<u8>,
    /// One-packet scheduling (`-o`, UDP only).
    #[serde(default)]
    pub one_packet: bool,
}

impl ServiceSpec {
    /// The persistence prefix length in force.
    pub fn prefix(&self) -> u8 {
        self.netmask.unwrap_or(match self.addr.address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        })
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.addr.port == 0 && !self.addr.is_fwmark() && self.persistent.is_none() {
            return Err(ModelError::PortZeroNotPersistent);
        }
        let max = if self.addr.address.is_ipv4() { 32 } else { 128 };
        if let Some(m) = self.netmask {
            if m > max {
                return Err(ModelError::Netmask(m, max));
            }
        }
        if self.one_packet && self.addr.protocol != Protocol::Udp {
            return Err(ModelError::OnePacketTcp);
        }
        let allowed = self.scheduler.info().flags;
        if self.flags.names().iter().any(|f| !allowed.contains(f)) {
            return Err(ModelError::FlagMismatch {
                flag: self.flags.names().join(","),
                sched: self.scheduler,
            });
        }
        Ok(())
    }
}

/// Forwarding method. Only direct routing ("Route") is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    #[default]
    Route,
}

impl Forward {
    pub fn ipvsadm_name(self) -> &'static str {
        "Route"
    }
}

/// A real server of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealSpec {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    #[serde(default)]
    pub forward: Forward,
    /// Upper connection threshold (-x; 0 = none): at active + inactive >=
    /// this, no new connections until below the lower threshold.
    #[serde(default)]
    pub u_threshold: u32,
    /// Lower connection threshold (-y; 0 = 3/4 of the upper one).
    #[serde(default)]
    pub l_threshold: u32,
}
