//! Property tests over everything lbd and lbadm read from outside: the YAML
//! loader, the ipvsadm command line and `-R` rules, and the control
//! protocol. Each gets `LB_FUZZ_INPUTS` inputs (default 100,000 when
//! optimised, see [`inputs`]): valid
//! seeds mutated (lines deleted, duplicated, swapped, re-indented; words
//! replaced by hostile values; bytes inserted; text cut) and generated ones.
//! For each: no panic, no input taking more than a second, an accepted one
//! is consistent (a configuration builds its table and survives its own
//! export; a decoded request edits a table without panicking), and a
//! rejected one says where or what (file:line:column or the field; the
//! option or the word; the line of a rule file). No root needed, no name
//! resolution leaves the machine (`LB_NO_RESOLVER`).

#[path = "common/rng.rs"]
mod rng;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::{Duration, Instant},
};

use lb_userspace::{
    cli::{args::Cli, ipvsadm::restore_requests},
    config::{Config, ConfigError},
    control::{decode_request, edit_table, Envelope, Request},
    model::Table,
};
use rng::Rng;

/// 10^5 in an optimised build (`cargo xtask test` runs it so), a smoke
/// run of 2,000 in a debug one, or `LB_FUZZ_INPUTS`.
fn inputs() -> u64 {
    std::env::var("LB_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            2_000
        } else {
            100_000
        })
}

/// What a run found; failures are kept (the first 10) for the message.
#[derive(Default)]
struct Run {
    name: &'static str,
    inputs: u64,
    accepted: u64,
    slowest: Duration,
    total: Duration,
    failures: Vec<String>,
}

impl Run {
    fn new(name: &'static str) -> Run {
        // No DNS query for host names the fuzzer makes up. Set once, by
        // the first test to start, before any of them resolves a name.
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: no test resolves a name (reads the environment from libc)
        // before its own Run::new, which waits for this.
        ONCE.call_once(|| unsafe { std::env::set_var("LB_NO_RESOLVER", "1") });
        Run {
            name,
            ..Default::default()
        }
    }

    /// Runs `check` on `input`: a panic, a slow input or a returned
    /// problem is a failure.
    fn one(&mut self, input: &str, check: impl FnOnce(&str) -> Result<bool, String>) {
        self.inputs += 1;
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| check(input)));
        let took = t.elapsed();
        self.slowest = self.slowest.max(took);
        self.total += took;
        let problem = match r {
            Err(_) => Some("panicked".to_string()),
            Ok(Err(p)) => Some(p),
            Ok(Ok(accepted)) => {
                self.accepted += accepted as u64;
                // Generous for a loaded machine; the unoptimised build
                // runs libyaml's C-translated code slowly.
                let limit = Duration::from_secs(if cfg!(debug_assertions) { 10 } else { 1 });
                (took > limit).then(|| format!("took {took:?}"))
            }
        };
        if let Some(p) = problem {
            if self.failures.len() < 10 {
                let shown: String = input.chars().take(600).collect();
                self.failures
                    .push(format!("{p}\n--- input ---\n{shown}\n---"));
            }
        }
    }

    fn finish(self) {
        eprintln!(
            "{} fuzz: {} inputs in {:.1} s, {} accepted, slowest {:?}, {} failures",
            self.name,
            self.inputs,
            self.total.as_secs_f64(),
            self.accepted,
            self.slowest,
            self.failures.len()
        );
        if let Ok(dir) = std::env::var("LB_FUZZ_REPORT_DIR") {
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{}.json", self.name)),
                format!(
                    "{{\"inputs\": {}, \"accepted\": {}, \"slowest_ms\": {}, \"failures\": {}}}\n",
                    self.inputs,
                    self.accepted,
                    self.slowest.as_millis(),
                    self.failures.len()
                ),
            );
        }
        assert!(self.failures.is_empty(), "{}", self.failures.join("\n"));
    }
}

