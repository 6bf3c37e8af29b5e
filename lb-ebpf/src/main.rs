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
#![no_std]
#![no_main]
// Atomic adds whose result is unused lower to BPF_XADD, which the cpu v1
// target aya-build links for supports (fetch-and-add would not).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use lb_common::{
    counter, dir_flags, flow_hash, mask_addr, rs_flags, sched, svc_flags, tcp_state, ConnKey,
    ConnValue, DirectorConfig, LblcKey, LblcValue, RealLoad, RealServer, Ring, ServiceKey,
    ServiceValue, Stats, AF_INET, AF_INET6, DEFAULT_MAX_CONNS, DEFAULT_MAX_REALS,
    DEFAULT_MAX_SERVICES, PROTO_TCP, PROTO_UDP, RING_SIZE,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

// ---------------------------------------------------------------- maps ----
// All maps are pinned by name in the instance's bpffs directory so that a
// daemon restart reuses them (and the connection table survives).

#[map]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(DEFAULT_MAX_SERVICES, 0);
/// Two rings per service: index = service id * 2 + generation.
#[map]
static RINGS: Array<Ring> = Array::pinned(DEFAULT_MAX_SERVICES * 2, 0);
#[map]
static REALS: Array<RealServer> = Array::pinned(DEFAULT_MAX_REALS, 0);
#[map]
/// Per-CPU LRU lists (BPF_F_NO_COMMON_LRU, as Katran): inserts do not
/// contend on one global list; eviction happens per CPU.
static CONNS: LruHashMap<ConnKey, ConnValue> =
    LruHashMap::pinned(DEFAULT_MAX_CONNS, BPF_F_NO_COMMON_LRU);
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
/// Round-robin cursor per service, shared by all CPUs so that rr and wrr
/// follow the published sequence as IPVS does. The read-modify-write is not
/// atomic (aya-build links for BPF cpu v1, which has no fetch-and-add): two
/// CPUs scheduling at the same instant may take the same slot.
#[map]
static CURSORS: Array<u32> = Array::pinned(DEFAULT_MAX_SERVICES, 0);
#[map]
static SVC_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(DEFAULT_MAX_SERVICES, 0);
#[map]
static RS_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(DEFAULT_MAX_REALS, 0);
/// Live connection counts per real server, incremented by the program...
#[map]
static RS_LOAD: Array<RealLoad> = Array::pinned(DEFAULT_MAX_REALS, 0);
/// ...and what the daemon found closed (expired or evicted) since.
#[map]
static RS_CLOSED: Array<RealLoad> = Array::pinned(DEFAULT_MAX_REALS, 0);
#[map]
static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);
#[map]
static CONFIG: Array<DirectorConfig> = Array::pinned(1, 0);
/// Overloaded flag per real server (thresholds -x/-y), kept by the program
/// when it considers the server and re-evaluated by the daemon's sweep.
#[map]
static RS_OVER: Array<u32> = Array::pinned(DEFAULT_MAX_REALS, 0);
/// lblc / lblcr: destination address -> real server (set), per service.
#[map]
static LBLC: LruHashMap<LblcKey, LblcValue> = LruHashMap::pinned(LBLC_ENTRIES, 0);
/// Destinations remembered by lblc/lblcr (LRU beyond that).
const LBLC_ENTRIES: u32 = 65536;
/// Index 0: `lb_new`, the new-connection half of the program, entered by
/// tail call; index 1: `lb_lblc`, the same for lblc/lblcr services (their
/// destination cache makes a program of its own for the verifier). Pinned like the other maps: a prog array is emptied when no
/// user reference remains, and new connections must keep being scheduled
/// while the daemon is down.
#[map]
static JUMP: ProgramArray = ProgramArray::pinned(4, 0);
/// The packet's flow and service, handed from `lb` to `lb_new` (per CPU:
/// a tail call stays on the CPU).
#[map]
static SCRATCH: PerCpuArray<NewConn> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct NewConn {
    key: ConnKey,
    svc: ServiceValue,
    ip_len: u64,
    now: u64,
    vport: u16,
    tcp_flags: u8,
    _pad: u8,
    /// lblcr: what lb_lblcr found of the set, for lb_lblcr_grow.
    lblcr_cur: u32,
    lblcr_max_i: u32,
    _pad2: u32,
}

