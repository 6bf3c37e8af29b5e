//! Each check type against real local servers on loopback.

use std::{sync::Arc, time::Instant};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    sync::mpsc,
};

use super::*;

fn spec(kind: CheckKind) -> CheckSpec {
    let mut s = CheckSpec::new(kind);
    s.timeout = 0.5;
    s
}

/// A loopback TCP server: reads the request head (if `read_head`), waits
/// `delay`, writes `reply`, closes.
async fn server(reply: &'static [u8], delay: Duration, read_head: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                if read_head {
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if l.is_empty() {
                            break;
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = w.write_all(reply).await;
            });
        }
    });
    addr
}

const OK: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nhealthy!\n";
const UNAVAILABLE: &[u8] = b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy\n";

#[tokio::test]
async fn tcp_connect_and_send_expect() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    assert!(probe(&spec(CheckKind::Tcp), addr).await.ok);
    drop(l);
    let o = probe(&spec(CheckKind::Tcp), addr).await;
    assert_eq!((o.ok, o.reason.as_str()), (false, "connection refused"));

    let banner = server(b"220 mail.example ESMTP\r\n", Duration::ZERO, false).await;
    let mut s = spec(CheckKind::Tcp);
    s.send = Some("QUIT\\r\\n".into());
    s.expect = Some("220 ".into());
    assert!(probe(&s, banner).await.ok);
    s.expect = Some("554 ".into());
    let o = probe(&s, banner).await;
    assert!(!o.ok && o.reason.contains("reply lacks"), "{o:?}");
}

#[tokio::test]
async fn http_status_body_regex_digest_and_slow_servers() {
    let good = server(OK, Duration::ZERO, true).await;
    let mut s = spec(CheckKind::Http);
    assert!(probe(&s, good).await.ok);
    s.expect = Some("healthy".into());
    assert!(probe(&s, good).await.ok);
    s.expect = Some("sick".into());
    assert_eq!(probe(&s, good).await.reason, "HTTP body lacks \"sick\"");
    s.expect = None;
    s.regex = Some("(?m)^heal+thy!$".into());
    assert!(probe(&s, good).await.ok);
    s.regex = Some("^nope".into());
    assert!(!probe(&s, good).await.ok);
    s.regex = None;
    // md5("healthy!\n")
    s.digest = Some("ad5a1d0e47a8f6a8ec7c4b2b5d8b0c6e".into());
    let o = probe(&s, good).await;
    assert!(!o.ok && o.reason.starts_with("HTTP body digest "), "{o:?}");
    let real_digest = o.reason.trim_start_matches("HTTP body digest ").to_string();
    s.digest = Some(real_digest);
    assert!(probe(&s, good).await.ok);
    s.digest = None;

    let busy = server(UNAVAILABLE, Duration::ZERO, true).await;
    assert_eq!(probe(&s, busy).await.reason, "HTTP 503");
    s.status = [200, 599];
    assert!(probe(&s, busy).await.ok);
    // A server that accepts but answers late costs one timeout.
    let slow = server(OK, Duration::from_secs(5), true).await;
    let t0 = Instant::now();
    let o = probe(&s, slow).await;
    assert_eq!(o.reason, "timeout 0.5 s");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn https_with_sni_and_a_self_signed_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let chain = vec![cert.cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (sni_tx, mut sni_rx) = mpsc::channel::<Option<String>>(4);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            let sni_tx = sni_tx.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = sni_tx
                    .send(tls.get_ref().1.server_name().map(str::to_string))
                    .await;
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = tokio::io::BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l.is_empty() {
                        break;
                    }
                }
                let _ = w.write_all(OK).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let mut s = spec(CheckKind::Https);
    s.host = Some("www.example".into());
    s.expect = Some("healthy".into());
    let o = probe(&s, addr).await;
    assert!(o.ok, "{o:?}");
    assert_eq!(sni_rx.recv().await.unwrap().as_deref(), Some("www.example"));
    // Plain HTTP against a TLS port fails.
    let o = probe(&spec(CheckKind::Http), addr).await;
    assert!(!o.ok, "{o:?}");
}