/// Values a hostile or careless hand puts where a word was.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "1e309",
    "-0.0",
    "NaN",
    ".inf",
    "\"\"",
    "''",
    "~",
    "null",
    "[]",
    "{}",
    "[[",
    "{a: [",
    "true",
    "yes",
    "192.0.2.300",
    "::",
    "2001:db8::1",
    "[2001:db8::1]:80",
    "0.0.0.0",
    "255.255.255.255",
    "tcp",
    "udp",
    "rr",
    "mh",
    "sh",
    "lblcr",
    "fwmark",
    "&a",
    "*a",
    "!!str",
    "!!binary",
    "|",
    ">",
    "- x",
    ": :",
    "\t",
    "\u{0}",
    "\u{feff}",
    "é",
    "%",
    "@",
    "`",
    "#",
    "'unterminated",
    "\"unterminated",
];

/// Words that are field names, to put where they do not belong.
const FIELDS: &[&str] = &[
    "services",
    "real_servers",
    "address",
    "port",
    "protocol",
    "scheduler",
    "weight",
    "persistent",
    "netmask",
    "flags",
    "health_check",
    "type",
    "interval",
    "timeout",
    "rise",
    "fall",
    "limits",
    "max_services",
    "max_reals",
    "max_conns",
    "port_groups",
    "members",
    "fwmark",
    "port_group",
    "vlans",
    "sloppy_tcp",
    "timeouts",
    "tcp",
    "udp",
    "tcpfin",
    "on_failure",
    "sorry_server",
    "quorum",
    "hysteresis",
    "upper_threshold",
    "lower_threshold",
    "interface",
    "xdp_mode",
    "command",
    "status",
    "one_packet",
    "expire_nodest_conn",
];

/// The word spans (alphanumerics, dots, colons, dashes) of `line`.
fn words(line: &str) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut start = None;
    for (i, c) in line
        .char_indices()
        .chain(std::iter::once((line.len(), ' ')))
    {
        let w = c.is_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '/');
        match (w, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                v.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    v
}

/// One to four text mutations of `seed`.
fn mutate_text(rng: &mut Rng, seed: &str, vocab: &[&[&str]]) -> String {
    let mut lines: Vec<String> = seed.lines().map(str::to_string).collect();
    for _ in 0..1 + rng.below(4) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.below(lines.len());
        match rng.below(9) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            3 => {
                if rng.percent(50) {
                    lines[i].insert_str(0, "  ");
                } else if lines[i].starts_with("  ") {
                    lines[i].drain(..2);
                }
            }
            4..=6 => {
                let w = words(&lines[i]);
                if !w.is_empty() {
                    let (a, b) = w[rng.below(w.len())];
                    let list = vocab[rng.below(vocab.len())];
                    let v = list[rng.below(list.len())];
                    lines[i].replace_range(a..b, v);
                }
            }
            7 => {
                let n = rng.below(8);
                let junk: String = (0..n).map(|_| (rng.below(95) as u8 + 32) as char).collect();
                let at = lines[i]
                    .char_indices()
                    .map(|(k, _)| k)
                    .nth(rng.below(lines[i].chars().count() + 1))
                    .unwrap_or(lines[i].len());
                lines[i].insert_str(at, &junk);
            }
            _ => {
                let keep = rng.below(lines.len() + 1);
                lines.truncate(keep);
            }
        }
    }
    let mut s = lines.join("\n");
    if rng.percent(5) {
        // A long value: the parsers must not care.
        s.push_str(&"x".repeat(rng.below(100_000)));
    }
    if rng.percent(2) {
        // Deep nesting, dressed to fool a scanner that guesses the grammar
        // (quotes inside plain scalars, keys ending in `|`, brackets in
        // strings): the parser must refuse it at once.
        let n = 1_000 + rng.below(100_000);
        let dress = ["", "a', ", "a\", ", "']]]', ", "\"]]\", ", "{k: "][rng.below(6)];
        let deep = format!("{}{}", format!("[{dress}").repeat(n), "]".repeat(n));
        let at = rng.below(3);
        s = match at {
            0 => format!("services: {deep}\n{s}"),
            1 => format!("{s}\nx:\n  k |:\n    y: {deep}\n"),
            _ => format!("x: [ \"\n {}\n{s}", " \", [[[[[[[[[[ \"\n".repeat(n / 10)),
        };
    }
    s
}

