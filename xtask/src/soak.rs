//! `cargo xtask soak`: the fault and fuzz figures. New connections lost
//! across lbd restarts under load, established flows lost across 100
//! applies, and the fuzzers' inputs and failures (the packet fuzz through
//! the real object, the input fuzz over configs, ipvsadm lines, rules and
//! control requests). The tests assert the same properties on smaller
//! runs; this measures them at size and writes bench/results/soak-<date>.json.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::lab::{self, Lab, Paths};

const CONFIG: &str = r#"
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: rr
    real_servers:
      - {address: 192.0.2.11}
      - {address: 192.0.2.12}
      - {address: 192.0.2.13}
"#;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn counters(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    crate::lab::parse_counters(&lab.lbadm(&["counters"]).unwrap_or_default())
}

fn delta(
    a: &std::collections::BTreeMap<String, u64>,
    b: &std::collections::BTreeMap<String, u64>,
    k: &str,
) -> u64 {
    b.get(k).copied().unwrap_or(0) - a.get(k).copied().unwrap_or(0)
}

fn start_lbd(lab: &Lab, cfg: &Path) -> Result<Child> {
    let c = lab.start_lbd(cfg, &["--xdp-mode", "native"])?;
    lab.wait_lbd_ready(Duration::from_secs(20))?;
    Ok(c)
}

fn stop(mut c: Child) {
    let _ = Command::new("kill").arg(c.id().to_string()).status();
    let _ = c.wait();
}

/// SYNs at 2,000/s (hping3, every one a new connection) while lbd is
/// restarted `restarts` times: how many the director did not forward.
fn restarts(paths: &Paths, restarts: u32) -> Result<Value> {
    let lab = Lab::up("lbsoak1", 3, paths.clone())?;
    let cfg = std::env::temp_dir().join("lbsoak1.yaml");
    std::fs::write(&cfg, CONFIG)?;
    let mut lbd = start_lbd(&lab, &cfg)?;
    let before = counters(&lab);
    let sent = 2_000 * (2 + restarts as u64); // about 1 s per restart, plus margins
    let mut load = lab
        .cmd(&lab.ns("client"), "hping3")
        .args(["-q", "-S", "-p", "80", "-i", "u500", "-c"])
        .arg(sent.to_string())
        .arg(lab::VIP)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("hping3")?;
    sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    for _ in 0..restarts {
        stop(lbd);
        lbd = start_lbd(&lab, &cfg)?;
    }
    let restart_s = t0.elapsed().as_secs_f64() / restarts.max(1) as f64;
    let _ = load.wait();
    sleep(Duration::from_millis(300));
    let after = counters(&lab);
    stop(lbd);
    // Every SYN is a new connection (hping3 moves its source port on);
    // `tx` would also count the client's RSTs to the real servers' SYN-ACKs.
    let forwarded = delta(&before, &after, "conn_new") + delta(&before, &after, "conn_reuse");
    Ok(json!({
        "restarts": restarts,
        "seconds_per_restart": (restart_s * 100.0).round() / 100.0,
        "syns_sent": sent,
        "syns_scheduled": forwarded,
        "syns_lost": sent.saturating_sub(forwarded),
        "drop_no_real": delta(&before, &after, "drop_no_real"),
        "drop_unresolved": delta(&before, &after, "drop_unresolved"),
    }))
}

