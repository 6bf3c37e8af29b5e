//! The VRRP state machine of one virtual router (RFC 5798 section 6, with
//! keepalived's choices where the RFC leaves room): pure, driven by
//! received advertisements, timers and commands; what it decides comes
//! back as [`Action`]s for the I/O task to carry out.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use super::packet::{Advert, MAX_INTERVAL_CS};

/// What does not change while the router runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// 3 (RFC 5798) or 2 (RFC 3768).
    pub version: u8,
    pub vrid: u8,
    /// Configured priority 1..255 (255: address owner).
    pub priority: u8,
    /// Our advertisement interval, centiseconds.
    pub interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Our source address (the tie-break between equal priorities).
    pub src: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Backup,
    Master,
    Fault,
}

/// What the I/O task does for the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority and interval.
    Send { priority: u8, interval_cs: u16 },
    /// Serve the VIPs: data plane active, VIPs on the interface, then
    /// gratuitous ARP / unsolicited NA.
    BecomeMaster,
    /// Stop serving them (VIPs removed, data plane on standby).
    BecomeBackup,
    /// Announce the VIPs again (gratuitous ARP / NA): a router that
    /// thought itself master may have pulled the neighbours' caches.
    Announce,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub p: Params,
    pub state: State,
    /// Priority after tracking (base when nothing is tracked or failing).
    pub effective: u8,
    /// The master's interval as learned from its adverts (v3).
    pub master_adv_cs: u16,
    /// The master last heard (ourselves while master).
    pub master: Option<IpAddr>,
    /// `lbadm vrrp release`: take no mastership while another router is
    /// there to hold it.
    pub released: bool,
    /// When the state last changed.
    pub since: Instant,
    /// Why it changed (logged with the transition).
    pub why: String,
    /// The master said it leaves (an advert with priority 0).
    master_left: bool,
    down_at: Option<Instant>,
    advert_at: Option<Instant>,
    preempt_until: Option<Instant>,
}

fn cs(d: u16) -> Duration {
    Duration::from_millis(d as u64 * 10)
}

impl Machine {
    /// A router starting: backup (master at once as address owner, or
    /// when `resume_master` says it was master just before a restart).
    pub fn new(p: Params, now: Instant, resume_master: bool) -> (Machine, Vec<Action>) {
        let mut m = Machine {
            effective: p.priority,
            master_adv_cs: p.interval_cs,
            state: State::Backup,
            master: None,
            released: false,
            since: now,
            why: String::new(),
            master_left: false,
            down_at: None,
            advert_at: None,
            preempt_until: None,
            p,
        };
        let acts = if m.p.priority == 255 || resume_master {
            m.why = if m.p.priority == 255 {
                "priority 255: the address owner".into()
            } else {
                "it was master before lbd restarted".into()
            };
            m.enter_master(now)
        } else {
            m.why = "started".into();
            m.down_at = Some(now + m.master_down());
            vec![Action::BecomeBackup]
        };
        (m, acts)
    }

    /// The priority our adverts carry and our comparisons use.
    fn prio(&self) -> u8 {
        if self.released {
            1
        } else {
            self.effective
        }
    }

    fn skew(&self) -> Duration {
        let p = 256 - self.prio() as u64;
        if self.p.version == 2 {
            Duration::from_micros(p * 1_000_000 / 256)
        } else {
            Duration::from_micros(p * self.master_adv_cs as u64 * 10_000 / 256)
        }
    }

    /// Master_Down_Interval: 3 adverts and the skew.
    pub fn master_down(&self) -> Duration {
        3 * cs(self.master_adv_cs) + self.skew()
    }

    fn enter_master(&mut self, now: Instant) -> Vec<Action> {
        self.master_left = false;
        self.state = State::Master;
        self.since = now;
        self.master = Some(self.p.src);
        self.down_at = None;
        self.preempt_until = None;
        self.master_adv_cs = self.p.interval_cs;
        self.advert_at = Some(now + cs(self.p.interval_cs));
        vec![self.send(), Action::BecomeMaster]
    }

    fn enter_backup(&mut self, now: Instant, master: Option<IpAddr>) -> Vec<Action> {
        let was = self.state;
        self.state = State::Backup;
        if was != State::Backup {
            self.since = now;
        }
        self.master = master;
        self.advert_at = None;
        self.preempt_until = None;
        self.down_at = Some(now + self.master_down());
        if was == State::Backup {
            Vec::new()
        } else {
            vec![Action::BecomeBackup]
        }
    }

