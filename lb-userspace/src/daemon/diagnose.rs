//! `lbadm diagnose` on the director: the facts lbd knows or reads from the
//! kernel, judged by [`crate::diagnose::director`].

use std::{collections::BTreeMap, time::Duration};

use super::Daemon;
use crate::diagnose::{director, Finding};

/// `ethtool -k IFACE`: each feature on or off (None without ethtool).
async fn features(iface: &str) -> Option<BTreeMap<String, bool>> {
    let run = tokio::process::Command::new("ethtool")
        .args(["-k", iface])
        .output();
    let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(2), run).await else {
        return None;
    };
    if !out.status.success() {
        return None;
    }
    let f = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, v) = l.trim().split_once(": ")?;
            Some((name.to_string(), v.starts_with("on")))
        })
        .collect();
    Some(f)
}

impl Daemon {
    /// `lbadm diagnose`: what the daemon knows is taken now (no walk of
    /// the connection table); what the kernel says (netlink dumps,
    /// ethtool) is read by the returned future, off the daemon loop.
    pub(super) fn diagnose_job(
        &mut self,
    ) -> impl std::future::Future<Output = Vec<Finding>> + Send + 'static {
        let listing = self.listing(false);
        let wanted = self.director.inputs().addresses();
        let resolver = self.resolver.clone();
        let mut facts = director::DirectorFacts {
            interface: resolver.iface.clone(),
            own_prog: self.director.maps_mut().program_id(),
            listing,
            counters: self.director.counters(),
            counters_before: self
                .counter_history
                .front()
                .map(|(t, c)| (t.elapsed().as_secs().max(1), c.clone())),
            vlans: !self.director.inputs().vlans.is_empty(),
            ..Default::default()
        };
        for r in &self.base.vrrp {
            facts
                .managed_vips
                .extend(r.virtual_addresses.iter().copied());
        }
        if let Some(b) = &self.base.bgp {
            facts
                .managed_vips
                .extend(b.announce.iter().map(|a| a.address));
        }
        async move {
            facts.xdp = match resolver.xdp().await {
                Ok(x) => x.map(|(m, id)| (m.to_string(), id)),
                Err(_) => None,
            };
            facts.neighbours = resolver.neighbour_info(&wanted).await.unwrap_or_default();
            facts.features = features(&resolver.iface).await;
            if let Ok(all) = resolver.all_addresses().await {
                for (idx, a, len) in all {
                    if idx == resolver.ifindex {
                        facts.nic_addresses.push((a, len));
                    }
                    facts.local_addresses.insert(a);
                }
            }
            director::judge(&facts)
        }
    }
}
