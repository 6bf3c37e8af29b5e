//! lbd as a systemd service: the unit file verifies, and lbd speaks the
//! notify protocol (READY once attached and applied, the watchdog from its
//! loop, RELOADING/READY around SIGHUP, STOPPING) to a socket the test
//! holds, as systemd would.

use std::{
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

use xtask::paths;

use crate::{support::*, tests, Test};

/// `systemd-analyze verify` on deploy/lbd.service, its binaries pointed at
/// this build's.
fn the_unit_file_verifies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("deploy/lbd.service")).unwrap();
    let dir = std::env::temp_dir().join(format!("lbe2e-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lbd.service");
    let lbd = paths().lbd();
    std::fs::write(&path, unit.replace("/usr/sbin/lbd", lbd.to_str().unwrap())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    // Other units of the machine may draw remarks; ours must not.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("lbd.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
}

/// Datagrams received until `until` says stop or `timeout`.
fn collect(
    sock: &UnixDatagram,
    timeout: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&got) {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    got
}

fn lbd_tells_systemd_ready_alive_reloading_and_stopping() {
    let lab = lab();
    let sock_path = std::env::temp_dir().join(format!("{}-notify.sock", lab.prefix));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let config = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix));
    std::fs::write(&config, RR_CONFIG).unwrap();
    let mut lbd = lab
        .start_lbd_env(
            &["--config", config.to_str().unwrap(), "--xdp-mode", "native"],
            &[
                ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
                ("WATCHDOG_USEC", "400000"),
            ],
        )
        .unwrap();
    let has = |got: &[String], what: &str| got.iter().any(|m| m.lines().any(|l| l == what));
    let got = collect(&sock, Duration::from_secs(30), |g| has(g, "READY=1"));
    assert!(has(&got, "READY=1"), "{got:?}");
    // READY means attached and applied: the VIP answers at once.
    assert!(
        lab.curl_vip("/", 2).is_ok(),
        "READY before the VIP is served"
    );
    let ready = got.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=serving 1 virtual services"),
        "{ready}"
    );
    // The watchdog every 200 ms (half of WATCHDOG_USEC).
    let alive = collect(&sock, Duration::from_millis(1500), |_| false);
    let n = alive.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(n >= 4, "{n} keep-alives in 1.5 s: {alive:?}");
    // SIGHUP: RELOADING, then READY once the reload is applied.
    Command::new("kill")
        .args(["-HUP", &lbd.id().to_string()])
        .status()
        .unwrap();
    let got = collect(&sock, Duration::from_secs(10), |g| {
        has(g, "RELOADING=1")
            && g.iter()
                .any(|m| m.contains("READY=1") && !m.contains("RELOADING"))
    });
    let reloading = got.iter().position(|m| m.contains("RELOADING=1"));
    let ready = got
        .iter()
        .rposition(|m| m.contains("READY=1") && !m.contains("RELOADING"));
    assert!(
        matches!((reloading, ready), (Some(a), Some(b)) if a < b),
        "{got:?}"
    );
    assert!(got.iter().any(|m| m.contains("MONOTONIC_USEC=")), "{got:?}");
    // SIGTERM: STOPPING.
    Command::new("kill")
        .arg(lbd.id().to_string())
        .status()
        .unwrap();
    let got = collect(&sock, Duration::from_secs(10), |g| has(g, "STOPPING=1"));
    assert!(has(&got, "STOPPING=1"), "{got:?}");
    let _ = lbd.wait();
    let _ = std::fs::remove_file(&sock_path);
    lab.unload_lbd();
}

/// The .deb `cargo xtask package` built (`cargo xtask test` builds it
/// before this suite).
fn the_package() -> std::path::PathBuf {
    let dir = xtask::root().join("target/package");
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}: run cargo xtask package", dir.display()))
}

fn dpkg(args: &[&str]) -> std::process::Output {
    Command::new("dpkg").args(args).output().expect("dpkg")
}

/// Removes the package whatever happens to the test.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = dpkg(&["--purge", "lbd"]);
    }
}

