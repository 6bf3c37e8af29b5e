//! Memory: what the maps lock per entry.

use crate::*;

/// memlock of the map named `name` held by this process (from fdinfo).
pub(crate) fn map_memlock(max_entries: u32, map_type: u32) -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let s = std::fs::read_to_string(e.path()).unwrap_or_default();
        let field = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("map_type:") == Some(map_type as u64)
            && field("max_entries:") == Some(max_entries as u64)
        {
            return field("memlock:");
        }
    }
    None
}

pub(crate) fn memory(o: &Opts, memory: &mut BTreeMap<String, Value>) -> Result<()> {
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    let sizes: &[u32] = if o.quick {
        &[1 << 20]
    } else {
        &[1 << 20, 10_000_000]
    };
    for &n in sizes {
        let limits = Limits {
            max_services: 16,
            max_reals: 64,
            max_conns: n,
            max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
        };
        let d = load("bench-mem", &limits)?;
        let bytes = map_memlock(n, BPF_MAP_TYPE_LRU_HASH).context("CONNS memlock")?;
        memory.insert(
            format!("conn_table_{n}_entries"),
            json!({"bytes": bytes, "bytes_per_entry": bytes / n as u64}),
        );
        drop(d);
    }
    Ok(())
}
