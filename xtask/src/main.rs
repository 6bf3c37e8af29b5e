//! `cargo xtask <command>`: see `cargo xtask --help`.

use std::{process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use xtask::{
    lab::{self, Lab},
    paths, root,
};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent, quick when done).
    Setup,
    /// Build lbd and lbadm (with the XDP object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// The namespace lab: `up` leaves it running (prefix "lb"), `down` removes it.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// The demo: lab up, lbd with deploy/lbd.yaml, HTTP requests from the
    /// client to the VIP, which real server answered, `lbadm -Ln`, teardown.
    Demo {
        /// Number of HTTP requests (bounded).
        #[arg(long, default_value_t = 12)]
        requests: u32,
    },
    /// The pair of directors: VRRP elects a master, downloads run through
    /// it, its NIC fails, the backup (told of every connection by the sync
    /// daemon) takes over and the downloads finish.
    DemoHa,
    /// Three active directors behind ECMP, each announcing the VIP through
    /// BIRD: downloads spread over them, one drained, one failing, every
    /// download finishing.
    DemoEcmp,
    /// Every test tier: unit, packet (BPF_PROG_TEST_RUN), namespace end-to-end.
    Test,
    /// The Debian package (lbd, lbadm, the systemd unit, the example
    /// configuration, man pages, shell completions, docs) in target/package.
    Package,
    /// The benchmark suite: writes bench/results/<date>.json and docs/benchmarks.md.
    Bench {
        /// The short mode (under 2 minutes): smaller tables, fewer rounds.
        #[arg(long)]
        quick: bool,
        /// Where to write the results file (default bench/results).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Fault and fuzz figures: SYNs lost across restarts under load, flows
    /// lost across 100 applies, 10^7 fuzzed frames, 10^5 fuzzed inputs per
    /// parser; writes bench/results/soak-<date>.json.
    Soak {
        /// A short run (a few minutes): fewer restarts, applies and inputs.
        #[arg(long)]
        quick: bool,
        /// Only write docs/soak.md again, from this results file.
        #[arg(long)]
        from: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum LabAction {
    Up,
    Down,
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn setup() -> Result<()> {
    status(Command::new("bash").arg(root().join("xtask/setup.sh")))
}

fn build(release: bool) -> Result<()> {
    let mut c = cargo();
    c.current_dir(root())
        .args(["build", "-p", "lb-userspace", "--bins"]);
    if release {
        c.arg("--release");
    }
    status(&mut c)
}

fn require_root() -> Result<()> {
    let out = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&out.stdout).trim() != "0" {
        bail!("this needs root (network namespaces, XDP, bpffs)");
    }
    Ok(())
}

fn demo(requests: u32) -> Result<()> {
    require_root()?;
    setup()?;
    build(false)?;
    let p = paths();
    let prefix = format!("lbdemo{}", std::process::id() % 10000);
    println!("== bringing up the lab ({prefix}-*): client, router, LAN, director, 3 real servers");
    let lab = Lab::up(&prefix, 3, p.clone())?;
    let config = root().join("deploy/lbd.yaml");
    println!("== starting lbd on the director with {}", config.display());
    let mut lbd = lab.start_lbd(&config, &[])?;
    let res = (|| -> Result<()> {
        lab.wait_lbd_ready(Duration::from_secs(20))?;
        println!(
            "== {requests} HTTP requests from the client ({}) to the VIP {}",
            lab::CLIENT_IP,
            lab::VIP
        );
        let mut counts = std::collections::BTreeMap::new();
        for i in 1..=requests.min(1000) {
            let body = lab.curl_vip("/", 5)?;
            let who = body.trim().to_string();
            println!("  request {i:>3}: answered by {who}");
            *counts.entry(who).or_insert(0u32) += 1;
        }
        println!("== answers per real server: {counts:?}");
        println!("== lbadm -Ln");
        print!("{}", lab.lbadm(&["-L", "-n"])?);
        println!("== director counters (lbadm counters)");
        print!("{}", lab.lbadm(&["counters"])?);
        Ok(())
    })();
    let _ = lbd.kill();
    let _ = lbd.wait();
    println!("== tearing the lab down");
    drop(lab);
    res
}

/// Builds the release binaries, their man pages and completions, then the
/// Debian package with cargo deb; returns the .deb's path.
fn package() -> Result<std::path::PathBuf> {
    build(true)?;
    let r = root();
    let out = r.join("target/package");
    std::fs::create_dir_all(&out)?;
    let bin = |name: &str| r.join("target/release").join(name);
    let capture = |cmd: &mut Command| -> Result<Vec<u8>> {
        let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !o.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(o.stdout)
    };
    let gzip = |name: &str, roff: Vec<u8>| -> Result<()> {
        let plain = out.join(name);
        std::fs::write(&plain, roff)?;
        status(Command::new("gzip").args(["-9nf"]).arg(&plain))
    };
    gzip("lbd.8", capture(Command::new(bin("lbd")).arg("--man"))?)?;
    gzip("lbadm.8", capture(Command::new(bin("lbadm")).arg("man"))?)?;
    for (shell, file) in [
        ("bash", "lbadm.bash"),
        ("zsh", "_lbadm"),
        ("fish", "lbadm.fish"),
    ] {
        let text = capture(Command::new(bin("lbadm")).args(["completions", shell]))?;
        std::fs::write(out.join(file), text)?;
    }
    // Only this build's package in the directory.
    for e in std::fs::read_dir(&out)?.flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            std::fs::remove_file(e.path())?;
        }
    }
    status(
        cargo()
            .current_dir(&r)
            .args([
                "deb",
                "-p",
                "lb-userspace",
                "--no-build",
                "--strip",
                "--output",
            ])
            .arg(&out),
    )?;
    let deb = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo deb wrote no package")?;
    println!("package: {}", deb.display());
    Ok(deb)
}

