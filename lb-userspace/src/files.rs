//! Files lbd and lbadm keep (the saved running state, joined real servers,
//! VRRP states, the real-server helper's record, BIRD's include): written
//! whole, so a crash or a full disk leaves the old file, never half a new
//! one.

use std::{io::Write as _, path::Path};

/// Writes `bytes` to `path` whole: its directory created if missing, a
/// new file beside it written and synced, renamed over `path`, the rename
/// synced. On an error `path` is as it was.
pub fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if let Some(d) = dir {
        // The rename itself durable.
        let _ = std::fs::File::open(d).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_and_leaves_nothing_beside() {
        let dir = std::env::temp_dir().join(format!("lb-files-{}", std::process::id()));
        let p = dir.join("sub").join("state.yaml");
        write_whole(&p, b"one").unwrap();
        write_whole(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["state.yaml"]);
        // A directory in the way: an error, the old file untouched.
        let blocked = dir.join("sub");
        assert!(write_whole(&blocked, b"x").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