const CHECKED: &str = r#"
interface: eth0
xdp_mode: native
limits: {max_services: 8, max_reals: 32, max_conns: 4096}
timeouts: {tcp: 3600, tcpfin: 60, udp: 120}
sloppy_tcp: true
expire_nodest_conn: true
vlans: [42, 100]
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 443
    scheduler: sh
    flags: [sh-port, sh-fallback]
    persistent: 600
    netmask: 24
    health_check: {type: https, path: /health, status: [200, 204], expect: ok, sni: www.example, interval: 1, timeout: 0.5, rise: 2, fall: 3}
    on_failure: remove
    sorry_server: 192.0.2.50
    quorum: 2
    hysteresis: 1
    real_servers:
      - {address: 192.0.2.11, weight: 3, upper_threshold: 100, lower_threshold: 50}
      - address: 192.0.2.12
        health_check: {type: external, command: [/bin/true, "{address}"]}
  - protocol: udp
    address: "2001:db8::100"
    port: 53
    scheduler: lblcr
    one_packet: true
    health_check: {type: dns, name: example., qtype: A}
    real_servers: [{address: "2001:db8::11"}]
  - protocol: tcp
    address: 192.0.2.101
    port: 25
    scheduler: ovf
    health_check: {type: agent, port: 10000, retry: 2, retry_delay: 0.1}
    real_servers: [{address: 192.0.2.13}]
"#;

/// An accepted configuration builds its table and survives its own export;
/// a rejected one names where (line:column) or what (the field).
fn check_config(text: &str) -> Result<bool, String> {
    match Config::parse(text, "fuzz.yaml") {
        Ok(c) => {
            c.table("fuzz.yaml")
                .map_err(|e| format!("accepted, but no table: {e}"))?;
            let again = serde_yaml::to_string(&c).map_err(|e| format!("cannot export: {e}"))?;
            let back = Config::parse(&again, "export.yaml")
                .map_err(|e| format!("its export is refused: {e}\n{again}"))?;
            if back != c {
                return Err(format!("its export reads back differently:\n{again}"));
            }
            Ok(true)
        }
        Err(e) => {
            let ok = match &e {
                ConfigError::Syntax {
                    line, column, msg, ..
                } => {
                    // (the line after the last: the end of the text)
                    (1..=text.lines().count() + 1).contains(line) && *column >= 1 && !msg.is_empty()
                }
                ConfigError::Invalid { field, msg, .. } => !field.is_empty() && !msg.is_empty(),
                ConfigError::Read { .. } => false,
            };
            if ok {
                Ok(false)
            } else {
                Err(format!("rejection names neither place nor field: {e:?}"))
            }
        }
    }
}

#[test]
fn yaml_configurations() {
    let seeds = [include_str!("../../deploy/lbd.yaml"), CHECKED];
    for s in seeds {
        Config::parse(s, "seed.yaml").expect("seeds are valid");
    }
    let mut rng = Rng::new(0xc0f1);
    let mut run = Run::new("yaml");
    for _ in 0..inputs() {
        let seed = seeds[rng.below(seeds.len())];
        let text = mutate_text(&mut rng, seed, &[HOSTILE, FIELDS]);
        run.one(&text, check_config);
    }
    run.finish();
}

