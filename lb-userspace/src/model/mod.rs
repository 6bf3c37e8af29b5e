//! The director's service table as the operator declares it: virtual
//! services, real servers, port groups and the scheduler table. Pure data and
//! validation; the director turns it into map contents (see `director::plan`).

mod sched;
mod service;
mod table;

use std::net::IpAddr;

pub use sched::{RingKind, SchedInfo, Scheduler, UnknownScheduler};
pub use service::*;
pub use table::{PortGroup, Service, Table};

/// Highest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65535;
/// ipvsadm's default persistence timeout for a bare `-p`.
pub const DEFAULT_PERSISTENCE: u32 = 360;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    // The first four are ipvsadm's own messages, so scripts that match them keep working.
    #[error("Service already exists")]
    ServiceExists,
    #[error("No such service")]
    NoService,
    #[error("Destination already exists")]
    RealExists,
    #[error("No such destination")]
    NoReal,
    #[error("weight {0} out of range (0..={MAX_WEIGHT})")]
    Weight(u32),
    #[error("port 0 is only allowed on a persistent service (-p)")]
    PortZeroNotPersistent,
    #[error("real server {real} is {real_family}, but the virtual service is {svc_family}")]
    FamilyMismatch {
        real: IpAddr,
        real_family: &'static str,
        svc_family: &'static str,
    },
    #[error("netmask /{0} is longer than the address (/{1})")]
    Netmask(u8, u8),
    #[error("one-packet scheduling (-o) applies to UDP services only")]
    OnePacketTcp,
    #[error("scheduler flag {flag} does not apply to scheduler {sched}")]
    FlagMismatch { flag: String, sched: Scheduler },
    #[error("lower threshold {1} is above the upper threshold {0}")]
    Thresholds(u32, u32),
    #[error("fwmark must be greater than 0")]
    Fwmark,
    #[error("port group member {0} {1}")]
    GroupMember(String, String),
    #[error("no port group with fwmark {0}")]
    NoGroup(u32),
    #[error("{0} is a member of port group {1}: use -f {1}")]
    InGroup(String, u32),
}