// ------------------------------------------------------------- entries ----

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    match process(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// The new-connection half of `lb` (tail call): schedule, persistence,
/// connection entry, forward. Verified on its own, so the scheduler code is
/// checked once rather than once per parse path of `lb`.
#[xdp]
pub fn lb_new(ctx: XdpContext) -> u32 {
    match new_conn::<MODE_NEW>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// `lb_new` for lblc services (tail call from lb_new).
#[xdp]
pub fn lb_lblc(ctx: XdpContext) -> u32 {
    match new_conn::<MODE_LBLC>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// `lb_new` for lblcr services (tail call from lb_new): the set.
#[xdp]
pub fn lb_lblcr(ctx: XdpContext) -> u32 {
    match new_conn::<MODE_LBLCR>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// lblcr, when the set has no usable, unloaded member (tail call from
/// lb_lblcr): the wlc scan, and the set grows.
#[xdp]
pub fn lb_lblcr_grow(ctx: XdpContext) -> u32 {
    match new_conn::<MODE_LBLCR_GROW>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// JUMP indices (and new_conn's modes).
const MODE_NEW: u8 = 0;
const MODE_LBLC: u8 = 1;
const MODE_LBLCR: u8 = 2;
const MODE_LBLCR_GROW: u8 = 3;

/// The XDP_PASS program the lab attaches to veth peers so that XDP_TX frames
/// are received there (a veth requirement in native mode).
#[xdp]
pub fn lb_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

// -------------------------------------------------------------- helpers ----

const ETH_HLEN: usize = EthHdr::LEN;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV6_HLEN: usize = Ipv6Hdr::LEN;

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = GLOBAL_STATS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

/// Pointer to `len` bytes at `off`, or the "malformed" verdict.
#[inline(always)]
fn ptr_at(ctx: &XdpContext, off: usize, len: usize) -> Result<*mut u8, u32> {
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

#[inline(always)]
fn pass<T>(counter_idx: u32) -> Result<T, u32> {
    count(counter_idx);
    Err(XDP_PASS)
}

/// What the parser extracts from a frame.
struct Flow {
    key: ConnKey,
    /// TCP flags (0 for UDP).
    tcp_flags: u8,
    /// Length of the IP packet (what IPVS counts as bytes).
    ip_len: u64,
}

// --------------------------------------------------------------- parse ----

#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Flow, u32> {
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

// --------------------------------------------------------------- lookup ----

/// The service of a packet and the virtual port it was found under (the
/// packet's port, or 0 for a port-0 service), in network order.
#[inline(always)]
fn lookup_service(key: &ConnKey) -> Result<(ServiceValue, u16), u32> {
    let mut sk = ServiceKey {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        family: key.family,
    };
    if let Some(v) = unsafe { SERVICES.get(&sk) } {
        return Ok((*v, key.dport));
    }
    // A port-0 service matches every port of the VIP.
    sk.port = 0;
    match unsafe { SERVICES.get(&sk) } {
        Some(v) => Ok((*v, 0)),
        None => {
            count(counter::PASS_NOT_VIP);
            Err(XDP_PASS)
        }
    }
}

/// Scheduler: pick a real server id for a new connection of `svc`. No
/// server available is counted (drop_overloaded when the service has
/// connection thresholds, drop_no_real otherwise) and dropped.
#[inline(always)]
fn schedule<const MODE: u8>(
    svc: &ServiceValue,
    key: &ConnKey,
    now: u64,
    cur: u32,
    max_i: u32,
) -> Result<u32, u32> {
    match pick_call::<MODE>(svc, key, now, cur, max_i) {
        u32::MAX => {
            count(if svc.flags & svc_flags::THRESHOLDS != 0 {
                counter::DROP_OVERLOADED
            } else {
                counter::DROP_NO_REAL
            });
            Err(XDP_DROP)
        }
        id => Ok(id),
    }
}

/// The schedulers run in a BPF subprogram of their own: their scratch
/// state (bpf_loop contexts, lblc entries) lives in its frame, not in the
/// main program's, which keeps the combined stack under 512 bytes.
#[inline(never)]
fn pick_call<const MODE: u8>(
    svc: &ServiceValue,
    key: &ConnKey,
    now: u64,
    cur: u32,
    max_i: u32,
) -> u32 {
    pick::<MODE>(svc, key, now, cur, max_i).unwrap_or(u32::MAX)
}

#[inline(always)]
fn pick<const MODE: u8>(
    svc: &ServiceValue,
    key: &ConnKey,
    now: u64,
    cur: u32,
    max_i: u32,
) -> Option<u32> {
    let n = svc.ring_len;
    if n == 0 || n as usize > RING_SIZE {
        return None;
    }
    let thr = svc.flags & svc_flags::THRESHOLDS != 0;
    let slot = svc.id * 2 + (svc.gen as u32 & 1);
    let ring = RINGS.get_ptr(slot)?;
    if svc.sched == sched::SH || svc.sched == sched::DH {
        return hash_pick(svc, key, slot, n, thr);
    }
    if svc.sched == sched::TWOS {
        return twos_pick(slot, n, thr);
    }
    if MODE != MODE_NEW {
        return lblc_pick::<MODE>(svc, key, slot, n, thr, now, cur, max_i);
    }
    if svc.sched >= sched::LC {
        return dynamic_pick(svc.sched, slot, n, thr).best();
    }
    let idx = match svc.sched {
        sched::MH => {
            let port = if svc.flags & svc_flags::MH_PORT != 0 {
                key.sport
            } else {
                0
            };
            flow_hash(&key.saddr, port) % n
        }
        // rr and wrr walk the published sequence with a shared cursor.
        _ => match CURSORS.get_ptr_mut(svc.id) {
            Some(c) => unsafe {
                let i = *c % n;
                *c = i + 1;
                i
            },
            None => 0,
        },
    } as usize;
    // The compiler knows idx < ring_len <= RING_SIZE and would drop the
    // check; the verifier does not know it. Launder idx through memory.
    let idx = unsafe { core::ptr::read_volatile(&idx) };
    if idx >= RING_SIZE {
        return None;
    }
    let id = unsafe { *(*ring).reals.as_ptr().add(idx) };
    if !thr || !overloaded(id) {
        return Some(id);
    }
    // Over its upper threshold: rr and wrr go on to the next servers of the
    // sequence (as ip_vs_rr/wrr skip overloaded ones); mh only with
    // mh-fallback (ip_vs_mh returns no destination otherwise).
    if svc.sched == sched::MH && svc.flags & svc_flags::MH_FALLBACK == 0 {
        return None;
    }
    walk_from(slot, n, idx as u32, thr)
}

/// Whether a real server is over its connection thresholds now (IPVS's
/// overloaded flag, kept in RS_OVER with its hysteresis).
#[inline(always)]
fn overloaded(real_id: u32) -> bool {
    let Some(rs) = REALS.get(real_id) else {
        return false;
    };
    let Some(flag) = RS_OVER.get_ptr_mut(real_id) else {
        return false;
    };
    let (a, i) = load_of(real_id);
    let was = unsafe { *flag } != 0;
    let now = sched::overloaded_next(was, a + i, rs.u_threshold, rs.l_threshold);
    if now != was {
        unsafe { *flag = now as u32 };
    }
    now
}

/// Atomically adds `v` (two's complement for a decrement) to `*p`.
#[inline(always)]
fn xadd(p: *mut u64, v: u64) {
    unsafe {
        let _ = core::intrinsics::atomic_xadd::<
            u64,
            u64,
            { core::intrinsics::AtomicOrdering::Relaxed },
        >(p, v);
    }
}

/// Moves the live connection counts of `real_id`.
#[inline(always)]
fn account(real_id: u32, active: i64, inactive: i64) {
    if let Some(l) = RS_LOAD.get_ptr_mut(real_id) {
        unsafe {
            if active != 0 {
                xadd(&mut (*l).active, active as u64);
            }
            if inactive != 0 {
                xadd(&mut (*l).inactive, inactive as u64);
            }
        }
    }
}

/// (active, inactive) connections of a real server, as the dynamic
/// schedulers see them.
#[inline(always)]
fn load_of(real_id: u32) -> (u64, u64) {
    let (mut a, mut i) = (0u64, 0u64);
    if let Some(l) = RS_LOAD.get(real_id) {
        a = l.active;
        i = l.inactive;
    }
    if let Some(c) = RS_CLOSED.get(real_id) {
        a = a.wrapping_sub(c.active);
        i = i.wrapping_sub(c.inactive);
    }
    // A transient negative (a close seen before its open) counts as zero.
    if a > u32::MAX as u64 {
        a = 0;
    }
    if i > u32::MAX as u64 {
        i = 0;
    }
    (a, i)
}

/// The real-server id at position `i` of ring `slot`. The index is
/// laundered through memory so the compiler keeps the bound the verifier
/// needs.
#[inline(always)]
fn ring_entry(slot: u32, i: u32) -> Option<u32> {
    let ring = RINGS.get_ptr(slot)?;
    let idx = unsafe { core::ptr::read_volatile(&(i as usize)) };
    if idx >= RING_SIZE {
        return None;
    }
    Some(unsafe { *(*ring).reals.as_ptr().add(idx) })
}

/// The weight in force of a real server (0 if unknown).
#[inline(always)]
fn weight_of(real_id: u32) -> u32 {
    match REALS.get(real_id) {
        Some(rs) => rs.weight,
        None => 0,
    }
}

/// State of a dynamic pick, carried through bpf_loop.
#[repr(C)]
struct DynPick {
    slot: u32,
    n: u32,
    sched: u32,
    best: u32,
    best_active: u32,
    best_inactive: u32,
    best_weight: u32,
    /// Check the overloaded state (the service has thresholds).
    thr: u32,
    /// Some eligible server has active * 2 < weight (lblc's "half load").
    half: u32,
}

/// One step of the dynamic pick: real server `i` of the ring. A BPF
/// subprogram called by bpf_loop, so the verifier checks it once instead of
/// once per unrolled iteration.
#[inline(never)]
extern "C" fn dynamic_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut DynPick) };
    match consider(c, i) {
        Some((_, _, _, _, stop)) => stop,
        None => 1,
    }
}

/// Considers ring entry `i` for the dynamic pick. None: end of the ring;
/// else (id, weight in force (0 = not eligible), active, inactive, what
/// the step returns to bpf_loop).
#[inline(always)]
fn consider(c: &mut DynPick, i: u32) -> Option<(u32, u32, u64, u64, i64)> {
    if i >= c.n {
        return None;
    }
    let id = ring_entry(c.slot, i)?;
    let mut w = weight_of(id);
    if w > 0 && c.thr != 0 && overloaded(id) {
        w = 0;
    }
    let (a, ina) = load_of(id);
    let sched = c.sched as u8;
    if !sched::eligible(sched, a, w) {
        return Some((id, 0, a, ina, 0));
    }
    // Branch-free (a * 2 < w): a constant written on one branch only would
    // double the states the verifier tracks through the loop.
    c.half |= ((a * 2).wrapping_sub(w as u64) >> 63) as u32;
    if sched == sched::NQ && a == 0 {
        c.best = id;
        return Some((id, w, a, ina, 1));
    }
    let cand = (a, ina, w);
    if c.best == u32::MAX
        || sched::better(
            sched,
            cand,
            (c.best_active as u64, c.best_inactive as u64, c.best_weight),
        )
    {
        c.best = id;
        c.best_active = a as u32;
        c.best_inactive = ina as u32;
        c.best_weight = w;
    }
    Some((id, w, a, ina, 0))
}

/// lc, wlc, sed, nq, fo, ovf: compare the real servers of the ring by their
/// live connection counts and weights, as the kernel does. Also says
/// whether some server is under half load (for lblc/lblcr).
#[inline(always)]
fn dynamic_pick(sched: u8, slot: u32, n: u32, thr: bool) -> DynPick {
    let mut c = DynPick {
        slot,
        n,
        sched: sched as u32,
        best: u32::MAX,
        best_active: 0,
        best_inactive: 0,
        best_weight: 0,
        thr: thr as u32,
        half: 0,
    };
    let step = dynamic_step as *mut core::ffi::c_void;
    let loops = if (n as usize) < sched::MAX_DYNAMIC {
        n
    } else {
        sched::MAX_DYNAMIC as u32
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            loops,
            step,
            &mut c as *mut DynPick as *mut core::ffi::c_void,
            0,
        );
    }
    c
}

impl DynPick {
    fn best(&self) -> Option<u32> {
        if self.best == u32::MAX {
            None
        } else {
            Some(self.best)
        }
    }
}

/// Whether lblc/lblcr should leave real server `id`: lblc's is_overloaded
/// (more active connections than its weight) while another server is
/// under half load (which needs the scan: `half`).
#[inline(always)]
fn lblc_over(id: u32) -> bool {
    let (a, _) = load_of(id);
    a > weight_of(id) as u64
}

/// What lblc/lblcr found for a destination before the scan.
struct LblcState {
    key: LblcKey,
    entry: *mut LblcValue,
    current: u32,
    max_i: usize,
}

/// State of the scan of an lblcr set (bpf_loop): the least loaded (wlc)
/// usable member and the position of the most loaded one.
#[repr(C)]
struct SetScan {
    reals: [u32; sched::LBLCR_SET],
    n: u32,
    thr: u32,
    min_id: u32,
    max_at: u32,
    have_max: u32,
    min_w: u32,
    max_w: u32,
    _pad: u32,
    min_a: u64,
    min_in: u64,
    max_a: u64,
    max_in: u64,
}

#[inline(never)]
extern "C" fn set_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut SetScan) };
    if i >= c.n {
        return 1;
    }
    let id = c.reals[(i as usize) & (sched::LBLCR_SET - 1)];
    let w = weight_of(id);
    let (a, ina) = load_of(id);
    if c.have_max == 0 || sched::better(sched::WLC, (c.max_a, c.max_in, c.max_w), (a, ina, w)) {
        c.have_max = 1;
        c.max_at = i;
        c.max_a = a;
        c.max_in = ina;
        c.max_w = w;
    }
    if w > 0
        && usable(id)
        && !(c.thr != 0 && overloaded(id))
        && (c.min_id == u32::MAX
            || sched::better(sched::WLC, (a, ina, w), (c.min_a, c.min_in, c.min_w)))
    {
        c.min_id = id;
        c.min_a = a;
        c.min_in = ina;
        c.min_w = w;
    }
    0
}

