//! The running check tasks, kept in step with the table and the
//! configuration, and the latest verdict each one reported.

use std::{collections::HashMap, net::IpAddr};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{spawn, CheckMetrics, CheckSpec, HealthEvent, Verdict};
use crate::model::{ServiceAddr, Table};

/// A check's identity: (virtual service, real server).
pub type CheckKey = (ServiceAddr, IpAddr);

pub struct Supervisor {
    /// Running tasks: spec, task id, handle.
    tasks: HashMap<CheckKey, (CheckSpec, u64, JoinHandle<()>)>,
    next_task: u64,
    /// The last verdict of each running task (absent: none reported yet,
    /// which means up).
    observed: HashMap<CheckKey, Verdict>,
    events: mpsc::Sender<HealthEvent>,
    /// Probe durations and results, shared with every task.
    metrics: CheckMetrics,
}

impl Supervisor {
    pub fn new(events: mpsc::Sender<HealthEvent>) -> Supervisor {
        Supervisor {
            tasks: HashMap::new(),
            next_task: 0,
            observed: HashMap::new(),
            events,
            metrics: CheckMetrics::default(),
        }
    }

    /// The checks' probe metrics (for `/metrics`).
    pub fn metrics(&self) -> &CheckMetrics {
        &self.metrics
    }

    /// The checks that should run: those declared for a real server that is
    /// in the table.
    pub fn wanted(
        checks: &[(ServiceAddr, IpAddr, CheckSpec)],
        table: &Table,
    ) -> HashMap<CheckKey, CheckSpec> {
        checks
            .iter()
            .filter(|(s, r, _)| {
                table
                    .services
                    .get(s)
                    .is_some_and(|svc| svc.reals.keys().any(|(a, _)| a == r))
            })
            .map(|(s, r, c)| ((*s, *r), c.clone()))
            .collect()
    }

    /// The verdicts that stay valid once `wanted` runs: those of tasks that
    /// keep running unchanged (a restarted task starts from "up").
    pub fn verdicts_for(
        &self,
        wanted: &HashMap<CheckKey, CheckSpec>,
    ) -> HashMap<CheckKey, Verdict> {
        self.observed
            .iter()
            .filter(|(k, _)| {
                self.tasks
                    .get(*k)
                    .is_some_and(|(spec, _, _)| wanted.get(*k) == Some(spec))
            })
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Starts the wanted checks that do not run, stops the others (and the
    /// ones whose spec changed, which restart).
    pub fn reconcile(&mut self, wanted: &HashMap<CheckKey, CheckSpec>) {
        let (observed, metrics) = (&mut self.observed, &self.metrics);
        self.tasks.retain(|k, (spec, _, handle)| {
            let keep = wanted.get(k) == Some(spec);
            if !keep {
                handle.abort();
                observed.remove(k);
                if !wanted.contains_key(k) {
                    metrics.forget(&k.0, &k.1);
                }
            }
            keep
        });
        for (k, spec) in wanted {
            if !self.tasks.contains_key(k) {
                // Warm-up: a stable phase per check spreads thousands of
                // checks over the first interval instead of one burst.
                let phase = {
                    use std::hash::{Hash, Hasher};
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    k.hash(&mut hasher);
                    (hasher.finish() % 1000) as f64 / 1000.0
                };
                self.next_task += 1;
                let task = self.next_task;
                let series = self.metrics.start(&k.0, &k.1);
                let h = spawn(
                    task,
                    spec.clone(),
                    k.0,
                    k.1,
                    phase,
                    self.events.clone(),
                    series,
                );
                self.tasks.insert(*k, (spec.clone(), task, h));
            }
        }
    }

    /// Records what a task reported; None if that task no longer runs (an
    /// event in flight when it was stopped or replaced by a new one).
    pub fn observe(&mut self, ev: &HealthEvent) -> Option<Verdict> {
        let k = (ev.service, ev.real);
        if self.tasks.get(&k).map(|t| t.1) != Some(ev.task) {
            return None;
        }
        let v = Verdict {
            up: ev.up,
            weight: ev.weight,
            reason: ev.reason.clone(),
        };
        self.observed.insert(k, v.clone());
        Some(v)
    }

    pub fn observed(&self) -> &HashMap<CheckKey, Verdict> {
        &self.observed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{health::CheckKind, model::Protocol};

    #[tokio::test]
    async fn a_replaced_tasks_late_verdict_does_not_count() {
        let (tx, _rx) = mpsc::channel(8);
        let mut s = Supervisor::new(tx);
        let real: IpAddr = "127.0.0.1".parse().unwrap();
        let svc = ServiceAddr::new(Protocol::Tcp, real, 9);
        let mut spec = CheckSpec::new(CheckKind::Tcp);
        spec.interval = 3600.0;
        let wanted = |spec: &CheckSpec| HashMap::from([((svc, real), spec.clone())]);
        let down = |task| HealthEvent {
            task,
            service: svc,
            real,
            up: false,
            weight: None,
            reason: "connection refused".into(),
        };
        s.reconcile(&wanted(&spec));
        assert!(s.observe(&down(1)).is_some());
        assert_eq!(s.verdicts_for(&wanted(&spec)).len(), 1, "unchanged: kept");
        // The check's spec changes: the task restarts (from "up") as task 2.
        spec.timeout = 2.0;
        assert!(
            s.verdicts_for(&wanted(&spec)).is_empty(),
            "restarting: dropped"
        );
        s.reconcile(&wanted(&spec));
        assert!(s.observed().is_empty());
        assert!(
            s.observe(&down(1)).is_none(),
            "a late event of the replaced task counted"
        );
        assert!(s.observe(&down(2)).is_some());
        // A check that is no longer wanted stops, and its verdict goes.
        s.reconcile(&HashMap::new());
        assert!(s.observe(&down(2)).is_none() && s.observed().is_empty());
    }
}
