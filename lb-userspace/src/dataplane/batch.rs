//! Reading a whole hash map with BPF_MAP_LOOKUP_BATCH: one system call per
//! few thousand entries, where a walk by key (BPF_MAP_GET_NEXT_KEY, then a
//! lookup) costs two per entry. The sweep and the listings read the
//! connection table this way: at a million entries the walk by key took
//! about a second of CPU every sweep (docs/benchmarks.md measures both).
//!
//! aya has no batch operations; this is the kernel's interface
//! (`union bpf_attr`'s `batch` member) through `syscall(SYS_bpf)`.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries asked per call (grown when one hash bucket holds more).
const CHUNK: usize = 4096;

/// Every (key, value) of the hash map `fd` (`K` and `V` its key and value
/// types, plain data). Entries added or removed during the read may or may
/// not be seen (as with a walk by key); none is seen twice. Errors with
/// `Unsupported` on kernels without batch operations (before 5.6).
pub fn lookup_all<K: Copy, V: Copy>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    let mut keys: Vec<MaybeUninit<K>> = Vec::new();
    let mut values: Vec<MaybeUninit<V>> = Vec::new();
    // The position token: a u32 bucket index for hash maps (room for more).
    let mut token = [0u64; 2];
    let mut next = [0u64; 2];
    let mut first = true;
    loop {
        keys.resize_with(chunk, MaybeUninit::uninit);
        values.resize_with(chunk, MaybeUninit::uninit);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values of the
        // map's sizes (the caller's K and V) and at two token words, all
        // alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let err = (r < 0).then(io::Error::last_os_error);
        match err.as_ref().and_then(|e| e.raw_os_error()) {
            None | Some(libc::ENOENT) => {
                let n = (attr.count as usize).min(chunk);
                for i in 0..n {
                    // SAFETY: the kernel filled the first `count` slots.
                    out.push(unsafe { (keys[i].assume_init(), values[i].assume_init()) });
                }
                if err.is_some() {
                    return Ok(out); // ENOENT: the last batch
                }
                token = next;
                first = false;
            }
            // One bucket holds more than `chunk` entries: ask for more.
            Some(libc::ENOSPC) if chunk < 1 << 20 => chunk *= 4,
            Some(libc::EINVAL | libc::ENOTSUP | libc::EOPNOTSUPP) if first => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("BPF_MAP_LOOKUP_BATCH: {}", err.expect("an error")),
                ))
            }
            _ => return Err(err.expect("an error")),
        }
    }
}