async fn udp_server(reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            if let Some(r) = reply(&buf[..n]) {
                let _ = s.send_to(&r, from).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn udp_payload_and_reply() {
    let echo = udp_server(|q| Some([b"pong:".as_slice(), q].concat())).await;
    let mut s = spec(CheckKind::Udp);
    s.send = Some("ping\\n".into());
    s.expect = Some("pong:ping\\n".into());
    assert!(probe(&s, echo).await.ok);
    s.expect = Some("nope".into());
    assert!(!probe(&s, echo).await.ok);
    let silent = udp_server(|_| None).await;
    s.expect = None;
    assert_eq!(probe(&s, silent).await.reason, "timeout 0.5 s");
    // A closed port answers ICMP port unreachable.
    let closed = {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap()
    };
    assert_eq!(probe(&s, closed).await.reason, "port unreachable");
}

#[tokio::test]
async fn dns_query_and_rcode() {
    fn answer(q: &[u8], rcode: u8, ancount: u16) -> Option<Vec<u8>> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = (r[3] & 0xf0) | rcode;
        r[6..8].copy_from_slice(&ancount.to_be_bytes());
        Some(r)
    }
    let good = udp_server(|q| answer(q, 0, 1)).await;
    let nx = udp_server(|q| answer(q, 3, 0)).await;
    let empty = udp_server(|q| answer(q, 0, 0)).await;
    let mut s = spec(CheckKind::Dns);
    s.name = "www.example".into();
    s.qtype = "A".into();
    assert!(probe(&s, good).await.ok);
    assert_eq!(probe(&s, nx).await.reason, "DNS rcode 3");
    assert_eq!(probe(&s, empty).await.reason, "DNS: no answer");
    let q = dns_query(0x1234, "www.example.", 1).unwrap();
    assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
    assert_eq!(&q[12..], b"\x03www\x07example\x00\x00\x01\x00\x01");
}

#[tokio::test]
async fn icmp_echo_to_loopback() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "ICMP checks need root in CI"
        );
        return;
    }
    let o = probe(&spec(CheckKind::Icmp), "127.0.0.1:0".parse().unwrap()).await;
    assert!(o.ok, "{o:?}");
}

#[tokio::test]
async fn external_programs_exit_codes_and_timeout() {
    let mut s = spec(CheckKind::External);
    let target: SocketAddr = "127.0.0.1:80".parse().unwrap();
    s.command = vec![
        "sh".into(),
        "-c".into(),
        "test {address}:{port} = 127.0.0.1:80".into(),
    ];
    assert!(probe(&s, target).await.ok);
    s.command = vec!["sh".into(), "-c".into(), "exit 1".into()];
    assert_eq!(probe(&s, target).await.reason, "program exit 1");
    s.command = vec!["sh".into(), "-c".into(), "exit 7".into()];
    let o = probe(&s, target).await;
    assert!(o.ok && o.weight == Some(WeightChange::Absolute(5)), "{o:?}");
    s.command = vec!["sleep".into(), "10".into()];
    let t0 = Instant::now();
    let o = probe(&s, target).await;
    assert!(!o.ok && o.reason.contains("killed"), "{o:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    s.command = vec!["/nonexistent/check".into()];
    assert!(probe(&s, target).await.reason.starts_with("cannot run"));
}

/// What an external check starts dies with it at its timeout, and it sees
/// none of lbd's environment.
#[tokio::test]
async fn external_programs_run_alone_and_their_group_dies_at_the_timeout() {
    let mut s = spec(CheckKind::External);
    let target: SocketAddr = "127.0.0.1:80".parse().unwrap();
    // A marker no other process has: sleep's argument.
    let marker = format!("7{}.{}", std::process::id(), rand_suffix());
    s.command = vec![
        "sh".into(),
        "-c".into(),
        format!("sleep {marker} & sleep {marker}; true"),
    ];
    let o = probe(&s, target).await;
    assert!(!o.ok, "{o:?}");
    let alive = || {
        std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap()
    };
    let t0 = Instant::now();
    while alive() && t0.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(), "a process the check started outlived it");
    // SAFETY: a variable only this test reads.
    unsafe { std::env::set_var("LB_TEST_SECRET", "1") };
    s.command = vec![
        "sh".into(),
        "-c".into(),
        "test -z \"$LB_TEST_SECRET\" && test \"$LB_REAL_ADDRESS:$LB_REAL_PORT\" = 127.0.0.1:80 && command -v sh".into(),
    ];
    let o = probe(&s, target).await;
    assert!(o.ok, "{o:?}");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// An agent that answers and keeps the connection open is heard at once.
#[tokio::test]
async fn agent_reply_counts_from_its_first_line() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = c.write_all(b"60%\n").await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    let mut s = spec(CheckKind::Agent);
    s.port = Some(a.port());
    let o = probe(&s, a).await;
    assert_eq!(
        (o.ok, o.weight),
        (true, Some(WeightChange::Percent(60))),
        "{o:?}"
    );
}

