//! lbadm's command line: ipvsadm 1.31's options (`-A -t 192.0.2.100:80 -s
//! wrr`, `-a -t ... -r 192.0.2.11 -g -w 3`, `-E`, `-e`, `-D`, `-d`, `-C`,
//! `-L -n`, and no arguments at all = list), plus lbadm's own subcommands.

use std::{net::IpAddr, path::PathBuf};

use clap::{ArgGroup, Parser, Subcommand};

use crate::control::DEFAULT_SOCKET;

/// ipvsadm-compatible administration of the XDP director (lbd).
#[derive(Debug, Parser)]
#[command(
    name = "lbadm",
    disable_version_flag = true,
    group(ArgGroup::new("command").args([
        "add_service", "edit_service", "delete_service", "clear",
        "add_server", "edit_server", "delete_server", "list", "set",
        "save", "restore", "zero", "start_daemon", "stop_daemon"
    ]))
)]
pub struct Cli {
    #[command(subcommand)]
    pub sub: Option<Sub>,

    /// Add a virtual service.
    #[arg(short = 'A', long = "add-service")]
    pub add_service: bool,
    /// Edit a virtual service.
    #[arg(short = 'E', long = "edit-service")]
    pub edit_service: bool,
    /// Delete a virtual service (and its real servers).
    #[arg(short = 'D', long = "delete-service")]
    pub delete_service: bool,
    /// Clear the whole table.
    #[arg(short = 'C', long = "clear")]
    pub clear: bool,
    /// Add a real server to a virtual service.
    #[arg(short = 'a', long = "add-server")]
    pub add_server: bool,
    /// Edit a real server.
    #[arg(short = 'e', long = "edit-server")]
    pub edit_server: bool,
    /// Delete a real server.
    #[arg(short = 'd', long = "delete-server")]
    pub delete_server: bool,
    /// List the table (also -l).
    #[arg(short = 'L', short_alias = 'l', long = "list")]
    pub list: bool,
    /// Print the table as ipvsadm rules (ipvsadm-save; -Sn numeric).
    #[arg(short = 'S', long = "save")]
    pub save: bool,
    /// Read ipvsadm rules (-A/-a/... lines, as -S prints them) from stdin and
    /// apply them all at once, or none if a line fails.
    #[arg(short = 'R', long = "restore")]
    pub restore: bool,
    /// Zero the packet, byte and rate counters (of one service with -t/-u/-f).
    #[arg(short = 'Z', long = "zero")]
    pub zero: bool,
    /// Start the connection sync daemon: master or backup.
    #[arg(long = "start-daemon", value_name = "STATE")]
    pub start_daemon: Option<String>,
    /// Stop the connection sync daemon: master or backup.
    #[arg(long = "stop-daemon", value_name = "STATE")]
    pub stop_daemon: Option<String>,
    /// Sync daemon: the interface its messages go out of / come in on.
    #[arg(long = "mcast-interface", value_name = "INTERFACE")]
    pub mcast_interface: Option<String>,
    /// Sync daemon: syncid 0..255 (a backup with 0 takes every master's).
    #[arg(long = "syncid", value_name = "SID")]
    pub syncid: Option<u8>,
    /// Sync daemon: largest message (default 1472).
    #[arg(long = "sync-maxlen", value_name = "LENGTH")]
    pub sync_maxlen: Option<u16>,
    /// Sync daemon: multicast group (default 224.0.0.81).
    #[arg(long = "mcast-group", value_name = "ADDRESS")]
    pub mcast_group: Option<String>,
    /// Sync daemon: UDP port (default 8848).
    #[arg(long = "mcast-port", value_name = "PORT")]
    pub mcast_port: Option<u16>,
    /// Sync daemon: multicast TTL (default 1).
    #[arg(long = "mcast-ttl", value_name = "TTL")]
    pub mcast_ttl: Option<u8>,

