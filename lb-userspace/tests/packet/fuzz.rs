//! Random and mutated frames through the real object under
//! BPF_PROG_TEST_RUN. Per frame: the verdict is XDP_PASS, XDP_DROP or
//! XDP_TX; a passed or dropped frame is untouched; a forwarded one differs
//! only in its MACs (a real server's as destination, the director's as
//! source). Per batch: the counters add up (every passed frame counted once
//! under a `pass_*` reason, every dropped one under a `drop_*` reason, every
//! forwarded one in a service's packets).
//!
//! `LB_FUZZ_FRAMES` sets how many (default 10^7, about 30 s), `LB_FUZZ_SEED`
//! the seed, `LB_FUZZ_REPORT` a file for the figures.

use std::time::Instant;

use crate::{common::*, fixture, rng::Rng, tests, Test};

/// Well-formed frames of every kind the program parses, to mutate.
fn templates() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let c = "203.0.113.10";
    for flags in [SYN, ACK, FIN | ACK, RST, SYN | ACK, 0, 0xff] {
        v.push(tcp(c, 40000, "192.0.2.100", 80, flags).frame());
    }
    v.push(udp(c, 40001, "192.0.2.100", 53).frame());
    v.push(tcp(c, 40002, "192.0.2.101", 8443, SYN).frame());
    v.push(tcp("2001:db8::10", 40003, "2001:db8::100", 443, SYN).frame());
    v.push(tcp(c, 40004, "192.0.2.102", 80, SYN).frame()); // unresolved
    v.push(tcp(c, 40005, "192.0.2.103", 80, SYN).frame()); // quiesced
    v.push(tcp(c, 40006, "198.51.100.1", 80, SYN).frame()); // not a VIP
    let mut p = tcp(c, 40007, "192.0.2.100", 80, SYN);
    p.vlan = Some(42);
    v.push(p.frame());
    p.vlan = Some(7);
    v.push(p.frame());
    let mut p = tcp(c, 40008, "192.0.2.100", 80, SYN);
    p.ip_options = 12;
    v.push(p.frame());
    let mut p = udp(c, 40009, "192.0.2.100", 53);
    p.frag = 0x2000; // first fragment (MF)
    p.payload = 64;
    v.push(p.frame());
    p.frag = 0x0008; // a later one (offset 64)
    v.push(p.frame());
    for chain in [
        vec![0u8, 43, 60],
        vec![44],
        vec![0, 44],
        vec![60, 60, 60, 60, 60],
    ] {
        let mut p = tcp("2001:db8::10", 40010, "2001:db8::100", 443, SYN);
        p.v6_chain = chain;
        p.v6_frag = (0, true, 7);
        v.push(p.frame());
    }
    for next in [50u8, 59] {
        let mut p = tcp("2001:db8::10", 40011, "2001:db8::100", 443, SYN);
        p.v6_next = Some(next);
        v.push(p.frame());
    }
    v.push(icmp_error(
        "198.51.100.1",
        "192.0.2.100",
        80,
        c,
        40000,
        3,
        4,
    ));
    v.push(icmp_error(
        "198.51.100.1",
        "192.0.2.100",
        80,
        c,
        40000,
        11,
        0,
    ));
    v.push(icmp_error(
        "2001:db8::1",
        "2001:db8::100",
        443,
        "2001:db8::10",
        40003,
        2,
        0,
    ));
    let mut echo = icmp_error("198.51.100.1", "192.0.2.100", 80, c, 40000, 8, 0);
    echo.truncate(14 + 20 + 8);
    v.push(echo);
    let mut p = tcp(c, 40012, "192.0.2.100", 80, SYN);
    p.dst_mac = [0xff; 6];
    v.push(p.frame());
    p.dst_mac = [0x02, 9, 9, 9, 9, 9];
    v.push(p.frame());
    // ARP, QinQ, an odd ethertype.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_SIDE_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    v.push(arp);
    let mut q = tcp(c, 40013, "192.0.2.100", 80, SYN).frame();
    q.splice(12..12, [0x88, 0xa8, 0, 42, 0x81, 0x00, 0, 42]);
    v.push(q);
    v
}

