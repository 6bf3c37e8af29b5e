//! What the end-to-end tests share: a lab per test, lbd in it, captures,
//! request tallies.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use xtask::{
    lab::{wait_for, Lab},
    paths,
};

pub static N: AtomicU32 = AtomicU32::new(0);

pub fn lab() -> Lab {
    let prefix = format!(
        "lbe2e{}{}",
        std::process::id() % 1000,
        N.fetch_add(1, Ordering::SeqCst)
    );
    Lab::up(&prefix, 3, paths()).expect("lab up")
}

/// `n` HTTP requests from the client to the VIP: answers per real server
/// (each request must succeed).
pub fn tally(lab: &Lab, n: u32) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let body = lab.curl_vip("/", 5).expect("request through the director");
        *m.entry(body.trim().to_string()).or_default() += 1;
    }
    m
}

/// lbd running with `config` (YAML text), killed on drop.
pub struct Lbd<'a> {
    lab: &'a Lab,
    child: Option<Child>,
    config: std::path::PathBuf,
}

impl<'a> Lbd<'a> {
    pub fn start(lab: &'a Lab, yaml: &str) -> Lbd<'a> {
        let config = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix));
        std::fs::write(&config, yaml).unwrap();
        let mut l = Lbd {
            lab,
            child: None,
            config,
        };
        l.restart();
        l
    }
    pub fn restart(&mut self) {
        self.child = Some(
            self.lab
                .start_lbd(&self.config, &["--xdp-mode", "native"])
                .unwrap(),
        );
        self.lab.wait_lbd_ready(Duration::from_secs(20)).unwrap();
    }
    /// Starts it again without `--config`.
    pub fn restart_without_config(&mut self) {
        self.child = Some(self.lab.start_lbd_args(&["--xdp-mode", "native"]).unwrap());
        self.lab.wait_lbd_ready(Duration::from_secs(20)).unwrap();
    }
    /// SIGTERM, as systemd stops it, and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL: no chance to clean up anything
            let _ = c.wait();
        }
    }
}

impl Drop for Lbd<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process killed and reaped on drop (also on a failed assert).
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub const RR_CONFIG: &str = r#"
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

/// tcpdump in a namespace, its lines collected as they come.
pub struct Capture {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    pub fn start(lab: &Lab, ns: &str, dev: &str, filter: &str) -> Capture {
        let mut child = lab
            .cmd(ns, "tcpdump")
            .args(["-n", "-e", "-l", "-i", dev, filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Wait for "listening on" so no packet is missed.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 || line.contains("listening on") {
                break;
            }
        }
        assert!(
            line.contains("listening on"),
            "tcpdump did not start: {line}"
        );
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if !l.trim().is_empty() {
                    sink.lock().unwrap().push(l);
                }
            }
        });
        Capture {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits until `n` lines were captured (or 10 s).
    pub fn wait_lines(&self, n: usize) {
        let _ = wait_for(Duration::from_secs(10), || {
            self.lines.lock().unwrap().len() >= n
        });
    }

    /// Stops tcpdump (SIGTERM: it flushes) and returns what it captured.
    pub fn finish(mut self) -> Vec<String> {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// The `lbadm -L -n --health` row of real server `addr` ("192.0.2.12:80").
pub fn health_row(lab: &Lab, addr: &str) -> String {
    let list = lab.lbadm(&["-L", "-n", "--health"]).unwrap_or_default();
    list.lines()
        .find(|l| l.contains(addr))
        .unwrap_or_default()
        .to_string()
}

/// Connections the director lists, over every service: (active, inactive).
pub fn conn_counts(lab: &Lab) -> (u64, u64) {
    let Ok(text) = lab.lbadm(&["-L", "-n", "-o", "json"]) else {
        return (0, 0);
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut c = (0, 0);
    for s in v["services"].as_array().into_iter().flatten() {
        for r in s["reals"].as_array().into_iter().flatten() {
            c.0 += r["active_conns"].as_u64().unwrap_or(0);
            c.1 += r["inactive_conns"].as_u64().unwrap_or(0);
        }
    }
    c
}

/// Bytes in `p` so far (0 if it does not exist yet).
pub fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Extra rs_server.py instances (a port of every real server), killed on drop.
pub struct ExtraServers(Vec<Child>);

impl ExtraServers {
    pub fn start(lab: &Lab, port: u16) -> ExtraServers {
        ExtraServers(
            (1..=3)
                .map(|i| {
                    lab.cmd(&lab.rs_ns(i), "python3")
                        .arg(lab.paths.rs_server())
                        .arg(format!("rs{i}"))
                        .arg(port.to_string())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for ExtraServers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The director's counters (`lbadm counters`), by name.
pub fn counters(lab: &Lab) -> BTreeMap<String, u64> {
    xtask::lab::parse_counters(&lab.lbadm(&["counters"]).unwrap_or_default())
}

/// hping3 in the client namespace: TCP SYNs to the VIP's port 80 at
/// 2,000 per second, at most `count` of them; stopped on drop.
pub struct SynLoad(Child);

impl SynLoad {
    pub fn start(lab: &Lab, count: u32) -> SynLoad {
        SynLoad(
            lab.cmd(&lab.ns("client"), "hping3")
                .args(["-q", "-S", "-p", "80", "-i", "u500", "-c"])
                .arg(count.to_string())
                .arg(xtask::lab::VIP)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("hping3"),
        )
    }
}

impl Drop for SynLoad {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Certificates for a test (see [`write_pki`]) in a directory of their
/// own, removed on drop (also on a failed assert).
pub struct Pki(std::path::PathBuf);

impl Pki {
    pub fn new(lab: &Lab) -> Pki {
        let dir = std::env::temp_dir().join(format!("{}-pki", lab.prefix));
        write_pki(&dir);
        Pki(dir)
    }

    /// The path of `name` (server.pem, ca.pem, client.key, ...).
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a CA, a server certificate for 192.0.2.2 and a client
/// certificate (both signed by the CA) into `dir`; a second CA's client
/// certificate too. Returns nothing: the files are named by role.
fn write_pki(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, pem: String| std::fs::write(dir.join(name), pem).unwrap();
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL (curl) takes a leaf whose issuer is its
        // own subject for a self-signed certificate.
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("lab {name}"));
        let cert = p.self_signed(&key).unwrap();
        write(&format!("{name}.pem"), cert.pem());
        Issuer::new(p, key)
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, name: &str, san: &str, eku| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![san.to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, san);
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, issuer).unwrap();
        write(&format!("{name}.pem"), cert.pem());
        write(&format!("{name}.key"), key.serialize_pem());
    };
    let good = ca("ca");
    leaf(
        &good,
        "server",
        "192.0.2.2",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    leaf(
        &good,
        "client",
        "rs.lab",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let other = ca("other-ca");
    leaf(
        &other,
        "stranger",
        "rs.lab",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
}