/// lblcr, first half (program lb_lblcr): the least loaded member of the
/// destination's set, used while it is not overloaded (active <= weight).
/// Otherwise (None) lb_lblcr_grow runs the wlc scan: one program for both
/// loops would exceed the verifier's budget. Returns the member and the
/// position of the most loaded one (u32::MAX: no usable member).
#[inline(always)]
fn lblcr_set(svc: &ServiceValue, key: &ConnKey, thr: bool, now: u64) -> (Option<u32>, u32, u32) {
    let k = LblcKey {
        daddr: key.daddr,
        svc_id: svc.id,
    };
    let Some(e) = LBLC.get_ptr_mut(&k) else {
        return (None, u32::MAX, 0);
    };
    let e = unsafe { &mut *e };
    e.last_use_ns = now;
    let mut c = SetScan {
        reals: e.reals,
        n: e.n,
        thr: thr as u32,
        min_id: u32::MAX,
        max_at: 0,
        have_max: 0,
        min_w: 0,
        max_w: 0,
        _pad: 0,
        min_a: 0,
        min_in: 0,
        max_a: 0,
        max_in: 0,
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            sched::LBLCR_SET as u32,
            set_step as *mut core::ffi::c_void,
            &mut c as *mut SetScan as *mut core::ffi::c_void,
            0,
        );
    }
    if e.n > 1 && now.saturating_sub(e.last_mod_ns) > sched::LBLCR_EXPIRATION_NS {
        // The set has not changed for a long time: drop its most loaded
        // member (the kernel's set shrinking). Masks (LBLCR_SET is a power
        // of two) give the verifier its bounds; n <= LBLCR_SET.
        let last = (e.n - 1) as usize & (sched::LBLCR_SET - 1);
        let mi = c.max_at as usize & (sched::LBLCR_SET - 1);
        e.reals[mi] = e.reals[last];
        e.n -= 1;
        e.last_mod_ns = now;
    }
    if c.min_id != u32::MAX && !lblc_over(c.min_id) {
        return (Some(c.min_id), c.min_id, c.max_at);
    }
    (None, c.min_id, c.max_at)
}

