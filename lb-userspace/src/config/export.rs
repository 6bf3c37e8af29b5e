//! `lbadm apply -f` / SIGHUP: the difference between the running table and
//! a configuration, and `lbadm export`: the running state as a
//! configuration that `lbd --config` (or `lbadm apply`) reproduces.

use std::{collections::HashMap, net::IpAddr};

use crate::{
    config::{Config, MemberCfg, Persistence, PortGroupCfg, RealCfg, ServiceCfg, TimeoutsCfg},
    health::{CheckSpec, ServicePolicy},
    model::{ServiceAddr, Table, DEFAULT_PERSISTENCE},
};

/// One line per change from `old` to `new`: `+` added, `-` removed, `~`
/// changed (with what changed).
pub fn diff(old: &Table, new: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for (m, g) in &new.groups {
        match old.groups.get(m) {
            None => out.push(format!("+ port group {m} ({} members)", g.members.len())),
            Some(o) if o != g => out.push(format!("~ port group {m}: members changed")),
            _ => {}
        }
    }
    for m in old.groups.keys().filter(|m| !new.groups.contains_key(m)) {
        out.push(format!("- port group {m}"));
    }
    for (a, s) in &new.services {
        let Some(o) = old.services.get(a) else {
            out.push(format!("+ service {a} {}", s.spec.scheduler));
            for r in s.reals.values() {
                out.push(format!("+ real {} to {a} weight {}", r.address, r.weight));
            }
            continue;
        };
        if o.spec != s.spec {
            let mut what = Vec::new();
            if o.spec.scheduler != s.spec.scheduler {
                what.push(format!(
                    "scheduler {} -> {}",
                    o.spec.scheduler, s.spec.scheduler
                ));
            }
            if o.spec.persistent != s.spec.persistent {
                what.push(format!(
                    "persistent {:?} -> {:?}",
                    o.spec.persistent, s.spec.persistent
                ));
            }
            if what.is_empty() {
                what.push("flags".into());
            }
            out.push(format!("~ service {a}: {}", what.join(", ")));
        }
        for (k, r) in &s.reals {
            match o.reals.get(k) {
                None => out.push(format!("+ real {} to {a} weight {}", r.address, r.weight)),
                Some(or) if or != r => {
                    let mut what = Vec::new();
                    if or.weight != r.weight {
                        what.push(format!("weight {} -> {}", or.weight, r.weight));
                    }
                    if (or.u_threshold, or.l_threshold) != (r.u_threshold, r.l_threshold) {
                        what.push(format!(
                            "thresholds {}/{} -> {}/{}",
                            or.u_threshold, or.l_threshold, r.u_threshold, r.l_threshold
                        ));
                    }
                    out.push(format!("~ real {} of {a}: {}", r.address, what.join(", ")));
                }
                _ => {}
            }
        }
        for (k, r) in &o.reals {
            if !s.reals.contains_key(k) {
                out.push(format!("- real {} from {a}", r.address));
            }
        }
    }
    for a in old
        .services
        .keys()
        .filter(|a| !new.services.contains_key(a))
    {
        out.push(format!("- service {a}"));
    }
    out
}

/// Checks in (service, real server) order, to compare two configurations'.
pub fn sorted_checks(
    mut v: Vec<(crate::model::ServiceAddr, IpAddr, CheckSpec)>,
) -> Vec<(crate::model::ServiceAddr, IpAddr, CheckSpec)> {
    v.sort_by_key(|a| (a.0, a.1));
    v
}

/// What runs, besides the configuration's interface, mode and limits.
pub struct Running<'a> {
    pub table: &'a Table,
    pub policies: &'a HashMap<crate::model::ServiceAddr, ServicePolicy>,
    pub checks: &'a [(crate::model::ServiceAddr, IpAddr, CheckSpec)],
    /// (tcp, tcpfin, udp) as ipvsadm --timeout prints them.
    pub timeouts: (u32, u32, u32),
    pub expire_nodest_conn: bool,
    pub sloppy_tcp: bool,
    pub vlans: &'a std::collections::BTreeSet<u16>,
    /// Services that take joins, with their check.
    pub joinable: &'a HashMap<crate::model::ServiceAddr, Option<CheckSpec>>,
}

