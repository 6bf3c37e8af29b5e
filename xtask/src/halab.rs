//! The lab with two directors (dir 192.0.2.2 and dir2 192.0.2.3 on the
//! LAN), neither holding the VIP statically: VRRP gives it to the master.
//! Each director has its own lbd instance, socket and log.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::lab::{run, wait_for, Lab, Paths};

/// One director of the pair.
pub struct Director {
    pub ns: String,
    pub instance: String,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub address: &'static str,
}

pub struct HaLab {
    pub lab: Lab,
    pub dirs: Vec<Director>,
}

/// The directors' addresses on the LAN, in order (the first is the
/// single-director lab's).
pub const DIRECTOR_IPS: [&str; 4] = ["192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"];

/// Role (namespace suffix) of director `i`.
fn role(i: usize) -> String {
    if i == 0 {
        "dir".into()
    } else {
        format!("dir{}", i + 1)
    }
}

impl HaLab {
    /// The pair.
    pub fn up(prefix: &str, paths: Paths) -> Result<HaLab> {
        HaLab::up_n(prefix, paths, 2)
    }

    /// `n` directors (2..=4) on the LAN.
    pub fn up_n(prefix: &str, paths: Paths, n: usize) -> Result<HaLab> {
        if !(2..=DIRECTOR_IPS.len()).contains(&n) {
            bail!("{n} directors: the lab has room for 2..=4");
        }
        let lab = Lab::up_with(prefix, 3, paths, false)?;
        let mut h = HaLab {
            dirs: Vec::new(),
            lab,
        };
        for (i, address) in DIRECTOR_IPS.iter().enumerate().take(n) {
            let role = role(i);
            if i > 0 {
                h.add_director(&role, address)?;
            }
            h.dirs.push(Director {
                ns: h.lab.ns(&role),
                instance: format!("{prefix}-{role}"),
                socket: PathBuf::from(format!("/run/lbd/{prefix}-{role}.sock")),
                log: std::env::temp_dir().join(format!("{prefix}-{role}-lbd.log")),
                address,
            });
        }
        Ok(h)
    }

    /// A namespace `role` on the LAN with `address`.
    fn add_director(&self, role: &str, address: &str) -> Result<()> {
        let lab = &self.lab;
        let ns = lab.ns(role);
        let port = format!("p-{role}");
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        lab.ip(&ns, "link set lo up")?;
        lab.attach_to_lan(&ns, &port)?;
        lab.ip(&ns, &format!("addr add {address}/24 dev eth1"))?;
        lab.ip(&ns, "link set eth1 up")?;
        lab.ip(&ns, "route add default via 192.0.2.1")?;
        // Native XDP_TX on a veth needs an XDP program on the peer.
        lab.exec(
            &lab.ns("lan"),
            &[
                lab.paths.lbd().to_str().context("path")?,
                "--interface",
                &port,
                "--instance",
                &format!("{}-p{role}", lab.prefix),
                "--pass-program",
            ],
        )?;
        Ok(())
    }

    /// lbd on director `i` with `config` (YAML text), native XDP.
    pub fn start_lbd(&self, i: usize, config: &str) -> Result<Child> {
        let d = &self.dirs[i];
        let file = std::env::temp_dir().join(format!("{}-lbd.yaml", d.instance));
        fs::write(&file, config)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&d.log)?;
        self.lab
            .cmd(&d.ns, self.lab.paths.lbd())
            .args([
                "--interface",
                "eth1",
                "--instance",
                &d.instance,
                "--xdp-mode",
                "native",
            ])
            .arg("--socket")
            .arg(&d.socket)
            .arg("--config")
            .arg(&file)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lbd")
    }

    /// Waits until director `i`'s lbd answers.
    pub fn wait_ready(&self, i: usize) -> Result<()> {
        if wait_for(Duration::from_secs(20), || {
            self.lbadm(i, &["-L", "-n"]).is_ok()
        })
        .is_err()
        {
            let log = fs::read_to_string(&self.dirs[i].log).unwrap_or_default();
            bail!("lbd on {} did not start; its log:\n{log}", self.dirs[i].ns);
        }
        Ok(())
    }

    pub fn lbadm(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = run(Command::new(self.lab.paths.lbadm())
            .args(args)
            .env("LB_SOCKET", &self.dirs[i].socket)
            .stdin(Stdio::null()))?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Whether director `i` holds the VIP on its NIC.
    pub fn holds_vip(&self, i: usize) -> bool {
        self.lab
            .exec_out(
                &self.dirs[i].ns,
                &["ip", "-o", "addr", "show", "dev", "eth1"],
            )
            .map(|s| s.contains(&format!(" {}/32", crate::lab::VIP)))
            .unwrap_or(false)
    }

    /// The VRRP state director `i` reports for its first router.
    pub fn state(&self, i: usize) -> String {
        let text = self.lbadm(i, &["vrrp", "--json"]).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v[0]["state"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for i in 1..self.dirs.len() {
            let ns = self.lab.ns(&role(i));
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            let _ = fs::remove_dir_all(PathBuf::from("/sys/fs/bpf/lb").join(format!(
                "{}-p{}",
                self.lab.prefix,
                role(i)
            )));
        }
        for d in &self.dirs {
            let _ = fs::remove_dir_all(PathBuf::from("/sys/fs/bpf/lb").join(&d.instance));
            let _ = fs::remove_file(&d.socket);
            for ext in ["state.yaml", "vrrp.json", "bgp.json", "bird.conf"] {
                let _ = fs::remove_file(format!("/run/lbd/{}.{ext}", d.instance));
            }
            let _ = fs::remove_file(&d.log);
        }
    }
}
