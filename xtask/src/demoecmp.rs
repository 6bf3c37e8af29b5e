//! `cargo xtask demo-ecmp`: three active directors behind the router's
//! ECMP route, shown to a person. Each director runs lbd and BIRD; the
//! router's route to the VIP; twenty downloads spread over the directors;
//! one director drained, then one failing; every download finishing.

use std::{process::Child, thread::sleep, time::Duration};

use anyhow::Result;

use crate::{
    ecmplab::EcmpLab,
    lab::{Downloads, Paths, VIP},
};

const SERVICES: &str = "services:\n  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: mh, flags: [mh-port], real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]}\n";

fn route(e: &EcmpLab) {
    println!("-- the router's route to {VIP} (ip route):");
    let out =
        e.h.lab
            .exec_out(&e.h.lab.ns("router"), &["ip", "route", "show", VIP])
            .unwrap_or_default();
    for l in out.lines() {
        println!("   {l}");
    }
}

fn tx(e: &EcmpLab) -> Vec<u64> {
    (0..3).map(|i| e.counter(i, "tx")).collect()
}

pub fn run(paths: Paths) -> Result<()> {
    println!("== the ECMP lab: client -> router (BIRD, ECMP over BGP next hops) -> LAN with three directors (192.0.2.2-4, lbd + BIRD each) and three real servers");
    let e = EcmpLab::up("lbec", paths, 3)?;
    let mut lbds: Vec<Child> = Vec::new();
    let r = (|| -> Result<()> {
        for i in 0..3 {
            e.start_director_bird(i)?;
            lbds.push(e.h.start_lbd(i, &format!("{}{SERVICES}", e.bgp_yaml(i)))?);
            e.h.wait_ready(i)?;
        }
        let t = e.wait_next_hops(&[0, 1, 2], Duration::from_secs(20))?;
        println!("== every director announces {VIP} (mh, same ring on each): in the route {t:?} after the last lbd answered");
        route(&e);
        println!("-- director 1: lbadm bgp");
        print!("{}", e.h.lbadm(0, &["bgp"]).unwrap_or_default());
        println!(
            "== twenty 6-second downloads from the client; packets forwarded per director so far:"
        );
        let d = Downloads::start(&e.h.lab, "lbec-demo", 20, 6);
        sleep(Duration::from_secs(1));
        println!("   {:?}", tx(&e));
        println!("== lbadm bgp drain on director 1 (it keeps forwarding what still reaches it)");
        print!("{}", e.h.lbadm(0, &["bgp", "drain"]).unwrap_or_default());
        e.wait_next_hops(&[1, 2], Duration::from_secs(5))?;
        route(&e);
        sleep(Duration::from_secs(1));
        println!("== director 2's NIC goes down");
        let t0 = std::time::Instant::now();
        e.h.lab
            .exec(&e.h.lab.ns("lan"), &["ip", "link", "set", "p-dir2", "down"])?;
        e.wait_next_hops(&[2], Duration::from_secs(10))?;
        println!(
            "   the route converged in {:?} (BFD 100 ms x 3)",
            t0.elapsed()
        );
        route(&e);
        let (lost, by) = d.finish();
        println!(
            "== the downloads: {} of 20 complete, by real server {by:?}; packets forwarded per director: {:?}",
            20 - lost.len(),
            tx(&e)
        );
        for l in &lost {
            println!("   LOST: {l}");
        }
        println!(
            "== a new connection: answered by {}",
            e.h.lab.curl_vip("/", 3).unwrap_or_default().trim()
        );
        println!("== lbadm bgp resume on director 1: back in the route");
        e.h.lbadm(0, &["bgp", "resume"])?;
        e.wait_next_hops(&[0, 2], Duration::from_secs(5))?;
        route(&e);
        Ok(())
    })();
    for c in &mut lbds {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("== tearing the lab down");
    drop(e);
    r
}
