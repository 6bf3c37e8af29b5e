//! Connection entries for the sync daemon: while a sync master runs
//! (CONFIG flag), an entry goes into the SYNC ring buffer when IPVS would
//! sync it: TCP on entering ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT or
//! TIME_WAIT; UDP and persistence templates when made. A full buffer loses
//! the event (counted); lbd's periodic refresh sends the entry later.

use lb_common::{counter, dir_flags, tcp_state, ConnKey, ConnValue, SyncEvent};

use crate::{maps::SYNC, stats::count};

/// Whether IPVS syncs a TCP entry entering `state`.
#[inline(always)]
pub(crate) fn synced_state(state: u8) -> bool {
    matches!(
        state,
        tcp_state::ESTABLISHED
            | tcp_state::FIN_WAIT
            | tcp_state::CLOSE
            | tcp_state::CLOSE_WAIT
            | tcp_state::TIME_WAIT
    )
}

/// Written straight into the ring buffer (no copy on the stack: the
/// programs' frames are near the verifier's 512-byte limit).
#[inline(always)]
pub(crate) fn emit(flags: u8, key: &ConnKey, value: &ConnValue) {
    if flags & dir_flags::SYNC == 0 {
        return;
    }
    match SYNC.reserve::<SyncEvent>(0) {
        Some(mut e) => {
            let p = e.as_mut_ptr();
            // SAFETY: `p` points to a reserved SyncEvent in the ring.
            unsafe {
                core::ptr::copy_nonoverlapping(key, core::ptr::addr_of_mut!((*p).key), 1);
                core::ptr::copy_nonoverlapping(value, core::ptr::addr_of_mut!((*p).value), 1);
            }
            e.submit(0);
        }
        None => count(counter::SYNC_LOST),
    }
}
