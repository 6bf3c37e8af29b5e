//! What health means for scheduling: the verdict of a check, the weight in
//! force, what a failure does (quiesce or remove), and the service quorum
//! with its hysteresis and sorry server. Pure functions; the planner calls
//! them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::WeightChange;
use crate::model::MAX_WEIGHT;

/// What to do with a real server whose check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Weight 0: no new connections, established ones continue
    /// (keepalived inhibit_on_failure, ldirectord quiescent=yes).
    #[default]
    Quiesce,
    /// Taken out of the service (established connections still continue).
    Remove,
}

/// Per-service health policy (YAML keys beside `health_check:`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServicePolicy {
    pub on_failure: OnFailure,
    /// Used only while the quorum is lost (by default: no real server up).
    pub sorry_server: Option<IpAddr>,
    /// Minimum total weight of healthy real servers (default 1).
    pub quorum: u32,
    /// The quorum is lost below quorum - hysteresis and regained at
    /// quorum + hysteresis.
    pub hysteresis: u32,
}

impl ServicePolicy {
    /// The policy of a service without health settings.
    pub fn none() -> ServicePolicy {
        ServicePolicy {
            quorum: 1,
            ..Default::default()
        }
    }

    /// Whether the quorum holds with `healthy` total weight, given whether it
    /// held before (None: not yet known): lost below quorum - hysteresis,
    /// regained at quorum + hysteresis.
    pub fn quorum_holds(&self, was: Option<bool>, healthy: u64) -> bool {
        let (q, h) = (self.quorum as u64, self.hysteresis as u64);
        match was {
            None | Some(true) => healthy + h >= q,
            Some(false) => healthy >= q + h,
        }
    }
}

/// What the health check of one real server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub up: bool,
    /// Weight asked for by an external program or an agent.
    pub weight: Option<WeightChange>,
    pub reason: String,
}

impl Verdict {
    /// Whether this verdict, in force, serves the real server exactly as
    /// `current` does (no verdict is up at the configured weight), so that
    /// committing it would change nothing but its reason.
    pub fn same_effect(&self, current: Option<&Verdict>) -> bool {
        match current {
            Some(c) => c.up == self.up && c.weight == self.weight,
            None => self.up && self.weight.is_none(),
        }
    }
}

/// The weight in force for a real server of configured weight `w`.
pub fn effective_weight(w: u32, v: Option<&Verdict>) -> u32 {
    match v {
        None => w,
        Some(v) if !v.up => 0,
        Some(v) => match v.weight {
            None => w,
            Some(WeightChange::Absolute(a)) => a.min(MAX_WEIGHT),
            Some(WeightChange::Percent(p)) => ((w as u64 * p as u64) / 100).min(65535) as u32,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_has_hysteresis() {
        let p = ServicePolicy {
            quorum: 4,
            hysteresis: 1,
            ..ServicePolicy::none()
        };
        assert!(
            p.quorum_holds(None, 3),
            "lost only below quorum - hysteresis"
        );
        assert!(!p.quorum_holds(None, 2));
        assert!(
            !p.quorum_holds(Some(false), 4),
            "regained only at quorum + hysteresis"
        );
        assert!(p.quorum_holds(Some(false), 5));
        assert!(ServicePolicy::none().quorum_holds(Some(true), 1));
        assert!(!ServicePolicy::none().quorum_holds(Some(true), 0));
    }

    #[test]
    fn weight_in_force() {
        let down = Verdict {
            up: false,
            weight: None,
            reason: String::new(),
        };
        assert_eq!(effective_weight(5, None), 5);
        assert_eq!(effective_weight(5, Some(&down)), 0);
        let half = Verdict {
            up: true,
            weight: Some(WeightChange::Percent(50)),
            ..down.clone()
        };
        assert_eq!(effective_weight(10, Some(&half)), 5);
        let abs = Verdict {
            weight: Some(WeightChange::Absolute(70000)),
            ..half
        };
        assert_eq!(effective_weight(10, Some(&abs)), MAX_WEIGHT);
    }
}
