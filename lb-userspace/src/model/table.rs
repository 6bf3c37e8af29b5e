//! The whole table (virtual services, their real servers, port groups) and
//! its edits, with ipvsadm's rules and error messages.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    service::{family_name, family_rank},
    ModelError, RealSpec, ServiceAddr, ServiceSpec, MAX_WEIGHT,
};

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
    /// The (protocol, VIP, port) entries service `a` serves: itself, or its
    /// port group's members (none while the group is not declared).
    pub fn entries(&self, a: &ServiceAddr) -> Vec<ServiceAddr> {
        if a.is_fwmark() {
            self.groups
                .get(&a.fwmark)
                .map(|g| g.members.clone())
                .unwrap_or_default()
        } else {
            vec![*a]
        }
    }

    /// How many services-map slots the table needs: one per entry, and
    /// one for a port-group service whose group is not declared yet.
    pub fn slots_needed(&self) -> usize {
        self.services
            .keys()
            .map(|a| self.entries(a).len().max(1))
            .sum()
    }

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
    use crate::model::*;

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
