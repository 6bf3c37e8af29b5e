//! Starting lbd: everything is validated before anything is touched; the
//! pinned maps are loaded (or created) and recovered; the configuration goes
//! through the same path as a reload; then the program is attached (or
//! swapped into the pinned link).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use tracing::info;

use super::{neigh::Resolver, Daemon};
use crate::{
    config::Config,
    dataplane::{instance_dir, AttachMode, Dataplane, InstanceLock},
    director::Director,
    health::{HealthEvent, Supervisor},
};

/// How lbd was asked to run.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub interface: String,
    pub instance: String,
    pub bpffs: PathBuf,
    pub mode: AttachMode,
    pub config_path: Option<PathBuf>,
}

#[cfg(doc)]
use crate::dataplane::lock_instance;

/// Loads, recovers, applies `config` and attaches, holding the instance's
/// `lock` (see [`lock_instance`]). The returned daemon is ready to `run`.
pub async fn start(opts: &StartOptions, config: Config, lock: InstanceLock) -> Result<Daemon> {
    let file = opts
        .config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // Validated whole before anything is touched.
    config.table(&file)?;
    let resolver = Resolver::new(&opts.interface)
        .await
        .with_context(|| format!("interface {}", opts.interface))?;
    let own_mac = resolver.own_mac().await?;
    let dir = instance_dir(&opts.bpffs, &opts.instance);
    let dp = Dataplane::load(&dir, &config.limits)
        .with_context(|| format!("loading the XDP program (pins in {})", dir.display()))?;
    let director = Director::recover(dp)?;
    let (events_tx, health_events) = mpsc::channel::<HealthEvent>(1024);
    let mut daemon = Daemon {
        director,
        resolver,
        own_mac,
        config_path: opts.config_path.clone(),
        base: Config {
            limits: config.limits.clone(),
            ..Config::default()
        },
        checks: Vec::new(),
        supervisor: Supervisor::new(events_tx),
        health_events,
        _lock: lock,
    };
    daemon
        .apply_config(config, &file, false)
        .await
        .context("applying the configuration")?;
    let attached = daemon
        .director
        .maps_mut()
        .attach(&opts.interface, opts.mode)?;
    info!(
        iface = opts.interface,
        instance = opts.instance,
        ?attached,
        "lbd running"
    );
    Ok(daemon)
}
