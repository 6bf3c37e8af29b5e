//! What the daemon decides at load time: map sizes and the attach mode.

use serde::{Deserialize, Serialize};

/// Capacities of the data plane's maps (YAML `limits:`). Fixed for the life
/// of the pinned maps: changing them needs a fresh start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_services")]
    pub max_services: u32,
    #[serde(default = "default_max_reals")]
    pub max_reals: u32,
    #[serde(default = "default_max_conns")]
    pub max_conns: u32,
    /// Slots for Maglev tables larger than a ring (mh services with more
    /// than 40 real servers get a table of >= 100 slots per server), both
    /// generations of every such service; rounded up to chunks of 1,024.
    #[serde(default = "default_max_maglev_slots")]
    pub max_maglev_slots: u32,
}

fn default_max_services() -> u32 {
    lb_common::DEFAULT_MAX_SERVICES
}
fn default_max_reals() -> u32 {
    lb_common::DEFAULT_MAX_REALS
}
fn default_max_conns() -> u32 {
    lb_common::DEFAULT_MAX_CONNS
}
fn default_max_maglev_slots() -> u32 {
    lb_common::DEFAULT_MAX_MAGLEV_SLOTS
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: default_max_services(),
            max_reals: default_max_reals(),
            max_conns: default_max_conns(),
            max_maglev_slots: default_max_maglev_slots(),
        }
    }
}

impl Limits {
    /// Entries of the MAGLEV map (at least one: a map cannot be empty).
    pub fn maglev_chunks(&self) -> u32 {
        self.max_maglev_slots
            .div_ceil(lb_common::MAGLEV_CHUNK as u32)
            .max(1)
    }

    /// `max_entries` of a map sized as `size` says.
    pub fn entries(&self, size: lb_common::names::Size) -> Option<u32> {
        use lb_common::names::Size;
        match size {
            Size::Fixed => None,
            Size::Services => Some(self.max_services),
            Size::TwicePerService => Some(self.max_services.saturating_mul(2)),
            Size::Reals => Some(self.max_reals),
            Size::Conns => Some(self.max_conns),
            Size::MaglevChunks => Some(self.maglev_chunks()),
        }
    }
}

/// XDP attach mode (YAML `xdp_mode`, `lbd --xdp-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}
