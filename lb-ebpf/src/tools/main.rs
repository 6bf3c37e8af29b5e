//! The second object, `lb-tools`: XDP programs that are not the director's.
//! The lab's XDP_PASS program for veth peers, and the reference programs the
//! benchmark (`cargo xtask bench`) measures side by side with `lb` in the
//! same run. lbd never attaches them to a director's NIC; their maps are not
//! pinned, and nothing here touches the production object's maps. Program
//! and map names are those of `lb_common::names::tools`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{ConnKey, ConnValue, Stats, AF_INET};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

const ETH_HLEN: usize = EthHdr::LEN;
const ETH_P_IP: u16 = 0x0800;

/// The XDP_PASS program the lab attaches to veth peers so that XDP_TX frames
/// are received there (a veth requirement in native mode).
#[xdp]
pub fn lb_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

// ------------------------------------------------- benchmark references ----

/// Pointer to `len` bytes at `off`, if the frame holds them. (The director's
/// own version also counts malformed frames; these programs have no
/// counters.)
#[inline(always)]
fn ptr_at(ctx: &XdpContext, off: usize, len: usize) -> Option<*mut u8> {
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

/// Key of the minimal load balancer's table: IPv4 destination and port.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BenchKey {
    pub daddr: [u8; 4],
    pub dport: u16,
    pub _pad: u16,
}

#[map]
static BENCH_BACKENDS: HashMap<BenchKey, [u8; 8]> = HashMap::with_max_entries(1024, 0);

/// Swaps destination and source MAC of a frame whose first 14 bytes are
/// known to be in bounds.
#[inline(always)]
fn swap_macs(eth: *mut u8) {
    unsafe {
        let mut tmp = [0u8; 6];
        core::ptr::copy_nonoverlapping(eth, tmp.as_mut_ptr(), 6);
        core::ptr::copy_nonoverlapping(eth.add(6), eth, 6);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), eth.add(6), 6);
    }
}

/// An IPv4 frame with its ports in bounds (a fixed 20-byte header): its
/// start, or the verdict (DROP when short, PASS when not IPv4).
#[inline(always)]
fn ipv4_frame(ctx: &XdpContext) -> Result<*mut u8, u32> {
    let p = ptr_at(ctx, 0, ETH_HLEN + Ipv4Hdr::LEN + 4).ok_or(XDP_DROP)?;
    if be16(unsafe { p.add(12) }) != ETH_P_IP {
        return Err(XDP_PASS);
    }
    Ok(p)
}

/// The director's 40-byte connection key of a frame from [`ipv4_frame`].
#[inline(always)]
fn conn_key(p: *const u8) -> ConnKey {
    let mut key = ConnKey::default();
    unsafe {
        let ip = p.add(ETH_HLEN);
        core::ptr::copy_nonoverlapping(ip.add(12), key.saddr.as_mut_ptr(), 4);
        core::ptr::copy_nonoverlapping(ip.add(16), key.daddr.as_mut_ptr(), 4);
        key.proto = *ip.add(9);
        key.sport = core::ptr::read_unaligned(ip.add(Ipv4Hdr::LEN) as *const u16);
        key.dport = core::ptr::read_unaligned(ip.add(Ipv4Hdr::LEN + 2) as *const u16);
    }
    key.family = AF_INET;
    key
}

/// The minimal LB's table key of a frame from [`ipv4_frame`].
#[inline(always)]
fn bench_key(p: *const u8) -> BenchKey {
    let mut key = BenchKey {
        daddr: [0; 4],
        dport: 0,
        _pad: 0,
    };
    unsafe {
        core::ptr::copy_nonoverlapping(p.add(ETH_HLEN + 16), key.daddr.as_mut_ptr(), 4);
        key.dport = core::ptr::read_unaligned(p.add(ETH_HLEN + Ipv4Hdr::LEN + 2) as *const u16);
    }
    key
}

