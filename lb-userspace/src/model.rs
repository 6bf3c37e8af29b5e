//! The director's service table as the operator declares it: virtual
//! services and their real servers. Pure data and validation; the daemon
//! turns it into BPF map contents (see `dataplane`).

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

/// Highest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65535;
/// ipvsadm's default persistence timeout for a bare `-p`.
pub const DEFAULT_PERSISTENCE: u32 = 360;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    // The first four are ipvsadm's own messages, so scripts that match them keep working.
    #[error("Service already exists")]
    ServiceExists,
    #[error("No such service")]
    NoService,
    #[error("Destination already exists")]
    RealExists,
    #[error("No such destination")]
    NoReal,
    #[error("weight {0} out of range (0..={MAX_WEIGHT})")]
    Weight(u32),
    #[error("port 0 is only allowed on a persistent service (-p)")]
    PortZeroNotPersistent,
    #[error("real server {real} is {real_family}, but the virtual service is {svc_family}")]
    FamilyMismatch {
        real: IpAddr,
        real_family: &'static str,
        svc_family: &'static str,
    },
    #[error("netmask /{0} is longer than the address (/{1})")]
    Netmask(u8, u8),
    #[error("one-packet scheduling (-o) applies to UDP services only")]
    OnePacketTcp,
    #[error("scheduler flag {flag} does not apply to scheduler {sched}")]
    FlagMismatch { flag: String, sched: Scheduler },
    #[error("lower threshold {1} is above the upper threshold {0}")]
    Thresholds(u32, u32),
    #[error("fwmark must be greater than 0")]
    Fwmark,
    #[error("port group member {0} {1}")]
    GroupMember(String, String),
    #[error("no port group with fwmark {0}")]
    NoGroup(u32),
    #[error("{0} is a member of port group {1}: use -f {1}")]
    InGroup(String, u32),
}

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

fn family_rank(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

fn family_name(a: &IpAddr) -> &'static str {
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

/// Schedulers. The set grows in later work; each is a clean seam: the daemon
/// turns it into a ring (see `sched`), the XDP program walks or hashes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
    Wrr,
    Mh,
    Lc,
    /// ipvsadm's default.
    #[default]
    Wlc,
    Sed,
    Nq,
    Fo,
    Ovf,
    Sh,
    Dh,
    Twos,
    Lblc,
    Lblcr,
}

impl Scheduler {
    pub const ALL: [Scheduler; 14] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Mh,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Sh,
        Scheduler::Dh,
        Scheduler::Twos,
        Scheduler::Lblc,
        Scheduler::Lblcr,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Mh => "mh",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Sh => "sh",
            Scheduler::Dh => "dh",
            Scheduler::Twos => "twos",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
        }
    }
    pub fn id(self) -> u8 {
        use lb_common::sched;
        match self {
            Scheduler::Rr => sched::RR,
            Scheduler::Wrr => sched::WRR,
            Scheduler::Mh => sched::MH,
            Scheduler::Lc => sched::LC,
            Scheduler::Wlc => sched::WLC,
            Scheduler::Sed => sched::SED,
            Scheduler::Nq => sched::NQ,
            Scheduler::Fo => sched::FO,
            Scheduler::Ovf => sched::OVF,
            Scheduler::Sh => sched::SH,
            Scheduler::Dh => sched::DH,
            Scheduler::Twos => sched::TWOS,
            Scheduler::Lblc => sched::LBLC,
            Scheduler::Lblcr => sched::LBLCR,
        }
    }
    /// Picks by live connection counts in the data plane.
    pub fn is_dynamic(self) -> bool {
        matches!(
            self,
            Scheduler::Lc
                | Scheduler::Wlc
                | Scheduler::Sed
                | Scheduler::Nq
                | Scheduler::Lblc
                | Scheduler::Lblcr
        )
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown scheduler '{0}' (supported: rr, wrr, lc, wlc, sed, nq, lblc, lblcr, dh, sh, mh, fo, ovf, twos)"
)]
pub struct UnknownScheduler(pub String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheduler::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| UnknownScheduler(s.to_string()))
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
    /// Parses ipvsadm's comma-separated `-b` list.
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
        let f = &self.flags;
        let mh = f.mh_fallback || f.mh_port;
        let sh = f.sh_fallback || f.sh_port;
        if (mh && self.scheduler != Scheduler::Mh) || (sh && self.scheduler != Scheduler::Sh) {
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

/// A port group: the (protocol, VIP, port) entries one fwmark service
/// serves, sharing its scheduler, real servers and persistence (what an
/// iptables MARK rule does for IPVS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortGroup {
    /// A name for the operator (YAML `port_groups[].name`).
    #[serde(default)]
    pub name: String,
    pub members: Vec<ServiceAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub spec: ServiceSpec,
    /// Real servers keyed by (address, port), in ipvsadm's sort order.
    pub reals: BTreeMap<(IpAddr, u16), RealSpec>,
}