/// lblc (program lb_lblc) and the second half of lblcr (lb_lblcr_grow):
/// the wlc scan first, from one verifier state, then the destination's
/// entry. lblc: its server while not overloaded (active <= weight), else
/// as [`lblc_after`] decides; lblcr: `cur` and `max_i` come from
/// [`lblcr_set`].
#[inline(always)]
fn lblc_pick<const MODE: u8>(
    svc: &ServiceValue,
    key: &ConnKey,
    slot: u32,
    n: u32,
    thr: bool,
    now: u64,
    cur: u32,
    max_i: u32,
) -> Option<u32> {
    let c = dynamic_pick(sched::WLC, slot, n, thr);
    let mut st = LblcState {
        key: LblcKey {
            daddr: key.daddr,
            svc_id: svc.id,
        },
        entry: core::ptr::null_mut(),
        current: u32::MAX,
        max_i: 0,
    };
    if let Some(e) = LBLC.get_ptr_mut(&st.key) {
        st.entry = e;
        let e = unsafe { &mut *e };
        e.last_use_ns = now;
        if MODE == MODE_LBLC {
            let id = e.reals[0];
            if e.n > 0 && weight_of(id) > 0 && usable(id) && !(thr && overloaded(id)) {
                st.current = id;
            }
        } else {
            st.current = cur;
            st.max_i = max_i as usize;
        }
    }
    if MODE == MODE_LBLC && st.current != u32::MAX && !lblc_over(st.current) {
        return Some(st.current);
    }
    lblc_after(svc, &st, c.best(), c.half != 0, now)
}