#[tokio::test]
async fn agent_replies_adjust_the_weight() {
    for (reply, ok, weight) in [
        (&b"75%\n"[..], true, Some(WeightChange::Percent(75))),
        (b"drain\n", true, Some(WeightChange::Percent(0))),
        (b"up 50%\n", true, Some(WeightChange::Percent(50))),
        (b"ready\n", true, None),
        (b"down\n", false, None),
        (b"maint\n", false, None),
        (b"bogus\n", false, None),
    ] {
        let a = server(reply, Duration::ZERO, false).await;
        let mut s = spec(CheckKind::Agent);
        s.port = Some(a.port());
        let o = probe(&s, a).await;
        assert_eq!((o.ok, o.weight), (ok, weight), "{reply:?}: {o:?}");
    }
}

#[test]
fn escapes() {
    assert_eq!(unescape("a\\r\\n\\t\\\\\\x41\\0").unwrap(), b"a\r\n\t\\A\0");
    assert!(unescape("\\q").is_err());
    assert!(unescape("\\xZZ").is_err());
}

#[test]
fn rise_fall_and_weights() {
    let ok = Outcome::ok();
    let bad = Outcome::fail("x");
    let drain = Outcome {
        ok: true,
        weight: Some(WeightChange::Percent(0)),
        reason: "agent: drain".into(),
    };
    let mut h = Hysteresis::default();
    assert!(h.up);
    assert!(!h.observe(&bad, 2, 3));
    assert!(!h.observe(&bad, 2, 3));
    assert!(!h.observe(&ok, 2, 3), "a success resets the failure count");
    assert!(!h.observe(&bad, 2, 3));
    assert!(!h.observe(&bad, 2, 3));
    assert!(h.observe(&bad, 2, 3));
    assert!(!h.up);
    assert!(!h.observe(&bad, 2, 3), "reported once");
    assert!(!h.observe(&ok, 2, 3));
    assert!(h.observe(&ok, 2, 3));
    assert!(h.up);
    assert!(
        h.observe(&drain, 2, 3),
        "a weight change is reported at once"
    );
    assert_eq!(h.weight, Some(WeightChange::Percent(0)));
    assert!(!h.observe(&drain, 2, 3));
    assert!(h.observe(&ok, 2, 3));
    assert_eq!(h.weight, None);
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
    s.path = "/".into();
    s.regex = Some("(".into());
    assert!(s.validate().unwrap_err().contains("regex"));
    s.regex = None;
    s.digest = Some("xyz".into());
    assert!(s.validate().unwrap_err().contains("digest"));
    assert!(spec(CheckKind::External)
        .validate()
        .unwrap_err()
        .contains("command"));
    assert!(spec(CheckKind::Agent)
        .validate()
        .unwrap_err()
        .contains("port"));
    let mut d = spec(CheckKind::Dns);
    d.qtype = "AXFR".into();
    assert!(d.validate().unwrap_err().contains("AXFR"));
}