/// Forwards to `mac`: the old destination becomes the source, XDP_TX.
#[inline(always)]
fn forward_to(p: *mut u8, mac: &[u8]) -> u32 {
    unsafe {
        core::ptr::copy_nonoverlapping(p, p.add(6), 6);
        core::ptr::copy_nonoverlapping(mac.as_ptr(), p, 6);
    }
    XDP_TX
}

/// The floor: bounds check, swap the MACs, XDP_TX.
#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    let Some(eth) = ptr_at(&ctx, 0, ETH_HLEN) else {
        return XDP_DROP;
    };
    swap_macs(eth);
    XDP_TX
}

/// The lab's floor load balancer (`lbd --floor-program`): slot 0 holds the
/// VIP, the port (network order; 0: every port) and how many real servers
/// follow; a TCP segment to VIP:port goes to the real server its source
/// port picks
/// (stateless: a connection keeps its server), everything else to the
/// kernel. What forwarding new connections costs with no connection state
/// at all.
#[map]
static FLOOR_LB: Array<[u8; 8]> = Array::with_max_entries(17, 0);

#[xdp]
pub fn bench_floor_lb(ctx: XdpContext) -> u32 {
    let p = match ipv4_frame(&ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    let Some(cfg) = FLOOR_LB.get(0) else {
        return XDP_PASS;
    };
    let ip = unsafe { p.add(ETH_HLEN) };
    let (ihl, proto) = unsafe { (*ip & 0x0f, *ip.add(9)) };
    let mut daddr = [0u8; 4];
    unsafe { core::ptr::copy_nonoverlapping(ip.add(16), daddr.as_mut_ptr(), 4) };
    let dport = unsafe { core::ptr::read_unaligned(ip.add(Ipv4Hdr::LEN + 2) as *const u16) };
    let port = u16::from_ne_bytes([cfg[4], cfg[5]]);
    if ihl != 5 || proto != 6 || daddr != cfg[0..4] || (port != 0 && dport != port) {
        return XDP_PASS;
    }
    let n = cfg[6] as u32;
    if n == 0 {
        return XDP_PASS;
    }
    let sport = unsafe { core::ptr::read_unaligned(ip.add(Ipv4Hdr::LEN) as *const u16) };
    match FLOOR_LB.get(1 + u16::from_be(sport) as u32 % n) {
        Some(mac) => forward_to(p, mac),
        None => XDP_PASS,
    }
}

/// The minimal LB: the floor plus one hash lookup keyed by IPv4 destination
/// address and port (fixed 20-byte IPv4 header), and the MAC rewrite.
#[xdp]
pub fn bench_minimal_lb(ctx: XdpContext) -> u32 {
    let p = match ipv4_frame(&ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    match unsafe { BENCH_BACKENDS.get(&bench_key(p)) } {
        Some(mac) => forward_to(p, mac),
        None => XDP_PASS,
    }
}

#[map]
static BENCH_CONNS: LruHashMap<ConnKey, ConnValue> = LruHashMap::with_max_entries(1024, 0);
#[map]
static BENCH_REALS: Array<[u8; 8]> = Array::with_max_entries(16, 0);
#[map]
static BENCH_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(16, 0);

/// The minimal LB with the director's data structures: the connection
/// entry by its 40-byte key in an LRU hash, the real server's MAC from an
/// array, and with `stats` the two per-CPU statistics updates the director
/// makes per packet. What each step costs over the minimal LB is what the
/// director's established path pays for it.
#[inline(always)]
fn conn_reference(ctx: &XdpContext, stats: bool) -> u32 {
    let p = match ipv4_frame(ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    let Some(e) = (unsafe { BENCH_CONNS.get(&conn_key(p)) }) else {
        return XDP_PASS;
    };
    let (real, svc) = (e.real_id, e.svc_id);
    let Some(mac) = BENCH_REALS.get(real) else {
        return XDP_PASS;
    };
    if stats {
        for i in [svc, real] {
            if let Some(s) = BENCH_STATS.get_ptr_mut(i) {
                unsafe {
                    (*s).packets += 1;
                    (*s).bytes += 60;
                }
            }
        }
    }
    forward_to(p, mac)
}

/// A 16-byte IPv4 connection key (addresses, ports, protocol): what the
/// connection lookup would cost with a key sized for IPv4.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnKey4 {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

#[map]
static BENCH_CONNS4: LruHashMap<ConnKey4, ConnValue> = LruHashMap::with_max_entries(1024, 0);

/// The minimal LB with a 16-byte IPv4 connection key in an LRU hash and
/// the real-server array (compare with `bench_conn_lookup`).
#[xdp]
pub fn bench_conn4_lookup(ctx: XdpContext) -> u32 {
    let p = match ipv4_frame(&ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    let key = unsafe {
        let ip = p.add(ETH_HLEN);
        ConnKey4 {
            saddr: core::ptr::read_unaligned(ip.add(12) as *const [u8; 4]),
            daddr: core::ptr::read_unaligned(ip.add(16) as *const [u8; 4]),
            sport: core::ptr::read_unaligned(ip.add(Ipv4Hdr::LEN) as *const u16),
            dport: core::ptr::read_unaligned(ip.add(Ipv4Hdr::LEN + 2) as *const u16),
            proto: *ip.add(9),
            _pad: [0; 3],
        }
    };
    let Some(e) = (unsafe { BENCH_CONNS4.get(&key) }) else {
        return XDP_PASS;
    };
    match BENCH_REALS.get(e.real_id) {
        Some(mac) => forward_to(p, mac),
        None => XDP_PASS,
    }
}

#[map]
static BENCH_NEW_CONNS: LruHashMap<ConnKey, ConnValue> = LruHashMap::with_max_entries(65536, 0);

/// The minimal LB plus what any new connection costs the director at
/// least: a new entry under the 40-byte key in an LRU hash (the benchmark
/// sends a distinct tuple per call, fewer than the map holds).
#[xdp]
pub fn bench_conn_insert(ctx: XdpContext) -> u32 {
    let p = match ipv4_frame(&ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    let Some(mac) = (unsafe { BENCH_BACKENDS.get(&bench_key(p)) }) else {
        return XDP_PASS;
    };
    let mac = *mac;
    let v = ConnValue {
        real_id: 2,
        svc_id: 1,
        ..ConnValue::default()
    };
    if BENCH_NEW_CONNS.insert(&conn_key(p), &v, 0).is_err() {
        return XDP_DROP;
    }
    forward_to(p, &mac)
}

/// [`conn_reference`] without statistics.
#[xdp]
pub fn bench_conn_lookup(ctx: XdpContext) -> u32 {
    conn_reference(&ctx, false)
}

/// [`conn_reference`] with the two statistics updates.
#[xdp]
pub fn bench_conn_stats(ctx: XdpContext) -> u32 {
    conn_reference(&ctx, true)
}

#[map]
static BENCH_SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The benchmark's sink: counts and drops every frame (and, being an XDP
/// program, lets a veth receive XDP_TX frames from its peer).
#[xdp]
pub fn bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(c) = BENCH_SINK_COUNT.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
    XDP_DROP
}

/// The benchmark's traffic generator (run in live-frames mode): the floor's
/// MAC swap, plus TTL reset to 64 and a fresh IPv4 header checksum, because
/// live frames reuse pages that a forwarding path may have modified.
#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let Some(p) = ptr_at(&ctx, 0, ETH_HLEN + Ipv4Hdr::LEN) else {
        return XDP_DROP;
    };
    swap_macs(p);
    unsafe {
        let ip = p.add(ETH_HLEN);
        *ip.add(8) = 64;
        *ip.add(10) = 0;
        *ip.add(11) = 0;
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < Ipv4Hdr::LEN {
            sum += u16::from_be_bytes([*ip.add(i), *ip.add(i + 1)]) as u32;
            i += 2;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let c = !(sum as u16);
        *ip.add(10) = (c >> 8) as u8;
        *ip.add(11) = c as u8;
    }
    XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
