//! Health checks: real servers leave and rejoin by themselves.
//!
//! One tokio task per (virtual service, real server) probes at its interval
//! (after a warm-up that spreads the first checks over one interval) and
//! reports changes only: down after `fall` consecutive failures, up after
//! `rise` consecutive successes, and weight changes asked for by external
//! programs (exit 2..255) or agents (HAProxy agent-check: `75%`, `drain`, ...).
//! Every probe is bounded by its timeout (an external program is killed), so
//! a hung real server costs one timeout, never a stuck task.
//!
//! Check types: tcp (connect, optional send/expect), http and https (GET,
//! status range, body substring, regex and MD5 digest, Host header, SNI),
//! udp (payload, expected reply), dns (query, answer with NOERROR), icmp
//! (echo), external (a program), agent (HAProxy agent-check protocol).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpSocket, TcpStream, UdpSocket},
    sync::mpsc,
    task::JoinHandle,
    time::timeout,
};

use crate::model::ServiceAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    Udp,
    Dns,
    Icmp,
    External,
    Agent,
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

/// Per-service health policy (YAML keys beside `health_check:`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServicePolicy {
    pub on_failure: OnFailure,
    /// Used only while the quorum is lost (by default: no real server up).
    pub sorry_server: Option<IpAddr>,
    /// Minimum total weight of healthy real servers (default 1).
    pub quorum: u32,
    /// The quorum is lost below quorum - hysteresis and regained at
    /// quorum + hysteresis.
    pub hysteresis: u32,
}

/// A check as configured (YAML `health_check:`), with keepalived-like defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Port to probe (default: the service's port; required for agent).
    #[serde(default)]
    pub port: Option<u16>,
    /// Address to probe instead of the real server's.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Source address to bind the probe to.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval: f64,
    /// Seconds a probe may take (connect + request + reply, or the program).
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    /// Consecutive successes to go up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures to go down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Immediate retries of a failed probe before it counts as a failure.
    #[serde(default)]
    pub retry: u32,
    /// Seconds between those retries.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: f64,
    /// http/https: request path.
    #[serde(default = "default_path")]
    pub path: String,
    /// http/https: Host header (default: the probed address).
    #[serde(default)]
    pub host: Option<String>,
    /// https: server name sent in the TLS SNI (default: `host` if it is a name).
    #[serde(default)]
    pub sni: Option<String>,
    /// http/https: accepted status range, inclusive.
    #[serde(default = "default_status")]
    pub status: [u16; 2],
    /// http/https: a regular expression the body must match.
    #[serde(default)]
    pub regex: Option<String>,
    /// http/https: MD5 of the body, hex (keepalived's `digest`).
    #[serde(default)]
    pub digest: Option<String>,
    /// tcp/udp: bytes to send (escapes \r \n \t \\ \xHH).
    #[serde(default)]
    pub send: Option<String>,
    /// tcp/udp/http/https/agent: a string the reply must contain (escapes as `send`).
    #[serde(default)]
    pub expect: Option<String>,
    /// dns: the name to query.
    #[serde(default = "default_dns_name")]
    pub name: String,
    /// dns: query type (A, AAAA, NS, SOA, MX, TXT).
    #[serde(default = "default_dns_type")]
    pub qtype: String,
    /// external: program and arguments; `{address}` and `{port}` are replaced.
    #[serde(default)]
    pub command: Vec<String>,
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
fn default_retry_delay() -> f64 {
    0.2
}
fn default_path() -> String {
    "/".into()
}
fn default_status() -> [u16; 2] {
    [200, 299]
}
fn default_dns_name() -> String {
    ".".into()
}
fn default_dns_type() -> String {
    "SOA".into()
}

impl CheckSpec {
    /// A check of `kind` with every default.
    pub fn new(kind: CheckKind) -> CheckSpec {
        let mut s: CheckSpec = serde_yaml::from_str(&format!(
            "type: {}",
            serde_yaml::to_string(&kind).unwrap_or_default().trim()
        ))
        .expect("defaults");
        s.kind = kind;
        s
    }

