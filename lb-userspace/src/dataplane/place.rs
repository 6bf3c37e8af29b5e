//! Where an instance lives: names that become paths are checked, the bpffs
//! is checked to be one, and `--unload` removes only the instance's own
//! pins.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use lb_common::names::MAPS;

/// A name unfit for a path or an interface.
#[derive(Debug, thiserror::Error)]
#[error("{what} {name:?}: {why}")]
pub struct BadName {
    pub what: &'static str,
    pub name: String,
    pub why: &'static str,
}

/// Checks a name used as one path component (`what`: "instance",
/// "interface"), with the kernel's rules for interface names (no `/`,
/// no `:`, no whitespace, not `.` or `..`) and at most `max` bytes.
pub fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), BadName> {
    let bad = |why| {
        Err(BadName {
            what,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > max {
        return bad(if max == 15 {
            "longer than 15 bytes (IFNAMSIZ)"
        } else {
            "longer than 64 bytes"
        });
    }
    if name == "." || name == ".." {
        return bad("not a name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace() || c.is_control())
    {
        return bad("must not contain '/', ':', whitespace or control characters");
    }
    Ok(())
}

/// Interface names: the kernel's IFNAMSIZ.
pub fn check_interface(name: &str) -> Result<(), BadName> {
    check_name("interface", name, 15)
}

/// Instance names.
pub fn check_instance(name: &str) -> Result<(), BadName> {
    check_name("instance", name, 64)
}

const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
const SYSFS_MAGIC: u32 = 0x6265_6572;

/// Whether `path` is a bpffs mount, with a message saying what to do when
/// it is not.
pub fn check_bpffs(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return Err(format!("bpffs {shown}: not a path"));
    };
    // SAFETY: statfs fills the struct we own from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "bpffs {shown}: {e}: mount one there (`mount -t bpf bpf {shown}`) or give --bpffs the path of a bpffs mount"
        ));
    }
    // f_type is a signed word of the platform's size: its low 32 bits.
    let kind = st.f_type as u32;
    if kind == BPF_FS_MAGIC {
        return Ok(());
    }
    let netns_hint = if kind == SYSFS_MAGIC {
        " It is part of a sysfs: either no bpffs is mounted there, or `ip netns exec` mounted a fresh /sys for the namespace, hiding the host's bpffs; then start lbd with `nsenter --net=/run/netns/NAME lbd ...` instead (network namespace only), so its pins are the host's and survive restarts."
    } else {
        ""
    };
    Err(format!(
        "{shown} is not a bpffs (filesystem type {kind:#x}), so lbd cannot pin its maps and link there: mount one (`mount -t bpf bpf {shown}`) or give --bpffs the path of a bpffs mount.{netns_hint}"
    ))
}

/// Whether a file in an instance directory is one of lbd's pins.
fn own_pin(name: &str) -> bool {
    MAPS.iter().any(|(m, _)| *m == name)
        || matches!(name, "link" | "pass_link" | "floor_link")
        || name.starts_with("jump_")
}

/// Removes lbd's pins from an instance directory, then the directory if
/// nothing else is left in it; returns what was left (not lbd's).
pub fn remove_own_pins(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut left = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if own_pin(&e.file_name().to_string_lossy()) && !e.file_type()?.is_dir() {
            fs::remove_file(e.path())?;
        } else {
            left.push(e.path());
        }
    }
    if left.is_empty() {
        fs::remove_dir(dir)?;
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_the_directory_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            "eth0:1",
            "x\0y",
            "abcdefghijklmnop",
        ] {
            assert!(check_interface(bad).is_err(), "{bad:?}");
        }
        for good in ["eth0", "enp0s31f6", "bond0.100", "lb-prod_1", "veth@x"] {
            assert!(check_interface(good).is_ok(), "{good:?}");
            assert!(check_instance(good).is_ok(), "{good:?}");
        }
        assert!(check_instance(&"a".repeat(64)).is_ok());
        assert!(check_instance(&"a".repeat(65)).is_err());
        let e = check_instance("../etc").unwrap_err().to_string();
        assert!(e.starts_with("instance \"../etc\""), "{e}");
    }

    #[test]
    fn a_directory_that_is_not_a_bpffs_is_named_with_the_fix() {
        let e = check_bpffs(Path::new("/proc")).unwrap_err();
        assert!(
            e.contains("is not a bpffs") && e.contains("mount -t bpf"),
            "{e}"
        );
        let e = check_bpffs(Path::new("/sys")).unwrap_err();
        assert!(e.contains("nsenter"), "{e}");
        let e = check_bpffs(Path::new("/nonexistent-lb")).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn unload_removes_only_lbd_pins() {
        let d = std::env::temp_dir().join(format!("lb-place-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        for f in [
            "CONNS",
            "link",
            "jump_1_2",
            "pass_link",
            "floor_link",
            "notes.txt",
        ] {
            fs::write(d.join(f), "x").unwrap();
        }
        let left = remove_own_pins(&d).unwrap();
        assert_eq!(left, vec![d.join("notes.txt")]);
        fs::remove_file(d.join("notes.txt")).unwrap();
        fs::write(d.join("CONNS"), "x").unwrap();
        assert!(remove_own_pins(&d).unwrap().is_empty());
        assert!(!d.exists());
    }
}
