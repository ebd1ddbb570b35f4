//! A node's live statistics: what it records in its `node:{id}` record on
//! every heartbeat (field `stats`), for the Cloud API and the map.
//!
//! Owns [`NodeStats`] (the JSON in that field) and the [`Sampler`] that
//! produces it. Counters only ever grow (`crate::metrics::TRAFFIC`, the
//! process's CPU time, the Mothership's per-component counters); a sample
//! takes a reading of them and turns the difference from the previous
//! reading into rates over the time between the two, so a rate covers the
//! last heartbeat period, whoever reads it. A sample asked for within
//! [`MIN_WINDOW`] of the last one is that one again, so an extra reader
//! cannot shrink the window to nothing. Per component: events, errors and
//! handler latency since the node started (the Cloud API sums them across
//! nodes), sockets per channel now.
//!
//! Does not own the counting itself (the transports, the client, the router
//! count as things happen), nor writing the record (see `crate::cluster`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::io::SocketIo;
use crate::metrics::histogram::Snapshot;
use crate::metrics::{TRAFFIC, process};
use crate::mothership::Mothership;

/// A sample asked for sooner than this after the last is the last again.
pub const MIN_WINDOW: Duration = Duration::from_millis(250);

/// A node's statistics as of its last heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeStats {
    /// CPU time used over wall time elapsed since the previous sample, in
    /// percent of one core (above 100 on several cores).
    pub cpu_percent: f64,
    pub resident_memory_bytes: u64,
    pub bytes_received_per_second: f64,
    pub bytes_sent_per_second: f64,
    /// Open Engine.IO connections.
    pub connections: u64,
    /// Socket.IO sockets, over every namespace.
    pub sockets: u64,
    /// Socket.IO events received from clients.
    pub events_per_second: f64,
    /// Events this node routed to a component's host.
    pub routed_events_per_second: f64,
    /// Latency of those routed events over the same window.
    pub routed_latency_ms: Percentiles,
    /// Components hosted here or with sockets here, by `id@version`.
    pub components: BTreeMap<String, ComponentStats>,
    /// The time the rates cover, in milliseconds.
    pub window_ms: u64,
}

/// The median and the 99th percentile, in milliseconds; `null` when nothing
/// was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// What one component did on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ComponentStats {
    /// Requests its handler ran here since the node started.
    pub events: u64,
    /// Of those, answered with an error.
    pub errors: u64,
    /// Its handler's latency here since the node started.
    pub latency_ms: Percentiles,
    /// Sockets on this node by channel namespace.
    pub sockets_per_channel: BTreeMap<String, u64>,
}

impl NodeStats {
    /// Reads the JSON a node recorded.
    pub fn parse(text: &str) -> Result<NodeStats, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl Percentiles {
    fn of(snapshot: &Snapshot) -> Percentiles {
        let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
        Percentiles {
            p50: snapshot.quantile_ms(0.5).map(round),
            p99: snapshot.quantile_ms(0.99).map(round),
        }
    }
}

/// The ever-growing counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu: Option<Duration>,
    bytes_received: u64,
    bytes_sent: u64,
    events: u64,
    routed_events: u64,
    routed_latency: Snapshot,
}

impl Reading {
    fn now() -> Reading {
        use std::sync::atomic::Ordering::Relaxed;
        Reading {
            at: Instant::now(),
            cpu: process::cpu_time(),
            bytes_received: TRAFFIC.bytes_received.load(Relaxed),
            bytes_sent: TRAFFIC.bytes_sent.load(Relaxed),
            events: TRAFFIC.events.load(Relaxed),
            routed_events: TRAFFIC.routed_events.load(Relaxed),
            routed_latency: TRAFFIC.routed_latency.snapshot(),
        }
    }
}

/// The rates between two readings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Rates {
    cpu_percent: f64,
    bytes_received_per_second: f64,
    bytes_sent_per_second: f64,
    events_per_second: f64,
    routed_events_per_second: f64,
    routed_latency_ms: Percentiles,
    window_ms: u64,
}