const OPTIONS: &[&str] = &[
    "-A",
    "-E",
    "-D",
    "-C",
    "-a",
    "-e",
    "-d",
    "-L",
    "-l",
    "-S",
    "-R",
    "-Z",
    "-n",
    "-c",
    "-t",
    "-u",
    "-f",
    "-6",
    "-s",
    "-p",
    "-M",
    "-o",
    "-b",
    "-r",
    "-g",
    "-i",
    "-m",
    "-w",
    "-x",
    "-y",
    "-X",
    "-v",
    "-Ln",
    "-Lnc",
    "-Sn",
    "-At",
    "--set",
    "--timeout",
    "--stats",
    "--rate",
    "--exact",
    "--thresholds",
    "--persistent-conn",
    "--daemon",
    "--nosort",
    "--sort",
    "--numeric",
    "--health",
    "--json",
    "--ops",
    "--tun-type",
    "--tun-port",
    "--tun-nocsum",
    "--tun-csum",
    "--tun-remcsum",
    "--tun-info",
    "--start-daemon",
    "--stop-daemon",
    "--socket",
    "--help",
    "-h",
    "--scheduler",
    "--weight",
    "--real-server",
    "--tcp-service",
];
const SUBCOMMANDS: &[&str] = &[
    "counters",
    "apply",
    "export",
    "group",
    "set",
    "del",
    "list",
    "realserver",
    "up",
    "down",
    "check",
    "--vip",
    "--dev",
    "--nic",
    "--dry-run",
    "completions",
    "bash",
    "man",
];
const VALUES: &[&str] = &[
    "192.0.2.100",
    "192.0.2.100:80",
    "192.0.2.100:0",
    "192.0.2.11",
    "[2001:db8::1]:443",
    "2001:db8::1",
    "[2001:db8::1",
    "0",
    "1",
    "3",
    "65535",
    "65536",
    "-1",
    "4294967296",
    "rr",
    "wrr",
    "mh",
    "sh",
    "lblc",
    "ovf",
    "bogus",
    "flag-1",
    "flag-2,flag-3",
    "sh-port",
    "mh-fallback,mh-port",
    ",",
    "255.255.255.0",
    "255.0.255.0",
    "24",
    "129",
    "ipip",
    "gue",
    "json",
    "ops",
    "ipvsadm",
    "#",
    "x",
    "192.0.2.100:http",
    "nosuchhost.invalid:80",
    "192.0.2.300:80",
    "a/b",
    "/tmp/lbfuzz.sock",
    "",
    "-",
    "--",
];

/// A parsed command line either acts or says what is wrong; never panics.
fn check_cli(line: &str) -> Result<bool, String> {
    let argv = std::iter::once("lbadm").chain(line.split(' ').filter(|w| !w.is_empty()));
    match Cli::parse_args(argv) {
        Err(e) => {
            let m = e.to_string();
            if m.trim().is_empty() {
                return Err("clap error without a message".into());
            }
            Ok(false)
        }
        Ok(cli) if cli.sub.is_some() => Ok(true),
        Ok(cli) => match cli.action() {
            Ok(_) => Ok(true),
            Err(m) if m.trim().is_empty() || m.contains("Error {") => {
                Err(format!("a rejection that says nothing: {m:?}"))
            }
            Err(_) => Ok(false),
        },
    }
}

#[test]
fn ipvsadm_command_lines() {
    let mut rng = Rng::new(0x1b5);
    let mut run = Run::new("ipvsadm");
    for _ in 0..inputs() {
        let n = 1 + rng.below(10);
        let mut argv = Vec::with_capacity(n);
        for _ in 0..n {
            let list = match rng.below(10) {
                0 => SUBCOMMANDS,
                1..=4 => OPTIONS,
                _ => VALUES,
            };
            argv.push(list[rng.below(list.len())]);
        }
        run.one(&argv.join(" "), check_cli);
    }
    run.finish();
}

const RULES: &str = "\
-A -t 192.0.2.100:80 -s wlc -p 360 -M 255.255.255.0
-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 1
-a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 3 -x 100 -y 50
ipvsadm -A -u 192.0.2.100:53 -s sh -b sh-fallback,sh-port
-a -u 192.0.2.100:53 -r 192.0.2.13:53 -g -w 2
-A -t [2001:db8::100]:80 -s mh -b flag-1,flag-2
-a -t [2001:db8::100]:80 -r [2001:db8::11]:80 -g -w 65535
-A -f 7 -s rr -p 300
-a -f 7 -r 192.0.2.11 -g -w 2
";

/// Rules either all parse and apply, or the first bad one is named by a
/// line that exists.
fn check_rules(text: &str) -> Result<bool, String> {
    let lines = text.lines().count();
    match restore_requests(text) {
        Ok(reqs) => {
            let mut t = Table::default();
            for (n, r) in reqs {
                if n == 0 || n > lines {
                    return Err(format!("request numbered {n} of {lines} lines"));
                }
                let _ = edit_table(&mut t, r);
            }
            Ok(true)
        }
        Err(e) => {
            let n: Option<usize> = e
                .strip_prefix("line ")
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok());
            match n {
                Some(n) if n >= 1 && n <= lines && e.len() > format!("line {n}: ").len() => {
                    Ok(false)
                }
                _ => Err(format!("rejection without its line: {e:?}")),
            }
        }
    }
}

