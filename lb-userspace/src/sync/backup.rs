//! The sync backup: takes messages from the group (or from the configured
//! peers), on one interface only; reads and checks them as the kernel does
//! (malformed ones counted and dropped); binds the records to this
//! director's own slots and hands the entries to the daemon. It asks the
//! masters for everything they have when it starts (an empty message,
//! which IPVS masters ignore).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use lb_common::{ConnKey, ConnValue};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::{
    config::SyncCfg,
    net,
    proto::{decode, encode},
    translate::{from_record, IdMap},
    SyncStats,
};
use crate::director::sweep::monotonic_ns;

/// What the backup hands the daemon.
#[derive(Debug)]
pub enum SyncIn {
    Entries(Vec<(ConnKey, ConnValue)>),
    /// A backup elsewhere started and asks for everything.
    ResyncRequest,
}

/// Whether `a` is on one of the interface's subnets (`nets`: its
/// addresses with their prefix lengths) without being one of them.
pub fn on_link(a: IpAddr, nets: &[(IpAddr, u8)]) -> bool {
    let bits = |x: IpAddr| -> u128 {
        match x {
            IpAddr::V4(v) => u32::from(v) as u128,
            IpAddr::V6(v) => u128::from(v),
        }
    };
    nets.iter().any(|(n, p)| {
        if n.is_ipv4() != a.is_ipv4() || *n == a {
            return false;
        }
        let width = if n.is_ipv4() { 32 } else { 128 };
        let shift = width - (*p as u32).min(width);
        shift == width || bits(*n) >> shift == bits(a) >> shift
    })
}

/// Where a backup listens and what it talks to.
pub struct Backup {
    pub cfg: SyncCfg,
    pub iface: String,
    pub ifindex: u32,
    /// The interface's addresses with their prefix lengths.
    pub nets: Vec<(IpAddr, u8)>,
    /// A message asks the masters for everything again.
    pub resync: mpsc::Receiver<()>,
    pub ids: watch::Receiver<Arc<IdMap>>,
    pub out: mpsc::Sender<SyncIn>,
    pub stats: watch::Sender<SyncStats>,
}

pub fn spawn(b: Backup) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let Backup {
        cfg,
        iface,
        ifindex,
        nets,
        mut resync,
        ids,
        out,
        stats,
    } = b;
    let unicast = !cfg.peers.is_empty();
    let sock = net::receiver(&iface, ifindex, cfg.group, cfg.port, unicast)
        .map_err(|e| anyhow::anyhow!("sync backup on {iface}, port {}: {e}", cfg.port))?;
    // The resync request, to the group or to each peer: at start, and
    // when the daemon asks (this director's link came back).
    if let Ok(s) = net::sender(&iface, ifindex, cfg.group, cfg.ttl) {
        let req = encode(cfg.syncid, &[], cfg.maxlen as usize).remove(0);
        let dsts: Vec<IpAddr> = if unicast {
            cfg.peers.clone()
        } else {
            vec![cfg.group]
        };
        let port = cfg.port;
        tokio::spawn(async move {
            loop {
                for d in &dsts {
                    let _ = s.send_to(&req, SocketAddr::new(*d, port)).await;
                }
                if resync.recv().await.is_none() {
                    return;
                }
            }
        });
    }
    Ok(tokio::spawn(async move {
        let mut st = SyncStats::default();
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    warn!("sync backup: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let refuse = |st: &mut SyncStats, why: String| *st.refused.entry(why).or_default() += 1;
            if nets.iter().any(|(a, _)| *a == from.ip()) {
                continue; // our own
            }
            let allowed = if unicast {
                cfg.peers.contains(&from.ip())
            } else {
                on_link(from.ip(), &nets)
            };
            if !allowed {
                refuse(
                    &mut st,
                    "from an address that is no peer or not on the link".into(),
                );
                stats.send_replace(st.clone());
                continue;
            }
            st.received_messages += 1;
            match decode(&buf[..n]) {
                Err(e) => refuse(&mut st, e.to_string()),
                Ok(d) if cfg.syncid != 0 && d.syncid != cfg.syncid => {
                    refuse(&mut st, "another syncid".into())
                }
                Ok(d) if d.records.is_empty() && d.rest.is_none() => {
                    let _ = out.send(SyncIn::ResyncRequest).await;
                }
                Ok(d) => {
                    if let Some(e) = d.rest {
                        refuse(&mut st, e.to_string());
                    }
                    if d.skipped > 0 {
                        *st.refused
                            .entry("record with an unknown option".into())
                            .or_default() += d.skipped as u64;
                    }
                    st.received_records += d.records.len() as u64;
                    let ids = ids.borrow().clone();
                    let now = monotonic_ns();
                    let mut entries = Vec::with_capacity(d.records.len());
                    for r in &d.records {
                        match from_record(&ids, r, now) {
                            Ok(e) => entries.push(e),
                            Err(e) => refuse(&mut st, e.to_string()),
                        }
                    }
                    st.applied += entries.len() as u64;
                    if !entries.is_empty() && out.send(SyncIn::Entries(entries)).await.is_err() {
                        return;
                    }
                }
            }
            stats.send_replace(st.clone());
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_neighbours_on_the_link_are_heard() {
        let nets = vec![
            ("192.0.2.2".parse().unwrap(), 24u8),
            ("2001:db8::2".parse().unwrap(), 64),
        ];
        let ok = |a: &str| on_link(a.parse().unwrap(), &nets);
        assert!(ok("192.0.2.3") && ok("192.0.2.254") && ok("2001:db8::3"));
        assert!(!ok("192.0.2.2"), "ourselves");
        assert!(!ok("203.0.113.10") && !ok("192.0.3.1") && !ok("2001:db9::1"));
    }
}
