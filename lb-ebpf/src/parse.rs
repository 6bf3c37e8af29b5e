//! Parsing: Ethernet addressed to the director (with one 802.1Q/802.1ad tag
//! of a VLAN it serves), IPv4 (options, fragments), IPv6 (a bounded walk of
//! extension headers, fragments), TCP, UDP, and ICMP/ICMPv6 errors about a
//! flow, into the connection key the packet belongs to. What is not for a
//! virtual service goes to the kernel, counted; truncated or invalid headers
//! are dropped, counted.

use aya_ebpf::{bindings::xdp_action::XDP_DROP, programs::XdpContext};
use lb_common::{counter, ConnKey, DirectorConfig, AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{
    maps::VLANS,
    stats::{count, pass},
};

pub(crate) const ETH_HLEN: usize = EthHdr::LEN;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV6_HLEN: usize = Ipv6Hdr::LEN;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers walked (as IPVS's ipv6_find_hdr and Cilium do),
/// at most this many.
const MAX_EXT_HEADERS: usize = 4;

/// A packet of a flow (or a first fragment: it has the ports).
pub(crate) const KIND_PLAIN: u8 = 0;
/// The first fragment of a datagram: the flow's ports, and its datagram id
/// in `frag_id` (the later fragments follow it).
pub(crate) const KIND_FRAG_FIRST: u8 = 1;
/// A later fragment: no ports (they are 0 in the key); `frag_id` says
/// which datagram.
pub(crate) const KIND_FRAG_LATER: u8 = 2;
/// An ICMP or ICMPv6 error about the flow in the key (the quoted packet,
/// server to client, turned around: client to VIP).
pub(crate) const KIND_ICMP: u8 = 3;

/// Pointer to `len` bytes at `off`, or the "malformed" verdict.
#[inline(always)]
pub(crate) fn ptr_at(ctx: &XdpContext, off: usize, len: usize) -> Result<*mut u8, u32> {
    match try_ptr(ctx, off, len) {
        Some(p) => Ok(p),
        None => {
            count(counter::DROP_MALFORMED);
            Err(XDP_DROP)
        }
    }
}

/// Pointer to `len` bytes at `off`, if the frame has them.
#[inline(always)]
fn try_ptr(ctx: &XdpContext, off: usize, len: usize) -> Option<*mut u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + len > end {
        return None;
    }
    Some((start + off) as *mut u8)
}

#[inline(always)]
fn be16(p: *const u8) -> u16 {
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
fn read_u16(p: *const u8) -> u16 {
    unsafe { core::ptr::read_unaligned(p as *const u16) }
}

/// What the parser extracts from a frame.
pub(crate) struct Flow {
    pub(crate) key: ConnKey,
    /// TCP flags (0 for UDP and ICMP).
    pub(crate) tcp_flags: u8,
    /// One of the `KIND_*` constants.
    pub(crate) kind: u8,
    /// Fragments: the datagram's identification.
    pub(crate) frag_id: u32,
    /// Length of the IP packet (what IPVS counts as bytes).
    pub(crate) ip_len: u64,
}

#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext, cfg: &DirectorConfig) -> Result<Flow, u32> {
    let eth = ptr_at(ctx, 0, ETH_HLEN)?;
    // Only unicast frames addressed to the director (a flooding bridge may
    // hand it frames for other hosts: they are theirs, not its to forward);
    // broadcast and multicast (ARP, neighbour discovery) go on to the
    // kernel below. Until the daemon has written its MAC, every frame is.
    let dst = unsafe { core::ptr::read_unaligned(eth as *const [u8; 6]) };
    if dst[0] & 1 == 0 && cfg.mac != [0; 6] && dst != cfg.mac {
        return pass(counter::PASS_OTHER_MAC);
    }
    let mut ethertype = be16(unsafe { eth.add(12) });
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tag = ptr_at(ctx, ETH_HLEN, 4)?;
        let vid = (be16(tag) & 0x0fff) as u32;
        if !VLANS.get(vid).is_some_and(|on| *on != 0) {
            return pass(counter::PASS_VLAN);
        }
        ethertype = be16(unsafe { tag.add(2) });
        l3 = ETH_HLEN + 4;
    }
    let mut f = Flow {
        key: ConnKey::default(),
        tcp_flags: 0,
        kind: KIND_PLAIN,
        frag_id: 0,
        ip_len: (ctx.data_end() - ctx.data()).saturating_sub(l3) as u64,
    };
    let l4 = match ethertype {
        ETH_P_IP => ipv4(ctx, l3, &mut f)?,
        ETH_P_IPV6 => ipv6(ctx, l3, &mut f)?,
        _ => return pass(counter::PASS_NOT_IP),
    };
    if f.kind == KIND_FRAG_LATER || f.kind == KIND_ICMP {
        return Ok(f);
    }
    if f.key.proto == PROTO_TCP {
        let th = ptr_at(ctx, l4, TcpHdr::LEN)?;
        f.tcp_flags = unsafe { *th.add(13) };
        f.key.sport = read_u16(th);
        f.key.dport = read_u16(unsafe { th.add(2) });
    } else {
        let uh = ptr_at(ctx, l4, UdpHdr::LEN)?;
        f.key.sport = read_u16(uh);
        f.key.dport = read_u16(unsafe { uh.add(2) });
    }
    Ok(f)
}

