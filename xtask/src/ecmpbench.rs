//! The ECMP figures for `cargo xtask bench`: new connections per second
//! through 1, 2 and 3 directors (the others drained with `lbadm bgp
//! drain`), and what a director failure costs: route convergence (BFD
//! 100 ms x 3) and long downloads lost (mh: goal 0).

use std::{process::Child, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::{
    ecmplab::EcmpLab,
    lab::{self, Downloads, Paths, VIP},
};

const MH: &str = "services:\n  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: mh, flags: [mh-port], real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}\n";

/// wrk from the client with a new connection per request; requests/s.
fn connections_per_s(e: &EcmpLab, seconds: u32) -> Result<f64> {
    let lab = &e.h.lab;
    let mut c = lab.cmd(&lab.ns("client"), "wrk");
    c.args(["-t2", "-c32", &format!("-d{seconds}s"), "--timeout", "2s"])
        .args(["-H", "Connection: close"])
        .arg(format!("http://{VIP}/"));
    let out = lab::run(&mut c)?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(f64::round)
        .with_context(|| format!("wrk output: {text}"))
}

pub fn run(paths: Paths, quick: bool) -> Result<Value> {
    let prefix = format!("lbec{}", std::process::id() % 10000);
    let e = EcmpLab::up(&prefix, paths, 3)?;
    let mut lbds: Vec<Child> = Vec::new();
    let r = (|| -> Result<Value> {
        for i in 0..3 {
            e.start_director_bird(i)?;
            lbds.push(e.h.start_lbd(i, &format!("{}{MH}", e.bgp_yaml(i)))?);
            e.h.wait_ready(i)?;
        }
        e.wait_next_hops(&[0, 1, 2], Duration::from_secs(20))?;
        let secs = if quick { 2 } else { 5 };
        let tmp = std::env::temp_dir().join(format!("{prefix}-bench"));
        let nginx = crate::labbench::nginx_servers(&e.h.lab, &tmp)?;
        let mut through = serde_json::Map::new();
        for k in 1..=3usize {
            for i in 0..3 {
                let verb = if i < k { "resume" } else { "drain" };
                e.h.lbadm(i, &["bgp", verb])?;
            }
            let which: Vec<usize> = (0..k).collect();
            e.wait_next_hops(&which, Duration::from_secs(5))?;
            through.insert(format!("{k}"), json!(connections_per_s(&e, secs)?));
        }
        // The python servers again, for the long downloads.
        // SIGTERM: the master stops its worker (SIGKILL would leave the
        // worker holding port 80, and the python server could not bind).
        for mut c in nginx {
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&tmp);
        for i in 1..=3 {
            e.h.lab.start_rs_http(i)?;
        }
        for i in 1..=3 {
            e.h.lab.wait_rs_http(i)?;
        }
        // A director's link fails under long downloads.
        let n = if quick { 30 } else { 100 };
        let d = Downloads::start(&e.h.lab, "ecb", n, 4);
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = std::time::Instant::now();
        e.h.lab
            .exec(&e.h.lab.ns("lan"), &["ip", "link", "set", "p-dir2", "down"])?;
        e.wait_next_hops(&[0, 2], Duration::from_secs(10))?;
        let converged = t0.elapsed();
        let lost = d.finish().0.len();
        Ok(json!({
            "setup": "3 directors (lbd + BIRD 2, BFD 100 ms x 3) behind a Linux router with BIRD (merge paths, L4 hash); nginx real servers (1 worker each) for connections/s, python ones for the downloads; 2 CPUs shared by everything: the client and servers bound the rate, not the directors",
            "new_connections_per_s_through_directors": through,
            "director_failure": {
                "scheduler": "mh (mh-port)",
                "downloads": n,
                "lost": lost,
                "route_convergence_s": (converged.as_secs_f64() * 1000.0).round() / 1000.0,
            },
        }))
    })();
    for mut c in lbds {
        let _ = c.kill();
        let _ = c.wait();
    }
    r
}
