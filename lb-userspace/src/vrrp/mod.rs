//! VRRP (RFC 5798 version 3, RFC 3768 version 2) in lbd: a pair of
//! directors elects the one that holds the VIPs, wire-compatible with
//! keepalived.
//!
//! - [`packet`]: advertisements on the wire, checksums, receive checks;
//! - [`machine`]: the state machine of one virtual router (pure);
//! - [`config`]: the YAML `vrrp:` section;
//! - [`io`]: raw sockets, gratuitous ARP and unsolicited NA;
//! - [`task`]: one task per router, asking the daemon to activate or
//!   stand the data plane by.

pub mod config;
pub mod io;
pub mod machine;
pub mod packet;
pub mod task;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use config::{OnStop, VrrpCfg};
pub use machine::State;

/// A router as `lbadm vrrp` and `-o json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpView {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub version: u8,
    pub state: State,
    /// Configured.
    pub priority: u8,
    /// In force, after tracking.
    pub effective_priority: u8,
    /// The master last heard (ourselves while master).
    pub master: Option<IpAddr>,
    /// When the state last changed (seconds since the epoch).
    pub since_unix: u64,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Refused adverts, by reason.
    pub refused: BTreeMap<String, u64>,
    /// `lbadm vrrp release` in force.
    pub released: bool,
    pub virtual_addresses: Vec<IpAddr>,
    /// Centiseconds.
    pub advert_int: u16,
    pub source: IpAddr,
    /// Milliseconds a backup waits for the master's advert before taking
    /// over (Master_Down_Interval, as this router computes it now).
    #[serde(default)]
    pub master_down_ms: u64,
}

/// Where lbd records its routers' states, for the next lbd: a restart of a
/// master resumes as master (its VIPs still on the interface) instead of
/// starting as backup and flapping.
pub fn record_file(state_dir: &Path, instance: &str) -> PathBuf {
    state_dir.join(format!("{instance}.vrrp.json"))
}

/// (state, when) of each router, as recorded.
pub type Record = BTreeMap<String, (State, u64)>;

pub fn read_record(p: &Path) -> Record {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub fn write_record(p: &Path, r: &Record) {
    let ok = serde_json::to_string(r)
        .ok()
        .and_then(|t| crate::files::write_whole(p, t.as_bytes()).ok());
    if ok.is_none() {
        tracing::warn!(file = %p.display(), "recording the VRRP states failed");
    }
}

/// How long after a recorded MASTER state a new lbd resumes as master:
/// the longest v3 advert interval a holding master announces, times 3.
pub const RESUME_WITHIN_S: u64 = 120;
