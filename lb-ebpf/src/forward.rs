//! Forwarding (direct routing): count the packet, rewrite the MACs, XDP_TX.
//! The IP packet is never modified.

use aya_ebpf::{bindings::xdp_action::XDP_TX, programs::XdpContext};
use lb_common::DirectorConfig;

use crate::{
    maps::{CONFIG, RS_STATS, SVC_STATS},
    parse::{ptr_at, ETH_HLEN},
    stats::add_stats,
};

/// The director's configuration (its MAC, director-wide flags).
#[inline(always)]
pub(crate) fn config() -> DirectorConfig {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => DirectorConfig::default(),
    }
}

/// Counts the packet and rewrites the MACs only: destination = real
/// server, source = director.
#[inline(always)]
pub(crate) fn forward(
    ctx: &XdpContext,
    config: &DirectorConfig,
    mac: &[u8; 6],
    svc_id: u32,
    real_id: u32,
    new_conn: bool,
    ip_len: u64,
) -> Result<u32, u32> {
    add_stats(&SVC_STATS, svc_id, new_conn, ip_len);
    add_stats(&RS_STATS, real_id, new_conn, ip_len);
    let eth = ptr_at(ctx, 0, ETH_HLEN)?;
    unsafe {
        core::ptr::copy_nonoverlapping(mac.as_ptr(), eth, 6);
        core::ptr::copy_nonoverlapping(config.mac.as_ptr(), eth.add(6), 6);
    }
    Ok(XDP_TX)
}
