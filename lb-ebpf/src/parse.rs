//! Parsing: Ethernet (with one 802.1Q/802.1ad tag), IPv4, IPv6, TCP, UDP,
//! into the flow's connection key. What is not for a virtual service goes to
//! the kernel, counted; truncated or invalid headers are dropped, counted.

use aya_ebpf::{bindings::xdp_action::XDP_DROP, programs::XdpContext};
use lb_common::{counter, ConnKey, AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::stats::{count, pass};

pub(crate) const ETH_HLEN: usize = EthHdr::LEN;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV6_HLEN: usize = Ipv6Hdr::LEN;

/// Pointer to `len` bytes at `off`, or the "malformed" verdict.
#[inline(always)]
pub(crate) fn ptr_at(ctx: &XdpContext, off: usize, len: usize) -> Result<*mut u8, u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + len > end {
        count(counter::DROP_MALFORMED);
        return Err(XDP_DROP);
    }
    Ok((start + off) as *mut u8)
}

#[inline(always)]
fn be16(p: *const u8) -> u16 {
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// What the parser extracts from a frame.
pub(crate) struct Flow {
    pub(crate) key: ConnKey,
    /// TCP flags (0 for UDP).
    pub(crate) tcp_flags: u8,
    /// Length of the IP packet (what IPVS counts as bytes).
    pub(crate) ip_len: u64,
}

#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Result<Flow, u32> {
    let eth = ptr_at(ctx, 0, ETH_HLEN)?;
    let mut ethertype = be16(unsafe { eth.add(12) });
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tag = ptr_at(ctx, ETH_HLEN, 4)?;
        ethertype = be16(unsafe { tag.add(2) });
        l3 = ETH_HLEN + 4;
    }
    let mut key = ConnKey::default();
    let l4;
    match ethertype {
        ETH_P_IP => {
            let ip = ptr_at(ctx, l3, Ipv4Hdr::LEN)?;
            let vihl = unsafe { *ip };
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
                count(counter::DROP_MALFORMED);
                return Err(XDP_DROP);
            }
            // The options must be present too.
            ptr_at(ctx, l3, ihl)?;
            let frag = be16(unsafe { ip.add(6) });
            let proto = unsafe { *ip.add(9) };
            if proto != PROTO_TCP && proto != PROTO_UDP {
                return pass(counter::PASS_NOT_VIP);
            }
            if frag & 0x3fff != 0 {
                return pass(counter::PASS_FRAGMENT);
            }
            unsafe {
                core::ptr::copy_nonoverlapping(ip.add(12), key.saddr.as_mut_ptr(), 4);
                core::ptr::copy_nonoverlapping(ip.add(16), key.daddr.as_mut_ptr(), 4);
            }
            key.proto = proto;
            key.family = AF_INET;
            l4 = l3 + ihl;
        }
        ETH_P_IPV6 => {
            let ip = ptr_at(ctx, l3, IPV6_HLEN)?;
            if unsafe { *ip } >> 4 != 6 {
                count(counter::DROP_MALFORMED);
                return Err(XDP_DROP);
            }
            let next = unsafe { *ip.add(6) };
            if next != PROTO_TCP && next != PROTO_UDP {
                // Hop-by-hop, routing, fragment, ESP, AH, destination options,
                // mobility, HIP, shim6: extension headers, left to the kernel.
                if matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140) {
                    return pass(counter::PASS_IPV6_EXT);
                }
                return pass(counter::PASS_NOT_VIP);
            }
            unsafe {
                core::ptr::copy_nonoverlapping(ip.add(8), key.saddr.as_mut_ptr(), 16);
                core::ptr::copy_nonoverlapping(ip.add(24), key.daddr.as_mut_ptr(), 16);
            }
            key.proto = next;
            key.family = AF_INET6;
            l4 = l3 + IPV6_HLEN;
        }
        _ => return pass(counter::PASS_NOT_IP),
    }
    let mut tcp_flags = 0;
    if key.proto == PROTO_TCP {
        let th = ptr_at(ctx, l4, TcpHdr::LEN)?;
        tcp_flags = unsafe { *th.add(13) };
        key.sport = unsafe { core::ptr::read_unaligned(th as *const u16) };
        key.dport = unsafe { core::ptr::read_unaligned(th.add(2) as *const u16) };
    } else {
        let uh = ptr_at(ctx, l4, UdpHdr::LEN)?;
        key.sport = unsafe { core::ptr::read_unaligned(uh as *const u16) };
        key.dport = unsafe { core::ptr::read_unaligned(uh.add(2) as *const u16) };
    }
    let ip_len = (ctx.data_end() - ctx.data() - l3) as u64;
    Ok(Flow {
        key,
        tcp_flags,
        ip_len,
    })
}