    /// Whether the check probes a port (icmp and external ones do not).
    pub fn needs_port(&self) -> bool {
        !matches!(self.kind, CheckKind::Icmp | CheckKind::External)
    }

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
        if !(0.0..=60.0).contains(&self.retry_delay) {
            return Err(format!(
                "retry_delay {} must be in [0, 60] seconds",
                self.retry_delay
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err("rise and fall must be at least 1".into());
        }
        if self.retry > 10 {
            return Err(format!("retry {} must be at most 10", self.retry));
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
        if let Some(r) = &self.regex {
            regex::Regex::new(r).map_err(|e| format!("regex: {e}"))?;
        }
        if let Some(d) = &self.digest {
            if d.len() != 32 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("digest {d:?} must be 32 hex digits (MD5)"));
            }
        }
        for s in [&self.send, &self.expect].into_iter().flatten() {
            unescape(s)?;
        }
        match self.kind {
            CheckKind::External if self.command.is_empty() => {
                return Err("an external check needs `command`".into())
            }
            CheckKind::Agent if self.port.is_none() => {
                return Err("an agent check needs `port` (the agent's)".into())
            }
            CheckKind::Dns => {
                qtype_code(&self.qtype)?;
                dns_query(0, &self.name, 1)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Decodes \r \n \t \\ \0 and \xHH (Piranha nanny's and keepalived's escapes).
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut it = s.bytes().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let h: Vec<u8> = (0..2).filter_map(|_| it.next()).collect();
                let v = std::str::from_utf8(&h)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape in {s:?}"))?;
                out.push(v);
            }
            other => {
                return Err(format!(
                    "unknown escape \\{} in {s:?}",
                    other.map(|c| c as char).unwrap_or(' ')
                ))
            }
        }
    }
    Ok(out)
}

fn secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// A weight asked for by an external program or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightChange {
    /// Absolute weight (external program exit code - 2).
    Absolute(u32),
    /// Percentage of the configured weight (agent `75%`; `drain` = 0%).
    Percent(u32),
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// Weight asked for (None: the configured one).
    pub weight: Option<WeightChange>,
    /// Why: "connect timeout 1 s", "HTTP 503", "agent: drain"...
    pub reason: String,
}

impl Outcome {
    fn ok() -> Outcome {
        Outcome {
            ok: true,
            weight: None,
            reason: "check passed".into(),
        }
    }
    fn fail(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            weight: None,
            reason: reason.into(),
        }
    }
}

async fn connect(spec: &CheckSpec, target: SocketAddr) -> Result<TcpStream, String> {
    let sock = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(src) = spec.source {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    match timeout(Duration::from_secs_f64(spec.timeout), sock.connect(target)).await {
        Err(_) => Err(format!("connect timeout {}", secs(spec.timeout))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("connection refused".into())
        }
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Ok(Ok(s)) => Ok(s),
    }
}

async fn read_some<S: AsyncRead + Unpin>(s: &mut S, limit: u64) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    s.take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| format!("reading the reply: {e}"))?;
    Ok(buf)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    spec: &CheckSpec,
    mut s: S,
    host: &str,
) -> Outcome {
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nConnection: close\r\n\r\n",
        spec.path
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Outcome::fail(format!("HTTP request: {e}"));
    }
    let buf = match read_some(&mut s, 1 << 20).await {
        Ok(b) => b,
        // A TLS server closing without close_notify still sent its reply.
        Err(e) if e.contains("close_notify") || e.contains("UnexpectedEof") => Vec::new(),
        Err(e) => return Outcome::fail(e),
    };
    let text = String::from_utf8_lossy(&buf);
    let Some(status) = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
    else {
        return Outcome::fail("HTTP: no status line");
    };
    if status < spec.status[0] || status > spec.status[1] {
        return Outcome::fail(format!("HTTP {status}"));
    }
    let body_start = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(buf.len());
    let body = &buf[body_start..];
    if let Some(want) = &spec.expect {
        if !contains(body, &unescape(want).unwrap_or_default()) {
            return Outcome::fail(format!("HTTP body lacks {want:?}"));
        }
    }
    if let Some(r) = &spec.regex {
        let re = regex::bytes::Regex::new(r).expect("validated");
        if !re.is_match(body) {
            return Outcome::fail(format!("HTTP body does not match /{r}/"));
        }
    }
    if let Some(d) = &spec.digest {
        use md5::{Digest, Md5};
        let got: String = Md5::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !got.eq_ignore_ascii_case(d) {
            return Outcome::fail(format!("HTTP body digest {got}"));
        }
    }
    Outcome::ok()
}

