//! Types shared by the XDP program (lb-ebpf) and the daemon (lb-userspace):
//! map keys and values ([`types`]), the names both sides must agree on
//! ([`names`]), the counters ([`counter`]), scheduler ids and comparisons
//! ([`sched`]), TCP states ([`tcp_state`]), flags and the flow hash.
#![cfg_attr(not(test), no_std)]

pub mod counter;
mod flags;
mod hash;
pub mod names;
pub mod sched;
pub mod tcp_state;
mod types;

pub use flags::{conn_flags, dir_flags, rs_flags, svc_flags};
pub use hash::{flow_hash, mask_addr, vip_bit, VIP_FILTER_WORDS};
pub use types::*;

/// Address families as stored in keys.
pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Size of one scheduling table ("ring"). Prime, as Maglev requires; the same
/// size as the kernel's ip_vs_mh default (CONFIG_IP_VS_MH_TAB_INDEX=12).
pub const RING_SIZE: usize = 4093;

/// Slots per MAGLEV map entry: a Maglev table larger than [`RING_SIZE`]
/// lives in consecutive chunks of the MAGLEV map (see
/// [`svc_flags::MAGLEV_LARGE`]), written one chunk per system call.
pub const MAGLEV_CHUNK: usize = 1024;

/// The largest Maglev table: the largest prime below 2^20 (4 MiB).
pub const MAGLEV_MAX: usize = 1_048_573;

/// The daemon writes CLOCK_MONOTONIC (HEARTBEAT) every time it re-bases
/// the connection counts (at least every 10 s). Older than this, the
/// program takes the counts for stale (the daemon is down) and fails open:
/// connection thresholds (-x/-y) are not applied, ovf does not refuse, and
/// a persistence template that outlived its timeout by this much is
/// replaced (a live daemon re-arms the templates of clients with
/// connections long before).
pub const HEARTBEAT_STALE_NS: u64 = 30_000_000_000;

/// Default map sizes (overridable by the daemon at load time).
pub const DEFAULT_MAX_SERVICES: u32 = 256;
pub const DEFAULT_MAX_REALS: u32 = 4096;
pub const DEFAULT_MAX_CONNS: u32 = 1 << 20;
/// Slots of the MAGLEV map (large Maglev tables, both generations): 8 MiB.
pub const DEFAULT_MAX_MAGLEV_SLOTS: u32 = 1 << 21;
