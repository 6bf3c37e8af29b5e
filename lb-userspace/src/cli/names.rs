//! Host and service names as ipvsadm resolves them (`-t www.example:http`,
//! and names in listings without -n), from the local files: the hosts file
//! (`/etc/hosts`, or `LB_HOSTS_FILE`) and the services file
//! (`/etc/services`, or `LB_SERVICES_FILE`). A host name not in the hosts
//! file goes to the system resolver (getaddrinfo), as gethostbyname does,
//! unless `LB_NO_RESOLVER` is set (the fuzz tests: no DNS query leaves).

use std::{
    net::{IpAddr, ToSocketAddrs},
    path::PathBuf,
};

use crate::model::Protocol;

#[derive(Debug, Default, Clone)]
pub struct Names {
    hosts: Vec<(IpAddr, Vec<String>)>,
    services: Vec<(String, Vec<String>, u16, Protocol)>,
}

fn path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

impl Names {
    /// The system's files (or the ones the environment names), read once
    /// per process and pair of paths (lbadm lives for one command; a `-R`
    /// file of thousands of lines reads them once).
    pub fn system() -> &'static Names {
        type Cache = std::sync::Mutex<Vec<((PathBuf, PathBuf), &'static Names)>>;
        static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
        let key = (
            path("LB_HOSTS_FILE", "/etc/hosts"),
            path("LB_SERVICES_FILE", "/etc/services"),
        );
        let cache = CACHE.get_or_init(Default::default);
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = c.iter().find(|(k, _)| *k == key) {
            return n;
        }
        let hosts = std::fs::read_to_string(&key.0).unwrap_or_default();
        let services = std::fs::read_to_string(&key.1).unwrap_or_default();
        // One per pair of paths a process names: kept for its life.
        let n: &'static Names = Box::leak(Box::new(Names::parse(&hosts, &services)));
        c.push((key, n));
        n
    }

    pub fn parse(hosts: &str, services: &str) -> Names {
        let strip = |l: &str| l.split('#').next().unwrap_or("").to_string();
        let mut n = Names::default();
        for line in hosts.lines().map(strip) {
            let mut w = line.split_whitespace();
            let (Some(a), Some(first)) = (w.next(), w.next()) else {
                continue;
            };
            if let Ok(addr) = a.parse::<IpAddr>() {
                let mut names = vec![first.to_string()];
                names.extend(w.map(str::to_string));
                n.hosts.push((addr, names));
            }
        }
        for line in services.lines().map(strip) {
            let mut w = line.split_whitespace();
            let (Some(name), Some(pp)) = (w.next(), w.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            let proto = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            if let Ok(port) = port.parse::<u16>() {
                n.services.push((
                    name.to_string(),
                    w.map(str::to_string).collect(),
                    port,
                    proto,
                ));
            }
        }
        n
    }

    /// The address of `name`: a literal, the hosts file, then the system
    /// resolver. IPv4 first, as ipvsadm's gethostbyname.
    pub fn host(&self, name: &str) -> Option<IpAddr> {
        if let Ok(a) = name.parse() {
            return Some(a);
        }
        let mut found: Vec<IpAddr> = self
            .hosts
            .iter()
            .filter(|(_, n)| n.iter().any(|x| x == name))
            .map(|(a, _)| *a)
            .collect();
        if found.is_empty() && std::env::var_os("LB_NO_RESOLVER").is_none() {
            found = (name, 0).to_socket_addrs().ok()?.map(|s| s.ip()).collect();
        }
        found.sort_by_key(|a| a.is_ipv6());
        found.first().copied()
    }

    /// The port of service `name` for `proto` (or a number).
    pub fn port(&self, name: &str, proto: Protocol) -> Option<u16> {
        if let Ok(p) = name.parse() {
            return Some(p);
        }
        self.services
            .iter()
            .find(|(n, aliases, _, p)| {
                *p == proto && (n == name || aliases.iter().any(|a| a == name))
            })
            .map(|(_, _, port, _)| *port)
    }

    /// The first name of `addr` in the hosts file.
    pub fn host_of(&self, addr: &IpAddr) -> Option<String> {
        self.hosts
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, n)| n[0].clone())
    }

    /// The name of `port` for `proto` in the services file.
    pub fn service_of(&self, port: u16, proto: Protocol) -> Option<String> {
        self.services
            .iter()
            .find(|(_, _, p, pr)| *p == port && *pr == proto)
            .map(|(n, ..)| n.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str =
        "127.0.0.1 localhost\n192.0.2.100 www.example www # the VIP\n2001:db8::100 www6.example\n";
    const SERVICES: &str =
        "http 80/tcp www # WorldWideWeb\nhttps 443/tcp\ndomain 53/udp\ndomain 53/tcp\n";

    #[test]
    fn names_resolve_from_the_local_files_both_ways() {
        let n = Names::parse(HOSTS, SERVICES);
        assert_eq!(n.host("www.example"), Some("192.0.2.100".parse().unwrap()));
        assert_eq!(n.host("www"), Some("192.0.2.100".parse().unwrap()), "alias");
        assert_eq!(
            n.host("www6.example"),
            Some("2001:db8::100".parse().unwrap())
        );
        assert_eq!(n.host("192.0.2.7"), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(n.port("http", Protocol::Tcp), Some(80));
        assert_eq!(n.port("www", Protocol::Tcp), Some(80), "alias");
        assert_eq!(n.port("http", Protocol::Udp), None);
        assert_eq!(n.port("domain", Protocol::Udp), Some(53));
        assert_eq!(n.port("8080", Protocol::Tcp), Some(8080));
        assert_eq!(
            n.host_of(&"192.0.2.100".parse().unwrap()).as_deref(),
            Some("www.example")
        );
        assert_eq!(n.service_of(443, Protocol::Tcp).as_deref(), Some("https"));
        assert_eq!(n.service_of(443, Protocol::Udp), None);
    }
}
