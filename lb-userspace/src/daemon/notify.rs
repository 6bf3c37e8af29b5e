//! systemd's service notifications (sd_notify(3)), for `Type=notify`:
//! READY once the program is attached and the configuration applied,
//! RELOADING/READY around a SIGHUP's reload, STOPPING at exit, and the
//! watchdog's keep-alive from the daemon loop itself (a loop that hangs
//! stops it, and systemd restarts lbd; forwarding never stops, the program
//! is pinned). Without NOTIFY_SOCKET (not under systemd) nothing is sent.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!("systemd notification not sent: {e}");
    }
}

/// Started: the program is attached and the configuration applied.
pub fn ready(services: usize) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("serving {services} virtual services")),
    ]);
}

/// A SIGHUP's reload begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The reload is done (applied or refused: lbd serves either way).
pub fn reloaded(services: usize) {
    ready(services);
}

/// lbd is exiting (the program keeps forwarding).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often the loop must say it is alive (half of WatchdogSec), if
/// systemd watches it.
/// As sd_watchdog_enabled(3): WATCHDOG_USEC, and WATCHDOG_PID if set must
/// be this process (the crate's version also requires it to be set).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The loop is alive.
pub fn alive() {
    send(&[NotifyState::Watchdog]);
}