/// Six downloads running while `applies` configurations are applied in
/// turn (weights, scheduler, a real server leaving and coming back): how
/// many of them broke or came back short.
fn applies(paths: &Paths, applies: u32) -> Result<Value> {
    let lab = Lab::up("lbsoak2", 3, paths.clone())?;
    let cfg = std::env::temp_dir().join("lbsoak2.yaml");
    std::fs::write(&cfg, CONFIG)?;
    let lbd = start_lbd(&lab, &cfg)?;
    let variants = [
        CONFIG.to_string(),
        CONFIG
            .replace("scheduler: rr", "scheduler: wrr")
            .replace("{address: 192.0.2.11}", "{address: 192.0.2.11, weight: 3}"),
        CONFIG.replace("scheduler: rr", "scheduler: mh"),
        CONFIG.replace("      - {address: 192.0.2.13}\n", ""),
        CONFIG.replace("{address: 192.0.2.12}", "{address: 192.0.2.12, weight: 0}"),
    ];
    let secs = 8;
    let expect = secs * 10 * 1024 + "rsN done\n".len();
    let outs: Vec<_> = (0..6)
        .map(|i| std::env::temp_dir().join(format!("lbsoak2-{i}.out")))
        .collect();
    let mut curls: Vec<Child> = outs
        .iter()
        .map(|o| {
            lab.cmd(&lab.ns("client"), "curl")
                .args(["-s", "--max-time", "30", "-o"])
                .arg(o)
                .arg(format!("http://{}/slow?s={secs}", lab::VIP))
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    sleep(Duration::from_millis(500));
    let apply_file = std::env::temp_dir().join("lbsoak2-apply.yaml");
    let t0 = Instant::now();
    let mut failed_applies = 0;
    for i in 0..applies {
        std::fs::write(&apply_file, &variants[i as usize % variants.len()])?;
        if lab
            .lbadm(&["apply", "-f", apply_file.to_str().context("path")?])
            .is_err()
        {
            failed_applies += 1;
        }
    }
    let apply_ms = t0.elapsed().as_secs_f64() * 1000.0 / applies.max(1) as f64;
    let mut lost = 0;
    for (c, o) in curls.iter_mut().zip(&outs) {
        let ok = c.wait().map(|s| s.success()).unwrap_or(false);
        let len = std::fs::metadata(o).map(|m| m.len() as usize).unwrap_or(0);
        if !ok || len != expect {
            lost += 1;
        }
        let _ = std::fs::remove_file(o);
    }
    stop(lbd);
    Ok(json!({
        "applies": applies,
        "failed_applies": failed_applies,
        "ms_per_apply": (apply_ms * 10.0).round() / 10.0,
        "established_flows": outs.len(),
        "established_flows_lost": lost,
    }))
}

/// The packet fuzz (the real object under BPF_PROG_TEST_RUN) at `frames`.
fn packet_fuzz(frames: u64) -> Result<Value> {
    let report = std::env::temp_dir().join(format!("lbsoak-fuzz-{}.json", std::process::id()));
    let ok = cargo()
        .current_dir(crate::root())
        .args([
            "test",
            "-p",
            "lb-userspace",
            "--test",
            "packet",
            "--",
            "fuzz",
        ])
        .env("LB_FUZZ_FRAMES", frames.to_string())
        .env("LB_FUZZ_REPORT", &report)
        .status()?
        .success();
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_default())
        .unwrap_or(json!({}));
    v["ok"] = json!(ok);
    let _ = std::fs::remove_file(report);
    Ok(v)
}

/// The input fuzz (optimised build) at `inputs` per target.
fn input_fuzz(inputs: u64) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("lbsoak-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ok = cargo()
        .current_dir(crate::root())
        .args([
            "test",
            "--release",
            "-p",
            "lb-userspace",
            "--test",
            "input_fuzz",
        ])
        .env("LB_FUZZ_INPUTS", inputs.to_string())
        .env("LB_FUZZ_REPORT_DIR", &dir)
        .status()?
        .success();
    let mut v = json!({ "ok": ok });
    for name in ["yaml", "ipvsadm", "rules", "control", "vrrp", "sync"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap_or_default();
        v[name] = serde_json::from_str(&text).unwrap_or(json!(null));
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(v)
}

pub fn run(paths: Paths, quick: bool) -> Result<Value> {
    lab::cleanup_prefix("lbsoak1");
    lab::cleanup_prefix("lbsoak2");
    let (frames, inputs, n_restarts, n_applies) = if quick {
        (1_000_000, 20_000, 3, 20)
    } else {
        (10_000_000, 100_000, 10, 100)
    };
    eprintln!("soak: {n_restarts} restarts under 2,000 SYN/s");
    let r = restarts(&paths, n_restarts)?;
    eprintln!("soak: {n_applies} applies under six established downloads");
    let a = applies(&paths, n_applies)?;
    eprintln!("soak: packet fuzz, {frames} frames");
    let p = packet_fuzz(frames)?;
    eprintln!("soak: input fuzz, {inputs} inputs per target");
    let i = input_fuzz(inputs)?;
    let v = json!({
        "date": chrono_date(),
        "restarts_under_load": r,
        "applies_under_established_flows": a,
        "packet_fuzz": p,
        "input_fuzz": i,
    });
    if p["ok"] != json!(true) || i["ok"] != json!(true) {
        bail!("a fuzzer found failures: {v:#}");
    }
    Ok(v)
}

/// Today's date (UTC) as YYYY-MM-DD, from `date`.
pub fn chrono_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// docs/soak.md from a run's figures.
pub fn doc(v: &Value, json: &str) -> String {
    let r = &v["restarts_under_load"];
    let a = &v["applies_under_established_flows"];
    let p = &v["packet_fuzz"];
    let i = &v["input_fuzz"];
    let inputs: u64 = ["yaml", "ipvsadm", "rules", "control", "vrrp", "sync"]
        .iter()
        .map(|k| i[k]["inputs"].as_u64().unwrap_or(0))
        .sum();
    let failures: u64 = ["yaml", "ipvsadm", "rules", "control", "vrrp", "sync"]
        .iter()
        .map(|k| i[k]["failures"].as_u64().unwrap_or(0))
        .sum();
    format!(
        "# Fault and fuzz figures\n\n\
         Written by `cargo xtask soak` on {date} (2 shared CPUs; the lab's \
         namespaces, native XDP on veth). The tests assert the same properties on \
         smaller runs; this measures them at size.\n\n\
         | what | figure |\n|------|--------|\n\
         | SYNs lost across {restarts} restarts of lbd under 2,000 new connections/s | {lost} of {sent} ({drops} dropped for want of a real server) |\n\
         | time from SIGTERM to the next lbd serving | {spr} s per restart |\n\
         | established downloads broken or short across {applies} `lbadm apply` (rr, wrr, mh, a server leaving, quiesced) | {flost} of {flows} |\n\
         | time per apply (round trip through lbadm) | {msa} ms |\n\
         | fuzzed frames through the real object (BPF_PROG_TEST_RUN), failures | {frames} in {fsec} s, {ffail} |\n\
         | fuzzed inputs (YAML, ipvsadm lines, rule files, control requests, VRRP adverts, sync messages), failures | {inputs}, {failures} |\n\n\
         ```json\n{json}\n```\n",
        date = v["date"].as_str().unwrap_or(""),
        restarts = r["restarts"],
        lost = r["syns_lost"],
        sent = r["syns_sent"],
        drops = r["drop_no_real"].as_u64().unwrap_or(0) + r["drop_unresolved"].as_u64().unwrap_or(0),
        spr = r["seconds_per_restart"],
        applies = a["applies"],
        flost = a["established_flows_lost"],
        flows = a["established_flows"],
        msa = a["ms_per_apply"],
        frames = p["frames"],
        fsec = p["seconds"],
        ffail = p["failures"],
    )
}