/// IPv4: addresses and protocol into the key; returns where L4 starts.
#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, f: &mut Flow) -> Result<usize, u32> {
    let ip = ptr_at(ctx, l3, Ipv4Hdr::LEN)?;
    let vihl = unsafe { *ip };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        count(counter::DROP_MALFORMED);
        return Err(XDP_DROP);
    }
    // The options must be present too.
    ptr_at(ctx, l3, ihl)?;
    let proto = unsafe { *ip.add(9) };
    unsafe {
        core::ptr::copy_nonoverlapping(ip.add(12), f.key.saddr.as_mut_ptr(), 4);
        core::ptr::copy_nonoverlapping(ip.add(16), f.key.daddr.as_mut_ptr(), 4);
    }
    f.key.proto = proto;
    f.key.family = AF_INET;
    let l4 = l3 + ihl;
    if proto == PROTO_ICMP {
        return icmp4(ctx, l4, f);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return pass(counter::PASS_NOT_VIP);
    }
    let frag = be16(unsafe { ip.add(6) });
    if frag & 0x3fff != 0 {
        f.frag_id = be16(unsafe { ip.add(4) }) as u32;
        f.kind = if frag & 0x1fff != 0 {
            KIND_FRAG_LATER
        } else {
            KIND_FRAG_FIRST
        };
    }
    Ok(l4)
}

/// IPv6: addresses into the key, a bounded walk of extension headers (the
/// fragment header among them) to the protocol; returns where L4 starts.
#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, f: &mut Flow) -> Result<usize, u32> {
    let ip = ptr_at(ctx, l3, IPV6_HLEN)?;
    if unsafe { *ip } >> 4 != 6 {
        count(counter::DROP_MALFORMED);
        return Err(XDP_DROP);
    }
    unsafe {
        core::ptr::copy_nonoverlapping(ip.add(8), f.key.saddr.as_mut_ptr(), 16);
        core::ptr::copy_nonoverlapping(ip.add(24), f.key.daddr.as_mut_ptr(), 16);
    }
    f.key.family = AF_INET6;
    let mut next = unsafe { *ip.add(6) };
    let mut off = l3 + IPV6_HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            // hop-by-hop, routing, destination options: (len + 1) * 8
            0 | 43 | 60 => {
                let h = ptr_at(ctx, off, 2)?;
                (unsafe { *h.add(1) } as usize + 1) * 8
            }
            // authentication header: (len + 2) * 4
            51 => {
                let h = ptr_at(ctx, off, 2)?;
                (unsafe { *h.add(1) } as usize + 2) * 4
            }
            // fragment: 8 bytes; offset (13 bits), M flag, 32-bit id
            44 => {
                let h = ptr_at(ctx, off, 8)?;
                let fo = be16(unsafe { h.add(2) });
                f.frag_id = u32::from_be_bytes(unsafe {
                    core::ptr::read_unaligned(h.add(4) as *const [u8; 4])
                });
                if fo & 0xfff8 != 0 {
                    f.kind = KIND_FRAG_LATER;
                } else if fo & 1 != 0 {
                    f.kind = KIND_FRAG_FIRST;
                }
                8
            }
            _ => break,
        };
        next = unsafe { *ptr_at(ctx, off, 1)? };
        // Bounded for the verifier (an extension header is at most 2 KiB).
        off = (off + len) & 0xffff;
    }
    f.key.proto = next;
    if next == PROTO_ICMPV6 && f.kind == KIND_PLAIN {
        return icmp6(ctx, off, f);
    }
    if next != PROTO_TCP && next != PROTO_UDP {
        // ESP, no next header, more extension headers than walked: the
        // kernel's; anything else: not for a virtual service.
        if matches!(next, 0 | 43 | 44 | 50 | 51 | 59 | 60 | 135 | 139 | 140) {
            return pass(counter::PASS_IPV6_EXT);
        }
        return pass(counter::PASS_NOT_VIP);
    }
    Ok(off)
}