    fn send(&self) -> Action {
        Action::Send {
            priority: self.prio(),
            interval_cs: self.p.interval_cs,
        }
    }

    /// The next instant [`Machine::on_timer`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Master => self.advert_at,
            State::Backup => self.down_at,
            State::Fault => None,
        }
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Backup if self.down_at.is_some_and(|t| now >= t) => {
                self.why = match (self.master, self.master_left) {
                    (Some(m), true) => format!("master {m} resigned (priority 0)"),
                    (Some(m), false) => format!(
                        "no advertisement from master {m} for {:?} (Master_Down_Interval)",
                        self.master_down()
                    ),
                    (None, _) => format!(
                        "no master heard for {:?} (Master_Down_Interval)",
                        self.master_down()
                    ),
                };
                self.enter_master(now)
            }
            State::Master if self.advert_at.is_some_and(|t| now >= t) => {
                self.advert_at = Some(now + cs(self.p.interval_cs));
                vec![self.send()]
            }
            _ => Vec::new(),
        }
    }

    /// A valid advertisement for our VRID from `src`.
    pub fn on_advert(&mut self, src: IpAddr, a: &Advert, now: Instant) -> Vec<Action> {
        let ours = self.prio();
        match self.state {
            State::Fault => Vec::new(),
            State::Backup => {
                if a.priority == 0 {
                    // The master is leaving: take over after the skew only.
                    self.down_at = Some(now + self.skew());
                    self.master = Some(src);
                    self.master_left = true;
                    return Vec::new();
                }
                let delaying = self.preempt_until.is_some_and(|t| now < t);
                let lower = a.priority < ours;
                if lower
                    && self.p.preempt
                    && !self.released
                    && self.preempt_until.is_none()
                    && !self.p.preempt_delay.is_zero()
                {
                    self.preempt_until = Some(now + self.p.preempt_delay);
                }
                let accept = !lower
                    || !self.p.preempt
                    || self.released
                    || delaying
                    || self.preempt_until.is_some_and(|t| now < t);
                if accept {
                    if !lower {
                        // A router at least as good: the next lower one
                        // gets the whole delay again (as keepalived).
                        self.preempt_until = None;
                    }
                    if self.p.version == 3 {
                        self.master_adv_cs = a.interval_cs.max(1);
                    }
                    self.master = Some(src);
                    self.master_left = false;
                    self.down_at = Some(now + self.master_down());
                }
                Vec::new()
            }
            State::Master => {
                if a.priority == 0 {
                    self.advert_at = Some(now + cs(self.p.interval_cs));
                    return vec![self.send()];
                }
                let theirs_wins = a.priority > ours
                    || (a.priority == ours && ip_bytes(&src) > ip_bytes(&self.p.src));
                if theirs_wins {
                    if self.p.version == 3 {
                        self.master_adv_cs = a.interval_cs.max(1);
                    }
                    self.why = if a.priority > ours {
                        format!("{src} advertises priority {} (ours {ours})", a.priority)
                    } else {
                        format!("{src} advertises the same priority {ours} from a higher address")
                    };
                    self.enter_backup(now, Some(src))
                } else {
                    // A lower router thinks it is master: tell it now, and
                    // take the neighbours' caches back (keepalived's
                    // garp_lower_prio_repeat).
                    self.advert_at = Some(now + cs(self.p.interval_cs));
                    vec![self.send(), Action::Announce]
                }
            }
        }
    }

    /// The priority in force for a tracked sum of `priority`: clamped to
    /// 1..254; the address owner (255) never moves.
    pub fn in_force(&self, priority: u8) -> u8 {
        if self.p.priority == 255 {
            255
        } else {
            priority.clamp(1, 254)
        }
    }

    /// The tracked priority changed (health, interfaces, checks).
    pub fn set_effective(&mut self, priority: u8) {
        self.effective = self.in_force(priority);
    }

    /// The interface went down (fault) or came back.
    pub fn fault(&mut self, on: bool, now: Instant) -> Vec<Action> {
        match (on, self.state) {
            (true, State::Fault) | (false, State::Master | State::Backup) => Vec::new(),
            (true, was) => {
                self.why = "the interface (or a tracked one) is down".into();
                self.state = State::Fault;
                self.since = now;
                self.down_at = None;
                self.advert_at = None;
                self.master = None;
                let mut acts = Vec::new();
                if was == State::Master {
                    acts.push(Action::Send {
                        priority: 0,
                        interval_cs: self.p.interval_cs,
                    });
                }
                acts.push(Action::BecomeBackup);
                acts
            }
            (false, State::Fault) => {
                self.why = "the interface is back".into();
                self.master_adv_cs = self.p.interval_cs;
                self.enter_backup(now, None);
                self.since = now;
                Vec::new()
            }
        }
    }

    /// `lbadm vrrp release`: hand over now (priority 0), then stay backup
    /// while any other router can be master.
    pub fn release(&mut self, now: Instant) -> Vec<Action> {
        self.released = true;
        if self.state != State::Master {
            return Vec::new();
        }
        let mut acts = vec![Action::Send {
            priority: 0,
            interval_cs: self.p.interval_cs,
        }];
        self.why = "lbadm vrrp release".into();
        acts.extend(self.enter_backup(now, None));
        acts
    }

    /// `lbadm vrrp resume`: take part in elections again.
    pub fn resume(&mut self) {
        self.released = false;
    }

    /// lbd stopping. `hold` (a restart, for about that long): a v3
    /// master's last advert carries an interval a third of it, which
    /// backups adopt, so they wait for the next lbd; the VIPs and the data
    /// plane stay. Otherwise hand over at once (priority 0), as keepalived
    /// does when it stops.
    pub fn shutdown(&mut self, hold: Option<Duration>, now: Instant) -> Vec<Action> {
        if self.state != State::Master {
            return Vec::new();
        }
        if let (Some(h), 3) = (hold, self.p.version) {
            let cs =
                (h.as_millis() / 30).clamp(self.p.interval_cs as u128, MAX_INTERVAL_CS as u128);
            return vec![Action::Send {
                priority: self.prio(),
                interval_cs: cs as u16,
            }];
        }
        let mut acts = vec![Action::Send {
            priority: 0,
            interval_cs: self.p.interval_cs,
        }];
        self.why = "lbd stopping: handing over".into();
        acts.extend(self.enter_backup(now, None));
        acts
    }
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(priority: u8, src: &str) -> Params {
        Params {
            version: 3,
            vrid: 51,
            priority,
            interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            src: src.parse().unwrap(),
        }
    }

    fn adv(priority: u8, cs: u16) -> Advert {
        Advert {
            version: 3,
            vrid: 51,
            priority,
            interval_cs: cs,
            addrs: vec!["10.0.0.100".parse().unwrap()],
        }
    }

    fn send(priority: u8) -> Action {
        Action::Send {
            priority,
            interval_cs: 100,
        }
    }

    #[test]
    fn timers_follow_the_rfc() {
        let t0 = Instant::now();
        let (m, acts) = Machine::new(params(100, "10.0.0.1"), t0, false);
        assert_eq!(acts, vec![Action::BecomeBackup]);
        // 3 x 1 s + (256 - 100) / 256 s = 3.609375 s.
        assert_eq!(m.master_down(), Duration::from_micros(3_609_375));
        assert_eq!(m.deadline(), Some(t0 + Duration::from_micros(3_609_375)));
        let (m2, _) = Machine::new(
            Params {
                version: 2,
                ..params(200, "10.0.0.1")
            },
            t0,
            false,
        );
        assert_eq!(m2.master_down(), Duration::from_micros(3_218_750));
        let (m3, acts) = Machine::new(params(255, "10.0.0.1"), t0, false);
        assert_eq!(
            acts,
            vec![send(255), Action::BecomeMaster],
            "the owner is master at once"
        );
        assert_eq!(m3.state, State::Master);
    }

    #[test]
    fn a_backup_takes_over_when_the_master_goes_quiet_or_leaves() {
        let t0 = Instant::now();
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let (mut m, _) = Machine::new(params(100, "10.0.0.1"), t0, false);
        let t1 = t0 + Duration::from_secs(1);
        assert!(m.on_advert(peer, &adv(150, 10), t1).is_empty());
        assert_eq!(m.master_adv_cs, 10, "v3: the master's interval is adopted");
        assert_eq!(
            m.deadline(),
            Some(t1 + Duration::from_micros(300_000 + 60_937))
        );
        assert!(m.on_timer(t1 + Duration::from_millis(300)).is_empty());
        let acts = m.on_timer(t1 + Duration::from_millis(361));
        assert_eq!(acts, vec![send(100), Action::BecomeMaster]);
        assert!(
            m.why
                .starts_with("no advertisement from master 10.0.0.2 for"),
            "{}",
            m.why
        );
        // Another backup: the master says priority 0, skew only.
        let (mut b, _) = Machine::new(params(100, "10.0.0.3"), t0, false);
        b.on_advert(peer, &adv(150, 100), t1);
        b.on_advert(peer, &adv(0, 100), t1);
        assert_eq!(b.deadline(), Some(t1 + Duration::from_micros(609_375)));
        b.on_timer(t1 + Duration::from_secs(1));
        assert_eq!(
            (b.state, b.why.as_str()),
            (State::Master, "master 10.0.0.2 resigned (priority 0)")
        );
    }

    #[test]
    fn elections_between_masters_and_preemption() {
        let t0 = Instant::now();
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let (mut m, _) = Machine::new(params(100, "10.0.0.1"), t0, true);
        assert_eq!(m.state, State::Master);
        // Lower priority: we answer at once, announce again, and stay.
        assert_eq!(
            m.on_advert(peer, &adv(50, 100), t0),
            vec![send(100), Action::Announce]
        );
        // Equal priority, higher address: theirs wins.
        assert_eq!(
            m.on_advert(peer, &adv(100, 100), t0),
            vec![Action::BecomeBackup]
        );
        assert_eq!((m.state, m.master), (State::Backup, Some(peer)));
        assert_eq!(
            m.why,
            "10.0.0.2 advertises the same priority 100 from a higher address"
        );
        // Backup with preemption: a lower advert is discarded (the timer
        // runs out and we take over); without it, accepted.
        let t1 = t0 + Duration::from_secs(1);
        m.on_advert(peer, &adv(50, 100), t1);
        assert_eq!(m.deadline(), Some(t0 + m.master_down()));
        m.p.preempt = false;
        m.on_advert(peer, &adv(50, 100), t1);
        assert_eq!(m.deadline(), Some(t1 + m.master_down()));
        // preempt_delay: lower adverts are accepted for that long.
        m.p.preempt = true;
        m.p.preempt_delay = Duration::from_secs(5);
        let t2 = t1 + Duration::from_secs(1);
        m.on_advert(peer, &adv(50, 100), t2);
        assert_eq!(m.deadline(), Some(t2 + m.master_down()));
        let t3 = t2 + Duration::from_secs(6);
        m.on_advert(peer, &adv(50, 100), t3);
        assert_eq!(
            m.deadline(),
            Some(t2 + m.master_down()),
            "after the delay: discarded"
        );
    }

    #[test]
    fn release_fault_and_shutdown() {
        let t0 = Instant::now();
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let (mut m, _) = Machine::new(params(200, "10.0.0.1"), t0, true);
        assert_eq!(m.release(t0), vec![send(0), Action::BecomeBackup]);
        // Released: even a lower router is followed.
        m.on_advert(peer, &adv(50, 100), t0);
        assert_eq!(m.deadline(), Some(t0 + m.master_down()));
        m.resume();
        // Interface down as master: priority 0, then fault; back: backup.
        let (mut m, _) = Machine::new(params(200, "10.0.0.1"), t0, true);
        assert_eq!(m.fault(true, t0), vec![send(0), Action::BecomeBackup]);
        assert_eq!((m.state, m.deadline()), (State::Fault, None));
        assert!(m.on_advert(peer, &adv(50, 100), t0).is_empty());
        m.fault(false, t0);
        assert_eq!(m.state, State::Backup);
        // Tracking lowers the priority (never to 0; the owner keeps 255).
        m.set_effective(0);
        assert_eq!(m.effective, 1);
        // A restart held 10 s: the last advert says "3.33 s between
        // adverts" (backups wait 3 of them); at most 40.95 s.
        let (mut m, _) = Machine::new(params(200, "10.0.0.1"), t0, true);
        assert_eq!(
            m.shutdown(Some(Duration::from_secs(10)), t0),
            vec![Action::Send {
                priority: 200,
                interval_cs: 333
            }]
        );
        assert_eq!(
            m.shutdown(Some(Duration::from_secs(3600)), t0),
            vec![Action::Send {
                priority: 200,
                interval_cs: MAX_INTERVAL_CS
            }]
        );
        assert_eq!(m.shutdown(None, t0), vec![send(0), Action::BecomeBackup]);
    }
}
