//! The console's logins: argon2 password hashes from the configuration,
//! sessions in memory (a cookie), a CSRF token per session, and a lockout
//! for sources that keep guessing.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

use super::ConsoleUser;

/// The session cookie's name.
pub const COOKIE: &str = "lbd_session";
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 256;
/// Failed logins from one source before it is locked out for LOCKOUT.
const MAX_FAILURES: u32 = 5;
const LOCKOUT: Duration = Duration::from_secs(300);
/// Sources remembered at most (failures of the oldest are forgotten).
const MAX_SOURCES: usize = 4096;
/// A session ends this long after its login however busy it is.
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    created: Instant,
    last_used: Instant,
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    #[error("wrong user name or password")]
    Wrong,
    #[error("too many failed logins from {0}: try again in {1} s")]
    Locked(IpAddr, u64),
}

pub struct Auth {
    users: Vec<ConsoleUser>,
    idle: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    /// Attempts not yet known good, by source (an IPv6 source by its /64).
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// One argon2 verification at a time (each takes tens of
    /// milliseconds and 19 MiB): a flood of logins takes one CPU at most.
    verifying: Mutex<()>,
    /// Compared against for unknown users, so that a wrong name costs as
    /// long as a wrong password.
    decoy: String,
}

/// Who a login attempt is counted against: the address, an IPv6 one by
/// its /64 (one host has them all).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

/// 32 random bytes, hex: a session id or a CSRF token.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the kernel's random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An argon2id hash (PHC string) of `password` with a random salt: what
/// `lbadm console-password` prints for `console.users[].password_hash`.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| anyhow::anyhow!("random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

/// Whether `hash` is a PHC string of an argon2 hash (checked when the
/// configuration is loaded).
pub fn check_hash(hash: &str) -> Result<(), String> {
    let h = PasswordHash::new(hash).map_err(|e| format!("not a PHC hash string ({e})"))?;
    if !h.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "algorithm {} is not argon2 (make one with `lbadm console-password`)",
            h.algorithm
        ));
    }
    Ok(())
}

impl Auth {
    pub fn new(users: Vec<ConsoleUser>, idle: Duration) -> Auth {
        let decoy = if users.is_empty() {
            String::new()
        } else {
            hash_password(&random_token()).unwrap_or_default()
        };
        Auth {
            users,
            idle,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            verifying: Mutex::new(()),
            decoy,
        }
    }

    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks the password (slow on purpose: run it off the async
    /// workers) and opens a session: (session id, session).
    pub fn login(
        &self,
        from: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(String, Session), LoginError> {
        // Counted before it is checked: a burst of attempts from one
        // source gets MAX_FAILURES through, not one per connection.
        if let Some(left) = self.attempt(from) {
            return Err(LoginError::Locked(from, left.as_secs().max(1)));
        }
        let known = self.users.iter().find(|u| u.name == user);
        let hash = known.map_or(self.decoy.as_str(), |u| u.password_hash.as_str());
        let ok = {
            let _one = self.verifying.lock();
            PasswordHash::new(hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        };
        if !ok || known.is_none() {
            return Err(LoginError::Wrong);
        }
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&source(from));
        }
        let id = random_token();
        let now = Instant::now();
        let s = Session {
            user: user.to_string(),
            csrf: random_token(),
            created: now,
            last_used: now,
        };
        if let Ok(mut m) = self.sessions.lock() {
            m.retain(|_, s| s.last_used.elapsed() < self.idle);
            if m.len() >= MAX_SESSIONS {
                if let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| k.clone())
                {
                    m.remove(&oldest);
                }
            }
            m.insert(id.clone(), s.clone());
        }
        Ok((id, s))
    }

    /// The session with this id, if it has not been idle too long nor
    /// lived past MAX_LIFETIME. A `touch` starts its idle time again (what
    /// a user does; the monitor's polling does not).
    pub fn session(&self, id: &str, touch: bool) -> Option<Session> {
        let mut m = self.sessions.lock().ok()?;
        let s = m.get_mut(id)?;
        if s.last_used.elapsed() >= self.idle || s.created.elapsed() >= MAX_LIFETIME {
            m.remove(id);
            return None;
        }
        if touch {
            s.last_used = Instant::now();
        }
        Some(s.clone())
    }

    pub fn logout(&self, id: &str) -> Option<Session> {
        self.sessions.lock().ok()?.remove(id)
    }

    /// Counts an attempt from `from`; how long it is still locked out
    /// (None: the attempt may go on).
    fn attempt(&self, from: IpAddr) -> Option<Duration> {
        let from = source(from);
        let Ok(mut f) = self.failures.lock() else {
            return Some(LOCKOUT);
        };
        f.retain(|_, (_, t)| t.elapsed() < LOCKOUT);
        if let Some((n, since)) = f.get(&from) {
            if *n >= MAX_FAILURES {
                return Some(LOCKOUT.saturating_sub(since.elapsed()));
            }
        }
        if f.len() >= MAX_SOURCES && !f.contains_key(&from) {
            if let Some(oldest) = f.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                f.remove(&oldest);
            }
        }
        let e = f.entry(from).or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            vec![ConsoleUser {
                name: "alice".into(),
                password_hash: hash_password("s3cret-pass").unwrap(),
            }],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn login_session_logout() {
        let a = auth();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (id, s) = a.login(ip, "alice", "s3cret-pass").unwrap();
        assert_eq!(s.user, "alice");
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(s.csrf, id);
        assert_eq!(a.session(&id, true).unwrap().csrf, s.csrf);
        assert!(a.session("nope", false).is_none());
        a.logout(&id);
        assert!(a.session(&id, false).is_none());
    }

    #[test]
    fn wrong_passwords_lock_the_source_out() {
        let a = auth();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(a.login(ip, "alice", "nope").unwrap_err(), LoginError::Wrong);
        assert_eq!(
            a.login(ip, "bob", "s3cret-pass").unwrap_err(),
            LoginError::Wrong
        );
        for _ in 2..MAX_FAILURES {
            assert!(a.login(ip, "alice", "nope").is_err());
        }
        // Locked: even the right password is refused from there.
        assert!(matches!(
            a.login(ip, "alice", "s3cret-pass"),
            Err(LoginError::Locked(..))
        ));
        assert!(a.login(other, "alice", "s3cret-pass").is_ok());
        // An IPv6 host counts as its /64.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for _ in 0..MAX_FAILURES {
            let _ = a.login(v6("2001:db8::1"), "alice", "nope");
        }
        assert!(matches!(
            a.login(v6("2001:db8::2:3"), "alice", "s3cret-pass"),
            Err(LoginError::Locked(..))
        ));
        assert!(a
            .login(v6("2001:db8:0:1::1"), "alice", "s3cret-pass")
            .is_ok());
    }

    #[test]
    fn idle_sessions_end_and_polling_does_not_keep_them() {
        let a = Auth::new(
            vec![ConsoleUser {
                name: "alice".into(),
                password_hash: hash_password("s3cret-pass").unwrap(),
            }],
            Duration::from_millis(300),
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (id, _) = a.login(ip, "alice", "s3cret-pass").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(a.session(&id, false).is_some());
        std::thread::sleep(Duration::from_millis(200));
        assert!(a.session(&id, false).is_none(), "idle 400 ms of 300");
    }

    #[test]
    fn hashes_are_checked() {
        assert!(check_hash(&hash_password("x").unwrap()).is_ok());
        assert!(check_hash("plain").unwrap_err().contains("PHC"));
        assert!(check_hash("$5$rounds=1000$abc$def").is_err());
    }
}
