//! Address masking and the flow hash, shared by the XDP program and the
//! daemon (which must compute exactly what the program computes).

/// `addr` with only its first `prefix` bits kept (persistence granularity).
#[inline(always)]
pub fn mask_addr(addr: &[u8; 16], prefix: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let start = (i * 8) as u32;
        let p = prefix as u32;
        let m: u8 = if p >= start + 8 {
            0xff
        } else if p <= start {
            0
        } else {
            0xffu8 << (8 - (p - start))
        };
        out[i] = addr[i] & m;
        i += 1;
    }
    out
}

/// The hash used for Maglev lookups, shared by the XDP program and the
/// daemon's simulator: a murmur3-style mix of the client address and port.
#[inline(always)]
pub fn flow_hash(addr: &[u8; 16], port: u16) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    let mut i = 0;
    while i < 4 {
        let w = u32::from_ne_bytes([
            addr[i * 4],
            addr[i * 4 + 1],
            addr[i * 4 + 2],
            addr[i * 4 + 3],
        ]);
        let mut k = w.wrapping_mul(0xcc9e_2d51);
        k = k.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        i += 1;
    }
    h ^= port as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Words (u64) of the VIP prefilter (VIP_FILTER): 65,536 bits, 8 KiB.
pub const VIP_FILTER_WORDS: u32 = 1024;

/// The VIP prefilter's bit for a destination address (as stored in keys):
/// the program passes a packet whose bit is clear without looking further
/// (no VIP has that bit); a set bit only says "maybe a VIP".
#[inline(always)]
pub fn vip_bit(addr: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let x = w(0) ^ w(4).rotate_left(7) ^ w(8).rotate_left(13) ^ w(12).rotate_left(19);
    (x.wrapping_mul(0x9e37_79b1) >> 16) & (VIP_FILTER_WORDS * 64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let a = [192, 0, 2, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(mask_addr(&a, 32), a);
        assert_eq!(mask_addr(&a, 24)[..4], [192, 0, 2, 0]);
        assert_eq!(mask_addr(&a, 20)[..4], [192, 0, 0, 0]);
        assert_eq!(mask_addr(&a, 0), [0; 16]);
        let v6 = [
            0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let m = mask_addr(&v6, 64);
        assert_eq!(&m[..8], &v6[..8]);
        assert_eq!(&m[8..], &[0; 8]);
        assert_eq!(mask_addr(&v6, 128), v6);
    }

    #[test]
    fn flow_hash_depends_on_address_and_port() {
        let a = [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut b = a;
        b[3] = 2;
        assert_eq!(flow_hash(&a, 0), flow_hash(&a, 0));
        assert_ne!(flow_hash(&a, 0), flow_hash(&b, 0));
        assert_ne!(flow_hash(&a, 0), flow_hash(&a, 1));
    }
}
