//! `cargo xtask demo-ha`: a pair of directors shown to a person. Both
//! directors' VRRP states, ten downloads through the master, the master's
//! NIC failing, the backup taking over, every download finishing.

use std::{
    process::Child,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    halab::HaLab,
    lab::{wait_for, Paths, VIP},
};

fn config(prio: u8) -> String {
    format!(
        "sync: {{syncid: 1}}\n\
         vrrp:\n  - {{name: web, virtual_router_id: 51, priority: {prio}, advert_int: 10, garp_master_delay: 1, virtual_addresses: [{VIP}]}}\n\
         services:\n  - {{protocol: tcp, address: {VIP}, port: 80, scheduler: rr, real_servers: [{{address: 192.0.2.11}}, {{address: 192.0.2.12}}, {{address: 192.0.2.13}}]}}\n"
    )
}

fn show(h: &HaLab) {
    for i in 0..2 {
        println!("-- {} ({}): lbadm vrrp", h.dirs[i].ns, h.dirs[i].address);
        print!(
            "{}",
            h.lbadm(i, &["vrrp"]).unwrap_or_else(|e| format!("{e}\n"))
        );
    }
}

pub fn run(paths: Paths) -> Result<()> {
    println!("== the HA lab: client -> router -> LAN with two directors (192.0.2.2, .3) and three real servers");
    let h = HaLab::up("lbha", paths)?;
    let mut lbds: Vec<Child> = vec![h.start_lbd(0, &config(150))?, h.start_lbd(1, &config(100))?];
    let r = (|| -> Result<()> {
        h.wait_ready(0)?;
        h.wait_ready(1)?;
        println!("== lbd on both, VRRPv3 (priority 150 and 100, adverts every 100 ms), sync daemon on both");
        wait_for(Duration::from_secs(10), || {
            h.holds_vip(0) && !h.holds_vip(1)
        })?;
        show(&h);
        println!("== ten 6-second downloads from the client to {VIP}");
        let outs: Vec<_> = (0..10)
            .map(|i| std::env::temp_dir().join(format!("lbha-demo{i}")))
            .collect();
        let mut curls: Vec<Child> = outs
            .iter()
            .map(|o| {
                h.lab
                    .cmd(&h.lab.ns("client"), "curl")
                    .args(["-s", "--max-time", "30", "-o"])
                    .arg(o)
                    .arg(format!("http://{VIP}/slow?s=6"))
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        sleep(Duration::from_secs(2));
        println!("-- the master's connection table (lbadm -Lnc), and what the backup learned:");
        print!("{}", h.lbadm(0, &["-Lnc"]).unwrap_or_default());
        print!("{}", h.lbadm(1, &["-Lnc"]).unwrap_or_default());
        println!("== the master's NIC goes down");
        let t0 = Instant::now();
        h.lab
            .exec(&h.lab.ns("lan"), &["ip", "link", "set", "p-dir", "down"])?;
        wait_for(Duration::from_secs(10), || h.holds_vip(1))?;
        println!("   director 2 holds the VIP after {:?}", t0.elapsed());
        show(&h);
        println!("== the downloads:");
        for (i, (c, o)) in curls.iter_mut().zip(&outs).enumerate() {
            let ok = c.wait().map(|s| s.success()).unwrap_or(false);
            let len = std::fs::metadata(o).map(|m| m.len()).unwrap_or(0);
            let tail = std::fs::read_to_string(o).unwrap_or_default();
            let who = tail.lines().last().unwrap_or("").to_string();
            println!(
                "   download {:>2}: {} bytes, {} ({})",
                i + 1,
                len,
                if ok { "complete" } else { "FAILED" },
                who
            );
            let _ = std::fs::remove_file(o);
        }
        println!(
            "== a new connection: answered by {}",
            h.lab.curl_vip("/", 3).unwrap_or_default().trim()
        );
        println!("-- director 2: lbadm -Ln and -L --daemon");
        print!("{}", h.lbadm(1, &["-L", "-n"]).unwrap_or_default());
        print!("{}", h.lbadm(1, &["-L", "--daemon"]).unwrap_or_default());
        Ok(())
    })();
    for c in &mut lbds {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("== tearing the lab down");
    drop(h);
    r
}
