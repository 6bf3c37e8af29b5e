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
    std::fs::write(
        &path,
        unit.replace("/usr/local/sbin/lbd", lbd.to_str().unwrap()),
    )
    .unwrap();
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

pub const TESTS: &[Test] = tests![
    the_unit_file_verifies,
    lbd_tells_systemd_ready_alive_reloading_and_stopping
];