/// The running state as a configuration: `base` gives interface, mode and
/// limits, `running` the rest (so changes made with lbadm appear).
pub fn export(base: &Config, running: &Running) -> Config {
    let Running {
        table,
        policies,
        checks,
        timeouts,
        expire_nodest_conn,
        sloppy_tcp,
        vlans,
        joinable,
    } = *running;
    let group_name = |m: u32| {
        table
            .groups
            .get(&m)
            .map(|g| g.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("fwmark{m}"))
    };
    let port_groups: Vec<PortGroupCfg> = table
        .groups
        .iter()
        .map(|(m, g)| PortGroupCfg {
            name: group_name(*m),
            fwmark: *m,
            members: g
                .members
                .iter()
                .map(|a| MemberCfg {
                    protocol: a.protocol,
                    address: a.address,
                    port: a.port,
                })
                .collect(),
        })
        .collect();
    let mut services = Vec::new();
    for (a, s) in &table.services {
        let check_of = |r: &IpAddr| {
            checks
                .iter()
                .find(|(sa, ra, _)| sa == a && ra == r)
                .map(|(_, _, c)| c.clone())
        };
        let per_real: Vec<Option<CheckSpec>> =
            s.reals.values().map(|r| check_of(&r.address)).collect();
        // One check shared by every real server goes to the service.
        let shared = match per_real.first() {
            Some(Some(c)) if per_real.iter().all(|x| x.as_ref() == Some(c)) => Some(c.clone()),
            _ => None,
        };
        let full = if a.address.is_ipv4() { 32 } else { 128 };
        let p = policies.get(a).cloned().unwrap_or(ServicePolicy {
            quorum: 1,
            ..Default::default()
        });
        let (protocol, address, port, port_group) = if a.is_fwmark() {
            (None, None, None, Some(group_name(a.fwmark)))
        } else {
            (Some(a.protocol), Some(a.address), Some(a.port), None)
        };
        // A fwmark service without its group exports the mark.
        let (port_group, fwmark) = match port_group {
            Some(_) if !table.groups.contains_key(&a.fwmark) => (None, Some(a.fwmark)),
            g => (g, None),
        };
        services.push(ServiceCfg {
            protocol,
            address,
            port,
            port_group,
            fwmark,
            scheduler: s.spec.scheduler,
            flags: s.spec.flags.names().iter().map(|x| x.to_string()).collect(),
            persistent: s.spec.persistent.map(|t| {
                if t == DEFAULT_PERSISTENCE {
                    Persistence::Enabled(true)
                } else {
                    Persistence::Seconds(t)
                }
            }),
            netmask: s.spec.netmask.filter(|m| *m != full),
            one_packet: s.spec.one_packet,
            real_servers: s
                .reals
                .values()
                .zip(per_real)
                .map(|(r, c)| RealCfg {
                    address: r.address,
                    weight: r.weight,
                    forward: r.forward,
                    upper_threshold: r.u_threshold,
                    lower_threshold: r.l_threshold,
                    health_check: if shared.is_some() { None } else { c },
                    active: true,
                })
                .collect(),
            // A service that takes joins keeps its check with no real server.
            health_check: shared.or_else(|| joinable.get(a).cloned().flatten()),
            on_failure: p.on_failure,
            sorry_server: p.sorry_server,
            quorum: p.quorum,
            hysteresis: p.hysteresis,
            joinable: joinable.contains_key(a),
            active: true,
        });
    }
    let running: Vec<ServiceAddr> = table.services.keys().copied().collect();
    keep_inactive(base, &running, &mut services);
    let t = TimeoutsCfg {
        tcp: timeouts.0,
        tcpfin: timeouts.1,
        udp: timeouts.2,
    };
    let default_t = TimeoutsCfg::in_force(None);
    Config {
        interface: base.interface.clone(),
        xdp_mode: base.xdp_mode,
        limits: base.limits.clone(),
        timeouts: if timeouts == default_t { None } else { Some(t) },
        expire_nodest_conn,
        sloppy_tcp,
        vlans: vlans.iter().copied().collect(),
        metrics: base.metrics.clone(),
        console: base.console.clone(),
        join: base.join.clone(),
        vrrp: base.vrrp.clone(),
        sync: base.sync.clone(),
        bgp: base.bgp.clone(),
        port_groups,
        services,
    }
}

/// The version of an exported configuration (its MD5, hex): what a
/// change was made against (`Request::Apply::if_unchanged`).
pub fn config_version(yaml: &str) -> String {
    crate::health::md5_hex(yaml.as_bytes())
}

