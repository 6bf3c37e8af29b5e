//! TCP connection states (IPVS numbering, `ip_vs_tcp_state_name`).

pub const NONE: u8 = 0;
pub const ESTABLISHED: u8 = 1;
pub const SYN_SENT: u8 = 2;
pub const SYN_RECV: u8 = 3;
pub const FIN_WAIT: u8 = 4;
pub const TIME_WAIT: u8 = 5;
pub const CLOSE: u8 = 6;
pub const CLOSE_WAIT: u8 = 7;
pub const LAST_ACK: u8 = 8;
pub const LISTEN: u8 = 9;
pub const SYNACK: u8 = 10;
pub const COUNT: usize = 11;
/// The state used for UDP entries.
pub const UDP: u8 = 11;
/// A persistence template (client address masked, client port 0); its
/// timeout is the service's persistence timeout, kept in the entry.
pub const TEMPLATE: u8 = 12;

pub const NAMES: [&str; 13] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
    "UDP",
    "NONE",
];

// IPVS tcp_states_dos-free input-only table (net/netfilter/ipvs/ip_vs_proto_tcp.c,
// tcp_states "INPUT-ONLY"), columns indexed by the current state NO..SA.
const S_ES: u8 = ESTABLISHED;
const S_SS: u8 = SYN_SENT;
const S_SR: u8 = SYN_RECV;
const S_FW: u8 = FIN_WAIT;
const S_TW: u8 = TIME_WAIT;
const S_CL: u8 = CLOSE;
const S_CW: u8 = CLOSE_WAIT;
const S_LA: u8 = LAST_ACK;
const S_LI: u8 = LISTEN;
const SYN: [u8; COUNT] = [
    S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR,
];
const FIN: [u8; COUNT] = [
    S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW,
];
const ACK: [u8; COUNT] = [
    S_CL, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES,
];
const RST: [u8; COUNT] = [
    S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL,
];

/// TCP flag bits as in the header's 14th byte.
pub const F_FIN: u8 = 0x01;
pub const F_SYN: u8 = 0x02;
pub const F_RST: u8 = 0x04;
pub const F_ACK: u8 = 0x10;

/// Next state for a client-to-server packet (flag priority rst > syn > fin > ack).
/// Packets with none of these flags leave the state unchanged.
#[inline(always)]
pub fn next(current: u8, flags: u8) -> u8 {
    let i = current as usize;
    if i >= COUNT {
        return current;
    }
    if flags & F_RST != 0 {
        RST[i]
    } else if flags & F_SYN != 0 {
        SYN[i]
    } else if flags & F_FIN != 0 {
        FIN[i]
    } else if flags & F_ACK != 0 {
        ACK[i]
    } else {
        current
    }
}

/// Default timeouts in seconds, indexed by state (IPVS defaults), then UDP.
pub const DEFAULT_TIMEOUTS: [u32; 12] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120, 300];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_only_transitions_follow_ipvs() {
        // The DR life of a connection: SYN, ACK, data, FIN, ACK, then RST.
        let mut s = NONE;
        for (flags, want) in [
            (F_SYN, SYN_RECV),
            (F_ACK, ESTABLISHED),
            (F_ACK | 0x08, ESTABLISHED),
            (F_FIN | F_ACK, FIN_WAIT),
            (F_ACK, FIN_WAIT),
            (F_RST, CLOSE),
        ] {
            s = next(s, flags);
            assert_eq!(s, want, "flags {flags:#x}");
        }
        // rst > syn > fin > ack
        assert_eq!(next(ESTABLISHED, F_RST | F_SYN), CLOSE);
        assert_eq!(next(ESTABLISHED, F_SYN | F_FIN), ESTABLISHED);
        assert_eq!(next(SYN_RECV, F_FIN | F_ACK), TIME_WAIT);
        assert_eq!(next(SYN_RECV, F_RST), SYN_RECV);
        assert_eq!(next(NONE, F_ACK), CLOSE);
        // A packet with none of the four flags leaves the state alone.
        assert_eq!(next(FIN_WAIT, 0x08), FIN_WAIT);
        assert_eq!(next(200, F_SYN), 200);
        assert_eq!(DEFAULT_TIMEOUTS[ESTABLISHED as usize], 900);
        assert_eq!(DEFAULT_TIMEOUTS[UDP as usize], 300);
        assert_eq!(NAMES[UDP as usize], "UDP");
    }
}
