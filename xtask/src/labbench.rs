//! The benchmark's part that needs the namespace lab: a real client (wrk,
//! iperf3) through the XDP director against HAProxy in TCP mode balancing
//! the same nginx real servers, and lbd's resident memory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::lab::{self, wait_for, Lab, Paths};

fn nginx_conf(dir: &Path, name: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {err} warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  \
             fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n  \
             keepalive_requests 100000;\n  \
             server {{ listen 80 reuseport; location / {{ return 200 \"{name}\\n\"; }} }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("error.log").display(),
            tmp = dir.display(),
        ),
    )?;
    Ok(conf)
}

fn haproxy_conf(dir: &Path, n_rs: usize) -> Result<PathBuf> {
    let conf = dir.join("haproxy.cfg");
    let mut s = String::from(
        "global\n  maxconn 4000\n  nbthread 2\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
         frontend web\n  bind 192.0.2.100:80\n  default_backend web\n\
         backend web\n  balance roundrobin\n",
    );
    for i in 1..=n_rs {
        s.push_str(&format!("  server rs{i} {}:80\n", lab::rs_ip(i)));
    }
    s.push_str("frontend perf\n  bind 192.0.2.100:5201\n  default_backend perf\nbackend perf\n  balance source\n");
    for i in 1..=n_rs {
        s.push_str(&format!("  server rs{i} {}:5201\n", lab::rs_ip(i)));
    }
    fs::write(&conf, s)?;
    Ok(conf)
}

const LB_CONFIG: &str = r#"
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: rr
    real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]
  - protocol: tcp
    address: 192.0.2.100
    port: 5201
    scheduler: mh
    real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]
"#;

/// wrk from the client; requests per second.
fn wrk(lab: &Lab, seconds: u32, close: bool) -> Result<f64> {
    let mut c = lab.cmd(&lab.ns("client"), "wrk");
    c.args(["-t2", "-c32", &format!("-d{seconds}s"), "--timeout", "2s"]);
    if close {
        c.args(["-H", "Connection: close"]);
    }
    c.arg(format!("http://{}/", lab::VIP));
    let out = lab::run(&mut c)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    if let Some(l) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        eprintln!("labbench: wrk: {l}");
    }
    Ok(rps.round())
}

/// iperf3 from the client to the VIP; Gbit/s received.
fn iperf(lab: &Lab, seconds: u32, reverse: bool) -> Result<f64> {
    let mut c = lab.cmd(&lab.ns("client"), "iperf3");
    c.args(["-c", lab::VIP, "-t", &seconds.to_string(), "-J"]);
    if reverse {
        c.arg("-R");
    }
    let out = lab::run(&mut c)?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    Ok((bps / 1e7).round() / 100.0)
}

/// The client measurements, identical for every balancer.
fn client_runs(lab: &Lab, seconds: u32) -> Result<Value> {
    let mut v = http_runs(lab, seconds)?;
    v["iperf3_upload_gbit_s"] = json!(iperf(lab, seconds, false)?);
    v["iperf3_download_gbit_s"] = json!(iperf(lab, seconds, true)?);
    Ok(v)
}

