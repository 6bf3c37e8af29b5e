//! The sync master: reads the entries the program reports (SYNC ring
//! buffer) and the refreshes the daemon hands it, translates them to
//! records with the published ids, and sends them in MTU-sized messages,
//! at most `max_rate` records a second. It runs for the daemon's life;
//! while no master role is on, what the ring holds is read and dropped.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use lb_common::{ConnKey, ConnValue, SyncEvent};
use tokio::{
    io::unix::AsyncFd,
    net::UdpSocket,
    sync::{mpsc, watch},
};
use tracing::warn;

use super::{
    config::SyncCfg,
    net,
    proto::{encode, Record},
    translate::{to_record, IdMap},
    SyncStats,
};

/// A master role: its settings and the interface it sends on.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterOn {
    pub cfg: SyncCfg,
    pub iface: String,
    pub ifindex: u32,
}

/// Records waiting beyond this are dropped (counted): the refresh brings
/// their entries again.
const QUEUE_MAX: usize = 1 << 20;

pub fn spawn(
    ring: RingBuf<MapData>,
    mut on: watch::Receiver<Option<MasterOn>>,
    ids: watch::Receiver<Arc<IdMap>>,
    mut refresh: mpsc::Receiver<Vec<(ConnKey, ConnValue)>>,
    stats: watch::Sender<SyncStats>,
) -> anyhow::Result<()> {
    // SAFETY: the ring buffer's fd stays open while the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    tokio::spawn(async move {
        // Live events first; refreshes and full resyncs fill what is left.
        let mut live: VecDeque<Record> = VecDeque::new();
        let mut queue: VecDeque<Record> = VecDeque::new();
        let mut sock: Option<(UdpSocket, MasterOn)> = None;
        let mut st = SyncStats::default();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut tokens = 0f64;
        loop {
            tokio::select! {
                g = ring.readable_mut() => {
                    let Ok(mut g) = g else { return };
                    let ids = ids.borrow().clone();
                    let active = sock.is_some();
                    while let Some(item) = g.get_inner_mut().next() {
                        if !active || item.len() < std::mem::size_of::<SyncEvent>() {
                            continue;
                        }
                        // SAFETY: the program writes whole SyncEvents.
                        let ev: SyncEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const SyncEvent) };
                        push(&mut live, &mut st, &ids, &ev.key, &ev.value);
                    }
                    g.clear_ready();
                }
                Some(batch) = refresh.recv() => {
                    if sock.is_some() {
                        let ids = ids.borrow().clone();
                        for (k, v) in &batch {
                            push(&mut queue, &mut st, &ids, k, v);
                        }
                    }
                }
                r = on.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let want = on.borrow().clone();
                    sock = match want {
                        Some(m) => match net::sender(&m.iface, m.ifindex, m.cfg.group, m.cfg.ttl) {
                            Ok(s) => Some((s, m)),
                            Err(e) => {
                                warn!("sync master on {}: {e}", m.iface);
                                None
                            }
                        },
                        None => {
                            queue.clear();
                            live.clear();
                            None
                        }
                    };
                }
                _ = tick.tick() => {
                    let Some((s, m)) = &sock else { continue };
                    // 50 ticks a second; the bucket holds two ticks' worth,
                    // so a refresh goes out paced, not in one burst that a
                    // backup's socket buffer would drop.
                    let rate = m.cfg.max_rate as f64;
                    tokens = (tokens + rate / 50.0).min(rate / 25.0).max(1.0);
                    let from_live = (tokens as usize).min(live.len());
                    let from_queue = (tokens as usize - from_live).min(queue.len());
                    if from_live + from_queue == 0 {
                        continue;
                    }
                    tokens -= (from_live + from_queue) as f64;
                    let batch: Vec<Record> = live.drain(..from_live).chain(queue.drain(..from_queue)).collect();
                    let dsts: Vec<SocketAddr> = if m.cfg.peers.is_empty() {
                        vec![SocketAddr::new(m.cfg.group, m.cfg.port)]
                    } else {
                        m.cfg.peers.iter().map(|p: &IpAddr| SocketAddr::new(*p, m.cfg.port)).collect()
                    };
                    for msg in encode(m.cfg.syncid, &batch, m.cfg.maxlen as usize) {
                        for d in &dsts {
                            match s.send_to(&msg, d).await {
                                Ok(_) => {
                                    st.sent_messages += 1;
                                    st.sent_bytes += msg.len() as u64;
                                }
                                Err(e) => {
                                    st.send_errors += 1;
                                    warn!("sync master: sending to {d}: {e}");
                                }
                            }
                        }
                    }
                    st.sent_records += batch.len() as u64;
                }
            }
            stats.send_replace(st.clone());
        }
    });
    Ok(())
}

fn push(q: &mut VecDeque<Record>, st: &mut SyncStats, ids: &IdMap, k: &ConnKey, v: &ConnValue) {
    match to_record(ids, k, v) {
        Some(r) if q.len() < QUEUE_MAX => q.push_back(r),
        Some(_) => st.dropped += 1,
        None => {
            *st.refused
                .entry("slot gone before sending".into())
                .or_default() += 1
        }
    }
}
