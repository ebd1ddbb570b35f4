//! The bookkeeping behind the per-client limits: a token bucket (events per
//! second per connection, log lines per minute per socket), the window of
//! refusals after which a connection counts as abusive, and the count of open
//! connections per client address.
//!
//! Owns only the counting; every structure here is bounded (the address map
//! holds an entry per address with an open connection, dropped with its last
//! connection). Does not own what a refusal looks like to the client (an
//! error ack, a 429, a closed connection: see `crate::client`,
//! `crate::socket`, `crate::engine`) nor the settings (see `crate::config`).
//! Clocks are passed in, so the arithmetic is tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate_per_second.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Refusals within a window: a client refused more than [`Strikes::MAX`]
/// times within [`Strikes::WINDOW`] keeps sending past every limit, and its
/// connection is closed. A client that slows down when refused never gets
/// there.
#[derive(Debug, Clone)]
pub struct Strikes {
    count: u32,
    since: Instant,
}

impl Strikes {
    /// The window refusals are counted in.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// Most refusals within the window before the connection is closed.
    pub const MAX: u32 = 100;

    pub fn new(now: Instant) -> Strikes {
        Strikes {
            count: 0,
            since: now,
        }
    }

    /// Counts a refusal; true once there have been more than [`Self::MAX`]
    /// within the current window.
    pub fn strike(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) > Self::WINDOW {
            self.count = 0;
            self.since = now;
        }
        self.count = self.count.saturating_add(1);
        self.count > Self::MAX
    }
}

/// Open connections per client address (`CONNECTIONS_PER_ADDRESS`).
#[derive(Debug)]
pub struct ConnectionsPerAddress {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionsPerAddress {
    pub fn new(limit: usize) -> Arc<ConnectionsPerAddress> {
        Arc::new(ConnectionsPerAddress {
            limit: limit.max(1),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `address`; `None` when it has
    /// `limit` already. The place is given back when the slot is dropped.
    pub fn acquire(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let mut counts = self.counts.lock();
        let count = counts.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: self.clone(),
            address,
        })
    }

    /// How many addresses have an open connection (the map's size).
    pub fn addresses(&self) -> usize {
        self.counts.lock().len()
    }

    fn release(&self, address: IpAddr) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&address) {
            *count = count.saturating_sub(1);
            // The map shrinks with the connections: no entry outlives its
            // address's last connection.
            if *count == 0 {
                counts.remove(&address);
            }
        }
    }
}

/// One connection's place in its address's count; released on drop.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<ConnectionsPerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.owner.release(self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5, start);
        for _ in 0..5 {
            assert!(bucket.take(start));
        }
        assert!(!bucket.take(start), "the burst is spent");
        // 10 per second: one token every 100 ms.
        assert!(!bucket.take(start + Duration::from_millis(50)));
        assert!(bucket.take(start + Duration::from_millis(150)));
        assert!(!bucket.take(start + Duration::from_millis(160)));
        // A long pause refills up to the burst, no more.
        let later = start + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(bucket.take(later));
        }
        assert!(!bucket.take(later));
    }

    #[test]
    fn strikes_close_past_the_max_within_the_window_only() {
        let start = Instant::now();
        let mut strikes = Strikes::new(start);
        for _ in 0..Strikes::MAX {
            assert!(!strikes.strike(start));
        }
        assert!(strikes.strike(start + Duration::from_secs(1)));
        // A new window starts afresh.
        let mut strikes = Strikes::new(start);
        for _ in 0..Strikes::MAX {
            assert!(!strikes.strike(start));
        }
        let next = start + Strikes::WINDOW + Duration::from_millis(1);
        assert!(!strikes.strike(next));
    }

    #[test]
    fn address_slots_are_counted_and_the_map_shrinks() {
        let limits = ConnectionsPerAddress::new(2);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let first = limits.acquire(a).unwrap();
        let second = limits.acquire(a).unwrap();
        assert!(limits.acquire(a).is_none(), "a third from the same address");
        let other = limits.acquire(b).unwrap();
        assert_eq!(limits.addresses(), 2);
        drop(first);
        let third = limits.acquire(a).expect("a place was given back");
        drop((second, third, other));
        assert_eq!(limits.addresses(), 0, "no entry outlives its connections");
    }
}
