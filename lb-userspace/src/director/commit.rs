//! The transactional commit: the planner's writes in order, each slot's old
//! value read first and kept; when a write fails, the slots written so far
//! get their old values back in reverse order, so the maps are exactly as
//! they were. A write that would change nothing is skipped.

use crate::dataplane::{Maps, MapsError, Slot, Value, Write};

#[derive(Debug, thiserror::Error)]
#[error("writing {slot:?} (write {step} of {total}) failed: {cause}; {}",
    if *.restored { "the maps were restored, nothing changed" }
    else { "restoring the maps failed too: the data plane may differ from the listing until the next successful change" })]
pub struct CommitError {
    pub step: usize,
    pub total: usize,
    pub slot: Slot,
    #[source]
    pub cause: MapsError,
    /// Whether every slot written so far got its old value back.
    pub restored: bool,
}

/// Executes `writes`; returns how many changed something.
pub fn commit<M: Maps + ?Sized>(maps: &mut M, writes: &[Write]) -> Result<usize, Box<CommitError>> {
    let mut undo: Vec<(Slot, Value)> = Vec::new();
    for (step, w) in writes.iter().enumerate() {
        let r = maps.read(w.slot).and_then(|old| {
            if w.value.same_as(&old) {
                return Ok(None);
            }
            maps.write(w.slot, &w.value).map(|()| Some(old))
        });
        match r {
            Ok(Some(old)) => undo.push((w.slot, old)),
            Ok(None) => {}
            Err(cause) => {
                let restored = rollback(maps, undo);
                return Err(Box::new(CommitError {
                    step: step + 1,
                    total: writes.len(),
                    slot: w.slot,
                    cause,
                    restored,
                }));
            }
        }
    }
    Ok(undo.len())
}

/// Puts the old values back, last write first. Every undo is attempted
/// even after one fails.
fn rollback<M: Maps + ?Sized>(maps: &mut M, undo: Vec<(Slot, Value)>) -> bool {
    let mut ok = true;
    for (slot, old) in undo.into_iter().rev() {
        if let Err(e) = maps.write(slot, &old) {
            tracing::error!("restoring {slot:?} after a failed commit: {e}");
            ok = false;
        }
    }
    ok
}
