//! The director's findings, judged from what lbd knows and reads from the
//! kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::Finding;
use crate::{cli::format::rule_service, control::Listing, model::fmt_addr_port, netif::in_prefix};

/// A real server's entry in the NIC's neighbour table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighInfo {
    /// The kernel's state (REACHABLE, STALE, FAILED...).
    pub state: String,
    pub mac: Option<String>,
    /// Seconds since the kernel last confirmed it.
    pub confirmed_s: Option<u64>,
}

/// What lbd gathers for a diagnosis.
#[derive(Debug, Clone, Default)]
pub struct DirectorFacts {
    pub interface: String,
    /// The XDP program on the NIC as the kernel reports it: (mode, id).
    pub xdp: Option<(String, u32)>,
    /// The id of lbd's own program (None if unknown).
    pub own_prog: Option<u32>,
    /// The listing (health, MACs, weights in force).
    pub listing: Listing,
    /// Neighbour entries of the real servers on the NIC.
    pub neighbours: BTreeMap<IpAddr, NeighInfo>,
    /// The data plane's counters (`lbadm counters`).
    pub counters: Vec<(String, u64)>,
    /// The same counters some seconds ago (lbd samples them every sweep),
    /// and how many seconds ago: what moves now is told apart from what
    /// happened once since the program was loaded.
    pub counters_before: Option<(u64, Vec<(String, u64)>)>,
    /// The NIC's offload features (`ethtool -k`), None if unknown.
    pub features: Option<BTreeMap<String, bool>>,
    /// VLANs the director serves.
    pub vlans: bool,
    /// The NIC's addresses with their prefix lengths.
    pub nic_addresses: Vec<(IpAddr, u8)>,
    /// Every local address of the director (any interface).
    pub local_addresses: BTreeSet<IpAddr>,
    /// VIPs a VRRP router manages or BGP announces (not expected local).
    pub managed_vips: BTreeSet<IpAddr>,
}

/// Why the data plane drops or passes what it does, per counter: (counter,
/// is it an error, what it means, the fix).
const COUNTERS: &[(&str, bool, &str, &str)] = &[
    (
        "drop_no_real",
        true,
        "packets to a virtual service with no usable real server were dropped",
        "see the services above (`lbadm -Ln --health`); bring a real server up or add one",
    ),
    (
        "drop_unresolved",
        true,
        "packets were dropped because the chosen real server's MAC was unresolved",
        "see the real servers' MACs above; each must answer ARP/ND on the director's LAN",
    ),
    (
        "drop_overloaded",
        true,
        "new connections were dropped: every real server was over its upper threshold (-x)",
        "raise upper_threshold or add real servers",
    ),
    (
        "conn_insert_fail",
        true,
        "new connections failed to get a connection entry (the table is full or failing)",
        "raise limits.max_conns (needs `lbd --unload` and a start: the table is re-created)",
    ),
    (
        "conn_evicted_established",
        true,
        "the connection table evicted established connections to make room (they may land on another real server)",
        "raise limits.max_conns",
    ),
    (
        "drop_malformed",
        false,
        "malformed frames (truncated or invalid headers) were dropped: a scan or a broken sender",
        "if it keeps rising, capture upstream of the director to find the sender (XDP drops them before a tcpdump on this host sees them)",
    ),
    (
        "pass_tcp_no_conn",
        false,
        "TCP segments to a VIP without a connection entry (not a SYN) went to the kernel: connections that began elsewhere (a failover without connection sync) or before the table was lost",
        "run the sync daemon on a pair (sync: in the YAML), or sloppy_tcp: true on a backup",
    ),
    (
        "drop_expired_nodest",
        false,
        "packets of connections whose real server was removed were dropped (expire_nodest_conn)",
        "expected after removing a real server with expire_nodest_conn: true",
    ),
];

