//! The check task of one (virtual service, real server): probes at its
//! interval and reports its first result and then changes only, with
//! rise/fall hysteresis.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{probe, CheckSpec, Outcome, WeightChange};
use crate::model::ServiceAddr;

/// The state a check reports: up/down with rise/fall hysteresis, and the
/// weight asked for. Real servers start up (keepalived's default without
/// `alpha`), so a daemon (re)start never drops a healthy pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    pub up: bool,
    pub weight: Option<WeightChange>,
    ok: u32,
    failed: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            up: true,
            weight: None,
            ok: 0,
            failed: 0,
        }
    }
}

impl Hysteresis {
    /// Records one result; returns true when the reported state (up/down
    /// or weight) changes.
    pub fn observe(&mut self, o: &Outcome, rise: u32, fall: u32) -> bool {
        let mut changed = false;
        if o.ok {
            self.ok += 1;
            self.failed = 0;
            if !self.up && self.ok >= rise {
                self.up = true;
                changed = true;
            }
            if self.up && self.weight != o.weight {
                self.weight = o.weight;
                changed = true;
            }
        } else {
            self.failed += 1;
            self.ok = 0;
            if self.up && self.failed >= fall {
                self.up = false;
                changed = true;
            }
        }
        changed
    }
}

/// A state change reported by a check task.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEvent {
    /// Which task reported it (a restarted check is another task, whose
    /// predecessor's late events must not count).
    pub task: u64,
    pub service: ServiceAddr,
    pub real: IpAddr,
    pub up: bool,
    pub weight: Option<WeightChange>,
    pub reason: String,
}

/// Starts check task `task` for one real server of one service. `phase` in
/// [0, 1) spreads the first checks of many tasks over one interval.
pub fn spawn(
    task: u64,
    spec: CheckSpec,
    service: ServiceAddr,
    real: IpAddr,
    phase: f64,
    events: mpsc::Sender<HealthEvent>,
    metrics: super::CheckSeries,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let port = spec.port.unwrap_or(service.port);
        let target = SocketAddr::new(spec.address.unwrap_or(real), port);
        let interval = Duration::from_secs_f64(spec.interval);
        tokio::time::sleep(interval.mul_f64(phase.clamp(0.0, 1.0))).await;
        let mut h = Hysteresis::default();
        let mut first = true;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let timed = || async {
                let started = std::time::Instant::now();
                let o = probe(&spec, target).await;
                metrics.observe(o.ok, started.elapsed().as_secs_f64());
                o
            };
            let mut o = timed().await;
            for _ in 0..spec.retry {
                if o.ok {
                    break;
                }
                tokio::time::sleep(Duration::from_secs_f64(spec.retry_delay)).await;
                o = timed().await;
            }
            // The first result is reported whatever it is: from then on the
            // listing shows the server as checked (up, unless fall is 1).
            if h.observe(&o, spec.rise, spec.fall) || first {
                let reason = if o.ok || !h.up {
                    o.reason.clone()
                } else {
                    format!("{} (failure 1 of fall {})", o.reason, spec.fall)
                };
                first = false;
                let ev = HealthEvent {
                    task,
                    service,
                    real,
                    up: h.up,
                    weight: h.weight,
                    reason,
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        }
    })
}
