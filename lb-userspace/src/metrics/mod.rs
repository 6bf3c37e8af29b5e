//! `/metrics`: the director's state in the Prometheus text format.
//!
//! The daemon loop takes a [`Snapshot`] (the listing with the connection
//! counts of the last sweep, the data plane's counters); it is rendered off
//! the loop. Names follow Prometheus conventions: the `lb_` prefix,
//! `_total` counters, base units (seconds, bytes). Labels are bounded by the
//! configuration: `service` (as lbd's logs name it, e.g. `tcp
//! 192.0.2.10:80`, `fwmark 1`), `real` (address:port), `reason` (a data-plane counter's
//! name), VRRP router names, sync roles, VIPs.

mod http;

use prometheus::{
    core::Collector, Encoder as _, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use self::http::{prepare, serve, take_snapshot, Prepared, Recent, SnapshotRequest};
use crate::{
    control::{Listing, RealView},
    health::CheckMetrics,
    model::fmt_addr_port,
};

/// What one scrape shows, taken on the daemon loop.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub listing: Listing,
    /// The data plane's counters (`lbadm counters`), by name.
    pub counters: Vec<(String, u64)>,
    /// Connection entries the last sweep found (templates included).
    pub conn_entries: u64,
    /// The XDP program on the NIC as the kernel reports it: (mode, id).
    pub attached: Option<(String, u32)>,
    /// The id of lbd's own program.
    pub own_prog: Option<u32>,
    /// The last changes applied, oldest first.
    pub history: Vec<crate::control::ChangeRecord>,
}

/// Builds the families of one scrape in a fresh registry.
struct Families {
    reg: Registry,
}

impl Families {
    fn add<C: Collector + Clone + 'static>(&self, c: C) -> C {
        // Names are static and distinct: registering cannot fail.
        self.reg
            .register(Box::new(c.clone()))
            .expect("metric names are distinct");
        c
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }
}