#[test]
fn ipvsadm_rule_files() {
    let mut rng = Rng::new(0x2e5);
    let mut run = Run::new("rules");
    for _ in 0..inputs() {
        let text = mutate_text(&mut rng, RULES, &[OPTIONS, VALUES]);
        run.one(&text, check_rules);
    }
    run.finish();
}

/// Every request kind, as lbadm sends it.
fn request_seeds() -> Vec<String> {
    let mut t = Table::default();
    let mut reqs: Vec<Request> = restore_requests(RULES)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    for r in reqs.clone() {
        edit_table(&mut t, r).unwrap();
    }
    reqs.push(Request::Batch {
        requests: reqs.clone(),
        lines: vec![1, 2, 3],
    });
    reqs.extend([
        Request::List,
        Request::Counters,
        Request::GetTimeouts,
        Request::SetTimeouts {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
        },
        Request::Apply {
            yaml: CHECKED.into(),
            file: "x.yaml".into(),
            dry_run: true,
            by: Some("alice".into()),
            if_unchanged: Some("0123".into()),
        },
        Request::Export,
        Request::Version,
        Request::Clear,
    ]);
    reqs.into_iter()
        .map(|request| {
            serde_json::to_string(&Envelope {
                version: 1,
                request,
            })
            .unwrap()
        })
        .collect()
}

/// A decoded request edits a scratch copy of `base` without panicking; a
/// refused one says why.
fn check_request(base: &Table, line: &str) -> Result<bool, String> {
    match decode_request(line) {
        Ok(req) => {
            let _ = edit_table(&mut base.clone(), req);
            Ok(true)
        }
        Err(m) if m.trim().is_empty() => Err("refused without a reason".into()),
        Err(_) => Ok(false),
    }
}

/// Replaces one value somewhere in `v` by a hostile one.
fn replace_leaf(rng: &mut Rng, v: &mut serde_json::Value) {
    use serde_json::{json, Value};
    let hostile = [
        json!(null),
        json!(-1),
        json!(0),
        json!(65536),
        json!(4294967296u64),
        json!(u64::MAX),
        json!(1.5),
        json!("192.0.2.300"),
        json!("2001:db8::1"),
        json!(""),
        json!("rr"),
        json!("x".repeat(1000)),
        json!([]),
        json!({}),
        json!(true),
    ];
    match v {
        Value::Object(m) if !m.is_empty() => {
            let k = m.keys().nth(rng.below(m.len())).cloned().unwrap();
            if rng.percent(70) {
                replace_leaf(rng, m.get_mut(&k).unwrap());
            } else if rng.percent(50) {
                m.remove(&k);
            } else {
                m.insert(k, hostile[rng.below(hostile.len())].clone());
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            replace_leaf(rng, &mut a[i]);
        }
        other => *other = hostile[rng.below(hostile.len())].clone(),
    }
}

#[test]
fn control_requests() {
    let seeds = request_seeds();
    for s in &seeds {
        decode_request(s).unwrap_or_else(|e| panic!("seed {s}: {e}"));
    }
    let json_words: &[&str] = &[
        "null",
        "true",
        "0",
        "-1",
        "1e999",
        "\"\"",
        "[]",
        "{}",
        "\"version\"",
        "2",
        "\"op\"",
        "\"add_service\"",
        "\"tcp\"",
        "\"192.0.2.300\"",
        "4294967296",
        "[[[[",
        "\"\\u0000\"",
    ];
    let mut base = Table::default();
    for (_, r) in restore_requests(RULES).unwrap() {
        edit_table(&mut base, r).unwrap();
    }
    let mut rng = Rng::new(0xc71);
    let mut run = Run::new("control");
    for _ in 0..inputs() {
        let seed = &seeds[rng.below(seeds.len())];
        let line = if rng.percent(50) {
            // Structure kept, one value replaced: reaches the decoder's
            // and the table's checks rather than the JSON syntax's.
            let mut v: serde_json::Value = serde_json::from_str(seed).unwrap();
            replace_leaf(&mut rng, &mut v);
            v.to_string()
        } else if rng.percent(10) {
            // Nested deep, or plain bytes.
            if rng.percent(50) {
                let d = rng.below(100_000);
                format!("{}{}", "[".repeat(d), "]".repeat(d))
            } else {
                (0..rng.below(300))
                    .map(|_| (rng.below(95) as u8 + 32) as char)
                    .collect()
            }
        } else {
            let mut s = seed.clone();
            for _ in 0..1 + rng.below(3) {
                let w = words(&s);
                if w.is_empty() || rng.percent(20) {
                    let at = rng.below(s.len() + 1);
                    if s.is_char_boundary(at) {
                        s.insert_str(at, json_words[rng.below(json_words.len())]);
                    }
                } else {
                    let (a, b) = w[rng.below(w.len())];
                    s.replace_range(a..b, json_words[rng.below(json_words.len())]);
                }
            }
            s
        };
        run.one(&line, |l| check_request(&base, l));
    }
    run.finish();
}

/// Bytes mutated from `seed` (flips, overwrites, cuts, growth) or random.
fn mutate_bytes(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    if rng.percent(10) {
        return (0..rng.below(300)).map(|_| rng.next() as u8).collect();
    }
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            2 => m.truncate(rng.below(m.len() + 1)),
            _ => m.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
        }
    }
    m
}

