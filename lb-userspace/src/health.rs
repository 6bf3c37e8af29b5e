//! Health checks: real servers leave and rejoin by themselves.
//!
//! One tokio task per (virtual service, real server) probes at its interval
//! (after a random warm-up that spreads checks over the first interval) and
//! reports transitions only: down after `fall` consecutive failures, up after
//! `rise` consecutive successes. A probe never outlives its timeout, so a
//! hung real server costs one timeout, never a stuck task.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
    time::timeout,
};

use crate::model::ServiceAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET: status in range, optional body substring.
    Http,
}

/// What to do with a real server whose check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Weight 0: no new connections, established ones continue
    /// (keepalived inhibit_on_failure, ldirectord quiescent=yes).
    #[default]
    Quiesce,
    /// Taken out of the service (established connections still continue).
    Remove,
}

/// A check as configured (YAML `health_check:`), with keepalived-like defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Port to probe (default: the service's port).
    #[serde(default)]
    pub port: Option<u16>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval: f64,
    /// Seconds a probe may take (connect + request + reply).
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    /// Consecutive successes to go up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures to go down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// HTTP: request path.
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP: Host header (default: the real server's address).
    #[serde(default)]
    pub host: Option<String>,
    /// HTTP: accepted status range, inclusive.
    #[serde(default = "default_status")]
    pub status: [u16; 2],
    /// HTTP: a string the body must contain.
    #[serde(default)]
    pub expect: Option<String>,
}

fn default_interval() -> f64 {
    2.0
}
fn default_timeout() -> f64 {
    1.0
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}
fn default_path() -> String {
    "/".into()
}
fn default_status() -> [u16; 2] {
    [200, 299]
}

impl CheckSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.interval > 0.0 && self.interval <= 3600.0) {
            return Err(format!(
                "interval {} must be in (0, 3600] seconds",
                self.interval
            ));
        }
        if !(self.timeout > 0.0 && self.timeout <= 300.0) {
            return Err(format!(
                "timeout {} must be in (0, 300] seconds",
                self.timeout
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err("rise and fall must be at least 1".into());
        }
        if self.status[0] > self.status[1] {
            return Err(format!("status range {:?} is empty", self.status));
        }
        if !self.path.starts_with('/') || self.path.contains(['\r', '\n', ' ']) {
            return Err(format!(
                "path {:?} must start with / and contain no spaces",
                self.path
            ));
        }
        Ok(())
    }
}

fn secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// One probe. `Err` carries the reason, as logged ("connect timeout 1 s",
/// "HTTP 503", "connection refused").
pub async fn probe(spec: &CheckSpec, target: SocketAddr) -> Result<(), String> {
    let limit = Duration::from_secs_f64(spec.timeout);
    let work = async {
        let mut s = match timeout(limit, TcpStream::connect(target)).await {
            Err(_) => return Err(format!("connect timeout {}", secs(spec.timeout))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err("connection refused".into())
            }
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Ok(Ok(s)) => s,
        };
        if spec.kind == CheckKind::Tcp {
            return Ok(());
        }
        let host = spec.host.clone().unwrap_or_else(|| match target.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        });
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nConnection: close\r\n\r\n",
            spec.path
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("HTTP request: {e}"))?;
        let mut buf = Vec::new();
        (&mut s)
            .take(256 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("HTTP reply: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        let status: u16 = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "HTTP: no status line".to_string())?;
        if status < spec.status[0] || status > spec.status[1] {
            return Err(format!("HTTP {status}"));
        }
        if let Some(want) = &spec.expect {
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            if !body.contains(want.as_str()) {
                return Err(format!("HTTP body lacks {want:?}"));
            }
        }
        Ok(())
    };
    match timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout {}", secs(spec.timeout))),
    }
}

/// rise/fall hysteresis. Real servers start up (keepalived's default without
/// `alpha`), so a daemon (re)start never drops a healthy pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    pub up: bool,
    ok: u32,
    failed: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            up: true,
            ok: 0,
            failed: 0,
        }
    }
}