/// How fast each counter grew from `earlier` to `later`; zero over no time.
fn rates(earlier: &Reading, later: &Reading) -> Rates {
    let window = later.at.saturating_duration_since(earlier.at);
    let seconds = window.as_secs_f64();
    let per_second = |from: u64, to: u64| {
        if seconds > 0.0 {
            to.saturating_sub(from) as f64 / seconds
        } else {
            0.0
        }
    };
    let cpu_percent = match (earlier.cpu, later.cpu) {
        (Some(from), Some(to)) if seconds > 0.0 => {
            to.saturating_sub(from).as_secs_f64() / seconds * 100.0
        }
        _ => 0.0,
    };
    Rates {
        cpu_percent,
        bytes_received_per_second: per_second(earlier.bytes_received, later.bytes_received),
        bytes_sent_per_second: per_second(earlier.bytes_sent, later.bytes_sent),
        events_per_second: per_second(earlier.events, later.events),
        routed_events_per_second: per_second(earlier.routed_events, later.routed_events),
        routed_latency_ms: Percentiles::of(&later.routed_latency.since(&earlier.routed_latency)),
        window_ms: window.as_millis() as u64,
    }
}

/// What a sample is made from besides the process-wide counters.
#[derive(Clone)]
struct Sources {
    engine: Engine,
    io: SocketIo,
    mothership: Option<Mothership>,
}

/// Produces [`NodeStats`], one sample per call (see the module's doc for the
/// window). Cheap to clone; clones share the last reading.
#[derive(Clone)]
pub struct Sampler {
    sources: Sources,
    last: Arc<Mutex<Last>>,
}

struct Last {
    reading: Reading,
    /// The JSON of the sample taken at `reading`, if one was.
    json: Option<String>,
}

impl Sampler {
    /// Samples the node of `engine` and `io`; the first sample's rates cover
    /// the time from now.
    pub fn new(engine: Engine, io: SocketIo) -> Sampler {
        Sampler {
            sources: Sources {
                engine,
                io,
                mothership: None,
            },
            last: Arc::new(Mutex::new(Last {
                reading: Reading::now(),
                json: None,
            })),
        }
    }

    /// Also reports the components of `mothership`.
    pub fn with_components(mut self, mothership: Mothership) -> Sampler {
        self.sources.mothership = Some(mothership);
        self
    }

    /// A sample, as the JSON recorded in the node's record.
    pub fn sample_json(&self) -> String {
        let mut last = self.last.lock();
        if let Some(json) = &last.json
            && last.reading.at.elapsed() < MIN_WINDOW
        {
            return json.clone();
        }
        let reading = Reading::now();
        let stats = self.stats(&rates(&last.reading, &reading));
        let json = serde_json::to_string(&stats).unwrap_or_else(|_| "{}".into());
        *last = Last {
            reading,
            json: Some(json.clone()),
        };
        json
    }

    /// The source [`crate::cluster::Membership::set_stats_source`] takes.
    pub fn source(&self) -> crate::cluster::StatsSource {
        let sampler = self.clone();
        Arc::new(move || sampler.sample_json())
    }

    fn stats(&self, rates: &Rates) -> NodeStats {
        let Sources {
            engine,
            io,
            mothership,
        } = &self.sources;
        NodeStats {
            cpu_percent: (rates.cpu_percent * 100.0).round() / 100.0,
            resident_memory_bytes: process::resident_memory().unwrap_or_default(),
            bytes_received_per_second: rates.bytes_received_per_second,
            bytes_sent_per_second: rates.bytes_sent_per_second,
            connections: engine.session_count() as u64,
            sockets: io.local_socket_count() as u64,
            events_per_second: rates.events_per_second,
            routed_events_per_second: rates.routed_events_per_second,
            routed_latency_ms: rates.routed_latency_ms,
            components: mothership.as_ref().map(components).unwrap_or_default(),
            window_ms: rates.window_ms,
        }
    }
}

