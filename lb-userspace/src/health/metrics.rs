//! What the checks measure for `/metrics`: each probe's duration (a
//! histogram) and result, per (virtual service, real server address).
//! Cheap clones share the same series: every check task holds one.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::model::ServiceAddr;

/// Probe durations from 1 ms to 10 s (a check's timeout is at most its
/// interval; the default connect timeout is 5 s).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone)]
pub struct CheckMetrics {
    /// `lb_check_duration_seconds{service, address}`.
    pub duration: HistogramVec,
    /// `lb_check_probes_total{service, address, result}`.
    pub probes: IntCounterVec,
    /// The checks that run: a probe of a check stopped meanwhile (an
    /// aborted task can finish the poll it was in) records nothing, so
    /// that a removed check's series do not come back.
    live: Arc<Mutex<HashSet<(ServiceAddr, IpAddr)>>>,
}

impl Default for CheckMetrics {
    fn default() -> Self {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "lb_check_duration_seconds",
                "Duration of health-check probes (each try, retries included).",
            )
            .buckets(BUCKETS.to_vec()),
            &["service", "address"],
        )
        .expect("static histogram options are valid");
        let probes = IntCounterVec::new(
            Opts::new(
                "lb_check_probes_total",
                "Health-check probes by result (ok or failed).",
            ),
            &["service", "address", "result"],
        )
        .expect("static counter options are valid");
        CheckMetrics {
            duration,
            probes,
            live: Default::default(),
        }
    }
}

impl CheckMetrics {
    /// The check of `real` in `service` runs (its probes count).
    pub fn start(&self, service: &ServiceAddr, real: &IpAddr) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert((*service, *real));
    }

    /// One probe of the check of `real` in `service`.
    pub fn observe(&self, service: &ServiceAddr, real: &IpAddr, ok: bool, seconds: f64) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if !live.contains(&(*service, *real)) {
            return;
        }
        let (s, a) = (service.to_string(), real.to_string());
        self.duration
            .with_label_values(&[s.as_str(), a.as_str()])
            .observe(seconds);
        let result = if ok { "ok" } else { "failed" };
        self.probes
            .with_label_values(&[s.as_str(), a.as_str(), result])
            .inc();
    }

    /// The check stopped (its real server or its spec went): its series go
    /// too, so that labels stay bounded by what is configured.
    pub fn forget(&self, service: &ServiceAddr, real: &IpAddr) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&(*service, *real));
        let (s, a) = (service.to_string(), real.to_string());
        let _ = self.duration.remove_label_values(&[s.as_str(), a.as_str()]);
        for result in ["ok", "failed"] {
            let _ = self
                .probes
                .remove_label_values(&[s.as_str(), a.as_str(), result]);
        }
    }
}