/// Judges `f`: the program, each virtual service, each real server's MAC,
/// the counters, the NIC's offloads, the VIPs.
pub fn judge(f: &DirectorFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let nic = &f.interface;
    match &f.xdp {
        None => out.push(Finding::error(
            format!("no XDP program is attached to {nic}: nothing is forwarded"),
            "restart lbd (systemctl restart lbd); if a start fails, its log says why",
        )),
        Some((mode, id)) if f.own_prog.is_some_and(|own| own != *id) => out.push(Finding::error(
            format!("the XDP program on {nic} (id {id}, {mode}) is not lbd's (id {})", f.own_prog.unwrap_or(0)),
            format!("remove the other program (ip link set dev {nic} xdp off) and restart lbd"),
        )),
        Some((mode, _)) if mode == "generic" => out.push(Finding::warning(
            format!("lbd's program runs on {nic} in generic (SKB) mode: a fraction of native XDP's speed"),
            format!("use a NIC whose driver has native XDP and start lbd with --xdp-mode native (ethtool -i {nic} names the driver)"),
        )),
        Some((mode, id)) => out.push(Finding::ok(format!(
            "lbd's program (id {id}) is attached to {nic} in {mode} mode"
        ))),
    }
    services(f, &mut out);
    macs(f, &mut out);
    counters(f, &mut out);
    offloads(f, &mut out);
    vips(f, &mut out);
    out
}