/// lblc / lblcr, second half: keep the overloaded server unless another is
/// under half load (`half`); else the wlc choice `best` becomes the
/// destination's server (lblc) or joins its set (lblcr).
#[inline(always)]
fn lblc_after(
    svc: &ServiceValue,
    st: &LblcState,
    best: Option<u32>,
    half: bool,
    now: u64,
) -> Option<u32> {
    if st.current != u32::MAX && !half {
        return Some(st.current);
    }
    let best = best?;
    if st.entry.is_null() {
        let mut v = LblcValue {
            reals: [best, 0, 0, 0, 0, 0, 0, 0],
            n: 1,
            _pad: 0,
            last_mod_ns: now,
            last_use_ns: now,
        };
        v.n = 1;
        let _ = LBLC.insert(&st.key, &v, 0);
        return Some(best);
    }
    let e = unsafe { &mut *st.entry };
    if svc.sched == sched::LBLC || e.n == 0 {
        e.reals[0] = best;
        e.n = 1;
    } else {
        // lblcr: the set grows by the wlc choice (its most loaded member
        // makes room when it is full).
        let at = if (e.n as usize) < sched::LBLCR_SET {
            e.n as usize
        } else {
            st.max_i
        };
        e.reals[at & (sched::LBLCR_SET - 1)] = best;
        if (e.n as usize) < sched::LBLCR_SET {
            e.n += 1;
        }
    }
    e.last_mod_ns = now;
    Some(best)
}

/// twos: state of the pass over the ring (bpf_loop).
#[repr(C)]
struct TwosPick {
    slot: u32,
    n: u32,
    /// Skip overloaded servers (the service has thresholds).
    thr: u32,
    c1: u32,
    c2: u32,
    w1: u32,
    w2: u32,
    _pad: u32,
    cum: u64,
}

/// Two independent weighted random picks in one pass (weighted reservoir
/// sampling: server i replaces a pick with probability w_i / sum of the
/// weights so far, so each pick is server i with probability w_i / total).
#[inline(never)]
extern "C" fn twos_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut TwosPick) };
    if i >= c.n {
        return 1;
    }
    let Some(id) = ring_entry(c.slot, i) else {
        return 1;
    };
    let w = weight_of(id);
    if w == 0 || (c.thr != 0 && overloaded(id)) {
        return 0;
    }
    c.cum += w as u64;
    let r1 = (unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() } as u64)
        .checked_rem(c.cum)
        .unwrap_or(0);
    if r1 < w as u64 {
        c.c1 = id;
        c.w1 = w;
    }
    let r2 = (unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() } as u64)
        .checked_rem(c.cum)
        .unwrap_or(0);
    if r2 < w as u64 {
        c.c2 = id;
        c.w2 = w;
    }
    0
}

/// twos (ip_vs_twos): two weighted-random servers, keep the lower
/// overhead/weight.
#[inline(always)]
fn twos_pick(slot: u32, n: u32, thr: bool) -> Option<u32> {
    let mut c = TwosPick {
        slot,
        n,
        thr: thr as u32,
        c1: u32::MAX,
        c2: u32::MAX,
        w1: 0,
        w2: 0,
        _pad: 0,
        cum: 0,
    };
    let loops = if (n as usize) < RING_SIZE {
        n
    } else {
        RING_SIZE as u32
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            loops,
            twos_step as *mut core::ffi::c_void,
            &mut c as *mut TwosPick as *mut core::ffi::c_void,
            0,
        )
    };
    if c.c1 == u32::MAX || c.c2 == u32::MAX {
        return None;
    }
    let (a1, i1) = load_of(c.c1);
    let (a2, i2) = load_of(c.c2);
    if sched::better(sched::WLC, (a1, i1, c.w1), (a2, i2, c.w2)) {
        Some(c.c1)
    } else {
        Some(c.c2)
    }
}