/// Adds what `base` declares inactive (it is in no running table) to
/// `services` (one per address of `running`, in its order): inactive
/// services the running table has not taken back (lbadm may have added
/// the same address since), and inactive real servers of the services
/// still running.
fn keep_inactive(base: &Config, running: &[ServiceAddr], services: &mut Vec<ServiceCfg>) {
    for (i, b) in base.services.iter().enumerate() {
        let Ok(addr) = base.service_addr(b, i, "") else {
            continue;
        };
        match running.iter().position(|r| *r == addr) {
            None if !b.active => services.push(b.clone()),
            Some(at) if b.active => {
                let s = &mut services[at];
                for r in b.real_servers.iter().filter(|r| !r.active) {
                    if s.real_servers.iter().all(|x| x.address != r.address) {
                        s.real_servers.push(r.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
timeouts: {tcp: 3600, tcpfin: 0, udp: 0}
expire_nodest_conn: true
sloppy_tcp: true
vlans: [100, 42]
join: {listen: "192.0.2.2:9470", token_file: /etc/lbd/join.token}
port_groups:
  - name: shop
    fwmark: 7
    members:
      - {protocol: tcp, address: 192.0.2.100, port: 80}
      - {protocol: tcp, address: 192.0.2.100, port: 443}
services:
  - port_group: shop
    scheduler: lblcr
    persistent: 300
    netmask: 24
    health_check: {type: tcp, port: 80}
    real_servers:
      - {address: 192.0.2.11, weight: 3, upper_threshold: 100, lower_threshold: 50}
      - {address: 192.0.2.12}
  - protocol: udp
    address: 2001:db8::100
    port: 53
    scheduler: sh
    flags: [sh-port, sh-fallback]
    sorry_server: 2001:db8::99
    quorum: 2
    real_servers:
      - {address: 2001:db8::11, health_check: {type: dns, name: example.org}}
      - {address: 2001:db8::12}
  - protocol: tcp
    address: 192.0.2.100
    port: 8080
    joinable: true
    health_check: {type: tcp}
"#;

    /// `c` exported as if it ran unchanged with `table`.
    fn exported(c: &Config, table: &Table) -> Config {
        let (tcp, tcpfin, udp) = TimeoutsCfg::in_force(c.timeouts);
        let vlans = c.vlans.iter().copied().collect();
        export(
            c,
            &Running {
                table,
                policies: &c.policies(),
                checks: &c.checks(),
                timeouts: (tcp, tcpfin, udp),
                expire_nodest_conn: c.expire_nodest_conn,
                sloppy_tcp: c.sloppy_tcp,
                vlans: &vlans,
                joinable: &c.joinable(),
            },
        )
    }

    #[test]
    fn export_reproduces_the_configuration() {
        let c = Config::parse(CFG, "a.yaml").unwrap();
        let table = c.table("a.yaml").unwrap();
        let out = exported(&c, &table);
        let text = serde_yaml::to_string(&out).unwrap();
        let again = Config::parse(&text, "exported.yaml").unwrap();
        assert_eq!(again.table("exported.yaml").unwrap(), table, "{text}");
        assert_eq!(again.policies(), c.policies());
        assert_eq!(sorted_checks(again.checks()), sorted_checks(c.checks()));
        assert!(again.expire_nodest_conn);
        assert!(again.sloppy_tcp);
        assert_eq!(again.vlans, [42, 100]);
        assert_eq!(again.timeouts.map(|t| t.tcp), Some(3600));
    }

    #[test]
    fn inactive_services_and_reals_stay_out_of_the_table_and_in_the_export() {
        let text = r#"
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    health_check: {type: tcp}
    real_servers:
      - {address: 192.0.2.11}
      - {address: 192.0.2.12, active: false}
  - protocol: tcp
    address: 192.0.2.100
    port: 443
    active: false
    sorry_server: 192.0.2.99
    real_servers: [{address: 192.0.2.11}]
"#;
        let c = Config::parse(text, "a.yaml").unwrap();
        let table = c.table("a.yaml").unwrap();
        assert_eq!(table.services.len(), 1);
        let web = table.services.values().next().unwrap();
        assert_eq!(web.reals.len(), 1);
        assert_eq!(c.checks().len(), 1, "no check for inactive real servers");
        assert_eq!(c.policies().len(), 1);
        let out = exported(&c, &table);
        let again = Config::parse(&serde_yaml::to_string(&out).unwrap(), "b.yaml").unwrap();
        assert_eq!(again.table("b.yaml").unwrap(), table);
        assert_eq!(again.services.len(), 2);
        assert!(!again.services[1].active);
        assert_eq!(again.services[1].sorry_server, c.services[1].sorry_server);
        let reals = &again.services[0].real_servers;
        assert_eq!(reals.len(), 2);
        assert!(reals[0].active && !reals[1].active);
        // Still validated: an inactive duplicate is a duplicate.
        let dup = text.replace("port: 443", "port: 80");
        let e = Config::parse(&dup, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("services[1]: duplicate service"), "{e}");
    }

    #[test]
    fn diff_names_every_change() {
        let c = Config::parse(CFG, "a.yaml").unwrap();
        let old = c.table("a.yaml").unwrap();
        let edited = CFG
            .replace("weight: 3,", "weight: 0,")
            .replace("scheduler: sh\n", "scheduler: mh\n")
            .replace("flags: [sh-port, sh-fallback]", "flags: [mh-port]")
            .replace("      - {address: 2001:db8::12}\n", "");
        let new = Config::parse(&edited, "b.yaml")
            .unwrap()
            .table("b.yaml")
            .unwrap();
        let d = diff(&old, &new);
        assert!(
            d.contains(&"~ real 192.0.2.11 of fwmark 7: weight 3 -> 0".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"~ service udp [2001:db8::100]:53: scheduler sh -> mh".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"- real 2001:db8::12 from udp [2001:db8::100]:53".to_string()),
            "{d:?}"
        );
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(diff(&old, &old).is_empty());
    }
}