/// Offsets of the length and header-size fields of a template, to hit.
const HOT: [usize; 12] = [12, 13, 14, 15, 16, 17, 18, 19, 23, 46, 47, 54];

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(f.len());
                f[i] = rng.byte();
            }
            2 => {
                let n = 14 + rng.below(f.len().saturating_sub(13));
                f.truncate(n);
            }
            3 => {
                for _ in 0..rng.below(64) {
                    f.push(rng.byte());
                }
            }
            4 => {
                let i = HOT[rng.below(HOT.len())];
                if i + 1 < f.len() {
                    let v: u16 = match rng.below(5) {
                        0 => 0,
                        1 => 0xffff,
                        2 => f.len() as u16,
                        3 => (f.len() as u16).wrapping_sub(14 + rng.below(3) as u16),
                        _ => rng.next() as u16,
                    };
                    f[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            5 => {
                // IPv4 IHL / TCP data offset nibble.
                for i in [14usize, 18, 46] {
                    if i < f.len() && rng.percent(50) {
                        f[i] = (f[i] & 0xf0) | rng.below(16) as u8;
                    }
                }
            }
            6 => {
                let i = 14 + rng.below(f.len().saturating_sub(14).max(1));
                let n = rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                f.splice(i.min(f.len())..i.min(f.len()), junk);
            }
            7 => {
                // A VLAN tag or two in front of whatever follows.
                let tag = [0x81, 0x00, 0, rng.byte() & 0x0f];
                f.splice(12..12, tag);
            }
            _ => {
                // The next-protocol bytes: IPv4 protocol, IPv6 next header.
                for i in [23usize, 20] {
                    if i < f.len() && rng.percent(50) {
                        f[i] = [0u8, 1, 6, 17, 43, 44, 50, 58, 59, 60, 255][rng.below(11)];
                    }
                }
            }
        }
    }
    f.truncate(1514);
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

/// What one run found.
#[derive(Debug, Default)]
pub struct Report {
    pub frames: u64,
    pub tx: u64,
    pub pass: u64,
    pub drop: u64,
    pub failures: Vec<String>,
    pub seconds: f64,
    /// Every counter the run moved, by name.
    pub counters: Vec<(String, u64)>,
}

/// The counters that name the verdict of a frame, summed by kind.
fn tallies(t: &TestDirector) -> (u64, u64, u64) {
    let c = t.d.counters();
    let sum = |p: &str| {
        c.iter()
            .filter(|(n, _)| n.starts_with(p))
            .map(|(_, v)| v)
            .sum::<u64>()
    };
    let tx = c.iter().find(|(n, _)| n == "tx").map_or(0, |(_, v)| *v);
    (sum("pass_"), sum("drop_"), tx)
}

pub fn run(frames: u64, seed: u64) -> Report {
    let mut t = fixture::director();
    // Known flows for the ICMP errors and fragments to refer to.
    open(&mut t, "192.0.2.100", 40000, 80);
    let rs_macs: Vec<[u8; 6]> = [11u8, 12, 13, 0x61].iter().map(|n| rs_mac(*n)).collect();
    let bases = templates();
    let mut rng = Rng::new(seed);
    let mut r = Report::default();
    let t0 = Instant::now();
    let mut at = tallies(&t);
    let before = t.d.counters();
    let mut seen = (0u64, 0u64, 0u64);
    const BATCH: u64 = 2_000;
    for i in 0..frames {
        let frame = match rng.below(10) {
            0 => {
                let n = 14 + rng.below(200);
                (0..n).map(|_| rng.byte()).collect()
            }
            1 => bases[rng.below(bases.len())].clone(),
            _ => {
                let b = rng.below(bases.len());
                mutate(&mut rng, &bases[b])
            }
        };
        let (verdict, out) = t.run(&frame);
        let bad = match verdict {
            XDP_TX => {
                seen.2 += 1;
                if out.len() != frame.len() || out[12..] != frame[12..] {
                    Some("forwarded with bytes changed beyond the MACs")
                } else if out[6..12] != DIRECTOR_MAC {
                    Some("forwarded without the director's source MAC")
                } else if !rs_macs.iter().any(|m| out[0..6] == *m) {
                    Some("forwarded to a MAC that is no real server's")
                } else {
                    None
                }
            }
            XDP_PASS | XDP_DROP => {
                if verdict == XDP_PASS {
                    seen.0 += 1;
                } else {
                    seen.1 += 1;
                }
                (out != frame).then_some("passed or dropped frame was modified")
            }
            _ => Some("verdict outside PASS/DROP/TX"),
        };
        if let Some(why) = bad {
            if r.failures.len() < 20 {
                r.failures.push(format!(
                    "frame {i} (verdict {verdict}): {why}: {frame:02x?}"
                ));
            }
        }
        if (i + 1) % BATCH == 0 || i + 1 == frames {
            let now = tallies(&t);
            let counted = (now.0 - at.0, now.1 - at.1, now.2 - at.2);
            if counted != seen && r.failures.len() < 20 {
                r.failures.push(format!(
                    "frames {}..={i}: verdicts (pass, drop, tx) {seen:?} but counters {counted:?}",
                    i + 1 - (i % BATCH + 1)
                ));
            }
            r.pass += seen.0;
            r.drop += seen.1;
            r.tx += seen.2;
            seen = (0, 0, 0);
            at = now;
        }
        r.frames += 1;
    }
    r.seconds = t0.elapsed().as_secs_f64();
    r.counters =
        t.d.counters()
            .into_iter()
            .zip(before)
            .map(|((n, v), (_, b))| (n, v - b))
            .filter(|(_, v)| *v > 0)
            .collect();
    r
}

fn random_and_mutated_frames_keep_every_invariant() {
    let frames = std::env::var("LB_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let seed = std::env::var("LB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1b0a);
    let r = run(frames, seed);
    eprintln!(
        "packet fuzz: {} frames (seed {seed:#x}) in {:.1} s: {} forwarded, {} passed, {} dropped, {} failures",
        r.frames,
        r.seconds,
        r.tx,
        r.pass,
        r.drop,
        r.failures.len()
    );
    eprintln!("packet fuzz counters: {:?}", r.counters);
    if let Ok(p) = std::env::var("LB_FUZZ_REPORT") {
        let json = format!(
            "{{\"frames\": {}, \"seed\": {seed}, \"seconds\": {:.1}, \"forwarded\": {}, \"passed\": {}, \"dropped\": {}, \"failures\": {}}}\n",
            r.frames,
            r.seconds,
            r.tx,
            r.pass,
            r.drop,
            r.failures.len()
        );
        std::fs::write(p, json).unwrap();
    }
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
    // The mix reaches every verdict, and the odd paths.
    assert!(r.tx > 0 && r.pass > 0 && r.drop > 0, "{r:?}");
    for c in [
        "icmp_forwarded",
        "frag_forwarded",
        "pass_ipv6_ext",
        "pass_vlan",
        "pass_other_mac",
        "drop_malformed",
    ] {
        assert!(
            r.counters.iter().any(|(n, _)| n == c),
            "{c} never reached: {:?}",
            r.counters
        );
    }
}

pub const TESTS: &[Test] = tests![random_and_mutated_frames_keep_every_invariant];