/// Saturates: Prometheus integers are i64.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The text exposition (format 0.0.4) of `s`, the checks' probes and the
/// process's own CPU and memory.
pub fn render(s: &Snapshot, checks: &CheckMetrics) -> String {
    let f = Families {
        reg: Registry::new(),
    };
    let info = f.gauge(
        "lb_build_info",
        "The running lbd's version (always 1).",
        &["version"],
    );
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let attached = f.gauge(
        "lb_xdp_attached",
        "1 while lbd's own XDP program is attached to the NIC, by mode (native, generic, offload, multi); 0 while another program is.",
        &["mode"],
    );
    if let Some((m, id)) = &s.attached {
        let ours = s.own_prog.is_none_or(|own| own == *id);
        attached
            .with_label_values(&[m.as_str()])
            .set(i64::from(ours));
    }
    services(&f, &s.listing);
    dataplane(&f, s);
    ha(&f, &s.listing);
    f.add(checks.duration.clone());
    f.add(checks.probes.clone());
    let process = prometheus::process_collector::ProcessCollector::for_self();
    f.reg
        .register(Box::new(process))
        .expect("process metrics' names are distinct");
    let mut out = Vec::new();
    // Encoding into memory fails only on a broken family, which the
    // builders above cannot make.
    if let Err(e) = TextEncoder::new().encode(&f.reg.gather(), &mut out) {
        tracing::warn!("encoding /metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Per virtual service and real server: traffic, connections, weights,
/// health.
fn services(f: &Families, l: &Listing) {
    let svc = ["service"];
    let real = ["service", "real"];
    let s_info = f.gauge(
        "lb_service_info",
        "A virtual service (always 1), with its scheduler.",
        &["service", "scheduler"],
    );
    let s_conns = f.counter(
        "lb_service_connections_total",
        "Connections scheduled by the virtual service.",
        &svc,
    );
    let s_pkts = f.counter(
        "lb_service_incoming_packets_total",
        "Packets from clients forwarded for the virtual service.",
        &svc,
    );
    let s_bytes = f.counter(
        "lb_service_incoming_bytes_total",
        "Bytes from clients forwarded for the virtual service.",
        &svc,
    );
    let s_cps = f.gauge(
        "lb_service_connections_per_second",
        "New connections per second (the IPVS estimator over 2 s samples).",
        &svc,
    );
    let s_pps = f.gauge(
        "lb_service_incoming_packets_per_second",
        "Incoming packets per second (estimated as IPVS does).",
        &svc,
    );
    let s_bps = f.gauge(
        "lb_service_incoming_bytes_per_second",
        "Incoming bytes per second (estimated as IPVS does).",
        &svc,
    );
    let s_usable = f.gauge(
        "lb_service_usable_reals",
        "Real servers that can take new connections (in service, up, weight in force above 0, MAC known); the sorry server does not count.",
        &svc,
    );
    let s_sorry = f.gauge(
        "lb_service_sorry_active",
        "1 while the service's quorum is lost and its sorry server takes the new connections.",
        &svc,
    );
    let r_conns = f.counter(
        "lb_real_connections_total",
        "Connections scheduled to the real server.",
        &real,
    );
    let r_pkts = f.counter(
        "lb_real_incoming_packets_total",
        "Packets from clients forwarded to the real server.",
        &real,
    );
    let r_bytes = f.counter(
        "lb_real_incoming_bytes_total",
        "Bytes from clients forwarded to the real server.",
        &real,
    );
    let r_cps = f.gauge(
        "lb_real_connections_per_second",
        "New connections per second to the real server (estimated as IPVS does).",
        &real,
    );
    let r_active = f.gauge(
        "lb_real_active_connections",
        "Connections in ESTABLISHED (ipvsadm's ActiveConn), as of the last sweep.",
        &real,
    );
    let r_inactive = f.gauge(
        "lb_real_inactive_connections",
        "Connections in any other state (ipvsadm's InActConn), as of the last sweep.",
        &real,
    );
    let r_persistent = f.gauge(
        "lb_real_persistent_connections",
        "Persistence templates pointing at the real server.",
        &real,
    );
    let r_weight = f.gauge(
        "lb_real_weight",
        "The real server's configured weight.",
        &real,
    );
    let r_eff = f.gauge(
        "lb_real_effective_weight",
        "The weight in force (0 while its check says down or it is quiesced).",
        &real,
    );
    let r_up = f.gauge(
        "lb_real_up",
        "1 if the real server is up (its check passes, or it has none), else 0.",
        &real,
    );
    let r_checked = f.gauge(
        "lb_real_checked",
        "1 if a health check runs for the real server.",
        &real,
    );
    let r_mac = f.gauge(
        "lb_real_mac_resolved",
        "1 if the real server's MAC is known (0: nothing can be forwarded to it).",
        &real,
    );
    let r_mac_stale = f.gauge(
        "lb_real_mac_stale",
        "1 while the MAC in use is the last known one (its neighbour entry went away; lbd resolves it again).",
        &real,
    );
    for s in &l.services {
        let name = s.spec.addr.to_string();
        let n = [name.as_str()];
        s_info
            .with_label_values(&[name.as_str(), s.spec.scheduler.to_string().as_str()])
            .set(1);
        s_conns.with_label_values(&n).inc_by(s.stats.conns);
        s_pkts.with_label_values(&n).inc_by(s.stats.in_packets);
        s_bytes.with_label_values(&n).inc_by(s.stats.in_bytes);
        s_cps.with_label_values(&n).set(int(s.rate.cps));
        s_pps.with_label_values(&n).set(int(s.rate.in_pps));
        s_bps.with_label_values(&n).set(int(s.rate.in_bps));
        let usable = s.reals.iter().filter(|r| usable(r)).count();
        s_usable.with_label_values(&n).set(usable as i64);
        let sorry = s.reals.iter().any(|r| r.sorry);
        s_sorry.with_label_values(&n).set(i64::from(sorry));
        for r in s.reals.iter().filter(|r| !r.sorry) {
            let rn = fmt_addr_port(&r.spec.address, r.spec.port);
            let k = [name.as_str(), rn.as_str()];
            r_conns.with_label_values(&k).inc_by(r.stats.conns);
            r_pkts.with_label_values(&k).inc_by(r.stats.in_packets);
            r_bytes.with_label_values(&k).inc_by(r.stats.in_bytes);
            r_cps.with_label_values(&k).set(int(r.rate.cps));
            r_active.with_label_values(&k).set(int(r.active_conns));
            r_inactive.with_label_values(&k).set(int(r.inactive_conns));
            r_persistent
                .with_label_values(&k)
                .set(int(r.persistent_conns));
            r_weight.with_label_values(&k).set(i64::from(r.spec.weight));
            r_eff
                .with_label_values(&k)
                .set(i64::from(r.effective_weight));
            let up = r.health.as_ref().is_none_or(|h| h.up);
            r_up.with_label_values(&k).set(i64::from(up));
            r_checked
                .with_label_values(&k)
                .set(i64::from(r.health.is_some()));
            r_mac.with_label_values(&k).set(i64::from(r.mac.is_some()));
            r_mac_stale
                .with_label_values(&k)
                .set(i64::from(r.mac.is_some() && r.mac_stale));
        }
    }
}

/// A real server new connections can go to (the sorry server aside).
fn usable(r: &RealView) -> bool {
    !r.sorry && r.why_unusable().is_none()
}

/// The data plane's verdict counters and the connection table.
fn dataplane(f: &Families, s: &Snapshot) {
    let packets = f.counter(
        "lb_dataplane_packets_total",
        "Frames the XDP program handled, by verdict (tx, pass, drop) and reason (the counter's name as `lbadm counters` shows it); tx is every forwarded frame.",
        &["verdict", "reason"],
    );
    let events = f.counter(
        "lb_dataplane_events_total",
        "Events of the XDP program by counter name: connection entries and persistence templates made, and kinds of forwarded frames (icmp_forwarded, frag_forwarded, fwd_stateless: part of tx).",
        &["event"],
    );
    let evicted = f.counter(
        "lb_conntable_evictions_total",
        "Connection entries the table's LRU evicted to make room (established: ones still in ESTABLISHED).",
        &["state"],
    );
    for (name, v) in &s.counters {
        match name.as_str() {
            "conn_evicted" => evicted.with_label_values(&["any"]).inc_by(*v),
            "conn_evicted_established" => evicted.with_label_values(&["established"]).inc_by(*v),
            n => match verdict(n) {
                Some((verdict, reason)) => packets.with_label_values(&[verdict, reason]).inc_by(*v),
                None => events.with_label_values(&[n]).inc_by(*v),
            },
        }
    }
    let entries = f.gauge(
        "lb_conntable_entries",
        "Connection entries (templates included) as of the last sweep.",
        &[],
    );
    entries
        .with_label_values(&[] as &[&str])
        .set(int(s.conn_entries));
    let size = f.gauge(
        "lb_conntable_capacity",
        "Size of the connection table (limits.max_conns).",
        &[],
    );
    size.with_label_values(&[] as &[&str])
        .set(i64::from(s.listing.conn_table_size));
}

/// The verdict and reason of a packet counter's name: `pass_not_vip` is
/// (pass, not_vip), `tx` (every forwarded frame) is (tx, forwarded). The
/// counters of kinds of forwarded frames (icmp_forwarded, frag_forwarded,
/// fwd_stateless) are part of tx, so they are events, as are conn_new,
/// persist_hit...: None.
fn verdict(name: &str) -> Option<(&'static str, &str)> {
    if name == "tx" {
        return Some(("tx", "forwarded"));
    }
    let prefixes = [("pass_", "pass"), ("drop_", "drop")];
    prefixes
        .iter()
        .find_map(|(p, v)| name.strip_prefix(p).map(|r| (*v, r)))
}

/// VRRP routers, sync daemons, BGP announcements.
fn ha(f: &Families, l: &Listing) {
    let state = f.gauge(
        "lb_vrrp_state",
        "1 for the VRRP router's current state (backup, master, fault), 0 for the others.",
        &["router", "state"],
    );
    let prio = f.gauge(
        "lb_vrrp_effective_priority",
        "The VRRP router's priority in force (after tracking).",
        &["router"],
    );
    let transitions = f.counter(
        "lb_vrrp_transitions_total",
        "State changes of the VRRP router.",
        &["router"],
    );
    let adverts = f.counter(
        "lb_vrrp_adverts_total",
        "VRRP advertisements sent and received.",
        &["router", "direction"],
    );
    let refused = f.counter(
        "lb_vrrp_adverts_refused_total",
        "VRRP advertisements refused, by reason.",
        &["router", "reason"],
    );
    for r in &l.vrrp {
        let n = r.name.as_str();
        let current = format!("{:?}", r.state).to_lowercase();
        for s in ["backup", "master", "fault"] {
            state
                .with_label_values(&[n, s])
                .set(i64::from(current == s));
        }
        prio.with_label_values(&[n])
            .set(i64::from(r.effective_priority));
        transitions.with_label_values(&[n]).inc_by(r.transitions);
        adverts
            .with_label_values(&[n, "sent"])
            .inc_by(r.adverts_sent);
        adverts
            .with_label_values(&[n, "received"])
            .inc_by(r.adverts_received);
        for (why, c) in &r.refused {
            refused.with_label_values(&[n, why.as_str()]).inc_by(*c);
        }
    }
    let sync_msgs = f.counter(
        "lb_sync_messages_total",
        "Connection-sync messages sent (master role) and received (backup role).",
        &["role", "direction"],
    );
    let sync_records = f.counter(
        "lb_sync_records_total",
        "Connection records sent, received, and applied to the table.",
        &["role", "what"],
    );
    let sync_bytes = f.counter(
        "lb_sync_sent_bytes_total",
        "Bytes of connection-sync messages sent.",
        &["role"],
    );
    let sync_errors = f.counter(
        "lb_sync_errors_total",
        "Connection-sync send errors, records dropped on a full queue, and refusals by reason.",
        &["role", "reason"],
    );
    for d in &l.sync {
        let role = d.role.name();
        let st = &d.stats;
        sync_msgs
            .with_label_values(&[role, "sent"])
            .inc_by(st.sent_messages);
        sync_msgs
            .with_label_values(&[role, "received"])
            .inc_by(st.received_messages);
        for (what, v) in [
            ("sent", st.sent_records),
            ("received", st.received_records),
            ("applied", st.applied),
        ] {
            sync_records.with_label_values(&[role, what]).inc_by(v);
        }
        sync_bytes.with_label_values(&[role]).inc_by(st.sent_bytes);
        sync_errors
            .with_label_values(&[role, "send_error"])
            .inc_by(st.send_errors);
        sync_errors
            .with_label_values(&[role, "queue_full"])
            .inc_by(st.dropped);
        for (why, c) in &st.refused {
            sync_errors
                .with_label_values(&[role, why.as_str()])
                .inc_by(*c);
        }
    }
    if let Some(b) = &l.bgp {
        let announced = f.gauge(
            "lb_bgp_vip_announced",
            "1 while the VIP is announced through BGP, 0 while withdrawn.",
            &["vip"],
        );
        for v in &b.vips {
            announced
                .with_label_values(&[v.address.to_string().as_str()])
                .set(i64::from(v.announced));
        }
        let drained = f.gauge(
            "lb_bgp_drained",
            "1 while the whole director is drained (lbadm bgp drain).",
            &[],
        );
        drained
            .with_label_values(&[] as &[&str])
            .set(i64::from(b.drained));
        let sessions = f.gauge(
            "lb_bgp_session_established",
            "1 while the BGP session with the peer is established.",
            &["session"],
        );
        for s in &b.sessions {
            sessions
                .with_label_values(&[s.name.as_str()])
                .set(i64::from(s.info.starts_with("Established")));
        }
    }
}

#[cfg(test)]
mod tests;