/// May this real server take a new connection now (weight, in service,
/// resolved, and under its thresholds when `thr`)?
#[inline(always)]
fn available(real_id: u32, thr: bool) -> bool {
    let ok = match REALS.get(real_id) {
        Some(rs) => {
            rs.weight > 0
                && rs.flags & (rs_flags::IN_USE | rs_flags::MAC_VALID | rs_flags::REMOVED)
                    == rs_flags::IN_USE | rs_flags::MAC_VALID
        }
        None => false,
    };
    ok && !(thr && overloaded(real_id))
}

#[repr(C)]
struct HashWalk {
    slot: u32,
    n: u32,
    start: u32,
    found: u32,
    thr: u32,
}

/// sh-fallback: bucket start + i + 1 (a bpf_loop callback).
#[inline(never)]
extern "C" fn hash_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut HashWalk) };
    if c.n == 0 {
        return 1;
    }
    // checked_rem: no division-by-zero panic path in the subprogram.
    let Some(m) = c.start.wrapping_add(i).wrapping_add(1).checked_rem(c.n) else {
        return 1;
    };
    let Some(id) = ring_entry(c.slot, m) else {
        return 1;
    };
    if available(id, c.thr != 0) {
        c.found = id;
        return 1;
    }
    0
}

/// The first available server after position `start` of the ring, going
/// round (sh-fallback, mh-fallback, and rr/wrr past overloaded servers).
#[inline(always)]
fn walk_from(slot: u32, n: u32, start: u32, thr: bool) -> Option<u32> {
    let mut c = HashWalk {
        slot,
        n,
        start,
        found: u32::MAX,
        thr: thr as u32,
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            n.saturating_sub(1),
            hash_step as *mut core::ffi::c_void,
            &mut c as *mut HashWalk as *mut core::ffi::c_void,
            0,
        );
    }
    if c.found == u32::MAX {
        None
    } else {
        Some(c.found)
    }
}

/// sh / dh: the bucket of the client (or destination) address; an
/// unavailable real server drops the connection, or with sh-fallback the
/// next buckets are tried (as ip_vs_sh).
#[inline(always)]
fn hash_pick(svc: &ServiceValue, key: &ConnKey, slot: u32, n: u32, thr: bool) -> Option<u32> {
    let h = if svc.sched == sched::DH {
        flow_hash(&key.daddr, 0)
    } else if svc.flags & svc_flags::MH_PORT != 0 {
        flow_hash(&key.saddr, key.sport)
    } else {
        flow_hash(&key.saddr, 0)
    };
    let start = h.checked_rem(n)?;
    if let Some(id) = ring_entry(slot, start) {
        if available(id, thr) {
            return Some(id);
        }
    }
    if svc.flags & svc_flags::MH_FALLBACK != 0 {
        return walk_from(slot, n, start, thr);
    }
    None
}

/// A real server is usable for a persistent client while it is in the
/// service with a valid MAC, even at weight 0 (IPVS keeps following a
/// template to a quiesced real server; only removal breaks it).
#[inline(always)]
fn usable(real_id: u32) -> bool {
    match REALS.get(real_id) {
        Some(rs) => {
            rs.flags & (rs_flags::IN_USE | rs_flags::MAC_VALID | rs_flags::REMOVED)
                == rs_flags::IN_USE | rs_flags::MAC_VALID
        }
        None => false,
    }
}

