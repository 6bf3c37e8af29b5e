//! The pair's figures for `cargo xtask bench`: takeover time, established
//! flows lost in a failover, sync messages and bytes per 1,000 new
//! connections, and sync lag under a steady load.

use std::{
    process::{Child, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::{
    halab::HaLab,
    lab::{wait_for, Downloads, Paths, VIP},
};

const RR: &str = "services:\n  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr, real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}\n";

fn config(prio: u8) -> String {
    format!(
        "sync: {{syncid: 9}}\nvrrp:\n  - {{name: web, virtual_router_id: 61, priority: {prio}, advert_int: 10, garp_master_delay: 1, virtual_addresses: [{VIP}]}}\n{RR}"
    )
}

fn master_sent(h: &HaLab) -> (u64, u64, u64) {
    let text = h.lbadm(0, &["-L", "-n", "-o", "json"]).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or_default();
    let m = v["sync"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["role"] == "master")
        .cloned()
        .unwrap_or_default();
    let s = &m["stats"];
    (
        s["sent_messages"].as_u64().unwrap_or(0),
        s["sent_records"].as_u64().unwrap_or(0),
        s["sent_bytes"].as_u64().unwrap_or(0),
    )
}

fn kill(mut v: Vec<Child>) {
    for c in &mut v {
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub fn run(paths: Paths, quick: bool) -> Result<Value> {
    let prefix = format!("lbha{}", std::process::id() % 10000);
    let h = HaLab::up(&prefix, paths)?;
    let lbds = vec![h.start_lbd(0, &config(150))?, h.start_lbd(1, &config(100))?];
    let r = (|| -> Result<Value> {
        h.wait_ready(0)?;
        h.wait_ready(1)?;
        wait_for(Duration::from_secs(10), || {
            h.holds_vip(0) && !h.holds_vip(1)
        })?;
        // Sync messages per 1,000 new connections (each fetched and closed).
        let n = if quick { 200 } else { 1000 };
        let before = master_sent(&h);
        let urls: Vec<String> = (0..n).map(|_| format!("http://{VIP}/")).collect();
        h.lab
            .cmd(&h.lab.ns("client"), "curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-H",
                "Connection: close",
                "--max-time",
                "60",
            ])
            .args(&urls)
            .status()?;
        sleep(Duration::from_millis(300));
        let after = master_sent(&h);
        let per_k = |a: u64, b: u64| ((b - a) as f64 * 1000.0 / n as f64).round();
        // Sync lag under a steady load: a new connection's entry appears on
        // the backup after...
        let load: Vec<Child> = (0..4)
            .map(|_| {
                h.lab
                    .cmd(&h.lab.ns("client"), "sh")
                    .args(["-c", &format!("for i in $(seq 400); do curl -s -o /dev/null -H 'Connection: close' http://{VIP}/; done")])
                    .stdout(Stdio::null())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        let mut lags = Vec::new();
        for port in 41000..41000 + if quick { 3 } else { 10 } {
            let mut c = h
                .lab
                .cmd(&h.lab.ns("client"), "curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "--local-port",
                    &port.to_string(),
                    &format!("http://{VIP}/slow?s=3"),
                ])
                .spawn()?;
            // Established (the master lists it), then on the backup.
            let needle = format!("203.0.113.10:{port}");
            wait_for(Duration::from_secs(5), || {
                h.lbadm(0, &["-Lnc"])
                    .map(|s| s.contains(&needle))
                    .unwrap_or(false)
            })?;
            let t0 = Instant::now();
            wait_for(Duration::from_secs(5), || {
                h.lbadm(1, &["-Lnc"])
                    .map(|s| s.contains(&needle))
                    .unwrap_or(false)
            })?;
            lags.push(t0.elapsed().as_secs_f64() * 1000.0);
            let _ = c.kill();
            let _ = c.wait();
        }
        kill(load);
        lags.sort_by(|a, b| a.total_cmp(b));
        // Failover: downloads through the master, its NIC fails.
        let downloads = if quick { 20 } else { 100 };
        let d = Downloads::start(&h.lab, "dl", downloads, 4);
        sleep(Duration::from_millis(1500));
        let lan = h.lab.ns("lan");
        let t0 = Instant::now();
        h.lab.exec(&lan, &["ip", "link", "set", "p-dir", "down"])?;
        wait_for(Duration::from_secs(10), || {
            h.lab
                .exec(
                    &h.lab.ns("client"),
                    &[
                        "curl",
                        "-sf",
                        "--max-time",
                        "0.2",
                        &format!("http://{VIP}/"),
                    ],
                )
                .is_ok()
        })
        .context("no new connection after the failover")?;
        let takeover_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let lost = d.finish().0.len();
        Ok(json!({
            "setup": "two lbd directors (VRRPv3, adverts every 100 ms, sync daemon both roles) on the lab's LAN; the master's NIC goes down",
            "takeover_ms_to_a_new_connection": (takeover_ms * 10.0).round() / 10.0,
            "established_flows": downloads,
            "established_flows_lost": lost,
            "sync_per_1000_new_connections": {
                "messages": per_k(before.0, after.0),
                "records": per_k(before.1, after.1),
                "bytes": per_k(before.2, after.2),
            },
            "sync_lag_ms_under_steady_load": {
                "min": (lags[0] * 10.0).round() / 10.0,
                "median": (lags[lags.len() / 2] * 10.0).round() / 10.0,
                "max": (lags[lags.len() - 1] * 10.0).round() / 10.0,
                "note": "measured by polling lbadm -Lnc (about 5-10 ms per poll)",
            },
        }))
    })();
    kill(lbds);
    r
}
