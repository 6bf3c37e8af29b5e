//! `/api/state`: the monitoring panel's data, shaped for the page (names
//! and states as lbd's logs and `lbadm -L` give them).

use serde::Serialize;

use crate::{
    control::{RealView, ServiceView},
    metrics::Snapshot,
    model::fmt_addr_port,
};

#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub services: Vec<Service>,
    /// The data plane's counters (name, value): the page shows their
    /// rates between two polls.
    pub counters: Vec<(String, u64)>,
    pub conn_entries: u64,
    pub conn_table_size: u32,
    /// The XDP program on the NIC: mode, and whether it is lbd's.
    pub xdp: Option<Xdp>,
    pub vrrp: Vec<crate::vrrp::VrrpView>,
    pub sync: Vec<Sync>,
    pub bgp: Option<crate::bgp::BgpView>,
    /// The last changes applied, newest first.
    pub history: Vec<crate::control::ChangeRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Xdp {
    pub mode: String,
    pub ours: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sync {
    pub role: String,
    pub line: String,
    pub stats: crate::sync::SyncStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// As the logs name it: `tcp 192.0.2.10:80`, `fwmark 7`.
    pub name: String,
    pub scheduler: &'static str,
    pub persistent: Option<u32>,
    pub conns: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
    pub cps: u64,
    pub in_pps: u64,
    pub in_bps: u64,
    pub active: u64,
    pub inactive: u64,
    /// Real servers new connections may go to.
    pub usable: usize,
    pub reals: Vec<Real>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Real {
    /// address:port.
    pub name: String,
    pub weight: u32,
    /// In force (0 while down or quiesced by a check).
    pub effective_weight: u32,
    /// up, down, quiesced (configured weight 0), removed (by its check),
    /// no-mac, sorry (the sorry server in force).
    pub state: &'static str,
    /// Why, when it is not up: the check's word, "weight 0", ...
    pub reason: String,
    /// Checked: the health state comes from a check.
    pub checked: bool,
    pub active: u64,
    pub inactive: u64,
    pub persistent: u64,
    pub conns: u64,
    pub cps: u64,
    pub in_pps: u64,
    pub in_bps: u64,
    pub mac: Option<String>,
    pub mac_stale: bool,
}

fn real(r: &RealView) -> Real {
    let state = if r.sorry {
        "sorry"
    } else {
        match &r.health {
            Some(h) if !h.up => "down",
            _ if !r.in_service => "removed",
            _ if r.spec.weight == 0 => "quiesced",
            _ if r.effective_weight == 0 => "down",
            _ if r.mac.is_none() => "no-mac",
            _ => "up",
        }
    };
    let reason = match (&r.health, r.why_unusable()) {
        (_, Some(why)) => why,
        (Some(h), None) => h.reason.clone(),
        (None, None) => String::new(),
    };
    Real {
        name: fmt_addr_port(&r.spec.address, r.spec.port),
        weight: r.spec.weight,
        effective_weight: r.effective_weight,
        state,
        reason,
        checked: r.health.is_some(),
        active: r.active_conns,
        inactive: r.inactive_conns,
        persistent: r.persistent_conns,
        conns: r.stats.conns,
        cps: r.rate.cps,
        in_pps: r.rate.in_pps,
        in_bps: r.rate.in_bps,
        mac: r.mac.clone(),
        mac_stale: r.mac_stale,
    }
}

fn service(s: &ServiceView) -> Service {
    let reals: Vec<Real> = s.reals.iter().map(real).collect();
    Service {
        name: s.spec.addr.to_string(),
        scheduler: s.spec.scheduler.name(),
        persistent: s.spec.persistent,
        conns: s.stats.conns,
        in_packets: s.stats.in_packets,
        in_bytes: s.stats.in_bytes,
        cps: s.rate.cps,
        in_pps: s.rate.in_pps,
        in_bps: s.rate.in_bps,
        active: reals.iter().map(|r| r.active).sum(),
        inactive: reals.iter().map(|r| r.inactive).sum(),
        usable: s
            .reals
            .iter()
            .filter(|r| !r.sorry && r.why_unusable().is_none())
            .count(),
        reals,
    }
}

impl View {
    pub fn of(s: &Snapshot) -> View {
        View {
            services: s.listing.services.iter().map(service).collect(),
            counters: s.counters.clone(),
            conn_entries: s.conn_entries,
            conn_table_size: s.listing.conn_table_size,
            xdp: s.attached.as_ref().map(|(mode, id)| Xdp {
                mode: mode.clone(),
                ours: s.own_prog.is_none_or(|own| own == *id),
            }),
            vrrp: s.listing.vrrp.clone(),
            sync: s
                .listing
                .sync
                .iter()
                .map(|v| Sync {
                    role: v.role.name().to_string(),
                    line: v.ipvsadm_line(),
                    stats: v.stats.clone(),
                })
                .collect(),
            bgp: s.listing.bgp.clone(),
            history: s.history.iter().rev().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::HealthView;

    #[test]
    fn each_real_server_gets_its_state_and_why() {
        let up = RealView::test("192.0.2.11", 1);
        let mut down = RealView::test("192.0.2.12", 1);
        down.health = Some(HealthView {
            up: false,
            reason: "connection refused".into(),
        });
        down.effective_weight = 0;
        let quiesced = RealView::test("192.0.2.13", 0);
        let mut removed = RealView::test("192.0.2.14", 1);
        removed.in_service = false;
        let mut no_mac = RealView::test("192.0.2.15", 1);
        no_mac.mac = None;
        let mut sorry = RealView::test("192.0.2.99", 1);
        sorry.sorry = true;
        let states: Vec<(&str, String)> = [up, down, quiesced, removed, no_mac, sorry]
            .iter()
            .map(|r| {
                let v = real(r);
                (v.state, v.reason)
            })
            .collect();
        assert_eq!(
            states,
            [
                ("up", String::new()),
                ("down", "down (connection refused)".into()),
                ("quiesced", "weight 0".into()),
                ("removed", "removed by its check".into()),
                ("no-mac", "MAC unresolved".into()),
                ("sorry", String::new()),
            ]
        );
    }
}
