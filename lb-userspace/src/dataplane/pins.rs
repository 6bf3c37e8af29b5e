//! Checking an instance's pinned maps, whole, against what this build's
//! object declares (map type, key and value sizes, max_entries as the
//! limits set them, flags) before anything is loaded over them: aya reuses
//! a pinned map by name without comparing anything, and a program reading
//! a map of another layout would misroute traffic.

use std::path::Path;

use aya::maps::MapInfo;
use aya_obj::{generated::bpf_map_type, maps::PinningType, EbpfSectionKind, Object};

use super::{DataplaneError, Limits, Result, OBJECT};

const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// One pinned map that differs from what this build needs.
fn mismatch(
    path: &Path,
    what: &str,
    found: impl std::fmt::Display,
    want: impl std::fmt::Display,
) -> DataplaneError {
    DataplaneError::Layout {
        path: path.display().to_string(),
        what: format!("{what} {found}, this build and configuration need {want}"),
    }
}

/// Refuses pins in `dir` that this build could not use as they are.
pub fn check(dir: &Path, limits: &Limits) -> Result<()> {
    let obj = Object::parse(OBJECT).map_err(|e| DataplaneError::Object(e.to_string()))?;
    let cpus = aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1);
    // In name order, so the same pins always give the same message.
    let maps: std::collections::BTreeMap<_, _> = obj.maps.iter().collect();
    for (name, m) in maps {
        if matches!(
            m.section_kind(),
            EbpfSectionKind::Data | EbpfSectionKind::Rodata | EbpfSectionKind::Bss
        ) || m.pinning() != PinningType::ByName
        {
            continue;
        }
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|e| DataplaneError::Link {
            path: path.display().to_string(),
            msg: format!("not a usable pinned map: {e}"),
        })?;
        let want_type = bpf_map_type::try_from(m.map_type())
            .ok()
            .and_then(|t| aya::maps::MapType::try_from(t).ok());
        let found_type = info.map_type().ok();
        if want_type.is_none() || found_type != want_type {
            return Err(mismatch(
                &path,
                "has map type",
                format!("{found_type:?}"),
                format!("{want_type:?}"),
            ));
        }
        if info.key_size() != m.key_size() || info.value_size() != m.value_size() {
            return Err(mismatch(
                &path,
                "has key/value sizes",
                format!("{}/{}", info.key_size(), info.value_size()),
                format!("{}/{}", m.key_size(), m.value_size()),
            ));
        }
        let size = lb_common::names::MAPS
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| limits.entries(*s));
        let mut want_max = size.unwrap_or(m.max_entries());
        if m.map_flags() & BPF_F_NO_COMMON_LRU != 0 {
            // The kernel rounds per-CPU LRU maps up to a multiple of the CPUs.
            want_max = want_max.div_ceil(cpus) * cpus;
        }
        if info.max_entries() != want_max {
            return Err(mismatch(
                &path,
                "has max_entries",
                info.max_entries(),
                want_max,
            ));
        }
        if info.map_flags() != m.map_flags() {
            return Err(mismatch(
                &path,
                "has flags",
                format!("{:#x}", info.map_flags()),
                format!("{:#x}", m.map_flags()),
            ));
        }
    }
    Ok(())
}

/// The limits the pins in `dir` were made with (None: no pins there).
pub fn pinned_limits(dir: &Path) -> Option<Limits> {
    let max = |name: &str| {
        MapInfo::from_pin(dir.join(name))
            .ok()
            .map(|i| i.max_entries())
    };
    Some(Limits {
        max_services: max(lb_common::names::map::SERVICES)?,
        max_reals: max(lb_common::names::map::REALS)?,
        max_conns: max(lb_common::names::map::CONNS)?,
        // Pins made before the MAGLEV map existed get the default.
        max_maglev_slots: max(lb_common::names::map::MAGLEV)
            .map(|n| n.saturating_mul(lb_common::MAGLEV_CHUNK as u32))
            .unwrap_or(lb_common::DEFAULT_MAX_MAGLEV_SLOTS),
    })
}