/// Persistence: the client's template key (client address masked by the
/// service's prefix, client port 0, the virtual port; for a port group the
/// fwmark in place of VIP and port, protocol 0, as IPVS keys them).
#[inline(always)]
fn template_key(svc: &ServiceValue, vport: u16, key: &ConnKey) -> ConnKey {
    let mut tkey = ConnKey {
        saddr: mask_addr(&key.saddr, svc.persist_prefix),
        daddr: key.daddr,
        sport: 0,
        dport: vport,
        proto: key.proto,
        family: key.family,
        _pad: [0; 2],
    };
    if svc.flags & svc_flags::FWMARK != 0 {
        let m = svc.fwmark.to_be_bytes();
        tkey.daddr = [m[0], m[1], m[2], m[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        tkey.dport = 0;
        tkey.proto = 0;
    }
    tkey
}

/// The real server of a live template (refreshed), if any. IPVS keeps
/// following a template to a quiesced real server; only removal breaks it.
/// (Own frame, as template_new: the main frame stays small.)
#[inline(never)]
fn template_hit(svc: &ServiceValue, vport: u16, key: &ConnKey, now: u64) -> Option<u32> {
    let tkey = template_key(svc, vport, key);
    let t = CONNS.get_ptr_mut(&tkey)?;
    let t = unsafe { &mut *t };
    if t.state == tcp_state::TEMPLATE && usable(t.real_id) {
        t.last_seen_ns = now;
        count(counter::PERSIST_HIT);
        return Some(t.real_id);
    }
    None
}

/// Creates the template of a newly scheduled persistent client. (Its own
/// frame: the scheduler's and this one are never on the stack together.)
#[inline(never)]
fn template_new(svc: &ServiceValue, vport: u16, key: &ConnKey, real_id: u32, now: u64) {
    let tkey = template_key(svc, vport, key);
    let template = ConnValue {
        real_id,
        svc_id: svc.id,
        last_seen_ns: now,
        state: tcp_state::TEMPLATE,
        _pad: [0; 3],
        timeout: svc.persist_timeout,
    };
    if CONNS.insert(&tkey, &template, 0).is_ok() {
        count(counter::PERSIST_NEW);
    } else {
        count(counter::CONN_INSERT_FAIL);
    }
}

#[inline(always)]
fn add_stats(map: &PerCpuArray<Stats>, idx: u32, new_conn: bool, bytes: u64) {
    if let Some(s) = map.get_ptr_mut(idx) {
        unsafe {
            (*s).packets += 1;
            (*s).bytes += bytes;
            if new_conn {
                (*s).conns += 1;
            }
        }
    }
}

// -------------------------------------------------------------- process ----

#[inline(always)]
fn process(ctx: &XdpContext) -> Result<u32, u32> {
    let flow = parse(ctx)?;
    // CLOCK_MONOTONIC_COARSE: cheaper, and tick resolution is plenty for
    // timeouts counted in seconds.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let is_tcp = flow.key.proto == PROTO_TCP;

    // The connection entry first, as IPVS does: an established flow costs one
    // hash lookup, and keeps going to its real server even if its service
    // was edited or deleted since (until the entry expires).
    let mut known = None;
    if let Some(entry) = CONNS.get_ptr_mut(&flow.key) {
        let e = unsafe { &mut *entry };
        let closed = e.state == tcp_state::CLOSE || e.state == tcp_state::TIME_WAIT;
        let syn_only = flow.tcp_flags & (tcp_state::F_SYN | tcp_state::F_ACK) == tcp_state::F_SYN;
        if is_tcp && closed && syn_only {
            // Port reuse: a new SYN on a closed entry starts a new connection
            // (the closed one stops counting as inactive).
            count(counter::CONN_REUSE);
            account(e.real_id, 0, -1);
        } else {
            // Write only what changed: the entry's cache line is shared by
            // every CPU that sees this flow.
            if e.last_seen_ns != now {
                e.last_seen_ns = now;
            }
            if is_tcp {
                let next = tcp_state::next(e.state, flow.tcp_flags);
                if next != e.state {
                    let was = e.state == tcp_state::ESTABLISHED;
                    let is = next == tcp_state::ESTABLISHED;
                    if was != is {
                        let d = if is { 1 } else { -1 };
                        account(e.real_id, d, -d);
                    }
                    e.state = next;
                }
            }
            known = Some((e.real_id, e.svc_id, e.state));
        }
    }
    let Some((real_id, svc_id, state)) = known else {
        // A new connection: hand over to lb_new.
        let (svc, vport) = lookup_service(&flow.key)?;
        let sc = SCRATCH.get_ptr_mut(0).ok_or(XDP_DROP)?;
        unsafe {
            *sc = NewConn {
                key: flow.key,
                svc,
                ip_len: flow.ip_len,
                now,
                vport,
                tcp_flags: flow.tcp_flags,
                _pad: 0,
                lblcr_cur: u32::MAX,
                lblcr_max_i: 0,
                _pad2: 0,
            };
            JUMP.tail_call(ctx, 0);
        }
        // Only reached when lb_new is not installed.
        count(counter::DROP_NO_REAL);
        return Err(XDP_DROP);
    };
    let config = config();
    let (mac, rflags) = resolved(real_id)?;
    if rflags & rs_flags::REMOVED != 0 && config.flags & dir_flags::EXPIRE_NODEST_CONN != 0 {
        // expire_nodest_conn: the real server is gone; expire the entry and
        // drop, so the client's retransmission is scheduled afresh.
        let _ = CONNS.remove(&flow.key);
        if state == tcp_state::ESTABLISHED {
            account(real_id, -1, 0);
        } else {
            account(real_id, 0, -1);
        }
        count(counter::DROP_EXPIRED_NODEST);
        return Err(XDP_DROP);
    }
    forward(ctx, &config, &mac, svc_id, real_id, false, flow.ip_len)
}

#[inline(always)]
fn config() -> DirectorConfig {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => DirectorConfig::default(),
    }
}

/// The real server's MAC and flags, if its MAC is known.
#[inline(always)]
fn resolved(real_id: u32) -> Result<([u8; 6], u16), u32> {
    match REALS.get(real_id) {
        Some(rs) if rs.flags & rs_flags::MAC_VALID != 0 && rs.flags & rs_flags::IN_USE != 0 => {
            Ok((rs.mac, rs.flags))
        }
        _ => {
            count(counter::DROP_UNRESOLVED);
            Err(XDP_DROP)
        }
    }
}

/// Counts the packet and rewrites the MACs only: destination = real
/// server, source = director.
#[inline(always)]
fn forward(
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

#[inline(always)]
fn new_conn<const MODE: u8>(ctx: &XdpContext) -> Result<u32, u32> {
    // Read in place: a copy would cost 88 bytes of the 512-byte stack.
    let sc = match SCRATCH.get(0) {
        Some(sc) => sc,
        None => return Err(XDP_DROP),
    };
    let svc = &sc.svc;
    let now = sc.now;
    let one_packet = svc.flags & svc_flags::ONE_PACKET != 0;
    let persist = svc.flags & svc_flags::PERSISTENT != 0;
    let hit = if persist {
        template_hit(svc, sc.vport, &sc.key, now)
    } else {
        None
    };
    if hit.is_none() && MODE == MODE_NEW {
        let to = match svc.sched {
            sched::LBLC => MODE_LBLC,
            sched::LBLCR => MODE_LBLCR,
            _ => MODE_NEW,
        };
        if to != MODE_NEW {
            unsafe { JUMP.tail_call(ctx, to as u32) };
            count(counter::DROP_NO_REAL);
            return Err(XDP_DROP);
        }
    }
    let mut early = None;
    if hit.is_none() && MODE == MODE_LBLCR {
        let thr = svc.flags & svc_flags::THRESHOLDS != 0;
        let (id, cur, max_i) = lblcr_set(svc, &sc.key, thr, now);
        match id {
            Some(id) => early = Some(id),
            None => {
                if let Some(m) = SCRATCH.get_ptr_mut(0) {
                    unsafe {
                        (*m).lblcr_cur = cur;
                        (*m).lblcr_max_i = max_i;
                    }
                }
                unsafe { JUMP.tail_call(ctx, MODE_LBLCR_GROW as u32) };
                count(counter::DROP_NO_REAL);
                return Err(XDP_DROP);
            }
        }
    }
    let real_id = match (hit, early) {
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => schedule::<MODE>(svc, &sc.key, now, sc.lblcr_cur, sc.lblcr_max_i)?,
    };
    if persist && hit.is_none() {
        template_new(svc, sc.vport, &sc.key, real_id, now);
    }
    let (mac, _) = resolved(real_id)?;
    if !one_packet {
        insert_conn(sc, svc.id, real_id, now);
    }
    let config = config();
    forward(ctx, &config, &mac, svc.id, real_id, true, sc.ip_len)
}

/// The connection entry of a new connection, counted in RS_LOAD.
#[inline(never)]
fn insert_conn(sc: &NewConn, svc_id: u32, real_id: u32, now: u64) {
    let is_tcp = sc.key.proto == PROTO_TCP;
    {
        let state = if !is_tcp {
            tcp_state::UDP
        } else if sc.tcp_flags & (tcp_state::F_SYN | tcp_state::F_FIN | tcp_state::F_RST) == 0 {
            // Mid-stream pick-up (no SYN seen): treat as established.
            tcp_state::ESTABLISHED
        } else {
            tcp_state::next(tcp_state::NONE, sc.tcp_flags)
        };
        let value = ConnValue {
            real_id,
            svc_id,
            last_seen_ns: now,
            state,
            _pad: [0; 3],
            timeout: 0,
        };
        if CONNS.insert(&sc.key, &value, 0).is_err() {
            count(counter::CONN_INSERT_FAIL);
        } else {
            count(counter::CONN_NEW);
            if state == tcp_state::ESTABLISHED {
                account(real_id, 1, 0);
            } else {
                account(real_id, 0, 1);
            }
        }
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

// ------------------------------------------------- benchmark references ----
// Two tiny programs the benchmark (`cargo xtask bench`) measures side by side
// with `lb` in the same run. lbd never attaches them; their map is not pinned.

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

/// The floor: bounds check, swap the MACs, XDP_TX.
#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    let Ok(eth) = ptr_at(&ctx, 0, ETH_HLEN) else {
        return XDP_DROP;
    };
    swap_macs(eth);
    XDP_TX
}

/// The minimal LB: the floor plus one hash lookup keyed by IPv4 destination
/// address and port (fixed 20-byte IPv4 header), and the MAC rewrite.
#[xdp]
pub fn bench_minimal_lb(ctx: XdpContext) -> u32 {
    let Ok(p) = ptr_at(&ctx, 0, ETH_HLEN + Ipv4Hdr::LEN + 4) else {
        return XDP_DROP;
    };
    if be16(unsafe { p.add(12) }) != ETH_P_IP {
        return XDP_PASS;
    }
    let mut key = BenchKey {
        daddr: [0; 4],
        dport: 0,
        _pad: 0,
    };
    unsafe {
        core::ptr::copy_nonoverlapping(p.add(ETH_HLEN + 16), key.daddr.as_mut_ptr(), 4);
        key.dport = core::ptr::read_unaligned(p.add(ETH_HLEN + Ipv4Hdr::LEN + 2) as *const u16);
    }
    let Some(mac) = (unsafe { BENCH_BACKENDS.get(&key) }) else {
        return XDP_PASS;
    };
    unsafe {
        core::ptr::copy_nonoverlapping(p, p.add(6), 6);
        core::ptr::copy_nonoverlapping(mac.as_ptr(), p, 6);
    }
    XDP_TX
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
    let Ok(p) = ptr_at(&ctx, 0, ETH_HLEN + Ipv4Hdr::LEN) else {
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
