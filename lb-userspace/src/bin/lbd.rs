//! lbd: the director daemon.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use lb_userspace::{
    config::Config,
    control::DEFAULT_SOCKET,
    daemon::{bind_socket, start, state_file, Source, StartOptions},
    dataplane::{self, AttachMode},
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
    xdp_mode: Option<AttachMode>,
    /// Instance name: pins live in <bpffs>/lb/<instance> (default: the interface name).
    #[arg(long)]
    instance: Option<String>,
    /// Where the running state is saved for a restart without --config.
    #[arg(long, default_value = "/run/lbd")]
    state_dir: PathBuf,
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
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics, and the web
    /// console on /console when the config has a `console:` section
    /// (overrides the config's `metrics.listen`), e.g. 127.0.0.1:9469.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Log lines as text (colours only on a terminal, none with NO_COLOR)
    /// or as JSON objects, one per line (for journald or a log shipper).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Benchmark helper: attach the stateless floor load balancer instead
    /// of the director (TCP to VIP:PORT spread by source port over the
    /// MACs) and exit; `--unload` removes it.
    #[arg(long, hide = true, value_name = "VIP:PORT=MAC,MAC...")]
    floor_program: Option<String>,
    /// Print the man page (roff) and exit (for packaging).
    #[arg(long, hide = true)]
    man: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to standard output (journald under systemd), filtered by
/// RUST_LOG (default info).
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
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
    let args = Args::parse();
    if args.man {
        use clap::CommandFactory as _;
        clap_mangen::Man::new(Args::command())
            .section("8")
            .render(&mut std::io::stdout())?;
        return Ok(());
    }
    init_logs(args.log_format);
    // Everything is validated before anything is touched.
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let Some(iface) = args.interface.clone().or(config.interface.clone()) else {
        bail!("no interface: give --interface or `interface:` in the config");
    };
    let instance = args.instance.clone().unwrap_or_else(|| iface.clone());
    // Names become paths: nothing outside the instance's own directory.
    dataplane::check_interface(&iface)?;
    dataplane::check_instance(&instance)?;
    dataplane::check_bpffs(&args.bpffs).map_err(anyhow::Error::msg)?;
    let dir = dataplane::instance_dir(&args.bpffs, &instance);
    if args.unload {
        if !dir.exists() {
            info!(dir = %dir.display(), "nothing to unload");
            return Ok(());
        }
        // Under the instance's lock (a running lbd makes this fail before
        // anything is touched): the program goes, so its VIPs must not be
        // announced any more. The bgp: section is the file's, or the saved
        // running state's.
        let lock = dataplane::lock_instance(&dir)?;
        let saved = state_file(&args.state_dir, &instance);
        let bgp = config.bgp.clone().or_else(|| {
            std::fs::read_to_string(&saved)
                .ok()
                .and_then(|t| Config::parse(&t, &saved.display().to_string()).ok())
                .and_then(|c| c.bgp)
        });
        if let Some(b) = bgp {
            let include = b.include_path(&args.state_dir, &instance);
            lb_userspace::bgp::bird::withdraw_all(&b, &include)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "withdrawing the VIPs from BGP before unloading: {e}; nothing was unloaded (to unload anyway, give --config with a file without bgp:)"
                    )
                })?;
            info!("every VIP withdrawn from BGP");
        }
        dataplane::unload_held(&dir, lock)
            .with_context(|| format!("removing {}", dir.display()))?;
        let _ = std::fs::remove_file(state_file(&args.state_dir, &instance));
        // The joined real servers go with the program they were served by.
        let _ = std::fs::remove_file(lb_userspace::join::Joined::file(
            config.join.as_ref(),
            &args.state_dir,
            &instance,
        ));
        info!(dir = %dir.display(), "unloaded");
        return Ok(());
    }
    if let Some(spec) = &args.floor_program {
        let (target, macs) = spec
            .split_once('=')
            .context("--floor-program VIP:PORT=MAC,MAC...")?;
        let (vip, port) =
            lb_userspace::cli::ipvsadm::parse_addr_port(target).map_err(anyhow::Error::msg)?;
        let std::net::IpAddr::V4(vip) = vip else {
            bail!("--floor-program: IPv4 only");
        };
        let macs: Vec<[u8; 6]> = macs
            .split(',')
            .map(|m| {
                lb_userspace::director::codec::parse_mac(m)
                    .ok_or_else(|| anyhow::anyhow!("--floor-program: bad MAC {m}"))
            })
            .collect::<Result<_>>()?;
        dataplane::attach_floor_lb(&iface, &dir.join("floor_link"), vip, port, &macs)?;
        info!(iface, "attached the floor load balancer");
        return Ok(());
    }
    if args.pass_program {
        dataplane::attach_pass(&iface, &dir.join("pass_link"))?;
        info!(iface, "attached the XDP_PASS program");
        return Ok(());
    }
    let opts = StartOptions {
        mode: args.xdp_mode.or(config.xdp_mode).unwrap_or_default(),
        interface: iface,
        instance,
        bpffs: args.bpffs.clone(),
        config_path: args.config.clone(),
        state_dir: args.state_dir.clone(),
    };
    // With --config the file is the truth; without it, what the previous
    // daemon served (its saved state, else the pinned maps).
    let saved = opts.state_file();
    let source = match &args.config {
        Some(p) => Source::File(p.clone(), config),
        None if saved.exists() => {
            let c = Config::load(&saved)
                .with_context(|| format!("the saved state {}", saved.display()))?;
            info!(state = %saved.display(), "no --config: serving the saved running state");
            Source::Saved(saved, c)
        }
        None => Source::Pins,
    };
    // One daemon per instance: refused before anything is touched.
    let lock = dataplane::lock_instance(&dir)?;
    let listener = bind_socket(&args.socket)?;
    let metrics_cfg = source.config().and_then(|c| c.metrics.as_ref());
    let metrics = match args.metrics.or(metrics_cfg.map(|m| m.listen)) {
        Some(a) => Some(lb_userspace::metrics::prepare(
            a,
            metrics_cfg.and_then(|m| m.tls.as_ref()),
        )?),
        None => None,
    };
    if metrics.is_none() && source.config().is_some_and(|c| c.console.is_some()) {
        anyhow::bail!(
            "console: the web console is served on lbd's HTTP listener: set metrics.listen (or --metrics)"
        );
    }
    let join = match source.config().and_then(|c| c.join.as_ref()) {
        Some(j) => Some(lb_userspace::join::server::prepare(j)?),
        None => None,
    };
    let r = match start(&opts, source, lock).await {
        Ok(daemon) => {
            info!(socket = %args.socket.display(), "serving lbadm");
            daemon.run(listener, metrics, join).await
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&args.socket);
    r
}
