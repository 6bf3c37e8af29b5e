//! `lbadm diagnose` on the director: the facts lbd knows or reads from the
//! kernel, judged by [`crate::diagnose::director`].

use std::{collections::BTreeMap, time::Duration};

use super::Daemon;
use crate::diagnose::{director, Finding};

/// `ethtool -k IFACE`: each feature on or off (empty without ethtool).
async fn features(iface: &str) -> BTreeMap<String, bool> {
    let run = tokio::process::Command::new("ethtool")
        .args(["-k", iface])
        .output();
    let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(2), run).await else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, v) = l.trim().split_once(": ")?;
            Some((name.to_string(), v.starts_with("on")))
        })
        .collect()
}

impl Daemon {
    pub(super) async fn diagnose(&mut self) -> Vec<Finding> {
        let listing = self.listing(true);
        let wanted = self.director.inputs().addresses();
        let iface = self.resolver.iface.clone();
        let mut facts = director::DirectorFacts {
            interface: iface.clone(),
            xdp: match self.resolver.xdp().await {
                Ok(x) => x.map(|(m, id)| (m.to_string(), id)),
                Err(_) => None,
            },
            own_prog: self.director.maps_mut().program_id(),
            listing,
            neighbours: self
                .resolver
                .neighbour_info(&wanted)
                .await
                .unwrap_or_default(),
            counters: self.director.counters(),
            counters_before: self
                .counter_history
                .front()
                .map(|(t, c)| (t.elapsed().as_secs().max(1), c.clone())),
            features: features(&iface).await,
            vlans: !self.director.inputs().vlans.is_empty(),
            ..Default::default()
        };
        if let Ok(all) = self.resolver.all_addresses().await {
            for (idx, a, len) in all {
                if idx == self.resolver.ifindex {
                    facts.nic_addresses.push((a, len));
                }
                facts.local_addresses.insert(a);
            }
        }
        for r in &self.base.vrrp {
            facts
                .managed_vips
                .extend(r.virtual_addresses.iter().copied());
        }
        if self.base.bgp.is_some() {
            facts
                .managed_vips
                .extend(facts.listing.services.iter().map(|s| s.spec.addr.address));
        }
        director::judge(&facts)
    }
}