/// An ICMP destination-unreachable (fragmentation needed included) or
/// time-exceeded about a flow to the VIP: the flow is the quoted packet
/// (server to client, from the VIP) turned around. Anything else (echo,
/// errors quoting no usable flow) goes to the kernel, counted.
#[inline(always)]
fn icmp4(ctx: &XdpContext, l4: usize, f: &mut Flow) -> Result<usize, u32> {
    let Some(ic) = try_ptr(ctx, l4, 8) else {
        return pass(counter::PASS_ICMP);
    };
    let ty = unsafe { *ic };
    if ty != 3 && ty != 11 {
        return pass(counter::PASS_ICMP);
    }
    let inner = l4 + 8;
    let Some(ip) = try_ptr(ctx, inner, Ipv4Hdr::LEN) else {
        return pass(counter::PASS_ICMP);
    };
    let vihl = unsafe { *ip };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let proto = unsafe { *ip.add(9) };
    let frag = be16(unsafe { ip.add(6) });
    // The quoted packet: IPv4, TCP or UDP, a first (or only) fragment, sent
    // from the VIP this error is addressed to.
    let from_vip = unsafe { core::ptr::read_unaligned(ip.add(12) as *const [u8; 4]) };
    if vihl >> 4 != 4
        || ihl < Ipv4Hdr::LEN
        || (proto != PROTO_TCP && proto != PROTO_UDP)
        || frag & 0x1fff != 0
        || from_vip[..] != f.key.daddr[..4]
    {
        return pass(counter::PASS_ICMP);
    }
    let Some(ports) = try_ptr(ctx, (inner + ihl) & 0xffff, 4) else {
        return pass(counter::PASS_ICMP);
    };
    unsafe {
        core::ptr::copy_nonoverlapping(ip.add(16), f.key.saddr.as_mut_ptr(), 4);
    }
    f.key.proto = proto;
    f.key.sport = read_u16(unsafe { ports.add(2) });
    f.key.dport = read_u16(ports);
    f.kind = KIND_ICMP;
    Ok(l4)
}

/// ICMPv6 errors (destination unreachable, packet too big, time exceeded,
/// parameter problem) about a flow to the VIP, as [`icmp4`].
#[inline(always)]
fn icmp6(ctx: &XdpContext, l4: usize, f: &mut Flow) -> Result<usize, u32> {
    let Some(ic) = try_ptr(ctx, l4, 8) else {
        return pass(counter::PASS_ICMP);
    };
    let ty = unsafe { *ic };
    if !(1..=4).contains(&ty) {
        return pass(counter::PASS_ICMP);
    }
    let inner = l4 + 8;
    let Some(ip) = try_ptr(ctx, inner, IPV6_HLEN + 4) else {
        return pass(counter::PASS_ICMP);
    };
    let next = unsafe { *ip.add(6) };
    let from_vip = unsafe { core::ptr::read_unaligned(ip.add(8) as *const [u8; 16]) };
    if unsafe { *ip } >> 4 != 6
        || (next != PROTO_TCP && next != PROTO_UDP)
        || from_vip != f.key.daddr
    {
        return pass(counter::PASS_ICMP);
    }
    let ports = unsafe { ip.add(IPV6_HLEN) };
    unsafe {
        core::ptr::copy_nonoverlapping(ip.add(24), f.key.saddr.as_mut_ptr(), 16);
    }
    f.key.proto = next;
    f.key.sport = read_u16(unsafe { ports.add(2) });
    f.key.dport = read_u16(ports);
    f.kind = KIND_ICMP;
    Ok(l4)
}