/// VRRP adverts as lbd receives them: refused with a reason, or read.
#[test]
fn vrrp_adverts() {
    use lb_userspace::vrrp::packet::{decode, encode, Advert, GROUP_V4};
    let src: std::net::IpAddr = "192.0.2.2".parse().unwrap();
    let dst = std::net::IpAddr::V4(GROUP_V4);
    let seeds: Vec<Vec<u8>> = [2u8, 3]
        .iter()
        .map(|&v| {
            let a = Advert {
                version: v,
                vrid: 51,
                priority: 150,
                interval_cs: 100,
                addrs: vec![
                    "192.0.2.100".parse().unwrap(),
                    "192.0.2.101".parse().unwrap(),
                ],
            };
            encode(&a, src, dst)
        })
        .collect();
    let mut rng = Rng::new(0x7a7a);
    let mut run = Run::new("vrrp");
    for _ in 0..inputs() {
        let which = rng.below(2);
        let m = mutate_bytes(&mut rng, &seeds[which]);
        let v = if rng.percent(50) { 3 } else { 2 };
        run.one(&format!("{m:02x?}"), |_| {
            Ok(decode(&m, v, src, dst, 255, rng_bool(&m)).is_ok())
        });
    }
    run.finish();
}

fn rng_bool(m: &[u8]) -> bool {
    m.len().is_multiple_of(2)
}

/// Sync messages as a backup receives them: refused with a reason, or read
/// and bound (or not) to this director's slots.
#[test]
fn sync_messages() {
    use lb_userspace::sync::{
        proto::{decode, encode, flags, Record, MAXLEN},
        translate::{from_record, IdMap},
    };
    let r = Record {
        protocol: 6,
        flags: flags::DROUTE,
        state: 1,
        cport: 40000,
        vport: 80,
        dport: 80,
        fwmark: 0,
        timeout: 900,
        caddr: "203.0.113.10".parse().unwrap(),
        vaddr: "192.0.2.100".parse().unwrap(),
        daddr: "192.0.2.11".parse().unwrap(),
    };
    let seed = encode(1, &[r, r, r], MAXLEN).remove(0);
    let ids = IdMap::default();
    let mut rng = Rng::new(0x5c5c);
    let mut run = Run::new("sync");
    for _ in 0..inputs() {
        let mut m = mutate_bytes(&mut rng, &seed);
        if rng.percent(50) && m.len() >= 4 {
            let size = m.len() as u16;
            m[2..4].copy_from_slice(&size.to_be_bytes());
        }
        run.one(&format!("{m:02x?}"), |_| match decode(&m) {
            Ok(d) => {
                for r in &d.records {
                    let _ = from_record(&ids, r, 0);
                }
                Ok(true)
            }
            Err(e) if e.to_string().is_empty() => Err("refused without a reason".into()),
            Err(_) => Ok(false),
        });
    }
    run.finish();
}
