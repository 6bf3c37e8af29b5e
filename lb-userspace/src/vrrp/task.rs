//! The task of one virtual router: its socket, its timers, its machine,
//! and what becoming master or backup means for the director (asked of the
//! daemon through [`Event`]s, so that the data plane is active before the
//! VIPs are announced, and the VIPs are gone before it stands by).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::sleep_until,
};
use tracing::{info, warn};

use super::{
    config::VrrpCfg,
    io::{announcement, send_frame, VrrpSocket},
    machine::{Action, Machine, Params, State},
    packet::{decode, encode, Advert, GROUP_V4, GROUP_V6},
    VrrpView,
};
use crate::{
    health::{probe, CheckKind, CheckSpec},
    netif,
};

/// What the daemon tells a router.
#[derive(Debug)]
pub enum Cmd {
    /// Answered once the router has acted on it.
    Release(oneshot::Sender<()>),
    Resume(oneshot::Sender<()>),
    /// Virtual services on the router's VIPs whose quorum is lost.
    QuorumLost(usize),
    /// lbd stops: hold for that long (a restart) or hand over; `done`
    /// once sent, with whether the router was master.
    Shutdown {
        hold: Option<Duration>,
        done: oneshot::Sender<bool>,
    },
}

/// What a router asks of the daemon.
#[derive(Debug)]
pub enum Event {
    /// Make the data plane serve `vips`; answer whether it does.
    Master {
        vips: Vec<IpAddr>,
        done: oneshot::Sender<bool>,
    },
    /// The data plane stands by for `vips`.
    Backup { vips: Vec<IpAddr> },
    /// The state changed (for the restart record).
    Changed { name: String, state: State },
}

/// The daemon's handle on a running router.
pub struct Handle {
    pub name: String,
    pub vips: Vec<IpAddr>,
    pub cmds: mpsc::Sender<Cmd>,
    pub status: watch::Receiver<VrrpView>,
}

struct Router {
    cfg: VrrpCfg,
    iface: String,
    ifindex: u32,
    mac: [u8; 6],
    src: IpAddr,
    m: Machine,
    sock: VrrpSocket,
    events: mpsc::Sender<Event>,
    status: watch::Sender<VrrpView>,
    view: VrrpView,
    netlink: rtnetlink::Handle,
    quorum_lost: usize,
    failed_checks: BTreeMap<usize, bool>,
    down_ifaces: BTreeMap<String, bool>,
    /// Waiting for the daemon to make the data plane active (adverts keep
    /// going meanwhile); the VIPs are added when it answers.
    activating: Option<oneshot::Receiver<bool>>,
    /// The link state last read (an error reading it changes nothing).
    link_up: bool,
    garp_left: u32,
    garp_at: Option<Instant>,
    garp_second_at: Option<Instant>,
    garp_refresh_at: Option<Instant>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The source address of adverts: configured, else the interface's first
/// IPv4 address that is no VIP, or its link-local IPv6 address.
async fn source(h: &rtnetlink::Handle, idx: u32, cfg: &VrrpCfg) -> anyhow::Result<IpAddr> {
    if let Some(s) = cfg.source {
        return Ok(s);
    }
    let v4 = cfg.family_v4();
    netif::addresses(h, idx)
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .find(|a| {
            !cfg.virtual_addresses.contains(a)
                && match a {
                    IpAddr::V4(_) => v4,
                    IpAddr::V6(x) => !v4 && (x.segments()[0] & 0xffc0) == 0xfe80,
                }
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "vrrp {}: the interface has no {} address to send adverts from (give `source`)",
                cfg.name,
                if v4 { "IPv4" } else { "link-local IPv6" }
            )
        })
}

