//! The ECMP lab: up to four active directors (192.0.2.2..5), each with lbd
//! and its own BIRD 2, announcing the VIP by BGP to BIRD on the router,
//! which installs one multipath route over every director announcing it
//! (`merge paths`, L4 hash: `fib_multipath_hash_policy=1`). BFD (100 ms x 3)
//! on every session: a director that dies is out of the route in ~0.3 s.
//!
//! ```text
//!  client -- router (BIRD, AS 65000) -- lan -- dir..dir4 (lbd + BIRD, AS 65001)
//!                                         \-- rs1..rs3 (VIP on lo)
//! ```

use std::{
    fs,
    path::PathBuf,
    process::{Child, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    halab::{HaLab, DIRECTOR_IPS},
    lab::{wait_for, Paths, VIP},
};

pub struct EcmpLab {
    pub h: HaLab,
    birds: Mutex<Vec<(String, Child)>>,
}

fn tmp(name: String) -> PathBuf {
    std::env::temp_dir().join(name)
}

impl EcmpLab {
    /// `n` directors (2..=4) and BIRD on the router (sessions to all four
    /// addresses: a director not yet started simply has none).
    pub fn up(prefix: &str, paths: Paths, n: usize) -> Result<EcmpLab> {
        if which("bird").is_none() {
            bail!("bird not found: the ECMP lab needs BIRD 2 (Debian package bird2; cargo xtask setup installs it)");
        }
        let h = HaLab::up_n(prefix, paths, n)?;
        let e = EcmpLab {
            h,
            birds: Mutex::new(Vec::new()),
        };
        let router = e.h.lab.ns("router");
        e.h.lab.exec(
            &router,
            &["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"],
        )?;
        let mut conf = String::from(
            "router id 192.0.2.1;\nprotocol device {}\nprotocol kernel { ipv4 { import none; export all; }; merge paths on; }\nprotocol bfd { interface \"eth1\" { interval 100 ms; multiplier 3; }; }\ntemplate bgp directors { local 192.0.2.1 as 65000; ipv4 { import all; export none; }; bfd on; hold time 9; connect retry time 1; error wait time 1, 4; }\n",
        );
        for (i, a) in DIRECTOR_IPS.iter().enumerate() {
            conf += &format!(
                "protocol bgp d{} from directors {{ neighbor {a} as 65001; }}\n",
                i + 1
            );
        }
        e.start_bird(&router, "router", &conf)?;
        Ok(e)
    }

    /// BIRD in `ns` with `conf`, its control socket named after `who`.
    fn start_bird(&self, ns: &str, who: &str, conf: &str) -> Result<()> {
        let prefix = &self.h.lab.prefix;
        let file = tmp(format!("{prefix}-{who}.bird.main.conf"));
        fs::write(&file, conf)?;
        let child = self
            .h
            .lab
            .cmd(ns, "bird")
            .arg("-f")
            .arg("-c")
            .arg(&file)
            .arg("-s")
            .arg(self.bird_socket(who))
            .arg("-P")
            .arg(tmp(format!("{prefix}-{who}.bird.pid")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bird")?;
        self.birds
            .lock()
            .expect("lock")
            .push((who.to_string(), child));
        Ok(())
    }

    pub fn bird_socket(&self, who: &str) -> PathBuf {
        tmp(format!("{}-{who}.bird.ctl", self.h.lab.prefix))
    }

    /// The file director `i`'s lbd writes and its BIRD includes.
    pub fn include(&self, i: usize) -> PathBuf {
        tmp(format!("{}-d{}.lbd.bird.conf", self.h.lab.prefix, i + 1))
    }

    /// BIRD on director `i`: one session to the router, exporting lbd's
    /// static protocol; the include is a pattern, so BIRD starts before
    /// lbd has written it.
    pub fn start_director_bird(&self, i: usize) -> Result<()> {
        let a = DIRECTOR_IPS[i];
        let pattern = tmp(format!("{}-d{}.lbd*.bird.conf", self.h.lab.prefix, i + 1));
        let conf = format!(
            "router id {a};\nprotocol device {{}}\ninclude \"{}\";\nprotocol bfd {{ interface \"eth1\" {{ interval 100 ms; multiplier 3; }}; }}\nprotocol bgp uplink {{ local {a} as 65001; neighbor 192.0.2.1 as 65000; ipv4 {{ import none; export where proto = \"lbd\"; next hop keep; }}; bfd on; hold time 9; connect retry time 1; error wait time 1, 4; }}\n",
            pattern.display()
        );
        self.start_bird(&self.h.dirs[i].ns.clone(), &format!("d{}", i + 1), &conf)
    }

    /// Stops director `i`'s BIRD (SIGKILL: as if it died).
    pub fn kill_director_bird(&self, i: usize) {
        let who = format!("d{}", i + 1);
        let mut birds = self.birds.lock().expect("lock");
        if let Some(p) = birds.iter().position(|(w, _)| *w == who) {
            let (_, mut c) = birds.remove(p);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The `bgp:` section for director `i` (append services to it).
    pub fn bgp_yaml(&self, i: usize) -> String {
        format!(
            "bgp:\n  control_socket: {}\n  include: {}\n  announce:\n    - {{address: {VIP}, communities: ['65000:100']}}\n",
            self.bird_socket(&format!("d{}", i + 1)).display(),
            self.include(i).display()
        )
    }

    /// The directors the router's route to the VIP goes through now.
    pub fn next_hops(&self) -> Vec<String> {
        let out = self
            .h
            .lab
            .exec_out(&self.h.lab.ns("router"), &["ip", "route", "show", VIP])
            .unwrap_or_default();
        let w: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<String> = w
            .windows(2)
            .filter(|p| p[0] == "via")
            .map(|p| p[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    /// Waits until the route goes through exactly directors `which`;
    /// returns how long it took.
    pub fn wait_next_hops(&self, which: &[usize], within: Duration) -> Result<Duration> {
        let mut want: Vec<String> = which.iter().map(|&i| DIRECTOR_IPS[i].to_string()).collect();
        want.sort();
        let t0 = Instant::now();
        if wait_for(within, || self.next_hops() == want).is_err() {
            let mut why = String::new();
            for i in 0..self.h.dirs.len() {
                if let Ok(b) = self.h.lbadm(i, &["bgp"]) {
                    why += &format!("\ndirector {}: lbadm bgp:\n{b}", i + 1);
                }
            }
            let bird = std::process::Command::new("birdc")
                .arg("-s")
                .arg(self.bird_socket("router"))
                .args(["show", "protocols"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            bail!(
                "the router's route to {VIP} goes via {:?}, not {want:?}, after {within:?}; the router's BIRD:\n{bird}{why}",
                self.next_hops()
            );
        }
        Ok(t0.elapsed())
    }

    /// Director `i`'s data-plane counter `name` (`lbadm counters`).
    pub fn counter(&self, i: usize, name: &str) -> u64 {
        let text = self.h.lbadm(i, &["counters"]).unwrap_or_default();
        crate::lab::parse_counters(&text)
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    })
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        for (_, mut c) in self.birds.lock().expect("lock").drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let prefix = &self.h.lab.prefix;
        for who in ["router", "d1", "d2", "d3", "d4"] {
            for ext in ["bird.main.conf", "bird.ctl", "bird.pid"] {
                let _ = fs::remove_file(tmp(format!("{prefix}-{who}.{ext}")));
            }
        }
        for i in 0..DIRECTOR_IPS.len() {
            let _ = fs::remove_file(self.include(i));
        }
    }
}
