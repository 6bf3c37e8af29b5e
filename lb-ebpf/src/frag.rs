//! Fragments: the first fragment of a datagram carries the ports and is
//! scheduled (or follows its connection) like any packet; where it went is
//! remembered (FRAGS), and the later fragments, which have no ports,
//! follow it. A later fragment seen before its first (reordered, or the
//! first was forgotten) goes to the kernel, counted.

use aya_ebpf::programs::XdpContext;
use lb_common::{counter, DirectorConfig, FragKey, FragValue};

use crate::{
    forward::forward,
    maps::FRAGS,
    parse::Flow,
    reals::resolved,
    stats::{count, pass},
};

#[inline(always)]
fn key(f: &Flow) -> FragKey {
    FragKey {
        saddr: f.key.saddr,
        daddr: f.key.daddr,
        id: f.frag_id,
        proto: f.key.proto,
        family: f.key.family,
        _pad: [0; 2],
    }
}

/// The first fragment of `f`'s datagram went to `real_id` of `svc_id`.
#[inline(always)]
pub(crate) fn remember(f: &Flow, real_id: u32, svc_id: u32) {
    let _ = FRAGS.insert(&key(f), &FragValue { real_id, svc_id }, 0);
}

/// A later fragment: where its datagram's first fragment went.
#[inline(always)]
pub(crate) fn later(ctx: &XdpContext, cfg: &DirectorConfig, f: &Flow) -> Result<u32, u32> {
    let Some(v) = (unsafe { FRAGS.get(&key(f)) }) else {
        return pass(counter::PASS_FRAG_UNKNOWN);
    };
    let (real_id, svc_id) = (v.real_id, v.svc_id);
    let (mac, _) = resolved(real_id)?;
    count(counter::FRAG_FORWARDED);
    forward(ctx, cfg, &mac, svc_id, real_id, false, f.ip_len)
}