/// Starts router `cfg` on `iface`; `resume_master`: it was master just
/// before this lbd started (a restart).
pub async fn start(
    cfg: VrrpCfg,
    iface: &str,
    resume_master: bool,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<Handle> {
    let netlink = netif::netlink().await?;
    let ifindex = netif::ifindex(&netlink, iface).await?;
    // Announcements carry the MAC of the router's own interface.
    let mac = netif::mac(&netlink, ifindex).await?;
    let src = source(&netlink, ifindex, &cfg).await?;
    let sock = VrrpSocket::open(
        iface,
        ifindex,
        cfg.family_v4(),
        cfg.unicast_peers.is_empty(),
    )
    .map_err(|e| anyhow::anyhow!("vrrp {}: raw socket on {iface}: {e}", cfg.name))?;
    let params = Params {
        version: cfg.version,
        vrid: cfg.virtual_router_id,
        priority: cfg.priority,
        interval_cs: cfg.advert_int,
        preempt: cfg.preempt,
        preempt_delay: Duration::from_secs_f64(cfg.preempt_delay),
        src,
    };
    let now = Instant::now();
    let (m, acts) = Machine::new(params, now, resume_master);
    let view = VrrpView {
        name: cfg.name.clone(),
        interface: iface.to_string(),
        virtual_router_id: cfg.virtual_router_id,
        version: cfg.version,
        state: m.state,
        priority: cfg.priority,
        effective_priority: m.effective,
        master: None,
        since_unix: unix_now(),
        transitions: 0,
        adverts_sent: 0,
        adverts_received: 0,
        refused: BTreeMap::new(),
        released: false,
        virtual_addresses: cfg.virtual_addresses.clone(),
        advert_int: cfg.advert_int,
        source: src,
        master_down_ms: m.master_down().as_millis() as u64,
    };
    let (status, status_rx) = watch::channel(view.clone());
    let (cmd_tx, cmds) = mpsc::channel(16);
    let vips = cfg.virtual_addresses.clone();
    let r = Router {
        cfg,
        iface: iface.to_string(),
        ifindex,
        mac,
        src,
        m,
        sock,
        events,
        status,
        view,
        netlink,
        quorum_lost: 0,
        failed_checks: BTreeMap::new(),
        down_ifaces: BTreeMap::new(),
        activating: None,
        link_up: true,
        garp_left: 0,
        garp_at: None,
        garp_second_at: None,
        garp_refresh_at: None,
    };
    info!(router = r.cfg.name, iface, source = %src, state = ?r.m.state, "VRRP router started");
    let name = r.cfg.name.clone();
    tokio::spawn(r.run(cmds, acts));
    Ok(Handle {
        name,
        vips,
        cmds: cmd_tx,
        status: status_rx,
    })
}

impl Router {
    /// Where adverts go: the group, or each unicast peer.
    fn destinations(&self) -> Vec<IpAddr> {
        if !self.cfg.unicast_peers.is_empty() {
            return self.cfg.unicast_peers.clone();
        }
        vec![if self.cfg.family_v4() {
            IpAddr::V4(GROUP_V4)
        } else {
            IpAddr::V6(GROUP_V6)
        }]
    }

    async fn carry_out(&mut self, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send {
                    priority,
                    interval_cs,
                } => {
                    let adv = Advert {
                        version: self.cfg.version,
                        vrid: self.cfg.virtual_router_id,
                        priority,
                        interval_cs,
                        addrs: self.cfg.virtual_addresses.clone(),
                    };
                    for dst in self.destinations() {
                        let m = encode(&adv, self.src, dst);
                        match self.sock.send(self.src, dst, &m) {
                            Ok(()) => self.view.adverts_sent += 1,
                            Err(e) => warn!(router = self.cfg.name, %dst, "sending an advert: {e}"),
                        }
                    }
                }
                Action::BecomeMaster => self.become_master().await,
                Action::BecomeBackup => self.become_backup().await,
                Action::Announce => {
                    if self.activating.is_none() && self.m.state == State::Master {
                        self.garp_left = self.cfg.garp_master_repeat;
                        self.garp_at = Some(Instant::now());
                    }
                }
            }
        }
        self.publish();
    }

    async fn become_master(&mut self) {
        info!(router = self.cfg.name, reason = %self.m.why, "VRRP: entering MASTER state");
        self.transition(State::Master).await;
        self.activate().await;
    }

    /// Asks the daemon to activate the data plane for the VIPs (answered in the run loop).
    async fn activate(&mut self) {
        let (done, wait) = oneshot::channel();
        let vips = self.cfg.virtual_addresses.clone();
        if self.events.send(Event::Master { vips, done }).await.is_ok() {
            self.activating = Some(wait);
        }
    }

    /// The data plane is active (or could not be made so: asked again in a
    /// second, the VIPs staying off meanwhile); then the VIPs, then the
    /// announcements.
    async fn activated(&mut self, ok: bool) {
        self.activating = None;
        if self.m.state != State::Master {
            return;
        }
        if !ok {
            warn!(
                router = self.cfg.name,
                "the data plane could not be made active: asking again in 1 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.activate().await;
            return;
        }
        for a in &self.cfg.virtual_addresses {
            if let Err(e) =
                netif::add_host_address(&self.netlink, self.ifindex, &self.iface, *a).await
            {
                warn!(router = self.cfg.name, "{e:#}");
            }
        }
        let now = Instant::now();
        self.garp_left = self.cfg.garp_master_repeat;
        self.garp_at = Some(now);
        self.garp_second_at = (self.cfg.garp_master_delay > 0.0)
            .then(|| now + Duration::from_secs_f64(self.cfg.garp_master_delay));
        self.garp_refresh_at = (self.cfg.garp_master_refresh > 0.0)
            .then(|| now + Duration::from_secs_f64(self.cfg.garp_master_refresh));
    }

    async fn become_backup(&mut self) {
        self.activating = None;
        let state = self.m.state;
        info!(router = self.cfg.name, reason = %self.m.why,
            "VRRP: entering {} state",
            if state == State::Fault {
                "FAULT"
            } else {
                "BACKUP"
            }
        );
        for a in &self.cfg.virtual_addresses {
            if let Err(e) = netif::del_address(&self.netlink, self.ifindex, &self.iface, *a).await {
                warn!(router = self.cfg.name, "{e:#}");
            }
        }
        self.garp_left = 0;
        self.garp_at = None;
        self.garp_second_at = None;
        self.garp_refresh_at = None;
        let vips = self.cfg.virtual_addresses.clone();
        let _ = self.events.send(Event::Backup { vips }).await;
        self.transition(state).await;
    }

    async fn transition(&mut self, state: State) {
        self.view.transitions += 1;
        self.view.since_unix = unix_now();
        let name = self.cfg.name.clone();
        let _ = self.events.send(Event::Changed { name, state }).await;
    }

    fn publish(&mut self) {
        self.view.state = self.m.state;
        self.view.effective_priority = self.m.effective;
        self.view.master = self.m.master;
        self.view.released = self.m.released;
        self.view.master_down_ms = self.m.master_down().as_millis() as u64;
        self.status.send_replace(self.view.clone());
    }

    fn refuse(&mut self, why: &str) {
        *self.view.refused.entry(why.to_string()).or_default() += 1;
    }

    /// One announcement per VIP (a burst is `garp_master_repeat` of them).
    fn announce(&mut self) {
        for a in self.cfg.virtual_addresses.clone() {
            if let Err(e) = send_frame(self.ifindex, &announcement(a, self.mac)) {
                warn!(router = self.cfg.name, vip = %a, "gratuitous ARP / NA: {e}");
            }
        }
    }

    /// The priority from the base and what is tracked.
    fn effective(&self) -> u8 {
        let t = &self.cfg.track;
        let mut p = self.cfg.priority as i32 + t.quorum_weight * self.quorum_lost as i32;
        for c in self.failed_checks.iter().filter(|(_, f)| **f) {
            p += t.checks[*c.0].weight;
        }
        for i in t.interfaces.iter() {
            if self.down_ifaces.get(&i.name).copied().unwrap_or(false) {
                p += i.weight;
            }
        }
        p.clamp(1, 255) as u8
    }

    async fn on_received(&mut self, rx: super::io::Received, now: Instant) {
        let multicast = self.cfg.unicast_peers.is_empty();
        let for_us = if multicast {
            rx.dst == self.destinations()[0]
        } else {
            rx.dst == self.src && self.cfg.unicast_peers.contains(&rx.src)
        };
        if !for_us || rx.src == self.src {
            return;
        }
        let adv = match decode(
            &rx.vrrp,
            self.cfg.version,
            rx.src,
            rx.dst,
            rx.ttl,
            multicast,
        ) {
            Ok(a) => a,
            Err(e) => {
                // Another VRID's bad packet is not ours to count.
                if rx.vrrp.get(1) == Some(&self.cfg.virtual_router_id) {
                    self.refuse(&e.to_string());
                }
                return;
            }
        };
        if adv.vrid != self.cfg.virtual_router_id {
            return;
        }
        if self.cfg.version == 2 && adv.interval_cs != self.cfg.advert_int {
            self.refuse("advert interval differs (VRRPv2 needs the same on every router)");
            return;
        }
        let mut ours = self.cfg.virtual_addresses.clone();
        let mut theirs = adv.addrs.clone();
        ours.sort();
        theirs.sort();
        if ours != theirs {
            // Counted and followed: refusing would make both masters.
            self.refuse("virtual addresses differ from ours");
        }
        self.view.adverts_received += 1;
        let acts = self.m.on_advert(rx.src, &adv, now);
        self.carry_out(acts).await;
    }

    /// Interface and tracked-interface states (polled: they may be other
    /// interfaces than lbd's).
    async fn poll_links(&mut self, now: Instant) {
        let up = |h: rtnetlink::Handle, name: String| async move {
            use futures::TryStreamExt;
            let mut s = h.link().get().match_name(name).execute();
            match s.try_next().await {
                Ok(Some(l)) => {
                    use rtnetlink::packet_route::link::LinkFlags;
                    Some(l.header.flags.contains(LinkFlags::Up | LinkFlags::LowerUp))
                }
                Ok(None) => Some(false),
                // A netlink hiccup says nothing of the link.
                Err(_) => None,
            }
        };
        if let Some(own) = up(self.netlink.clone(), self.iface.clone()).await {
            self.link_up = own;
        }
        let before = self.m.state;
        let acts = self.m.fault(!self.link_up, now);
        if !acts.is_empty() {
            self.carry_out(acts).await;
        }
        if before == State::Fault && self.m.state == State::Backup {
            info!(router = self.cfg.name, "VRRP: link back, BACKUP state");
            self.transition(State::Backup).await;
        }
        for t in self.cfg.track.interfaces.clone() {
            if let Some(is_up) = up(self.netlink.clone(), t.name.clone()).await {
                self.down_ifaces.insert(t.name, !is_up);
            }
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, first: Vec<Action>) {
        self.carry_out(first).await;
        let mut links = tokio::time::interval(Duration::from_millis(500));
        let (check_tx, mut check_rx) = mpsc::channel::<(usize, bool)>(16);
        for (i, c) in self.cfg.track.checks.iter().enumerate() {
            tokio::spawn(track_check(i, c.clone(), check_tx.clone()));
        }
        loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let timer = self
                .m
                .deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(far);
            let garp = [self.garp_at, self.garp_second_at, self.garp_refresh_at]
                .into_iter()
                .flatten()
                .min()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(far);
            tokio::select! {
                rx = self.sock.recv() => match rx {
                    Ok(rx) => self.on_received(rx, Instant::now()).await,
                    Err(e) => {
                        warn!(router = self.cfg.name, "receiving adverts: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sleep_until(timer) => {
                    let acts = self.m.on_timer(Instant::now());
                    self.carry_out(acts).await;
                }
                _ = sleep_until(garp) => self.garp_tick(Instant::now()),
                _ = links.tick() => self.poll_links(Instant::now()).await,
                Some((i, failed)) = check_rx.recv() => {
                    self.failed_checks.insert(i, failed);
                }
                ok = wait_activation(&mut self.activating) => self.activated(ok).await,
                cmd = cmds.recv() => {
                    let now = Instant::now();
                    match cmd {
                        Some(Cmd::Release(done)) => {
                            let acts = self.m.release(now);
                            self.carry_out(acts).await;
                            let _ = done.send(());
                        }
                        Some(Cmd::Resume(done)) => {
                            self.m.resume();
                            self.publish();
                            let _ = done.send(());
                        }
                        Some(Cmd::QuorumLost(n)) => self.quorum_lost = n,
                        Some(Cmd::Shutdown { hold, done }) => {
                            let was_master = self.m.state == State::Master;
                            let acts = self.m.shutdown(hold, now);
                            self.carry_out(acts).await;
                            let _ = done.send(was_master);
                            return;
                        }
                        None => return,
                    }
                }
            }
            let e = self.m.in_force(self.effective());
            if e != self.m.effective {
                info!(
                    router = self.cfg.name,
                    priority = e,
                    "VRRP priority in force changed"
                );
                self.m.set_effective(e);
            }
            self.publish();
        }
    }

    fn garp_tick(&mut self, now: Instant) {
        let gap = Duration::from_millis(self.cfg.garp_interval_ms as u64);
        if self.garp_at.is_some_and(|t| now >= t) {
            if self.garp_left > 0 {
                self.announce();
                self.garp_left -= 1;
            }
            self.garp_at = (self.garp_left > 0).then_some(now + gap);
        }
        for at in [&mut self.garp_second_at, &mut self.garp_refresh_at] {
            if at.is_some_and(|t| now >= t) {
                *at = None;
                self.garp_left = self.cfg.garp_master_repeat;
                self.garp_at = Some(now);
            }
        }
        if self.garp_refresh_at.is_none()
            && self.cfg.garp_master_refresh > 0.0
            && self.m.state == State::Master
        {
            self.garp_refresh_at =
                Some(now + Duration::from_secs_f64(self.cfg.garp_master_refresh));
        }
    }
}

/// The daemon's answer to an activation, or never while none is asked.
async fn wait_activation(rx: &mut Option<oneshot::Receiver<bool>>) -> bool {
    match rx {
        Some(r) => r.await.unwrap_or(false),
        None => std::future::pending().await,
    }
}

/// A tracked program, run at its interval; reports failed/ok transitions
/// after `fall` / `rise` results.
async fn track_check(i: usize, c: super::config::TrackCheck, tx: mpsc::Sender<(usize, bool)>) {
    let mut spec = CheckSpec::new(CheckKind::External);
    spec.command = c.command.clone();
    spec.timeout = c.timeout;
    let target: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(c.interval));
    let (mut ok, mut bad, mut failed) = (0u32, 0u32, false);
    loop {
        tick.tick().await;
        if probe(&spec, target).await.ok {
            ok += 1;
            bad = 0;
            if failed && ok >= c.rise {
                failed = false;
            }
        } else {
            bad += 1;
            ok = 0;
            if !failed && bad >= c.fall {
                failed = true;
            }
        }
        if tx.send((i, failed)).await.is_err() {
            return;
        }
    }
}