/// The whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub services: BTreeMap<ServiceAddr, Service>,
    /// Port groups by fwmark.
    #[serde(default)]
    pub groups: BTreeMap<u32, PortGroup>,
}

impl Table {
    /// The group (fwmark) a (protocol, VIP, port) entry belongs to.
    pub fn group_of(&self, a: &ServiceAddr) -> Option<u32> {
        self.groups
            .iter()
            .find(|(_, g)| g.members.contains(a))
            .map(|(m, _)| *m)
    }

    /// Declares (or replaces) port group `mark`. Members are plain
    /// (protocol, VIP, port) entries of one family, not services of their
    /// own and not in another group.
    pub fn set_group(&mut self, mark: u32, group: PortGroup) -> Result<(), ModelError> {
        if mark == 0 {
            return Err(ModelError::Fwmark);
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &group.members {
            if m.is_fwmark() {
                return Err(ModelError::GroupMember(m.to_string(), "is a fwmark".into()));
            }
            if m.port == 0 {
                return Err(ModelError::GroupMember(
                    m.to_string(),
                    "needs a port".into(),
                ));
            }
            if !seen.insert(*m) {
                return Err(ModelError::GroupMember(
                    m.to_string(),
                    "is listed twice".into(),
                ));
            }
            if family_rank(&m.address) != family_rank(&group.members[0].address) {
                return Err(ModelError::GroupMember(
                    m.to_string(),
                    "mixes address families in one group".into(),
                ));
            }
            if self.services.contains_key(m) {
                return Err(ModelError::GroupMember(
                    m.to_string(),
                    "is also a virtual service of its own".into(),
                ));
            }
            if let Some(other) = self.group_of(m).filter(|o| *o != mark) {
                return Err(ModelError::GroupMember(
                    m.to_string(),
                    format!("is already in port group {other}"),
                ));
            }
        }
        if let (Some(first), Some(svc)) = (
            group.members.first(),
            self.services.keys().find(|a| a.fwmark == mark),
        ) {
            if family_rank(&first.address) != family_rank(&svc.address) {
                return Err(ModelError::GroupMember(
                    first.to_string(),
                    format!("is not of the family of service {svc}"),
                ));
            }
        }
        self.groups.insert(mark, group);
        Ok(())
    }

    pub fn del_group(&mut self, mark: u32) -> Result<(), ModelError> {
        self.groups
            .remove(&mark)
            .map(|_| ())
            .ok_or(ModelError::NoGroup(mark))
    }

    pub fn add_service(&mut self, spec: ServiceSpec) -> Result<(), ModelError> {
        spec.validate()?;
        if self.services.contains_key(&spec.addr) {
            return Err(ModelError::ServiceExists);
        }
        if let Some(m) = self.group_of(&spec.addr) {
            return Err(ModelError::InGroup(spec.addr.to_string(), m));
        }
        self.services.insert(
            spec.addr,
            Service {
                spec,
                reals: BTreeMap::new(),
            },
        );
        Ok(())
    }

    pub fn edit_service(&mut self, spec: ServiceSpec) -> Result<(), ModelError> {
        spec.validate()?;
        let svc = self
            .services
            .get_mut(&spec.addr)
            .ok_or(ModelError::NoService)?;
        svc.spec = spec;
        Ok(())
    }

    pub fn del_service(&mut self, addr: &ServiceAddr) -> Result<(), ModelError> {
        self.services
            .remove(addr)
            .map(|_| ())
            .ok_or(ModelError::NoService)
    }

    /// ipvsadm -C: every virtual service goes (port groups stay, as
    /// iptables MARK rules survive an ipvsadm -C).
    pub fn clear(&mut self) {
        self.services.clear();
    }

    /// In DR mode the real-server port is the virtual port (ipvsadm forces it).
    fn normalise(svc: &ServiceSpec, mut real: RealSpec) -> Result<RealSpec, ModelError> {
        if real.weight > MAX_WEIGHT {
            return Err(ModelError::Weight(real.weight));
        }
        if real.l_threshold > real.u_threshold && real.u_threshold != 0 {
            return Err(ModelError::Thresholds(real.u_threshold, real.l_threshold));
        }
        if family_rank(&real.address) != family_rank(&svc.addr.address) {
            return Err(ModelError::FamilyMismatch {
                real: real.address,
                real_family: family_name(&real.address),
                svc_family: family_name(&svc.addr.address),
            });
        }
        real.port = svc.addr.port;
        Ok(real)
    }

    pub fn add_real(&mut self, svc: &ServiceAddr, real: RealSpec) -> Result<(), ModelError> {
        let s = self.services.get_mut(svc).ok_or(ModelError::NoService)?;
        let real = Self::normalise(&s.spec, real)?;
        let k = (real.address, real.port);
        if s.reals.contains_key(&k) {
            return Err(ModelError::RealExists);
        }
        s.reals.insert(k, real);
        Ok(())
    }

    pub fn edit_real(&mut self, svc: &ServiceAddr, real: RealSpec) -> Result<(), ModelError> {
        let s = self.services.get_mut(svc).ok_or(ModelError::NoService)?;
        let real = Self::normalise(&s.spec, real)?;
        let slot = s
            .reals
            .get_mut(&(real.address, real.port))
            .ok_or(ModelError::NoReal)?;
        *slot = real;
        Ok(())
    }

    pub fn del_real(&mut self, svc: &ServiceAddr, address: IpAddr) -> Result<(), ModelError> {
        let s = self.services.get_mut(svc).ok_or(ModelError::NoService)?;
        let port = s.spec.addr.port;
        s.reals
            .remove(&(address, port))
            .map(|_| ())
            .ok_or(ModelError::NoReal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(port: u16) -> ServiceSpec {
        ServiceSpec {
            addr: ServiceAddr {
                fwmark: 0,
                protocol: Protocol::Tcp,
                address: "192.0.2.100".parse().unwrap(),
                port,
            },
            scheduler: Scheduler::Wrr,
            flags: SchedFlags::default(),
            persistent: None,
            netmask: None,
            one_packet: false,
        }
    }

    fn real(a: &str, port: u16, weight: u32) -> RealSpec {
        RealSpec {
            u_threshold: 0,
            l_threshold: 0,
            address: a.parse().unwrap(),
            port,
            weight,
            forward: Forward::Route,
        }
    }

    #[test]
    fn add_edit_delete_with_ipvsadm_errors() {
        let mut t = Table::default();
        t.add_service(svc(80)).unwrap();
        assert_eq!(t.add_service(svc(80)), Err(ModelError::ServiceExists));
        let a = svc(80).addr;
        t.add_real(&a, real("192.0.2.11", 8080, 1)).unwrap();
        // DR forces the real port to the virtual port.
        assert!(t.services[&a]
            .reals
            .contains_key(&("192.0.2.11".parse().unwrap(), 80)));
        assert_eq!(
            t.add_real(&a, real("192.0.2.11", 80, 1)),
            Err(ModelError::RealExists)
        );
        assert_eq!(
            t.edit_real(&a, real("192.0.2.12", 80, 1)),
            Err(ModelError::NoReal)
        );
        assert_eq!(
            t.add_real(&a, real("192.0.2.12", 80, 65536)),
            Err(ModelError::Weight(65536))
        );
        t.edit_real(&a, real("192.0.2.11", 80, 5)).unwrap();
        assert_eq!(t.services[&a].reals.values().next().unwrap().weight, 5);
        t.del_real(&a, "192.0.2.11".parse().unwrap()).unwrap();
        assert_eq!(
            t.del_real(&a, "192.0.2.11".parse().unwrap()),
            Err(ModelError::NoReal)
        );
        t.del_service(&a).unwrap();
        assert_eq!(t.del_service(&a), Err(ModelError::NoService));
    }

    #[test]
    fn port_zero_needs_persistence_and_families_must_match() {
        let mut t = Table::default();
        assert_eq!(
            t.add_service(svc(0)),
            Err(ModelError::PortZeroNotPersistent)
        );
        let mut p = svc(0);
        p.persistent = Some(DEFAULT_PERSISTENCE);
        t.add_service(p.clone()).unwrap();
        let e = t.add_real(&p.addr, real("2001:db8::1", 0, 1)).unwrap_err();
        assert!(matches!(e, ModelError::FamilyMismatch { .. }), "{e}");
    }

    #[test]
    fn services_sort_like_ipvsadm() {
        let mut t = Table::default();
        for (proto, addr, port) in [
            (Protocol::Udp, "192.0.2.100", 53),
            (Protocol::Tcp, "2001:db8::100", 80),
            (Protocol::Tcp, "192.0.2.100", 443),
            (Protocol::Tcp, "192.0.2.100", 80),
        ] {
            let mut s = svc(port);
            s.addr.protocol = proto;
            s.addr.address = addr.parse().unwrap();
            t.add_service(s).unwrap();
        }
        let order: Vec<String> = t.services.keys().map(|k| k.to_string()).collect();
        assert_eq!(
            order,
            [
                "tcp 192.0.2.100:80",
                "tcp 192.0.2.100:443",
                "udp 192.0.2.100:53",
                "tcp [2001:db8::100]:80"
            ]
        );
    }

    #[test]
    fn flags_only_with_mh() {
        let mut s = svc(80);
        s.flags = SchedFlags::parse("mh-port").unwrap();
        assert!(matches!(s.validate(), Err(ModelError::FlagMismatch { .. })));
        s.scheduler = Scheduler::Mh;
        s.validate().unwrap();
        s.flags = SchedFlags::parse("sh-port,sh-fallback").unwrap();
        assert!(matches!(s.validate(), Err(ModelError::FlagMismatch { .. })));
        s.scheduler = Scheduler::Sh;
        s.validate().unwrap();
        assert!(SchedFlags::parse("sh-bogus").is_err());
    }
}