/// The counters that explain losses: a problem if they moved in the
/// recent window, fine (but said) if they only moved before it.
fn counters(f: &DirectorFacts, out: &mut Vec<Finding>) {
    let get = |list: &[(String, u64)], name: &str| {
        list.iter()
            .find(|(c, _)| c == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    for (name, error, what, fix) in COUNTERS {
        let total = get(&f.counters, name);
        if total == 0 {
            continue;
        }
        let fix = fix.replace("IFACE", &f.interface);
        let (recent, window) = match &f.counters_before {
            Some((secs, before)) => (total.saturating_sub(get(before, name)), Some(*secs)),
            None => (total, None),
        };
        let when = match window {
            Some(s) => format!("in the last {s} s"),
            None => "since the maps were created".to_string(),
        };
        if recent == 0 {
            out.push(Finding::ok(format!(
                "{total} {what} ({name}) since the maps were created, none {when}"
            )));
            continue;
        }
        let what = format!("{recent} {what} ({name}, {when})");
        out.push(if *error {
            Finding::error(what, fix)
        } else {
            Finding::warning(what, fix)
        });
    }
}

/// A virtual service with no real server new connections can go to.
fn services(f: &DirectorFacts, out: &mut Vec<Finding>) {
    for s in &f.listing.services {
        let name = s.spec.addr.to_string();
        let mut why = Vec::new();
        let mut usable = 0;
        let sorry = s.reals.iter().find(|r| r.sorry);
        for r in s.reals.iter().filter(|r| !r.sorry) {
            let a = fmt_addr_port(&r.spec.address, r.spec.port);
            match r.why_unusable() {
                Some(w) => why.push(format!("{a} {w}")),
                None => usable += 1,
            }
        }
        if usable == 0 {
            let detail = if why.is_empty() {
                "it has no real server".to_string()
            } else {
                why.join(", ")
            };
            if let Some(sr) = sorry {
                out.push(Finding::warning(
                    format!("virtual service {name} has no usable real server ({detail}): its sorry server {} takes the new connections", sr.spec.address),
                    format!("bring a real server up (lbadm -Ln --health says why each is out) or add one: lbadm -a {} -r ADDRESS -g", rule_service(&s.spec.addr)),
                ));
                continue;
            }
            out.push(Finding::error(
                format!("virtual service {name} has no usable real server ({detail}): its new connections are dropped"),
                format!("bring one up (lbadm -Ln --health says why each is out) or add one: lbadm -a {} -r ADDRESS -g", rule_service(&s.spec.addr)),
            ));
        } else {
            out.push(Finding::ok(format!(
                "virtual service {name}: {usable} of {} real server(s) usable",
                s.reals.iter().filter(|r| !r.sorry).count()
            )));
        }
    }
}

/// Each real server's MAC (once per address), and whether it is on the
/// NIC's LAN at all.
fn macs(f: &DirectorFacts, out: &mut Vec<Finding>) {
    let nic = &f.interface;
    let mut seen = BTreeSet::new();
    for s in &f.listing.services {
        for r in &s.reals {
            let a = r.spec.address;
            if !seen.insert(a) {
                continue;
            }
            let on_link = f.nic_addresses.is_empty()
                || f.nic_addresses
                    .iter()
                    .any(|(net, len)| in_prefix(&a, net, *len));
            if !on_link {
                // (A link route without an address in the subnet would do:
                // hence a warning; the MAC finding below tells for sure.)
                out.push(Finding::warning(
                    format!("real server {a} is not on a subnet of {nic}: direct routing needs the real servers on the director's LAN (the frame is only re-addressed to its MAC)"),
                    format!("move it onto {nic}'s LAN, or give {nic} an address in its subnet"),
                ));
            }
            let n = f.neighbours.get(&a);
            let age = n
                .and_then(|n| n.confirmed_s)
                .map(|s| format!(", confirmed {s} s ago"))
                .unwrap_or_default();
            let state = n.map(|n| n.state.as_str()).unwrap_or("no entry");
            match (&r.mac, r.mac_stale) {
                (None, _) => out.push(Finding::error(
                    format!("real server {a} has no MAC (neighbour table: {state}): ARP/ND on {nic} gets no answer, nothing can be forwarded to it"),
                    format!("check that it is up and on {nic}'s LAN: ping -I {nic} {a}; ip neigh show dev {nic} {a}"),
                )),
                (Some(mac), true) => out.push(Finding::warning(
                    format!("real server {a}: MAC {mac} is the last known one (its neighbour entry went away: {state}); lbd is resolving it again"),
                    format!("if it lasts, check the link and the server: ping -I {nic} {a}"),
                )),
                (Some(mac), false) => out.push(Finding::ok(format!(
                    "real server {a}: MAC {mac} ({state}{age})"
                ))),
            }
        }
    }
}

/// Offloads that hide what the program must see.
fn offloads(f: &DirectorFacts, out: &mut Vec<Finding>) {
    let nic = &f.interface;
    let Some(features) = &f.features else {
        out.push(Finding::ok(format!(
            "{nic}'s offloads were not checked: `ethtool -k {nic}` did not answer (is ethtool installed?)"
        )));
        return;
    };
    if f.vlans && features.get("rx-vlan-offload") == Some(&true) {
        out.push(Finding::warning(
            format!("{nic} has rx-vlan-offload on while lbd serves VLANs: a NIC that strips VLAN tags into its receive descriptor hands XDP untagged frames, and the program cannot tell the VLANs apart"),
            format!("ethtool -K {nic} rxvlan off"),
        ));
    }
    if features.get("large-receive-offload") == Some(&true) {
        out.push(Finding::warning(
            format!("{nic} has large-receive-offload on: merged frames larger than the MTU cannot be sent back out with XDP_TX"),
            format!("ethtool -K {nic} lro off"),
        ));
    }
}

/// VIPs the router cannot reach the director for.
fn vips(f: &DirectorFacts, out: &mut Vec<Finding>) {
    let nic = &f.interface;
    // A port group's service serves its members' VIPs.
    let vips: BTreeSet<IpAddr> = f
        .listing
        .services
        .iter()
        .flat_map(|s| {
            if s.spec.addr.is_fwmark() {
                f.listing
                    .groups
                    .iter()
                    .filter(|(m, _)| *m == s.spec.addr.fwmark)
                    .flat_map(|(_, g)| g.members.iter().map(|a| a.address))
                    .collect()
            } else {
                vec![s.spec.addr.address]
            }
        })
        .collect();
    for v in vips {
        if f.managed_vips.contains(&v) {
            continue;
        }
        if f.local_addresses.contains(&v) {
            out.push(Finding::ok(format!(
                "VIP {v} is a local address: the director answers ARP/ND for it"
            )));
        } else {
            out.push(Finding::warning(
                format!("VIP {v} is on no interface of the director and no VRRP router or BGP announcement manages it: the router's ARP/ND for it gets no answer unless the router routes it to this director"),
                format!("ip addr add {v}/{} dev {nic} (or a vrrp: router with it, or bgp:)", crate::netif::host_prefix(&v)),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