/// Health checks do not verify certificates (real servers commonly use
/// self-signed ones, and keepalived's SSL_GET does not either): the check is
/// about the service answering, not about who it is.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn qtype_code(t: &str) -> Result<u16, String> {
    Ok(match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        other => return Err(format!("unsupported DNS query type {other}")),
    })
}

/// A DNS query packet (RFC 1035), recursion desired.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return Err(format!("DNS label too long in {name}"));
        }
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    Ok(p)
}

async fn udp_exchange(
    spec: &CheckSpec,
    target: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let bind = SocketAddr::new(
        spec.source.unwrap_or(if target.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        }),
        0,
    );
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    sock.connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    sock.send(payload).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 4096];
    match sock.recv(&mut buf).await {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        // ICMP port unreachable comes back as ECONNREFUSED on a connected socket.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("port unreachable".into())
        }
        Err(e) => Err(format!("receive: {e}")),
    }
}

fn icmp_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP echo over a raw socket (the daemon runs as root).
fn icmp_echo(target: IpAddr, limit: Duration, source: Option<IpAddr>) -> Result<(), String> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (domain, proto, ty) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8),
    };
    let sock =
        Socket::new(domain, Type::RAW, Some(proto)).map_err(|e| format!("ICMP socket: {e}"))?;
    if let Some(src) = source {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    let ident = (std::process::id() & 0xffff) as u16;
    let seq: u16 = rand_u16();
    let mut pkt = vec![ty, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"lbd-health-check");
    if target.is_ipv4() {
        let c = icmp_checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    sock.send_to(&pkt, &SockAddr::from(SocketAddr::new(target, 0)))
        .map_err(|e| format!("ICMP send: {e}"))?;
    let deadline = std::time::Instant::now() + limit;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("no echo reply in {}", secs(limit.as_secs_f64())));
        }
        sock.set_read_timeout(Some(left)).ok();
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no echo reply in {}", secs(limit.as_secs_f64())))
            }
            Err(e) => return Err(format!("ICMP receive: {e}")),
        };
        // SAFETY: recv_from initialised the first n bytes.
        let data: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        if from.as_socket().map(|s| s.ip()) != Some(target) {
            continue;
        }
        // IPv4 raw sockets deliver the IP header too.
        let icmp = if target.is_ipv4() {
            let ihl = (data.first().copied().unwrap_or(0x45) & 0x0f) as usize * 4;
            data.get(ihl..).unwrap_or(&[])
        } else {
            &data[..]
        };
        let reply = if target.is_ipv4() { 0 } else { 129 };
        if icmp.len() >= 8
            && icmp[0] == reply
            && icmp[4..6] == ident.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(());
        }
    }
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16)) as u16
}

