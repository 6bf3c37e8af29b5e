//! ipvsadm's command-line syntax, turned into control requests.
//!
//! `lbadm -A -t 192.0.2.100:80 -s wrr`, `lbadm -a -t ... -r 192.0.2.11 -g -w 3`,
//! `-E`, `-e`, `-D`, `-d`, `-C`, `-L -n` (and no arguments at all = list), as
//! ipvsadm 1.31 spells them, plus the `realserver` helper subcommands.

use std::{
    net::{IpAddr, Ipv6Addr},
    path::PathBuf,
};

use clap::{ArgGroup, Parser, Subcommand};

use crate::{
    control::{Request, DEFAULT_SOCKET},
    model::{Forward, Protocol, RealSpec, SchedFlags, Scheduler, ServiceAddr, ServiceSpec},
};

/// ipvsadm-compatible administration of the XDP director (lbd).
#[derive(Debug, Parser)]
#[command(
    name = "lbadm",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    group(ArgGroup::new("command").args([
        "add_service", "edit_service", "delete_service", "clear",
        "add_server", "edit_server", "delete_server", "list", "set"
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

    /// TCP virtual service: host[:port], IPv6 as [addr]:port.
    #[arg(short = 't', long = "tcp-service", value_name = "SERVICE-ADDRESS")]
    pub tcp: Option<String>,
    /// UDP virtual service.
    #[arg(short = 'u', long = "udp-service", value_name = "SERVICE-ADDRESS")]
    pub udp: Option<String>,
    /// Scheduler: rr, wrr, mh, lc, wlc, sed, nq, fo, ovf, sh, dh, twos (default wlc, as ipvsadm).
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
    /// Scheduler flags: mh-fallback, mh-port, sh-fallback, sh-port.
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
    /// Masquerading (NAT): not supported by this director.
    #[arg(short = 'm', long = "masquerading")]
    pub masquerading: bool,
    /// Weight 0..65535 (0 = quiescent), default 1.
    #[arg(short = 'w', long = "weight")]
    pub weight: Option<u32>,
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
}

#[derive(Debug, Subcommand)]
pub enum RsAction {
    /// Apply ARP suppression, then add the VIP to the loopback device.
    Up(RsArgs),
    /// Remove the VIP, then revert ARP suppression once no VIP remains.
    Down(RsArgs),
    /// Report what is missing (exit 1 if anything is).
    Check(RsArgs),
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
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Action {
    Send(Request),
    List,
    ListConns,
    Version,
}

/// Parses ipvsadm's -M: a dotted IPv4 netmask or a prefix length.
pub fn parse_netmask(s: &str, v4: bool) -> Result<u8, String> {
    if let Ok(n) = s.parse::<u8>() {
        return Ok(n);
    }
    if v4 {
        if let Ok(m) = s.parse::<std::net::Ipv4Addr>() {
            let bits = u32::from(m);
            let n = bits.leading_ones();
            if bits.checked_shl(n).unwrap_or(0) == 0 {
                return Ok(n as u8);
            }
        }
    }
    Err(format!("-M: invalid netmask '{s}'"))
}

/// Parses `host[:port]`, `[v6]:port` or bare `v6`; port absent = 0.
pub fn parse_addr_port(s: &str) -> Result<(IpAddr, u16), String> {
    let bad = || format!("invalid address '{s}'");
    if let Some(rest) = s.strip_prefix('[') {
        let (a, tail) = rest.split_once(']').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("invalid port in '{s}'"))?,
            None if tail.is_empty() => 0,
            None => return Err(bad()),
        };
        return Ok((IpAddr::V6(addr), port));
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok((a, 0));
    }
    let (a, p) = s.rsplit_once(':').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let port = p.parse().map_err(|_| format!("invalid port in '{s}'"))?;
    Ok((addr, port))
}

impl Cli {
    /// -o / --ops.
    pub fn one_packet(&self) -> Result<bool, String> {
        match self.o.as_deref() {
            None => Ok(self.ops),
            Some("ops") => Ok(true),
            Some("json") => Ok(self.ops),
            Some(other) => Err(format!("-o: unexpected '{other}' (-o alone = one-packet scheduling, -o json = JSON listing)")),
        }
    }

    /// JSON output for listings (-o json, --json).
    pub fn json_output(&self) -> bool {
        self.json || self.o.as_deref() == Some("json")
    }

    fn service(&self) -> Result<ServiceAddr, String> {
        let (protocol, s) = match (&self.tcp, &self.udp) {
            (Some(t), None) => (Protocol::Tcp, t),
            (None, Some(u)) => (Protocol::Udp, u),
            (None, None) => return Err("a service is required: -t|-u VIP[:PORT]".into()),
            (Some(_), Some(_)) => return Err("only one of -t and -u may be given".into()),
        };
        let (address, port) = parse_addr_port(s)?;
        Ok(ServiceAddr {
            fwmark: 0,
            protocol,
            address,
            port,
        })
    }

    fn service_spec(&self) -> Result<ServiceSpec, String> {
        let addr = self.service()?;
        let scheduler: Scheduler = match &self.scheduler {
            Some(s) => s.parse().map_err(|e| format!("-s: {e}"))?,
            None => Scheduler::Wlc,
        };
        let flags = match &self.sched_flags {
            Some(f) => SchedFlags::parse(f).map_err(|e| format!("-b: {e}"))?,
            None => SchedFlags::default(),
        };
        let spec = ServiceSpec {
            addr,
            scheduler,
            flags,
            persistent: self.persistent,
            netmask: match &self.netmask {
                Some(m) => Some(parse_netmask(m, addr.address.is_ipv4())?),
                None => None,
            },
            one_packet: self.one_packet()?,
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    fn real_spec(&self) -> Result<RealSpec, String> {
        let r = self
            .real
            .as_deref()
            .ok_or("a real server is required: -r SERVER[:PORT]")?;
        let (address, port) = parse_addr_port(r)?;
        let weight = self.weight.unwrap_or(1);
        if weight > crate::model::MAX_WEIGHT {
            return Err(format!("-w: weight {weight} out of range (0..=65535)"));
        }
        Ok(RealSpec {
            u_threshold: 0,
            l_threshold: 0,
            address,
            port,
            weight,
            forward: Forward::Route,
        })
    }

    /// The action for a parsed command line (no subcommand).
    pub fn action(&self) -> Result<Action, String> {
        if self.version {
            return Ok(Action::Version);
        }
        if self.masquerading {
            return Err("-m (masquerading/NAT) is not supported: this director forwards by direct routing only (-g)".into());
        }
        if self.ipip {
            return Err("-i (tunnelling) is not supported: this director forwards by direct routing only (-g)".into());
        }
        Ok(if self.add_service {
            Action::Send(Request::AddService {
                service: self.service_spec()?,
            })
        } else if self.edit_service {
            Action::Send(Request::EditService {
                service: self.service_spec()?,
            })
        } else if self.delete_service {
            Action::Send(Request::DelService {
                service: self.service()?,
            })
        } else if self.clear {
            Action::Send(Request::Clear)
        } else if self.add_server {
            Action::Send(Request::AddReal {
                service: self.service()?,
                real: self.real_spec()?,
            })
        } else if self.edit_server {
            Action::Send(Request::EditReal {
                service: self.service()?,
                real: self.real_spec()?,
            })
        } else if self.delete_server {
            Action::Send(Request::DelReal {
                service: self.service()?,
                address: self.real_spec()?.address,
            })
        } else if let Some(v) = &self.set {
            Action::Send(Request::SetTimeouts {
                tcp: v[0],
                tcpfin: v[1],
                udp: v[2],
            })
        } else if self.timeout {
            Action::Send(Request::GetTimeouts)
        } else if self.connection {
            Action::ListConns
        } else {
            // -L, or no command at all (ipvsadm lists then).
            Action::List
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(args: &str) -> Result<Action, String> {
        let argv = std::iter::once("lbadm").chain(args.split_whitespace());
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .action()
    }

    #[test]
    fn ipvsadm_command_lines() {
        let a = action("-A -t 192.0.2.100:80 -s rr").unwrap();
        let Action::Send(Request::AddService { service }) = a else {
            panic!("{a:?}")
        };
        assert_eq!(service.addr.to_string(), "tcp 192.0.2.100:80");
        assert_eq!(service.scheduler, Scheduler::Rr);
        assert_eq!(service.persistent, None);

        let a = action("-A -u [2001:db8::100]:53 -s mh -b mh-port,mh-fallback").unwrap();
        let Action::Send(Request::AddService { service }) = a else {
            panic!("{a:?}")
        };
        assert_eq!(service.addr.to_string(), "udp [2001:db8::100]:53");
        assert!(service.flags.mh_port && service.flags.mh_fallback);

        let a = action("-A -t 192.0.2.100:0 -s wrr -p").unwrap();
        let Action::Send(Request::AddService { service }) = a else {
            panic!("{a:?}")
        };
        assert_eq!(service.persistent, Some(360));
        let a = action("-A -t 192.0.2.100 -p 600").unwrap();
        let Action::Send(Request::AddService { service }) = a else {
            panic!("{a:?}")
        };
        assert_eq!((service.addr.port, service.persistent), (0, Some(600)));

        let a = action("-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 3").unwrap();
        let Action::Send(Request::AddReal { real, .. }) = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            (real.address.to_string(), real.weight),
            ("192.0.2.11".into(), 3)
        );
        let a = action("-a -t 192.0.2.100:80 -r 192.0.2.12").unwrap();
        let Action::Send(Request::AddReal { real, .. }) = a else {
            panic!("{a:?}")
        };
        assert_eq!(real.weight, 1);

        assert!(matches!(
            action("-e -t 192.0.2.100:80 -r 192.0.2.12 -w 0"),
            Ok(Action::Send(Request::EditReal { .. }))
        ));
        assert!(matches!(
            action("-d -t 192.0.2.100:80 -r 192.0.2.12"),
            Ok(Action::Send(Request::DelReal { .. }))
        ));
        assert!(matches!(
            action("-D -u 192.0.2.100:53"),
            Ok(Action::Send(Request::DelService { .. }))
        ));
        assert_eq!(action("-C").unwrap(), Action::Send(Request::Clear));
        assert_eq!(action("-Ln").unwrap(), Action::List);
        assert_eq!(action("-Lnc").unwrap(), Action::ListConns);
        assert_eq!(
            action("--set 3600 60 0").unwrap(),
            Action::Send(Request::SetTimeouts {
                tcp: 3600,
                tcpfin: 60,
                udp: 0
            })
        );
        assert_eq!(
            action("-L --timeout").unwrap(),
            Action::Send(Request::GetTimeouts)
        );
        assert!(action("--set 1 2").is_err());
        let a = action("-A -u 192.0.2.100:53 -s rr -p 60 -M 255.255.255.0 -o").unwrap();
        let Action::Send(Request::AddService { service }) = a else {
            panic!("{a:?}")
        };
        assert_eq!((service.netmask, service.one_packet), (Some(24), true));
        assert!(action("-A -t 192.0.2.100:80 -o")
            .unwrap_err()
            .contains("UDP"));
        assert!(action("-A -t 192.0.2.100:80 -p -M 255.0.255.0")
            .unwrap_err()
            .contains("-M"));
        assert!(action("-A -t [2001:db8::1]:80 -p -M 64").is_ok());
        assert_eq!(action("-l -n").unwrap(), Action::List);
        assert_eq!(action("").unwrap(), Action::List);
    }

    #[test]
    fn bad_command_lines_name_the_argument() {
        let e = action("-a -t 192.0.2.100:80 -r 192.0.2.11 -m").unwrap_err();
        assert!(
            e.starts_with("-m (masquerading/NAT) is not supported"),
            "{e}"
        );
        assert!(action("-a -t 192.0.2.100:80 -r 192.0.2.11 -i")
            .unwrap_err()
            .starts_with("-i"));
        assert!(action("-A -t 192.0.2.100:80 -s wlcx")
            .unwrap_err()
            .contains("-s: unknown scheduler 'wlcx'"));
        assert!(action("-a -t 192.0.2.100:80 -r 192.0.2.11 -w 70000")
            .unwrap_err()
            .contains("-w: weight 70000"));
        assert!(action("-A -t 192.0.2.300:80")
            .unwrap_err()
            .contains("invalid address '192.0.2.300:80'"));
        assert!(action("-A -t 192.0.2.1:99999")
            .unwrap_err()
            .contains("invalid port"));
        assert!(action("-A -t 192.0.2.100:0")
            .unwrap_err()
            .contains("port 0 is only allowed"));
        assert!(action("-A -s rr").unwrap_err().contains("-t|-u"));
        assert!(action("-a -t 192.0.2.100:80").unwrap_err().contains("-r"));
        // Two commands at once are refused by the parser.
        assert!(action("-A -D -t 192.0.2.100:80").is_err());
    }
}
