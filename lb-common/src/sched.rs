//! Scheduler identifiers as stored in [`crate::ServiceValue::sched`].

/// Round robin: walk the ring in order (per-CPU cursor).
pub const RR: u8 = 1;
/// Weighted round robin: walk the precomputed IPVS wrr sequence.
pub const WRR: u8 = 2;
/// Maglev hashing of the client address (and port with MH_PORT).
pub const MH: u8 = 3;
/// Dynamic schedulers: the ring lists the available real servers and the
/// program picks by their live connection counts (RS_LOAD - RS_CLOSED).
/// Least connections: lowest active*256 + inactive.
pub const LC: u8 = 4;
/// Weighted least connections: lowest (active*256 + inactive) / weight.
pub const WLC: u8 = 5;
/// Shortest expected delay: lowest (active + 1) / weight.
pub const SED: u8 = 6;
/// Never queue: an idle server (no active connection) if any, else sed.
pub const NQ: u8 = 7;
/// Weighted failover: the available server with the highest weight.
pub const FO: u8 = 8;
/// Overflow: the highest-weight server whose active connections are
/// below its weight.
pub const OVF: u8 = 9;
/// Source hashing: a 256-bucket table indexed by the client address
/// (and port with HASH_PORT).
pub const SH: u8 = 10;
/// Destination hashing: the same table indexed by the destination address.
pub const DH: u8 = 11;
/// Power of two choices: two weighted-random picks, the one with the
/// lower (active*256 + inactive) / weight wins.
pub const TWOS: u8 = 12;
/// Locality-based least connections: per destination address, stick to
/// one real server (LBLC map) until it is overloaded (active > weight)
/// while another server is under half load; then the wlc choice.
pub const LBLC: u8 = 13;
/// lblc with replication: per destination address a set of servers
/// (up to [`LBLCR_SET`]), the least loaded member is used; the set grows
/// with the wlc choice when that member is overloaded, and its most
/// loaded member leaves when the set has not changed for a while.
pub const LBLCR: u8 = 14;
/// Members of an lblcr destination set.
pub const LBLCR_SET: usize = 8;
/// An lblcr set with more than one member drops its most loaded member
/// when it has not changed for this long (the kernel's
/// sysctl lblcr_expiration default: one day).
pub const LBLCR_EXPIRATION_NS: u64 = 24 * 3600 * 1_000_000_000;
/// Buckets of the sh/dh table (the kernel's IP_VS_SH_TAB_SIZE).
pub const HASH_BUCKETS: usize = 256;

/// Whether a server with `active` connections and weight `w` may take a
/// new connection under `sched` (ovf's own overflow rule).
#[inline(always)]
pub fn eligible(sched: u8, active: u64, w: u32) -> bool {
    w > 0 && (sched != OVF || active < w as u64)
}

/// IPVS's overloaded flag of a real server with thresholds (-x upper,
/// -y lower): set when active + inactive reaches `upper`, cleared when
/// it falls below `lower` (below 3/4 of `upper` when `lower` is 0);
/// never set without an upper threshold (ip_vs_bind_dest/unbind_dest).
#[inline(always)]
pub fn overloaded_next(was: bool, total: u64, upper: u32, lower: u32) -> bool {
    if upper == 0 {
        return false;
    }
    if total >= upper as u64 {
        return true;
    }
    if !was {
        return false;
    }
    let clear = if lower != 0 {
        total < lower as u64
    } else {
        total * 4 < upper as u64 * 3
    };
    !clear
}

/// How many real servers a dynamic scheduler compares: all of them (the
/// ring holds up to RING_SIZE), walked with bpf_loop as IPVS walks its
/// destination list.
pub const MAX_DYNAMIC: usize = crate::RING_SIZE;

/// Whether candidate `a` (active, inactive, weight) beats the current
/// best `b` under scheduler `sched`, exactly as the kernel compares
/// (ip_vs_lc/wlc/sed/nq.c: strict, so the first of equals wins).
#[inline(always)]
pub fn better(sched: u8, a: (u64, u64, u32), b: (u64, u64, u32)) -> bool {
    let (aa, ai, aw) = a;
    let (ba, bi, bw) = b;
    match sched {
        FO | OVF => aw > bw,
        LC => aa * 256 + ai < ba * 256 + bi,
        WLC => (ba * 256 + bi) * (aw as u64) > (aa * 256 + ai) * (bw as u64),
        _ => {
            // sed; nq prefers an idle server first (handled by the caller
            // too, this keeps the comparison total).
            if sched == NQ && (aa == 0) != (ba == 0) {
                return aa == 0;
            }
            (ba + 1) * (aw as u64) > (aa + 1) * (bw as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_have_ipvs_hysteresis() {
        use super::overloaded_next as o;
        assert!(!o(false, 1000, 0, 0), "no upper threshold: never");
        assert!(!o(false, 9, 10, 5));
        assert!(o(false, 10, 10, 5), "reaching upper sets it");
        assert!(o(true, 6, 10, 5), "stays set down to lower");
        assert!(o(true, 5, 10, 5));
        assert!(!o(true, 4, 10, 5), "below lower clears it");
        assert!(!o(false, 8, 10, 5), "cleared: only upper sets it again");
        // No lower threshold: cleared below 3/4 of upper.
        assert!(o(true, 8, 10, 0));
        assert!(!o(true, 7, 10, 0));
    }

    #[test]
    fn dynamic_comparisons_follow_the_kernel() {
        // lc: overhead active*256 + inactive.
        assert!(better(LC, (0, 100, 1), (1, 0, 1)));
        assert!(!better(LC, (1, 0, 1), (1, 0, 1)), "ties keep the first");
        // wlc: 1 active at weight 3 beats 1 active at weight 1.
        assert!(better(WLC, (1, 0, 3), (1, 0, 1)));
        assert!(!better(WLC, (2, 0, 1), (1, 0, 1)));
        // sed: (active+1)/weight: (2+1)/3 = 1 beats (0+1)/1 = 1? equal: no.
        assert!(!better(SED, (2, 0, 3), (0, 0, 1)));
        assert!(better(SED, (1, 0, 3), (0, 0, 1)));
        // nq: an idle server wins whatever its weight.
        assert!(better(NQ, (0, 5, 1), (1, 0, 100)));
        assert!(!better(NQ, (1, 0, 100), (0, 0, 1)));
        // fo / ovf: the highest weight, the first of equals.
        assert!(better(FO, (100, 0, 5), (0, 0, 4)));
        assert!(!better(FO, (0, 0, 4), (0, 0, 4)));
        assert!(eligible(OVF, 2, 3) && !eligible(OVF, 3, 3) && !eligible(FO, 0, 0));
    }
}
