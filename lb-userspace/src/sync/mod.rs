//! Connection synchronisation (the IPVS sync daemon, in lbd): the master
//! sends the connection entries and persistence templates it makes to its
//! backups, which insert them in their own connection table bound to their
//! own slots, so that after a takeover every known flow goes to the same
//! real server.
//!
//! - [`proto`]: the IPVS version 1 wire format;
//! - [`translate`]: entries to records and back;
//! - [`config`]: the YAML section and ipvsadm's daemon options;
//! - [`net`]: the UDP sockets;
//! - [`master`], [`backup`]: the two roles' tasks.

pub mod backup;
pub mod config;
pub mod master;
pub mod net;
pub mod proto;
pub mod translate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use config::{Role, SyncCfg};

/// A role's counters (`lbadm -L --daemon -o json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStats {
    pub sent_messages: u64,
    pub sent_records: u64,
    pub sent_bytes: u64,
    pub send_errors: u64,
    /// Records dropped because the queue was full (the refresh sends them
    /// later).
    pub dropped: u64,
    pub received_messages: u64,
    pub received_records: u64,
    /// Records bound to this director's slots and inserted.
    pub applied: u64,
    /// Messages or records refused, by reason.
    pub refused: BTreeMap<String, u64>,
}

/// A running role as `lbadm -L --daemon` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    pub role: Role,
    pub interface: String,
    pub cfg: SyncCfg,
    pub stats: SyncStats,
}

impl SyncView {
    /// ipvsadm's `-L --daemon` line.
    pub fn ipvsadm_line(&self) -> String {
        format!(
            "{} sync daemon (mcast={}, syncid={}, maxlen={}, group={}, port={}, ttl={})",
            self.role.name(),
            self.interface,
            self.cfg.syncid,
            self.cfg.maxlen,
            self.cfg.group,
            self.cfg.port,
            self.cfg.ttl
        )
    }
}