impl Hysteresis {
    /// Records one result; returns the new state when it changes.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.ok += 1;
            self.failed = 0;
            if !self.up && self.ok >= rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.failed += 1;
            self.ok = 0;
            if self.up && self.failed >= fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

/// A state change reported by a check task.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEvent {
    pub service: ServiceAddr,
    pub real: IpAddr,
    pub up: bool,
    pub reason: String,
}

/// Starts the check task for one real server of one service.
pub fn spawn(
    spec: CheckSpec,
    service: ServiceAddr,
    real: IpAddr,
    events: mpsc::Sender<HealthEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let port = spec.port.unwrap_or(service.port);
        let target = SocketAddr::new(real, port);
        let interval = Duration::from_secs_f64(spec.interval);
        // Warm-up: spread the first checks over one interval.
        let jitter = (std::process::id() as u64)
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(port as u64 * 7919 + u64::from(real.is_ipv4()))
            % 1000;
        tokio::time::sleep(interval.mul_f64(jitter as f64 / 1000.0)).await;
        let mut h = Hysteresis::default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let r = probe(&spec, target).await;
            let reason = match &r {
                Ok(()) => "check passed".to_string(),
                Err(e) => e.clone(),
            };
            if let Some(up) = h.observe(r.is_ok(), spec.rise, spec.fall) {
                let ev = HealthEvent {
                    service,
                    real,
                    up,
                    reason,
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncBufReadExt, net::TcpListener};

    use super::*;

    fn spec(kind: CheckKind) -> CheckSpec {
        serde_yaml::from_str(&format!(
            "type: {}\ntimeout: 0.5",
            match kind {
                CheckKind::Tcp => "tcp",
                CheckKind::Http => "http",
            }
        ))
        .unwrap()
    }

    /// A loopback HTTP server answering every request with `reply`, after `delay`.
    async fn http_server(reply: &'static str, delay: Duration) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if l.is_empty() {
                            break;
                        }
                    }
                    tokio::time::sleep(delay).await;
                    let _ = w.write_all(reply.as_bytes()).await;
                });
            }
        });
        addr
    }

    const OK: &str = "HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nhealthy!\n";
    const UNAVAILABLE: &str = "HTTP/1.0 503 Service Unavailable\r\n\r\nbusy\n";

    #[tokio::test]
    async fn tcp_up_and_down() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(probe(&spec(CheckKind::Tcp), addr).await, Ok(()));
        drop(l);
        assert_eq!(
            probe(&spec(CheckKind::Tcp), addr).await,
            Err("connection refused".into())
        );
    }

    #[tokio::test]
    async fn http_status_body_and_slow_servers() {
        let good = http_server(OK, Duration::ZERO).await;
        let mut s = spec(CheckKind::Http);
        assert_eq!(probe(&s, good).await, Ok(()));
        s.expect = Some("healthy".into());
        assert_eq!(probe(&s, good).await, Ok(()));
        s.expect = Some("sick".into());
        assert_eq!(
            probe(&s, good).await,
            Err("HTTP body lacks \"sick\"".into())
        );
        s.expect = None;
        let busy = http_server(UNAVAILABLE, Duration::ZERO).await;
        assert_eq!(probe(&s, busy).await, Err("HTTP 503".into()));
        s.status = [200, 599];
        assert_eq!(probe(&s, busy).await, Ok(()));
        // A server that accepts but answers late costs one timeout.
        let slow = http_server(OK, Duration::from_secs(5)).await;
        let t0 = std::time::Instant::now();
        assert_eq!(probe(&s, slow).await, Err("timeout 0.5 s".into()));
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn rise_and_fall() {
        let mut h = Hysteresis::default();
        assert!(h.up);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(
            h.observe(true, 2, 3),
            None,
            "a success resets the failure count"
        );
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), Some(false));
        assert_eq!(h.observe(false, 2, 3), None, "reported once");
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3), Some(true));
        assert_eq!(h.observe(true, 2, 3), None);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(CheckKind::Http);
        s.validate().unwrap();
        s.interval = 0.0;
        assert!(s.validate().unwrap_err().contains("interval"));
        s.interval = 1.0;
        s.status = [500, 200];
        assert!(s.validate().unwrap_err().contains("status"));
        s.status = [200, 299];
        s.path = "no-slash".into();
        assert!(s.validate().unwrap_err().contains("path"));
    }
}
