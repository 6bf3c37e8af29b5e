//! The director's XDP program: LVS direct routing.
//!
//! For a frame to a virtual service (protocol, VIP, port) it finds or creates
//! the connection entry, picks a real server with the service's scheduler,
//! rewrites the destination MAC (to the real server's) and the source MAC (to
//! the director's) and returns XDP_TX. The IP packet is never modified.
//! Everything else goes to the kernel (XDP_PASS); malformed frames are dropped.
//! Every verdict other than a plain forward is counted in GLOBAL_STATS.
//!
//! Every stage returns `Result<_, u32>` whose error side is the final action.
//! The programs and maps are named as in `lb_common::names`; the lab's and
//! the benchmark's programs are another object (`lb-tools`, src/tools).
#![no_std]
#![no_main]
// Atomic adds whose result is unused lower to BPF_XADD, which the cpu v1
// target aya-build links for supports (fetch-and-add would not).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod conn;
mod forward;
mod frag;
mod maps;
mod new_conn;
mod parse;
mod persist;
mod reals;
mod sched;
mod service;
mod stats;
mod sync;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::names::jump;

use crate::new_conn::new_conn;

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    match conn::process(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// The new-connection half of `lb` (tail call): schedule, persistence,
/// connection entry, forward. Verified on its own, so the scheduler code is
/// checked once rather than once per parse path of `lb`.
#[xdp]
pub fn lb_new(ctx: XdpContext) -> u32 {
    match new_conn::<{ jump::NEW }>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// `lb_new` for lblc services (tail call from lb_new).
#[xdp]
pub fn lb_lblc(ctx: XdpContext) -> u32 {
    match new_conn::<{ jump::LBLC }>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// `lb_new` for lblcr services (tail call from lb_new): the set.
#[xdp]
pub fn lb_lblcr(ctx: XdpContext) -> u32 {
    match new_conn::<{ jump::LBLCR }>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// lblcr, when the set has no usable, unloaded member (tail call from
/// lb_lblcr): the wlc scan, and the set grows.
#[xdp]
pub fn lb_lblcr_grow(ctx: XdpContext) -> u32 {
    match new_conn::<{ jump::LBLCR_GROW }>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
