//! ipvsadm's command-line syntax turned into control requests (and `-R`
//! rule lines into a batch).

use std::net::{IpAddr, Ipv6Addr};

use super::{
    args::{Cli, GroupAction},
    format::Fmt,
    names::Names,
};
use crate::{
    control::Request,
    model::{
        Forward, PortGroup, Protocol, RealSpec, SchedFlags, Scheduler, ServiceAddr, ServiceSpec,
    },
};

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Action {
    Send(Request),
    /// A listing (of one service when given), in format `Fmt`.
    List(Option<ServiceAddr>, Fmt),
    ListConns,
    /// -S: the rules.
    Save(Fmt),
    /// -R: rules from stdin.
    Restore,
    /// --daemon: no sync daemon runs, nothing to print.
    ListDaemon,
    Version,
}

/// The requests of ipvsadm rule lines (-R input), each with its line
/// number: each line parsed as a command line; the first bad one is named
/// with its line number. As ipvsadm, the word `ipvsadm` is dropped wherever
/// it stands (and a path to it at the start of a line); blank lines are
/// skipped; a word starting with `#` starts a comment (ipvsadm itself needs
/// the ipvsadm-restore script for those).
pub fn restore_requests(text: &str) -> Result<Vec<(usize, Request)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let words: Vec<&str> = line
            .split_whitespace()
            .take_while(|w| !w.starts_with('#'))
            .enumerate()
            .filter(|(j, w)| *w != "ipvsadm" && !(*j == 0 && w.ends_with("/ipvsadm")))
            .map(|(_, w)| w)
            .collect();
        if words.is_empty() {
            continue;
        }
        let argv = std::iter::once("lbadm").chain(words.iter().copied());
        let cli = Cli::parse_args(argv).map_err(|e| {
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string();
            format!("line {n}: {first}")
        })?;
        if cli.sub.is_some() {
            return Err(format!("line {n}: not a rule: {}", words.join(" ")));
        }
        match cli.action() {
            Ok(Action::Send(r)) if is_table_edit(&r) => out.push((n, r)),
            Ok(_) => return Err(format!("line {n}: not a rule: {}", words.join(" "))),
            Err(e) => return Err(format!("line {n}: {e}")),
        }
    }
    Ok(out)
}

fn is_table_edit(r: &Request) -> bool {
    matches!(
        r,
        Request::AddService { .. }
            | Request::EditService { .. }
            | Request::DelService { .. }
            | Request::Clear
            | Request::AddReal { .. }
            | Request::EditReal { .. }
            | Request::DelReal { .. }
    )
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

/// Parses `host[:port]`, `[v6]:port` or bare `v6`; port absent = 0. Host
/// and port may be names (hosts and services files, as ipvsadm).
pub fn parse_addr_port(s: &str) -> Result<(IpAddr, u16), String> {
    parse_addr_port_names(s, Protocol::Tcp, Names::system())
}

pub fn parse_addr_port_names(
    s: &str,
    proto: Protocol,
    names: &Names,
) -> Result<(IpAddr, u16), String> {
    let bad = || format!("invalid address '{s}'");
    let port_of = |p: &str| {
        names.port(p, proto).ok_or_else(|| {
            format!("invalid port in '{s}' (not a number nor a {proto} service name)")
        })
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (a, tail) = rest.split_once(']').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let port = match tail.strip_prefix(':') {
            Some(p) => port_of(p)?,
            None if tail.is_empty() => 0,
            None => return Err(bad()),
        };
        return Ok((IpAddr::V6(addr), port));
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok((a, 0));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, port_of(p)?),
        None => (s, 0),
    };
    if let Ok(a) = host.parse::<IpAddr>() {
        return Ok((a, port));
    }
    // A dotted-quad that does not parse is a bad address, not a name.
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let addr = names
        .host(host)
        .ok_or_else(|| format!("invalid address '{s}' (host '{host}' does not resolve)"))?;
    Ok((addr, port))
}

fn role_of(s: &str) -> Option<crate::sync::Role> {
    match s {
        "master" => Some(crate::sync::Role::Master),
        "backup" => Some(crate::sync::Role::Backup),
        _ => None,
    }
}