/// Parses one HAProxy agent-check reply line.
pub fn parse_agent(line: &str) -> Outcome {
    let mut out = Outcome::ok();
    out.reason = format!("agent: {}", line.trim());
    let mut saw = false;
    for word in line
        .split([' ', ',', '\t'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        let w = word.to_ascii_lowercase();
        if let Some(p) = w.strip_suffix('%') {
            if let Ok(p) = p.parse::<u32>() {
                out.weight = Some(WeightChange::Percent(p.min(256)));
                saw = true;
            }
        } else {
            match w.as_str() {
                "up" | "ready" => {
                    out.ok = true;
                    saw = true;
                }
                "drain" => {
                    out.weight = Some(WeightChange::Percent(0));
                    saw = true;
                }
                "down" | "maint" | "fail" | "stopped" => {
                    out.ok = false;
                    saw = true;
                }
                _ => {}
            }
        }
    }
    if !saw {
        return Outcome::fail(format!("agent: unintelligible reply {:?}", line.trim()));
    }
    out
}

/// One probe of `spec` against `target`.
pub async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let limit = Duration::from_secs_f64(spec.timeout);
    let work = async {
        match spec.kind {
            CheckKind::Tcp => {
                let mut s = match connect(spec, target).await {
                    Ok(s) => s,
                    Err(e) => return Outcome::fail(e),
                };
                if let Some(send) = &spec.send {
                    if let Err(e) = s.write_all(&unescape(send).unwrap_or_default()).await {
                        return Outcome::fail(format!("send: {e}"));
                    }
                }
                if let Some(expect) = &spec.expect {
                    let want = unescape(expect).unwrap_or_default();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !contains(&got, &want) {
                        match s.read(&mut buf).await {
                            Ok(0) => return Outcome::fail(format!("reply lacks {expect:?}")),
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) => return Outcome::fail(format!("receive: {e}")),
                        }
                        if got.len() > 1 << 16 {
                            return Outcome::fail(format!("reply lacks {expect:?}"));
                        }
                    }
                }
                Outcome::ok()
            }
            CheckKind::Http | CheckKind::Https => {
                let s = match connect(spec, target).await {
                    Ok(s) => s,
                    Err(e) => return Outcome::fail(e),
                };
                let host = spec.host.clone().unwrap_or_else(|| match target.ip() {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                });
                if spec.kind == CheckKind::Http {
                    return http_exchange(spec, s, &host).await;
                }
                let sni = spec
                    .sni
                    .clone()
                    .or_else(|| spec.host.clone().filter(|h| h.parse::<IpAddr>().is_err()));
                let name = match sni {
                    Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                        .map_err(|e| format!("SNI {n:?}: {e}")),
                    None => Ok(rustls::pki_types::ServerName::IpAddress(target.ip().into())),
                };
                let name = match name {
                    Ok(n) => n,
                    Err(e) => return Outcome::fail(e),
                };
                match tls_connector().connect(name, s).await {
                    Ok(tls) => http_exchange(spec, tls, &host).await,
                    Err(e) => Outcome::fail(format!("TLS handshake: {e}")),
                }
            }
            CheckKind::Udp => {
                let payload = unescape(spec.send.as_deref().unwrap_or("")).unwrap_or_default();
                match udp_exchange(spec, target, &payload).await {
                    Ok(reply) => match &spec.expect {
                        Some(e) if !contains(&reply, &unescape(e).unwrap_or_default()) => {
                            Outcome::fail(format!("UDP reply lacks {e:?}"))
                        }
                        _ => Outcome::ok(),
                    },
                    Err(e) => Outcome::fail(e),
                }
            }
            CheckKind::Dns => {
                let id = rand_u16();
                let q = dns_query(id, &spec.name, qtype_code(&spec.qtype).unwrap_or(6))
                    .unwrap_or_default();
                match udp_exchange(spec, target, &q).await {
                    Ok(r) if r.len() < 12 => Outcome::fail("DNS: short reply"),
                    Ok(r) if r[0..2] != id.to_be_bytes() => Outcome::fail("DNS: reply id mismatch"),
                    Ok(r) if r[2] & 0x80 == 0 => Outcome::fail("DNS: not a response"),
                    Ok(r) if r[3] & 0x0f != 0 => {
                        Outcome::fail(format!("DNS rcode {}", r[3] & 0x0f))
                    }
                    Ok(r) if u16::from_be_bytes([r[6], r[7]]) == 0 => {
                        Outcome::fail("DNS: no answer")
                    }
                    Ok(_) => Outcome::ok(),
                    Err(e) => Outcome::fail(format!("DNS: {e}")),
                }
            }
            CheckKind::Icmp => {
                let (ip, src) = (target.ip(), spec.source);
                match tokio::task::spawn_blocking(move || icmp_echo(ip, limit, src)).await {
                    Ok(Ok(())) => Outcome::ok(),
                    Ok(Err(e)) => Outcome::fail(e),
                    Err(e) => Outcome::fail(format!("ICMP task: {e}")),
                }
            }
            CheckKind::External => {
                let args: Vec<String> = spec
                    .command
                    .iter()
                    .map(|a| {
                        a.replace("{address}", &target.ip().to_string())
                            .replace("{port}", &target.port().to_string())
                    })
                    .collect();
                let mut cmd = tokio::process::Command::new(&args[0]);
                cmd.args(&args[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true);
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => return Outcome::fail(format!("cannot run {}: {e}", args[0])),
                };
                match timeout(limit, child.wait()).await {
                    Err(_) => {
                        let _ = child.kill().await;
                        Outcome::fail(format!("program killed after {}", secs(spec.timeout)))
                    }
                    Ok(Err(e)) => Outcome::fail(format!("program: {e}")),
                    Ok(Ok(st)) => match st.code() {
                        Some(0) => Outcome::ok(),
                        Some(1) => Outcome::fail("program exit 1"),
                        Some(c) => Outcome {
                            ok: true,
                            weight: Some(WeightChange::Absolute(c as u32 - 2)),
                            reason: format!("program exit {c}: weight {}", c - 2),
                        },
                        None => Outcome::fail("program killed by a signal"),
                    },
                }
            }
            CheckKind::Agent => {
                let mut s = match connect(spec, target).await {
                    Ok(s) => s,
                    Err(e) => return Outcome::fail(format!("agent: {e}")),
                };
                if let Some(send) = &spec.send {
                    let _ = s.write_all(&unescape(send).unwrap_or_default()).await;
                }
                match read_some(&mut s, 1024).await {
                    Ok(b) => {
                        let text = String::from_utf8_lossy(&b);
                        parse_agent(text.lines().next().unwrap_or(""))
                    }
                    Err(e) => Outcome::fail(format!("agent: {e}")),
                }
            }
        }
    };
    // External programs get exactly their timeout (they are killed); the
    // others are bounded here as a whole.
    match timeout(limit + Duration::from_millis(50), work).await {
        Ok(r) => r,
        Err(_) => Outcome::fail(format!("timeout {}", secs(spec.timeout))),
    }
}