/// Every component hosted here (with its counters) or with sockets here.
fn components(mothership: &Mothership) -> BTreeMap<String, ComponentStats> {
    let mut components: BTreeMap<String, ComponentStats> = mothership
        .hosted()
        .into_iter()
        .map(|key| (key, ComponentStats::default()))
        .collect();
    for (key, figures) in mothership.counters().snapshot() {
        let entry = components.entry(key).or_default();
        let latency = Percentiles::of(&figures.latency);
        entry.events = figures.events;
        entry.errors = figures.errors;
        entry.latency_ms = latency;
    }
    for (key, namespace, count) in mothership.channel_sockets() {
        *components
            .entry(key)
            .or_default()
            .sockets_per_channel
            .entry(namespace)
            .or_default() += count as u64;
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::Histogram;

    fn reading(at: Instant, cpu_ms: u64, counters: [u64; 4], latency: &Histogram) -> Reading {
        Reading {
            at,
            cpu: Some(Duration::from_millis(cpu_ms)),
            bytes_received: counters[0],
            bytes_sent: counters[1],
            events: counters[2],
            routed_events: counters[3],
            routed_latency: latency.snapshot(),
        }
    }

    #[test]
    fn rates_are_differences_over_the_window() {
        let latency = Histogram::new();
        latency.record(Duration::from_secs(3));
        let start = Instant::now();
        let earlier = reading(start, 1_000, [100, 200, 10, 4], &latency);
        for _ in 0..6 {
            latency.record(Duration::from_millis(2));
        }
        let later = reading(
            start + Duration::from_secs(2),
            1_500,
            [2_100, 4_200, 50, 10],
            &latency,
        );
        let rates = rates(&earlier, &later);
        assert_eq!(rates.window_ms, 2_000);
        // Half a second of CPU in two seconds: a quarter of one core.
        assert!((rates.cpu_percent - 25.0).abs() < 1e-9, "{rates:?}");
        assert_eq!(rates.bytes_received_per_second, 1_000.0);
        assert_eq!(rates.bytes_sent_per_second, 2_000.0);
        assert_eq!(rates.events_per_second, 20.0);
        assert_eq!(rates.routed_events_per_second, 3.0);
        // Only the window's latencies: the 3 s one came before it.
        let p99 = rates.routed_latency_ms.p99.unwrap();
        assert!((1.0..=2.5).contains(&p99), "{rates:?}");
    }

    #[test]
    fn no_time_and_no_traffic_is_zero_not_nan() {
        let latency = Histogram::new();
        let now = Instant::now();
        let same = reading(now, 5, [1, 1, 1, 1], &latency);
        let rates = rates(&same, &same);
        assert_eq!(rates, Rates::default());
        assert_eq!(rates.routed_latency_ms, Percentiles::default());
    }

    #[test]
    fn a_counter_that_went_back_reads_as_zero() {
        let latency = Histogram::new();
        let start = Instant::now();
        let earlier = reading(start, 900, [50, 50, 50, 50], &latency);
        let later = reading(start + Duration::from_secs(1), 100, [0, 0, 0, 0], &latency);
        let rates = rates(&earlier, &later);
        assert_eq!(rates.cpu_percent, 0.0);
        assert_eq!(rates.events_per_second, 0.0);
    }

    #[test]
    fn the_json_round_trips_with_every_field() {
        let stats = NodeStats {
            cpu_percent: 1.5,
            resident_memory_bytes: 10,
            components: [(
                "chat@1.0.0".to_string(),
                ComponentStats {
                    events: 3,
                    errors: 1,
                    latency_ms: Percentiles {
                        p50: Some(1.0),
                        p99: None,
                    },
                    sockets_per_channel: [("/chat/1.0.0/room".to_string(), 2)].into(),
                },
            )]
            .into(),
            ..NodeStats::default()
        };
        let json = serde_json::to_value(&stats).unwrap();
        for field in [
            "cpu_percent",
            "resident_memory_bytes",
            "bytes_received_per_second",
            "bytes_sent_per_second",
            "connections",
            "sockets",
            "events_per_second",
            "routed_events_per_second",
            "routed_latency_ms",
            "components",
            "window_ms",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(
            json["components"]["chat@1.0.0"]["latency_ms"]["p99"],
            serde_json::Value::Null
        );
        assert_eq!(NodeStats::parse(&json.to_string()).unwrap(), stats);
    }

    #[tokio::test]
    async fn a_sample_soon_after_another_is_the_same() {
        let settings = crate::config::Settings::default();
        let cluster = crate::cluster::from_settings(&settings).unwrap();
        let io = SocketIo::new(&settings, cluster);
        let engine = Engine::new(
            crate::engine::EngineConfig::from(&settings),
            io.engine_handler(),
        );
        let sampler = Sampler::new(engine, io);
        let first = sampler.sample_json();
        assert_eq!(sampler.sample_json(), first);
        let stats = NodeStats::parse(&first).unwrap();
        assert_eq!((stats.connections, stats.sockets), (0, 0));
        if cfg!(target_os = "linux") {
            assert!(stats.resident_memory_bytes > 0);
        }
    }
}
