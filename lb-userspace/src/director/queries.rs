//! What `lbadm` lists: the table with its counters (`-L`), built from the
//! committed inputs and the published ids, and the connection entries
//! (`-Lnc`).

use std::{collections::HashMap, net::IpAddr};

use lb_common::{tcp_state, Stats, PROTO_TCP, PROTO_UDP};

use super::{
    codec::{bytes_addr, fmt_mac},
    monotonic_ns, sweep, ConnCounts, Director,
};
use crate::{
    control::{ConnView, HealthView, Listing, RealView, ServiceView, StatsView},
    dataplane::Maps,
    health::OnFailure,
    model::{fmt_addr_port, RealSpec},
};

impl From<Stats> for StatsView {
    fn from(s: Stats) -> StatsView {
        StatsView {
            conns: s.conns,
            in_packets: s.packets,
            in_bytes: s.bytes,
        }
    }
}

impl<M: Maps> Director<M> {
    /// One real server's row: slot `id` (None: it has none), its spec,
    /// health and weight in force.
    fn real_view(
        &self,
        counts: &HashMap<u32, ConnCounts>,
        id: Option<u32>,
        spec: RealSpec,
        health: Option<HealthView>,
        effective_weight: u32,
        in_service: bool,
    ) -> RealView {
        let c = id
            .and_then(|id| counts.get(&id).copied())
            .unwrap_or_default();
        RealView {
            id: id.unwrap_or(u32::MAX),
            spec,
            health,
            effective_weight,
            in_service,
            active_conns: c.active,
            inactive_conns: c.inactive,
            persistent_conns: c.persistent,
            stats: id.map(|id| self.stats(true, id)).unwrap_or_default().into(),
            rate: id.map(|id| self.rate(true, id)).unwrap_or_default(),
            mac: self.inputs.macs.get(&spec.address).map(fmt_mac),
            mac_stale: false,
            sorry: false,
        }
    }

    /// The table with counters, for `lbadm -L`: connection counts from a
    /// walk of the table now.
    pub fn listing(&mut self) -> Listing {
        let counts = self.sweep(false);
        self.listing_with(&counts)
    }

    /// The listing with the connection counts of the last collecting sweep
    /// (every 2 s, 10 s past 200,000 entries): no walk of its own, for
    /// `/metrics`.
    pub fn listing_of_last_sweep(&self) -> Listing {
        self.listing_with(&self.last_counts)
    }

    /// The connection entries (templates included) the last collecting
    /// sweep found.
    pub fn last_sweep_entries(&self) -> u64 {
        self.last_counts
            .values()
            .map(|c| c.active + c.inactive + c.persistent)
            .sum()
    }

    /// One real server's connection counts as of the last collecting sweep
    /// (None: it has no slot in the data plane).
    pub fn last_counts_of(
        &self,
        svc: &crate::model::ServiceAddr,
        address: IpAddr,
        port: u16,
    ) -> Option<ConnCounts> {
        let sid = self.published.svc_ids.get(svc)?;
        let id = self.published.real_ids.get(&(*sid, address, port))?;
        Some(self.last_counts.get(id).copied().unwrap_or_default())
    }

    fn listing_with(&self, counts: &HashMap<u32, ConnCounts>) -> Listing {
        let inp = &self.inputs;
        let mut services = Vec::new();
        for (a, s) in &inp.table.services {
            // Absent only after a commit whose rollback failed (resync).
            let Some(&sid) = self.published.svc_ids.get(a) else {
                continue;
            };
            let remove = inp.policy(a).on_failure == OnFailure::Remove;
            let mut reals: Vec<RealView> = s
                .reals
                .values()
                .map(|r| {
                    let id = self.published.real_ids.get(&(sid, r.address, r.port));
                    let health = inp.health.get(&(*a, r.address));
                    let up = health.is_none_or(|v| v.up);
                    self.real_view(
                        counts,
                        id.copied(),
                        *r,
                        health.map(|v| HealthView {
                            up: v.up,
                            reason: v.reason.clone(),
                        }),
                        inp.weight(a, r),
                        up || !remove,
                    )
                })
                .collect();
            // An active sorry server is listed like a real server (as
            // keepalived adds it to IPVS).
            if let (Some(sr), true) = (inp.sorry_real(a), self.sorry_active(a)) {
                let id = self.published.real_ids.get(&(sid, sr.address, sr.port));
                let health = HealthView {
                    up: true,
                    reason: "sorry server (quorum lost)".into(),
                };
                let mut v = self.real_view(counts, id.copied(), sr, Some(health), 1, true);
                v.sorry = true;
                reals.push(v);
            }
            services.push(ServiceView {
                id: sid,
                rate: self.rate(false, sid),
                spec: s.spec.clone(),
                stats: self.stats(false, sid).into(),
                reals,
            });
        }
        Listing {
            conn_table_size: self.maps.limits().max_conns,
            services,
            groups: inp.table.groups.clone().into_iter().collect(),
            vrrp: Vec::new(),
            sync: Vec::new(),
            bgp: None,
        }
    }

    /// The connection entries, as `ipvsadm -Lnc` lists them (at most `limit`).
    pub fn connections(&self, limit: usize) -> Vec<ConnView> {
        let now = monotonic_ns();
        let reals: HashMap<u32, (IpAddr, u16)> = self
            .published
            .real_ids
            .iter()
            .map(|((_, a, p), id)| (*id, (*a, *p)))
            .collect();
        let mut out = Vec::new();
        for (k, v) in self.maps.conns() {
            if out.len() >= limit {
                break;
            }
            if sweep::expired(&self.timeouts, &v, now) {
                continue;
            }
            let Some((raddr, rport)) = reals.get(&v.real_id).copied() else {
                continue;
            };
            let left = (sweep::timeout_s(&self.timeouts, &v) * 1_000_000_000)
                .saturating_sub(now.saturating_sub(v.last_seen_ns))
                / 1_000_000_000;
            let proto = match k.proto {
                PROTO_TCP => "TCP",
                PROTO_UDP => "UDP",
                // A port group's template (fwmark in place of the VIP).
                _ => "IP",
            };
            let template = v.state == tcp_state::TEMPLATE;
            out.push(ConnView {
                protocol: proto.to_string(),
                expire_s: left,
                state: tcp_state::NAMES
                    .get(v.state as usize)
                    .copied()
                    .unwrap_or("NONE")
                    .to_string(),
                client: fmt_addr_port(&bytes_addr(&k.saddr, k.family), u16::from_be(k.sport)),
                virtual_: fmt_addr_port(&bytes_addr(&k.daddr, k.family), u16::from_be(k.dport)),
                real: fmt_addr_port(
                    &raddr,
                    if template {
                        u16::from_be(k.dport)
                    } else {
                        rport
                    },
                ),
                template,
            });
        }
        out
    }
}