/// The HTTP measurements: requests per second over kept-alive connections
/// and new connections per second.
fn http_runs(lab: &Lab, seconds: u32) -> Result<Value> {
    Ok(json!({
        "http_requests_per_s_keepalive": wrk(lab, seconds, false)?,
        "http_connections_per_s": wrk(lab, seconds, true)?,
    }))
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A 1,000 x 100 configuration (real servers in the lab's LAN; all but the
/// three lab real servers stay unresolved).
fn big_config(services: u32, reals: u32) -> String {
    let mut s = String::from(
        "limits: {max_services: 1024, max_reals: 131072, max_conns: 65536}\nservices:\n",
    );
    for i in 0..services {
        s.push_str(&format!(
            "  - protocol: tcp\n    address: 198.51.100.{}\n    port: {}\n    scheduler: {}\n    real_servers:\n",
            1 + i / 4,
            80 + i % 4,
            ["rr", "wrr", "mh"][i as usize % 3]
        ));
        for j in 0..reals.min(100) {
            // The three lab real servers, then addresses nobody holds.
            let host = if j < 3 { 11 + j } else { 17 + j };
            s.push_str(&format!(
                "      - {{address: 192.0.2.{host}, weight: {}}}\n",
                1 + j % 5
            ));
        }
    }
    s
}

/// nginx (one worker) on real servers 1..=3 in place of the python
/// servers, answering its name; started and answering.
pub fn nginx_servers(lab: &Lab, tmp: &Path) -> Result<Vec<Child>> {
    let mut nginx: Vec<Child> = Vec::new();
    for i in 1..=3 {
        lab.stop_rs_http(i);
        let conf = nginx_conf(&tmp.join(format!("rs{i}")), &format!("rs{i}"))?;
        nginx.push(
            lab.cmd(&lab.rs_ns(i), "nginx")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    for i in 1..=3 {
        lab.wait_rs_http(i).context("nginx did not start")?;
    }
    Ok(nginx)
}

pub fn run(paths: Paths, quick: bool) -> Result<Value> {
    let seconds = if quick { 2 } else { 5 };
    let prefix = format!("lbbench{}", std::process::id() % 10000);
    let lbd_bin = paths.lbd();
    let lab = Lab::up(&prefix, 3, paths)?;
    let tmp = std::env::temp_dir().join(format!("{prefix}-bench"));
    // nginx real servers instead of the python ones.
    let nginx = nginx_servers(&lab, &tmp)?;
    let mut iperfs: Vec<Child> = Vec::new();
    for i in 1..=3 {
        iperfs.push(
            lab.cmd(&lab.rs_ns(i), "iperf3")
                .args(["-s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }

    // 1. The XDP director.
    let cfg = tmp.join("lbd.yaml");
    fs::write(&cfg, LB_CONFIG)?;
    let mut lbd = lab.start_lbd(&cfg, &["--xdp-mode", "native"])?;
    lab.wait_lbd_ready(Duration::from_secs(20))?;
    let rss_small = rss_kib(lbd.id());
    let xdp = client_runs(&lab, seconds);
    let _ = lbd.kill();
    let _ = lbd.wait();
    let xdp = xdp?;
    // lbd's resident memory idle-ish (2 services) and with 1,000 x 100.
    let big = tmp.join("big.yaml");
    let (n_svc, n_rs) = if quick { (100, 100) } else { (1000, 100) };
    fs::write(&big, big_config(n_svc, n_rs))?;
    lab.unload_lbd();
    let mut lbd = lab.start_lbd(&big, &["--xdp-mode", "native"])?;
    let listed = wait_for(Duration::from_secs(60), || {
        lab.lbadm(&["-L", "-n"])
            .map(|s| s.lines().filter(|l| l.starts_with("TCP")).count() == n_svc as usize)
            .unwrap_or(false)
    });
    sleep(Duration::from_secs(2));
    let rss_big = rss_kib(lbd.id());
    let _ = lbd.kill();
    let _ = lbd.wait();
    listed.context("lbd did not list the big configuration")?;
    lab.unload_lbd();

    // 1b. The floor: the tools object's stateless forwarder on the same
    // NIC (TCP to VIP:80 spread over the same real servers by source port:
    // no connection table, no scheduler, no health). The most XDP
    // forwarding can give here. HTTP only: iperf3's control and data
    // connections would go to different servers.
    let macs: Vec<String> = (1..=3)
        .map(|i| lab.mac_of(&lab.rs_ns(i), "eth1"))
        .collect::<Result<_>>()?;
    let spec = format!("{}:80={}", lab::VIP, macs.join(","));
    let st = lab
        .cmd(&lab.ns("dir"), &lbd_bin)
        .args(["--interface", "eth1", "--instance", &lab.instance()])
        .args(["--floor-program", &spec])
        .status()?;
    if !st.success() {
        bail!("attaching the floor program: {st}");
    }
    wait_for(Duration::from_secs(10), || lab.curl_vip("/", 1).is_ok())
        .context("no answer through the floor program")?;
    let floor = http_runs(&lab, seconds);
    lab.unload_lbd();
    let floor = floor?;

    // 2. HAProxy (TCP mode) on the director, same real servers.
    let hcfg = haproxy_conf(&tmp, 3)?;
    let mut haproxy = lab
        .cmd(&lab.ns("dir"), "haproxy")
        .args(["-db", "-f"])
        .arg(&hcfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("haproxy")?;
    wait_for(Duration::from_secs(10), || lab.curl_vip("/", 1).is_ok())
        .context("haproxy did not answer")?;
    let hap = client_runs(&lab, seconds);
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let hap = hap?;
    for mut c in nginx.into_iter().chain(iperfs) {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(lab);
    let _ = fs::remove_dir_all(&tmp);
    let ratio_to = |other: &Value, k: &str| {
        let (a, b) = (
            xdp[k].as_f64().unwrap_or(0.0),
            other[k].as_f64().unwrap_or(0.0),
        );
        if b > 0.0 {
            json!(((a / b) * 100.0).round() / 100.0)
        } else {
            Value::Null
        }
    };
    let ratio = |k: &str| ratio_to(&hap, k);
    if xdp["http_requests_per_s_keepalive"].as_f64().unwrap_or(0.0) <= 0.0 {
        bail!("no traffic measured through the director");
    }
    Ok(json!({
        "setup": "lab namespaces: wrk/iperf3 client -> Linux router -> LAN bridge -> director; nginx real servers (1 worker each); 2 CPUs shared by everything",
        "xdp_mode": "native (veth)",
        "seconds_per_run": seconds,
        "xdp_director": xdp,
        "haproxy_tcp_mode": hap,
        "ratio_xdp_to_haproxy": {
            "http_requests_per_s_keepalive": ratio("http_requests_per_s_keepalive"),
            "http_connections_per_s": ratio("http_connections_per_s"),
            "iperf3_upload_gbit_s": ratio("iperf3_upload_gbit_s"),
            "iperf3_download_gbit_s": ratio("iperf3_download_gbit_s"),
        },
        "xdp_floor_lb": floor,
        "ratio_xdp_to_floor": {
            "http_requests_per_s_keepalive": ratio_to(&floor, "http_requests_per_s_keepalive"),
            "http_connections_per_s": ratio_to(&floor, "http_connections_per_s"),
        },
        "lbd_rss_kib": {
            "two_services": rss_small,
            format!("{n_svc}x{n_rs}"): rss_big,
        },
    }))
}