fn test() -> Result<()> {
    require_root()?;
    setup()?;
    let r = root();
    println!("== tier 1 + 2: unit tests and packet tests (BPF_PROG_TEST_RUN)");
    status(
        cargo()
            .current_dir(&r)
            .args(["test", "-p", "lb-common", "-p", "lb-userspace"]),
    )?;
    println!("== tier 1b: input fuzz, 10^5 inputs per parser (optimised build)");
    status(cargo().current_dir(&r).args([
        "test",
        "--release",
        "-p",
        "lb-userspace",
        "--test",
        "input_fuzz",
    ]))?;
    println!("== the Debian package (installed by the e2e suite)");
    package()?;
    println!("== tier 3: namespace end-to-end");
    build(false)?;
    lab::cleanup_prefix("lbe2e");
    status(cargo().current_dir(&r).args([
        "test",
        "-p",
        "lb-e2e",
        "--test",
        "e2e",
        "--",
        "--test-threads=1",
    ]))?;
    println!("== benchmark smoke test (cargo xtask bench --quick still runs)");
    bench_smoke()?;
    Ok(())
}

fn bench(quick: bool, out: Option<std::path::PathBuf>) -> Result<()> {
    require_root()?;
    setup()?;
    // The lab part first (it needs the debug binaries); its results are
    // handed to the dataplane benchmark, which writes the one results file.
    build(false)?;
    eprintln!("bench: through the lab (wrk, iperf3, HAProxy, lbd memory)");
    let mut lab_results = xtask::labbench::run(paths(), quick)?;
    eprintln!("bench: a pair of directors (takeover, flows lost, sync cost and lag)");
    lab_results["high_availability"] = xtask::habench::run(paths(), quick)?;
    eprintln!("bench: ECMP (connections/s through 1-3 directors, a director failing)");
    lab_results["ecmp"] = xtask::ecmpbench::run(paths(), quick)?;
    let lab_file = std::env::temp_dir().join(format!("lb-labbench-{}.json", std::process::id()));
    std::fs::write(&lab_file, serde_json::to_string_pretty(&lab_results)?)?;
    let mut c = cargo();
    c.env("LB_BENCH_LAB_RESULTS", &lab_file);
    c.current_dir(root())
        .args(["bench", "-p", "lb-userspace", "--bench", "dataplane", "--"]);
    if quick {
        c.arg("--quick");
    }
    if let Some(o) = out {
        c.arg("--out").arg(o);
    }
    let r = status(&mut c);
    let _ = std::fs::remove_file(&lab_file);
    r
}