impl Cli {
    /// A sync daemon's settings from ipvsadm's options (one role).
    fn sync_cfg(&self) -> Result<crate::sync::SyncCfg, String> {
        let mut c = crate::sync::SyncCfg {
            interface: self.mcast_interface.clone(),
            syncid: self.syncid.unwrap_or(0),
            ..Default::default()
        };
        if let Some(l) = self.sync_maxlen {
            c.maxlen = l;
        }
        if let Some(g) = &self.mcast_group {
            let a: IpAddr = g
                .parse()
                .map_err(|_| format!("invalid mcast-group `{g}'"))?;
            if !a.is_multicast() {
                return Err(format!("invalid mcast-group `{g}'"));
            }
            c.group = a;
        }
        if let Some(p) = self.mcast_port {
            c.port = p;
        }
        if let Some(t) = self.mcast_ttl {
            c.ttl = t;
        }
        c.check().map_err(|(f, m)| format!("{f}: {m}"))?;
        Ok(c)
    }

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
        let (protocol, s) = match (&self.tcp, &self.udp, self.fwmark) {
            (Some(t), None, None) => (Protocol::Tcp, t),
            (None, Some(u), None) => (Protocol::Udp, u),
            (None, None, Some(0)) => return Err("-f: fwmark must be greater than 0".into()),
            (None, None, Some(m)) => return Ok(ServiceAddr::fwmark(m, self.ipv6)),
            (None, None, None) => {
                return Err("a service is required: -t|-u VIP[:PORT] or -f FWMARK".into())
            }
            _ => return Err("only one of -t, -u and -f may be given".into()),
        };
        let (address, port) = parse_addr_port_names(s, protocol, Names::system())?;
        Ok(ServiceAddr::new(protocol, address, port))
    }

    /// The listing options.
    pub fn fmt(&self) -> Fmt {
        Fmt {
            numeric: self.numeric,
            stats: self.stats,
            rate: self.rate,
            thresholds: self.thresholds,
            persistent_conn: self.persistent_conn,
            exact: self.exact,
            nosort: self.nosort && !self.sort,
            health: self.health,
        }
    }

    fn service_spec(&self) -> Result<ServiceSpec, String> {
        let addr = self.service()?;
        let scheduler: Scheduler = match &self.scheduler {
            Some(s) => s.parse().map_err(|e| format!("-s: {e}"))?,
            None => Scheduler::Wlc,
        };
        let flags = match &self.sched_flags {
            Some(f) => {
                let (flags, ignored) =
                    SchedFlags::parse_ipvsadm(f, scheduler).map_err(|e| format!("-b: {e}"))?;
                for g in ignored {
                    eprintln!(
                        "lbadm: -b {g}: accepted and ignored: no {} scheduler flag of this director uses it",
                        scheduler
                    );
                }
                flags
            }
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
        let proto = if self.udp.is_some() {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let (address, port) = parse_addr_port_names(r, proto, Names::system())?;
        let weight = self.weight.unwrap_or(1);
        if weight > crate::model::MAX_WEIGHT {
            return Err(format!("-w: weight {weight} out of range (0..=65535)"));
        }
        let (u, l) = (self.u_threshold.unwrap_or(0), self.l_threshold.unwrap_or(0));
        if u != 0 && l > u {
            return Err(format!(
                "-y: lower threshold {l} is above the upper threshold {u} (-x)"
            ));
        }
        Ok(RealSpec {
            u_threshold: u,
            l_threshold: l,
            address,
            port,
            weight,
            forward: Forward::Route,
        })
    }

    /// The action for a parsed command line (no subcommand).
    pub fn action(&self) -> Result<Action, String> {
        if let Some(w) = self.stray.first() {
            return Err(format!("unexpected argument {w}"));
        }
        if self.version {
            return Ok(Action::Version);
        }
        let tunnel = self.tun_type.is_some()
            || self.tun_port.is_some()
            || self.tun_nocsum
            || self.tun_csum
            || self.tun_remcsum;
        if tunnel && !self.ipip {
            return Err("tunnel options (--tun-*) conflict with the forward method: they go with -i, which this director does not support (direct routing only, -g)".into());
        }
        if self.masquerading {
            return Err("-m (masquerading/NAT) is not supported: this director forwards by direct routing only (-g)".into());
        }
        if self.ipip {
            return Err("-i (tunnelling) is not supported: this director forwards by direct routing only (-g)".into());
        }
        if let Some(state) = &self.start_daemon {
            let role = role_of(state).ok_or("illegal start-daemon parameter specified")?;
            return Ok(Action::Send(Request::StartDaemon {
                role,
                cfg: self.sync_cfg()?,
            }));
        }
        if let Some(state) = &self.stop_daemon {
            let role = role_of(state).ok_or("illegal stop_daemon specified")?;
            return Ok(Action::Send(Request::StopDaemon { role }));
        }
        Ok(if self.save {
            Action::Save(self.fmt())
        } else if self.restore {
            Action::Restore
        } else if self.zero {
            let service = if self.tcp.is_some() || self.udp.is_some() || self.fwmark.is_some() {
                Some(self.service()?)
            } else {
                None
            };
            Action::Send(Request::Zero { service })
        } else if self.add_service {
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
        } else if self.daemon {
            Action::ListDaemon
        } else {
            // -L, or no command at all (ipvsadm lists then); one service
            // with -t/-u/-f.
            let one = if self.tcp.is_some() || self.udp.is_some() || self.fwmark.is_some() {
                Some(self.service()?)
            } else {
                None
            };
            Action::List(one, self.fmt())
        })
    }
}

impl GroupAction {
    /// The request of `lbadm group set|del`.
    pub fn request(&self) -> Result<Option<Request>, String> {
        Ok(match self {
            GroupAction::Set {
                fwmark,
                name,
                tcp,
                udp,
            } => {
                let names = Names::system();
                let mut members = Vec::new();
                for (proto, list) in [(Protocol::Tcp, tcp), (Protocol::Udp, udp)] {
                    for m in list {
                        let (a, p) = parse_addr_port_names(m, proto, names)?;
                        members.push(ServiceAddr::new(proto, a, p));
                    }
                }
                if members.is_empty() {
                    return Err("a port group needs members: -t|-u VIP:PORT ...".into());
                }
                Some(Request::SetGroup {
                    fwmark: *fwmark,
                    group: PortGroup {
                        name: name.clone(),
                        members,
                    },
                })
            }
            GroupAction::Del { fwmark } => Some(Request::DelGroup { fwmark: *fwmark }),
            GroupAction::List => None,
        })
    }
}

#[cfg(test)]
#[path = "ipvsadm_tests.rs"]
mod tests;