    /// TCP virtual service: host[:port], IPv6 as [addr]:port.
    #[arg(short = 't', long = "tcp-service", value_name = "SERVICE-ADDRESS")]
    pub tcp: Option<String>,
    /// UDP virtual service.
    #[arg(short = 'u', long = "udp-service", value_name = "SERVICE-ADDRESS")]
    pub udp: Option<String>,
    /// Port-group (fwmark) service: the group declared with this mark.
    #[arg(short = 'f', long = "fwmark-service", value_name = "FWMARK")]
    pub fwmark: Option<u32>,
    /// With -f: an IPv6 port group.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Scheduler: rr, wrr, lc, wlc, sed, nq, lblc, lblcr, dh, sh, mh, fo, ovf, twos (default wlc, as ipvsadm).
    #[arg(short = 's', long = "scheduler")]
    pub scheduler: Option<String>,
    /// Persistent service, optional timeout in seconds (default 360).
    #[arg(short = 'p', long = "persistent", num_args = 0..=1, default_missing_value = "360", value_name = "TIMEOUT")]
    pub persistent: Option<u32>,
    /// Persistence granularity: a netmask (255.255.255.0) or a prefix length.
    #[arg(short = 'M', long = "netmask")]
    pub netmask: Option<String>,
    /// `-o` alone: one-packet scheduling (UDP, ipvsadm's --ops);
    /// `-o json` with a listing: JSON output for programs.
    #[arg(short = 'o', num_args = 0..=1, default_missing_value = "ops", value_name = "json")]
    pub o: Option<String>,
    /// One-packet scheduling (UDP).
    #[arg(long = "ops")]
    pub ops: bool,
    /// JSON output for listings (same as -o json).
    #[arg(long = "json")]
    pub json: bool,
    /// Set the TCP, TCP FIN_WAIT and UDP timeouts in seconds (0 = unchanged).
    #[arg(long = "set", num_args = 3, value_names = ["TCP", "TCPFIN", "UDP"])]
    pub set: Option<Vec<u32>>,
    /// List the timeouts (with -L).
    #[arg(long = "timeout")]
    pub timeout: bool,
    /// List connection entries (with -L).
    #[arg(short = 'c', long = "connection")]
    pub connection: bool,
    /// Scheduler flags: mh-fallback, mh-port, sh-fallback, sh-port (and
    /// ipvsadm's flag-1, flag-2, flag-3).
    #[arg(short = 'b', long = "sched-flags")]
    pub sched_flags: Option<String>,
    /// Real server: host[:port] (the port is forced to the virtual port in DR).
    #[arg(short = 'r', long = "real-server", value_name = "SERVER-ADDRESS")]
    pub real: Option<String>,
    /// Direct routing (the default and only forwarding method).
    #[arg(short = 'g', long = "gatewaying")]
    pub gatewaying: bool,
    /// Tunnelling: not supported by this director.
    #[arg(short = 'i', long = "ipip")]
    pub ipip: bool,
    /// ipvsadm's tunnel options (with -i): parsed, then refused with -i.
    #[arg(long = "tun-type", hide = true, value_name = "TYPE")]
    pub tun_type: Option<String>,
    #[arg(long = "tun-port", hide = true, value_name = "PORT")]
    pub tun_port: Option<String>,
    #[arg(long = "tun-nocsum", hide = true)]
    pub tun_nocsum: bool,
    #[arg(long = "tun-csum", hide = true)]
    pub tun_csum: bool,
    #[arg(long = "tun-remcsum", hide = true)]
    pub tun_remcsum: bool,
    /// Listing: tunnel information (no real server here is tunnelled).
    #[arg(long = "tun-info", hide = true)]
    pub tun_info: bool,
    /// Masquerading (NAT): not supported by this director.
    #[arg(short = 'm', long = "masquerading")]
    pub masquerading: bool,
    /// Weight 0..65535 (0 = quiescent), default 1.
    #[arg(short = 'w', long = "weight")]
    pub weight: Option<u32>,
    /// Upper connection threshold: over it no new connections (0 = none).
    #[arg(short = 'x', long = "u-threshold")]
    pub u_threshold: Option<u32>,
    /// Lower connection threshold: new connections again below it (0 = 3/4 of the upper).
    #[arg(short = 'y', long = "l-threshold")]
    pub l_threshold: Option<u32>,
    /// Listing: packet, byte and connection counters.
    #[arg(long)]
    pub stats: bool,
    /// Listing: rates per second.
    #[arg(long)]
    pub rate: bool,
    /// Listing: exact numbers (no K/M/G).
    #[arg(short = 'X', long)]
    pub exact: bool,
    /// Listing: connection thresholds.
    #[arg(long)]
    pub thresholds: bool,
    /// Listing: persistence templates per real server.
    #[arg(long = "persistent-conn")]
    pub persistent_conn: bool,
    /// Listing: the sync daemon's state (none runs: prints nothing).
    #[arg(long)]
    pub daemon: bool,
    /// Listing: services and real servers in the order they were created.
    #[arg(long)]
    pub nosort: bool,
    /// Listing: sorted (the default).
    #[arg(long)]
    pub sort: bool,
    /// Numeric output (addresses and ports are always printed numerically).
    #[arg(short = 'n', long = "numeric")]
    pub numeric: bool,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// Listing: add health state, configured weight and reason columns.
    #[arg(long)]
    pub health: bool,