fn soak(quick: bool, from: Option<std::path::PathBuf>) -> Result<()> {
    let v: serde_json::Value = match &from {
        // Only docs/soak.md again, from a results file.
        Some(f) => serde_json::from_str(&std::fs::read_to_string(f)?)?,
        None => {
            require_root()?;
            setup()?;
            build(false)?;
            xtask::soak::run(paths(), quick)?
        }
    };
    let text = serde_json::to_string_pretty(&v)?;
    println!("{text}");
    if !quick {
        if from.is_none() {
            let file = root().join(format!(
                "bench/results/soak-{}.json",
                xtask::soak::chrono_date()
            ));
            std::fs::write(&file, text.clone() + "\n")?;
            println!("soak: wrote {}", file.display());
        }
        std::fs::write(root().join("docs/soak.md"), xtask::soak::doc(&v, &text))?;
        println!("soak: wrote docs/soak.md");
    }
    Ok(())
}

/// The benchmark is not a test, but it must keep working: run the quick
/// mode into a scratch directory and check the results file.
fn bench_smoke() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("lb-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    bench(true, Some(dir.clone()))?;
    let file = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .context("bench --quick wrote no results file")?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
        .with_context(|| format!("{} is not JSON", file.display()))?;
    let rows = v["per_packet"].as_array().context("no per_packet rows")?;
    let measured = rows
        .iter()
        .filter(|r| r["ns_per_packet"].as_f64().is_some_and(|n| n > 0.0))
        .count();
    let lab_ok = v["through_the_lab"]["xdp_director"]["http_requests_per_s_keepalive"]
        .as_f64()
        .is_some_and(|n| n > 0.0);
    let ecmp_ok = v["through_the_lab"]["ecmp"]["director_failure"]["lost"]
        .as_u64()
        .is_some();
    if measured < 10
        || !lab_ok
        || !ecmp_ok
        || v["control_plane"].as_object().is_none_or(|o| o.is_empty())
    {
        bail!(
            "bench results incomplete: {measured} measured rows in {}",
            file.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("bench smoke test: {measured} per-packet rows measured, lab figures present");
    println!("smoke: 1 passed, 0 failed");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Package => {
            setup()?;
            package().map(|_| ())
        }
        Cmd::Build { release } => {
            setup()?;
            build(release)
        }
        Cmd::Lab {
            action: LabAction::Up,
        } => {
            require_root()?;
            setup()?;
            build(false)?;
            let mut lab = Lab::up("lb", 3, paths())?;
            lab.keep = true;
            // The HTTP servers must outlive this process.
            for c in lab.children.drain(..) {
                std::mem::forget(c);
            }
            let rs = lab
                .rs_http
                .get_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            for (_, c) in rs {
                std::mem::forget(c);
            }
            println!("lab up: namespaces {}", lab.all_ns().join(" "));
            println!(
                "start the director with:\n  nsenter --net=/run/netns/lb-dir -- {} --interface eth1 --instance lb-dir --config deploy/lbd.yaml --socket {}",
                paths().lbd().display(),
                lab.socket().display()
            );
            Ok(())
        }
        Cmd::Lab {
            action: LabAction::Down,
        } => {
            lab::cleanup_prefix("lb");
            println!("lab down");
            Ok(())
        }
        Cmd::Demo { requests } => demo(requests),
        Cmd::DemoHa => {
            require_root()?;
            setup()?;
            build(false)?;
            xtask::lab::cleanup_prefix("lbha");
            xtask::demoha::run(paths())
        }
        Cmd::DemoEcmp => {
            require_root()?;
            setup()?;
            build(false)?;
            xtask::lab::cleanup_prefix("lbec");
            xtask::demoecmp::run(paths())
        }
        Cmd::Test => test(),
        Cmd::Bench { quick, out } => bench(quick, out),
        Cmd::Soak { quick, from } => soak(quick, from),
    }
}