/// `dpkg -i` the package, check what it installs, then run the lab on the
/// installed binaries (lbd, and lbadm on the real servers), and purge it.
fn the_debian_package_installs_and_runs_the_lab() {
    let deb = the_package();
    assert!(
        !dpkg(&["-s", "lbd"]).status.success(),
        "the lbd package is installed on this machine: the test would replace and purge it (remove it first)"
    );
    let _purge = Purge;
    // Its maintainer scripts reload systemd (and restart lbd on upgrade).
    let scripts = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("postinst")
        .output()
        .unwrap();
    let postinst = String::from_utf8_lossy(&scripts.stdout);
    assert!(
        postinst.contains("daemon-reload") && postinst.contains("try-restart lbd.service"),
        "{postinst}"
    );
    let out = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "/usr/sbin/lbd",
        "/usr/sbin/lbadm",
        "/usr/lib/systemd/system/lbd.service",
        "/etc/lbd/lbd.yaml",
        "/etc/default/lbd",
        "/usr/share/man/man8/lbd.8.gz",
        "/usr/share/man/man8/lbadm.8.gz",
        "/usr/share/bash-completion/completions/lbadm",
        "/usr/share/zsh/vendor-completions/_lbadm",
        "/usr/share/fish/vendor_completions.d/lbadm.fish",
        "/usr/share/doc/lbd/README.md",
        "/usr/share/doc/lbd/operations.md",
        "/usr/share/doc/lbd/grafana/lbd-dashboard.json",
    ] {
        assert!(std::path::Path::new(f).exists(), "{f} not installed");
    }
    let conf = String::from_utf8_lossy(&dpkg(&["-s", "lbd"]).stdout).to_string();
    assert!(conf.contains("Status: install ok installed"), "{conf}");
    let conffiles = String::from_utf8_lossy(&dpkg(&["--status", "lbd"]).stdout).to_string();
    assert!(conffiles.contains("/etc/lbd/lbd.yaml"), "{conffiles}");
    // The man pages are roff with their title; the completion loads.
    for (page, title) in [("lbd", ".TH lbd 8"), ("lbadm", ".TH lbadm 8")] {
        let roff = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc /usr/share/man/man8/{page}.8.gz"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&roff.stdout);
        assert!(text.contains(title), "{page}: {text}");
    }
    let c = Command::new("bash")
        .args([
            "-c",
            "source /usr/share/bash-completion/completions/lbadm && complete -p lbadm",
        ])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let v = Command::new("/usr/sbin/lbd")
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{v:?}"
    );
    // The installed unit verifies as it is.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "/usr/lib/systemd/system/lbd.service"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("lbd.service")).collect();
    assert!(ours.is_empty(), "{err}");

    // The lab on the installed binaries: real servers set up by the
    // installed lbadm, the director run by the installed lbd.
    let installed = xtask::lab::Paths {
        bin_dir: "/usr/sbin".into(),
        root: xtask::root(),
    };
    let prefix = format!("lbe2e{}pkg", std::process::id() % 1000);
    let lab = xtask::lab::Lab::up(&prefix, 3, installed).expect("lab up");
    let lbd = Lbd::start(&lab, RR_CONFIG);
    let seen = tally(&lab, 6);
    assert_eq!(seen.len(), 3, "{seen:?}");
    let listing = lab.lbadm(&["-L", "-n"]).unwrap();
    assert!(listing.contains("192.0.2.100:80 rr"), "{listing}");
    drop(lbd);
    lab.unload_lbd();
    drop(lab);
    let out = dpkg(&["--purge", "lbd"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!std::path::Path::new("/usr/sbin/lbd").exists());
    assert!(!std::path::Path::new("/etc/lbd/lbd.yaml").exists());
}

pub const TESTS: &[Test] = tests![
    the_unit_file_verifies,
    lbd_tells_systemd_ready_alive_reloading_and_stopping,
    the_debian_package_installs_and_runs_the_lab
];