/// The state a check reports: up/down with rise/fall hysteresis, and the
/// weight asked for. Real servers start up (keepalived's default without
/// `alpha`), so a daemon (re)start never drops a healthy pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    pub up: bool,
    pub weight: Option<WeightChange>,
    ok: u32,
    failed: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            up: true,
            weight: None,
            ok: 0,
            failed: 0,
        }
    }
}

impl Hysteresis {
    /// Records one result; returns true when the reported state (up/down
    /// or weight) changes.
    pub fn observe(&mut self, o: &Outcome, rise: u32, fall: u32) -> bool {
        let mut changed = false;
        if o.ok {
            self.ok += 1;
            self.failed = 0;
            if !self.up && self.ok >= rise {
                self.up = true;
                changed = true;
            }
            if self.up && self.weight != o.weight {
                self.weight = o.weight;
                changed = true;
            }
        } else {
            self.failed += 1;
            self.ok = 0;
            if self.up && self.failed >= fall {
                self.up = false;
                changed = true;
            }
        }
        changed
    }
}

/// A state change reported by a check task.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEvent {
    pub service: ServiceAddr,
    pub real: IpAddr,
    pub up: bool,
    pub weight: Option<WeightChange>,
    pub reason: String,
}

/// Starts the check task for one real server of one service. `phase` in
/// [0, 1) spreads the first checks of many tasks over one interval.
pub fn spawn(
    spec: CheckSpec,
    service: ServiceAddr,
    real: IpAddr,
    phase: f64,
    events: mpsc::Sender<HealthEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let port = spec.port.unwrap_or(service.port);
        let target = SocketAddr::new(spec.address.unwrap_or(real), port);
        let interval = Duration::from_secs_f64(spec.interval);
        tokio::time::sleep(interval.mul_f64(phase.clamp(0.0, 1.0))).await;
        let mut h = Hysteresis::default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut o = probe(&spec, target).await;
            for _ in 0..spec.retry {
                if o.ok {
                    break;
                }
                tokio::time::sleep(Duration::from_secs_f64(spec.retry_delay)).await;
                o = probe(&spec, target).await;
            }
            if h.observe(&o, spec.rise, spec.fall) {
                let ev = HealthEvent {
                    service,
                    real,
                    up: h.up,
                    weight: h.weight,
                    reason: o.reason.clone(),
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
