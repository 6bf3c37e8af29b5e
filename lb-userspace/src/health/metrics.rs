//! What the checks measure for `/metrics`: each probe's duration (a
//! histogram) and result, per (virtual service, real server address).
//! Cheap clones share the same series: every check task holds one.

use std::net::IpAddr;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

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
}

/// One check's series, held by its task: a probe is recorded without a
/// lookup. Once the check is forgotten they are no longer exported, so a
/// probe an aborted task finishes late records nowhere visible.
#[derive(Clone)]
pub struct CheckSeries {
    duration: Histogram,
    ok: IntCounter,
    failed: IntCounter,
}

impl CheckSeries {
    /// One probe: its result and duration.
    pub fn observe(&self, ok: bool, seconds: f64) {
        self.duration.observe(seconds);
        if ok { &self.ok } else { &self.failed }.inc();
    }
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
        CheckMetrics { duration, probes }
    }
}

impl CheckMetrics {
    /// The series of the check of `real` in `service`, for its task.
    pub fn start(&self, service: &ServiceAddr, real: &IpAddr) -> CheckSeries {
        let (s, a) = (service.to_string(), real.to_string());
        let (s, a) = (s.as_str(), a.as_str());
        CheckSeries {
            duration: self.duration.with_label_values(&[s, a]),
            ok: self.probes.with_label_values(&[s, a, "ok"]),
            failed: self.probes.with_label_values(&[s, a, "failed"]),
        }
    }

    /// The check stopped (its real server or its spec went): its series go
    /// too, so that labels stay bounded by what is configured.
    pub fn forget(&self, service: &ServiceAddr, real: &IpAddr) {
        let (s, a) = (service.to_string(), real.to_string());
        let _ = self.duration.remove_label_values(&[s.as_str(), a.as_str()]);
        for result in ["ok", "failed"] {
            let _ = self
                .probes
                .remove_label_values(&[s.as_str(), a.as_str(), result]);
        }
    }
}
