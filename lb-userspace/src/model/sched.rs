//! The schedulers, in one table: name (as ipvsadm spells it), the id the
//! XDP program dispatches on, how the daemon builds its ring, and which
//! scheduler flags (`-b`) it takes. Everything else asks this table.

use std::{fmt, str::FromStr};

use lb_common::sched as id;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
    Wrr,
    Mh,
    Lc,
    /// ipvsadm's default.
    #[default]
    Wlc,
    Sed,
    Nq,
    Fo,
    Ovf,
    Sh,
    Dh,
    Twos,
    Lblc,
    Lblcr,
}

/// How the daemon fills a scheduler's ring (the program reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// The available real servers in order, walked by a cursor (rr).
    InOrder,
    /// IPVS's weighted round-robin sequence, walked by a cursor (wrr), or
    /// sampled at random (twos: each server appears in proportion to its
    /// weight, so two random slots are two weighted random picks).
    Weighted,
    /// A Maglev lookup table indexed by the client's hash (mh).
    Maglev,
    /// The available real servers; the program compares their live
    /// connection counts and weights (lc, wlc, sed, nq, fo, ovf, lblc,
    /// lblcr).
    Dynamic,
    /// 256 buckets over every real server, available or not, so that one
    /// going down moves nobody else (sh, dh).
    Buckets,
}

/// One row of the scheduler table.
#[derive(Debug, Clone, Copy)]
pub struct SchedInfo {
    pub sched: Scheduler,
    pub name: &'static str,
    /// [`lb_common::sched`] id stored in the service's map value.
    pub id: u8,
    pub ring: RingKind,
    /// Scheduler flags (ipvsadm -b) it accepts.
    pub flags: &'static [&'static str],
}

const MH_FLAGS: &[&str] = &["mh-fallback", "mh-port"];
const SH_FLAGS: &[&str] = &["sh-fallback", "sh-port"];

macro_rules! row {
    ($s:ident, $name:literal, $id:ident, $ring:ident) => {
        row!($s, $name, $id, $ring, &[])
    };
    ($s:ident, $name:literal, $id:ident, $ring:ident, $flags:expr) => {
        SchedInfo {
            sched: Scheduler::$s,
            name: $name,
            id: id::$id,
            ring: RingKind::$ring,
            flags: $flags,
        }
    };
}

/// Indexed by `Scheduler as usize`.
pub const TABLE: [SchedInfo; 14] = [
    row!(Rr, "rr", RR, InOrder),
    row!(Wrr, "wrr", WRR, Weighted),
    row!(Mh, "mh", MH, Maglev, MH_FLAGS),
    row!(Lc, "lc", LC, Dynamic),
    row!(Wlc, "wlc", WLC, Dynamic),
    row!(Sed, "sed", SED, Dynamic),
    row!(Nq, "nq", NQ, Dynamic),
    row!(Fo, "fo", FO, Dynamic),
    row!(Ovf, "ovf", OVF, Dynamic),
    row!(Sh, "sh", SH, Buckets, SH_FLAGS),
    row!(Dh, "dh", DH, Buckets),
    row!(Twos, "twos", TWOS, Weighted),
    row!(Lblc, "lblc", LBLC, Dynamic),
    row!(Lblcr, "lblcr", LBLCR, Dynamic),
];

impl Scheduler {
    pub fn info(self) -> &'static SchedInfo {
        &TABLE[self as usize]
    }
    pub fn name(self) -> &'static str {
        self.info().name
    }
    pub fn id(self) -> u8 {
        self.info().id
    }
    pub fn ring(self) -> RingKind {
        self.info().ring
    }
    /// The scheduler of data-plane id `id`.
    pub fn from_id(id: u8) -> Option<Scheduler> {
        TABLE.iter().find(|i| i.id == id).map(|i| i.sched)
    }
    /// Every scheduler, in table order.
    pub fn all() -> impl Iterator<Item = Scheduler> {
        TABLE.iter().map(|i| i.sched)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown scheduler '{name}' (supported: {list})", name = .0, list = names())]
pub struct UnknownScheduler(pub String);

fn names() -> String {
    TABLE.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
}

impl FromStr for Scheduler {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TABLE
            .iter()
            .find(|i| i.name == s)
            .map(|i| i.sched)
            .ok_or_else(|| UnknownScheduler(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_the_enum_and_ids_are_unique() {
        let mut ids = std::collections::BTreeSet::new();
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.sched as usize, i, "{}", row.name);
            assert_eq!(row.name.parse::<Scheduler>(), Ok(row.sched));
            assert_eq!(serde_yaml::to_string(&row.sched).unwrap().trim(), row.name);
            assert!(ids.insert(row.id), "duplicate id {}", row.id);
        }
        let e = "xyz".parse::<Scheduler>().unwrap_err().to_string();
        assert!(e.contains("rr, wrr, mh") && e.contains("lblcr"), "{e}");
    }
}
