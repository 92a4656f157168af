//! Who may connect: secrets compared in constant time, and a cap on failed attempts per
//! client address, shared by the HTTP API and the Postgres-wire endpoint (docs/security.md).
//!
//! A client that fails [`Limiter::MAX_FAILURES`] times within [`Limiter::WINDOW`] at one
//! surface is refused there without its secret being looked at until the window ends, so
//! guessing a token from one address costs minutes per handful of tries. Success does not reset the count: an attacker
//! holding one valid secret must not earn unlimited guesses at another.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Whether `given` equals `expected`, in time that does not depend on where they differ
/// (only on their lengths, which a token's owner chose and an attacker learns nothing from).
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// The bearer token of an `Authorization` header value; the scheme is case-insensitive
/// (RFC 9110), the token is not.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The client an address belongs to when connections are shared out: an IPv4 address
/// (also mapped into IPv6, or behind NAT64's 64:ff9b::/96) is one client; any other IPv6
/// address counts as its /64, since one host or site is usually handed a whole /64 and
/// could otherwise spread over it. Failed sign-ins are counted per address instead, so
/// that one guesser cannot lock out its neighbours.
pub fn client_of(ip: IpAddr) -> IpAddr {
    const NAT64: u128 = 0x0064_ff9b_u128 << 96;
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if u128::from(v6) >> 32 == NAT64 >> 32 => {
                IpAddr::V4(std::net::Ipv4Addr::from(u128::from(v6) as u32))
            }
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Open connections per client ([`client_of`]), capped, so that one host cannot take every
/// connection slot of an endpoint.
#[derive(Debug)]
pub struct Shares {
    open: Mutex<HashMap<IpAddr, usize>>,
    cap: usize,
}

/// One connection's place in its address's share, given back when dropped.
#[derive(Debug)]
pub struct Share {
    owner: Arc<Shares>,
    ip: IpAddr,
}

impl Shares {
    /// At most `cap` connections per address.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::default(),
            cap,
        })
    }

    /// A place for one more connection from `ip`, or none when it holds its share.
    pub fn take(this: &Arc<Self>, ip: IpAddr) -> Option<Share> {
        let ip = client_of(ip);
        let mut open = this.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= this.cap {
            return None;
        }
        *n += 1;
        Some(Share {
            owner: Arc::clone(this),
            ip,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Failed attempts per client address and surface (`api`, `ingest`, `pgwire`) within a
/// fixed window: guesses at one surface's secret do not lock another surface's users out.
#[derive(Debug, Default)]
pub struct Limiter {
    clients: Mutex<HashMap<(IpAddr, &'static str), Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Limiter {
    /// Failures allowed per address within [`Self::WINDOW`].
    pub const MAX_FAILURES: u32 = 10;
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses remembered at once; past it, those whose window has ended are forgotten
    /// first, so a flood from many addresses cannot grow memory without bound.
    pub const MAX_CLIENTS: usize = 65_536;

    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, &'static str), Window>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `ip` must wait before it may try `surface` again, if it has failed too often.
    pub fn blocked(&self, ip: IpAddr, surface: &'static str) -> Option<Duration> {
        self.blocked_at((ip, surface), Instant::now())
    }

    fn blocked_at(&self, key: (IpAddr, &'static str), now: Instant) -> Option<Duration> {
        let clients = self.lock();
        let w = clients.get(&key)?;
        let left = Self::WINDOW.checked_sub(now.duration_since(w.start))?;
        (w.failures >= Self::MAX_FAILURES && !left.is_zero()).then_some(left)
    }

    /// Records a failed attempt from `ip` at `surface`.
    pub fn failed(&self, ip: IpAddr, surface: &'static str) {
        self.failed_at((ip, surface), Instant::now());
    }

    fn failed_at(&self, key: (IpAddr, &'static str), now: Instant) {
        let mut clients = self.lock();
        if clients.len() >= Self::MAX_CLIENTS && !clients.contains_key(&key) {
            clients.retain(|_, w| now.duration_since(w.start) < Self::WINDOW);
            if clients.len() >= Self::MAX_CLIENTS {
                // Still full of live windows: forget one that is not holding an address off,
                // so this address is counted; when every one is, this failure is not.
                let victim = clients
                    .iter()
                    .find(|(_, w)| w.failures < Self::MAX_FAILURES)
                    .map(|(k, _)| *k);
                match victim {
                    Some(victim) => {
                        clients.remove(&victim);
                    }
                    None => return,
                }
            }
        }
        let w = clients.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.duration_since(w.start) >= Self::WINDOW {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back() {
        let shares = Shares::new(2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = Shares::take(&shares, a).unwrap();
        let _second = Shares::take(&shares, a).unwrap();
        assert!(
            Shares::take(&shares, a).is_none(),
            "a third from one address"
        );
        assert!(
            Shares::take(&shares, b).is_some(),
            "another address has its own"
        );
        drop(first);
        assert!(Shares::take(&shares, a).is_some(), "given back on drop");

        // An IPv6 client is its /64; the same IPv4 client mapped into IPv6 is itself.
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let _one = Shares::take(&shares, v6("2001:db8:1:2::1")).unwrap();
        let _two = Shares::take(&shares, v6("2001:db8:1:2:ffff::9")).unwrap();
        assert!(
            Shares::take(&shares, v6("2001:db8:1:2:abcd::1")).is_none(),
            "a third from the same /64"
        );
        assert!(Shares::take(&shares, v6("2001:db8:1:3::1")).is_some());
        // 10.0.0.1 holds one; mapped into IPv6 it is the same client, which then holds two.
        let _mapped = Shares::take(&shares, v6("::ffff:10.0.0.1")).unwrap();
        assert!(
            Shares::take(&shares, a).is_none(),
            "10.0.0.1 mapped into IPv6 counted as 10.0.0.1"
        );
        assert_eq!(client_of(v6("2001:db8:1:2::1")), v6("2001:db8:1:2::"));
        assert_eq!(
            client_of(v6("64:ff9b::a00:1")),
            v6("::ffff:10.0.0.1").to_canonical()
        );
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }

    #[test]
    fn bearer_reads_the_token_whatever_the_scheme_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn an_address_is_refused_after_too_many_failures_until_its_window_ends() {
        let limiter = Limiter::new();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        let (a, b) = ((a, "api"), (b, "api"));
        for _ in 0..Limiter::MAX_FAILURES - 1 {
            limiter.failed_at(a, t0);
        }
        assert_eq!(limiter.blocked_at(a, t0), None, "one try left");
        limiter.failed_at(a, t0);
        let wait = limiter.blocked_at(a, t0 + Duration::from_secs(20)).unwrap();
        assert_eq!(wait, Duration::from_secs(40));
        assert_eq!(limiter.blocked_at(b, t0), None, "others are not held");
        assert_eq!(
            limiter.blocked_at((a.0, "ingest"), t0),
            None,
            "nor the same address at another surface"
        );
        assert_eq!(limiter.blocked_at(a, t0 + Limiter::WINDOW), None);
        // A new window starts from zero.
        limiter.failed_at(a, t0 + Limiter::WINDOW);
        assert_eq!(limiter.blocked_at(a, t0 + Limiter::WINDOW), None);
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let limiter = Limiter::new();
        let t0 = Instant::now();
        let held: IpAddr = [10, 9, 9, 9].into();
        for _ in 0..Limiter::MAX_FAILURES {
            limiter.failed_at((held, "api"), t0);
        }
        for i in 0..(Limiter::MAX_CLIENTS as u32 + 100) {
            limiter.failed_at((IpAddr::from(i.to_be_bytes()), "api"), t0);
        }
        assert!(limiter.lock().len() <= Limiter::MAX_CLIENTS);
        assert!(
            limiter.blocked_at((held, "api"), t0).is_some(),
            "an address held off is not forgotten to make room"
        );
    }
}
