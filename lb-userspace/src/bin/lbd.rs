//! lbd: the director daemon.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use lb_userspace::{
    config::{Config, XdpModeCfg},
    control::DEFAULT_SOCKET,
    daemon::{bind_socket, Daemon},
    dataplane::{self, Dataplane},
    director::Director,
    neigh::Resolver,
};
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "lbd",
    version,
    about = "XDP direct-routing director (LVS-DR) daemon"
)]
struct Args {
    /// The NIC facing clients and real servers (overrides the config's `interface`).
    #[arg(short, long)]
    interface: Option<String>,
    /// YAML configuration (virtual services, real servers, limits).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Control socket for lbadm.
    #[arg(short, long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// XDP attach mode: auto (native, else generic with a warning), native, generic.
    #[arg(long, value_enum)]
    xdp_mode: Option<Mode>,
    /// Instance name: pins live in <bpffs>/lb/<instance> (default: the interface name).
    #[arg(long)]
    instance: Option<String>,
    /// bpffs mount point.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// Detach the program and remove every pin of the instance, then exit.
    /// Established connections are forgotten.
    #[arg(long)]
    unload: bool,
    /// Lab helper: attach a plain XDP_PASS program to the interface (pinned
    /// in the instance directory) and exit. Native XDP on a veth delivers
    /// XDP_TX frames only if the peer runs an XDP program.
    #[arg(long, hide = true)]
    pass_program: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    let args = Args::parse();
    // Everything is validated before anything is touched.
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let file = args
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let table = config.table(&file)?;
    let Some(iface) = args.interface.clone().or(config.interface.clone()) else {
        bail!("no interface: give --interface or `interface:` in the config");
    };
    let instance = args.instance.clone().unwrap_or_else(|| iface.clone());
    let dir = dataplane::instance_dir(&args.bpffs, &instance);
    if args.unload {
        dataplane::unload(&dir).with_context(|| format!("removing {}", dir.display()))?;
        info!(dir = %dir.display(), "unloaded");
        return Ok(());
    }
    if args.pass_program {
        dataplane::attach_pass(&iface, &dir.join("pass_link"))?;
        info!(iface, "attached the XDP_PASS program");
        return Ok(());
    }
    let mode = match args.xdp_mode {
        Some(Mode::Auto) => XdpModeCfg::Auto,
        Some(Mode::Native) => XdpModeCfg::Native,
        Some(Mode::Generic) => XdpModeCfg::Generic,
        None => config.xdp_mode,
    };
    let resolver = Resolver::new(&iface)
        .await
        .with_context(|| format!("interface {iface}"))?;
    let own_mac = resolver.own_mac().await?;
    let listener = bind_socket(&args.socket)?;

    let mut dp = Dataplane::load(&dir, &config.limits)
        .with_context(|| format!("loading the XDP program (pins in {})", dir.display()))?;
    dp.set_director_mac(own_mac)?;
    let mut director = Director::recover(dp)?;
    director.set_policies(config.policies());
    if let Some(t) = &config.timeouts {
        director.set_timeouts(t.tcp, t.tcpfin, t.udp);
    }
    director.set_expire_nodest(config.expire_nodest_conn)?;
    // Resolve MACs before the first apply so rings are complete at once.
    let updates = resolver.resolve(&table_addresses(&table)).await?;
    director.update_macs(&updates)?;
    director
        .apply(table)
        .context("applying the configuration")?;
    let attached = director.dp.attach(&iface, mode)?;
    info!(iface, instance, ?attached, socket = %args.socket.display(), "lbd running");

    let daemon = Daemon {
        director,
        resolver,
        config_path: args.config.clone(),
        checks: config.checks(),
        base: config,
    };
    let r = daemon.run(listener).await;
    let _ = std::fs::remove_file(&args.socket);
    r
}

fn table_addresses(t: &lb_userspace::model::Table) -> std::collections::BTreeSet<std::net::IpAddr> {
    t.services
        .values()
        .flat_map(|s| s.reals.keys().map(|(a, _)| *a))
        .collect()
}