    /// Control socket of the lbd instance to talk to.
    #[arg(long, env = "LB_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,

    /// Words that are no option (named in the error, as ipvsadm does).
    #[arg(hide = true, num_args = 0.., value_name = "STRAY")]
    pub stray: Vec<String>,
}

impl Cli {
    /// Parses lbadm's command line: ipvsadm options, or one subcommand
    /// (with `--socket` anywhere), never both.
    pub fn parse_args<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::CommandFactory;
        // Built once per thread: building lbadm's ~70 arguments costs more
        // than a parse, and `-R` parses every line of a rules file.
        thread_local! {
            static BUILT: std::cell::RefCell<clap::Command> = std::cell::RefCell::new({
                let mut c = Cli::command();
                c.build();
                c
            });
        }
        BUILT.with(|b| Self::parse_with(&mut b.borrow_mut(), argv))
    }

    fn parse_with<I, T>(cmd: &mut clap::Command, argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{parser::ValueSource, FromArgMatches};
        let m = cmd.try_get_matches_from_mut(argv)?;
        if let Some((sub, _)) = m.subcommand() {
            let ipvsadm_opts: Vec<String> = cmd
                .get_arguments()
                .filter(|a| a.get_id() != "socket")
                .filter(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
                .map(|a| match (a.get_long(), a.get_short()) {
                    (Some(l), _) => format!("--{l}"),
                    (None, Some(c)) => format!("-{c}"),
                    (None, None) => a.get_id().to_string(),
                })
                .collect();
            if !ipvsadm_opts.is_empty() {
                return Err(cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "the subcommand '{sub}' cannot be combined with ipvsadm options ({})",
                        ipvsadm_opts.join(", ")
                    ),
                ));
            }
        }
        Cli::from_arg_matches(&m).map_err(|e| e.format(cmd))
    }
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Set up (or check, or undo) a real server for direct routing:
    /// ARP suppression and the VIP on loopback.
    Realserver {
        #[command(subcommand)]
        action: RsAction,
    },
    /// Show the XDP program's director-wide counters.
    Counters,
    /// What is wrong with this director (ask lbd: program, services with no
    /// usable real server, real servers' MACs, counters that explain
    /// drops, offloads, VIPs) or, with --realserver, with this real server
    /// (VIP on lo, ARP suppression, rp_filter, a listener on VIP:port,
    /// default route). Each finding says how to fix it; exit 1 if any.
    Diagnose {
        /// Diagnose this host as a real server of --vip (no lbd needed).
        #[arg(long, requires = "vip")]
        realserver: bool,
        #[command(flatten)]
        rs: RsCheck,
        /// List the checks that passed too.
        #[arg(short, long)]
        verbose: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Apply a YAML configuration to the running daemon: validated, the
    /// difference applied at once (established connections stay).
    Apply {
        /// The configuration file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the running state as a YAML configuration (lbd --config takes it).
    Export,
    /// Print an argon2 hash of a password read from standard input (one
    /// line), for `console.users[].password_hash`.
    ConsolePassword,
    /// VRRP routers: state, master, priority (in force), last transition;
    /// `release` hands over at once (priority 0) and stays backup until
    /// `resume`.
    Vrrp {
        #[command(subcommand)]
        action: Option<VrrpCmd>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// BGP announcements through BIRD: each VIP announced or why not, the
    /// speaker's sessions; `drain` withdraws (the director keeps
    /// forwarding what still reaches it), `resume` announces again.
    Bgp {
        #[command(subcommand)]
        action: Option<BgpCmd>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Port groups (what fwmark services serve).
    Group {
        #[command(subcommand)]
        action: GroupAction,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Subcommand)]
pub enum GroupAction {
    /// Declare or replace group FWMARK with these members.
    Set {
        fwmark: u32,
        /// A name for the operator.
        #[arg(long, default_value = "")]
        name: String,
        /// TCP members VIP:PORT.
        #[arg(short = 't', long = "tcp-service")]
        tcp: Vec<String>,
        /// UDP members VIP:PORT.
        #[arg(short = 'u', long = "udp-service")]
        udp: Vec<String>,
    },
    /// Remove group FWMARK.
    Del { fwmark: u32 },
    /// List the groups.
    List,
}

#[derive(Debug, Subcommand)]
pub enum VrrpCmd {
    /// List the routers (the default).
    List,
    /// Hand over now (priority 0) and stay backup while another router can
    /// be master.
    Release {
        /// One router (default: all).
        name: Option<String>,
    },
    /// Take part in elections again.
    Resume { name: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum BgpCmd {
    /// List the VIPs and sessions (the default).
    List,
    /// Withdraw VIP (default: every VIP: the whole director), kept across
    /// lbd restarts until `resume`.
    Drain { vip: Option<std::net::IpAddr> },
    /// Announce again what `drain` withdrew (the VIP, or everything).
    Resume { vip: Option<std::net::IpAddr> },
}

#[derive(Debug, Subcommand)]
pub enum RsAction {
    /// Apply ARP suppression, then add the VIP to the loopback device.
    Up(RsArgs),
    /// Remove the VIP, then put the sysctls back as `up` found them once no
    /// VIP it set up remains.
    Down(RsArgs),
    /// Set this host up as a real server of --service (as `up`), then ask
    /// the director's join API to add it (with the service's health check).
    Join(JoinArgs),
    /// Ask the director to drain this host (weight 0) and remove it once
    /// its connections are done (or --drain seconds passed), waiting for
    /// it; then take the VIP off (unless --keep-vip).
    Leave {
        #[command(flatten)]
        join: JoinArgs,
        /// The longest wait for connections to finish, in seconds (the
        /// director caps it at join.max_drain).
        #[arg(long, default_value_t = 300)]
        drain: u32,
        /// Leave the VIP and ARP settings in place.
        #[arg(long)]
        keep_vip: bool,
    },
    /// Report what is missing (exit 1 if anything is); --verbose: every
    /// check of `lbadm diagnose --realserver`.
    Check {
        #[command(flatten)]
        args: RsArgs,
        /// The full diagnosis (as with --port), passed checks listed too.
        #[arg(short, long)]
        verbose: bool,
        /// The service's port: the full diagnosis (rp_filter, default
        /// route, a listener on VIP:PORT).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// The service is UDP.
        #[arg(long, requires = "port")]
        udp: bool,
    },
}

/// Where the director's join API is and how to authenticate to it.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The director's join API (its `join.listen`), HOST:PORT; repeat it
    /// for each director of a pair or an ECMP group (each keeps its own
    /// joined servers).
    #[arg(long, required = true)]
    pub director: Vec<String>,
    /// The virtual service: tcp:VIP:PORT or udp:VIP:PORT.
    #[arg(long, value_parser = crate::join::parse_service)]
    pub service: crate::model::ServiceAddr,
    /// Weight to join with (0..=65535).
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// File with the pre-shared token (or LB_JOIN_TOKEN in the environment).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Speak TLS, verifying the director's certificate with this CA (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// This host's client certificate for mutual TLS (PEM, with --key).
    #[arg(long, requires = "key", requires = "ca")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Device to hold the VIP.
    #[arg(long, default_value = "lo")]
    pub dev: String,
    /// NIC(s) to apply arp_ignore/arp_announce to (default: every non-loopback interface).
    #[arg(long)]
    pub nic: Vec<String>,
    /// Where `up` records what it changed (for `down`).
    #[arg(long, default_value = "/run/lbd")]
    pub state_dir: PathBuf,
}

/// `lbadm diagnose --realserver`'s options.
#[derive(Debug, clap::Args)]
pub struct RsCheck {
    /// The virtual IP address (with --realserver).
    #[arg(long, requires = "realserver")]
    pub vip: Option<IpAddr>,
    /// The service's port: checks that something listens on VIP:PORT.
    #[arg(long, requires = "realserver", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The service is UDP.
    #[arg(long, requires = "port")]
    pub udp: bool,
    /// Device that should hold the VIP.
    #[arg(long, default_value = "lo", requires = "realserver")]
    pub dev: String,
    /// NIC(s) whose ARP and rp_filter settings count (default: every
    /// non-loopback interface).
    #[arg(long, requires = "realserver")]
    pub nic: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RsArgs {
    /// The virtual IP address.
    #[arg(long)]
    pub vip: IpAddr,
    /// Device to hold the VIP.
    #[arg(long, default_value = "lo")]
    pub dev: String,
    /// NIC(s) to apply arp_ignore/arp_announce to (default: every non-loopback interface).
    #[arg(long)]
    pub nic: Vec<String>,
    /// Where `up` records what it changed (one file per network namespace),
    /// for `down` to put it back.
    #[arg(long, default_value = "/run/lbd")]
    pub state_dir: PathBuf,
}
