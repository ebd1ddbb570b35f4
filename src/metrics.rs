//! Prometheus metrics: the recorder, the names every node exports, and the
//! `/metrics` text.
//!
//! Owns installing the process-wide recorder (once; an embedding application
//! that installed its own keeps it, and `/metrics` is then empty) and making
//! every counter visible from the start, at zero. The counters themselves are
//! incremented where things happen (`metrics::counter!` in the cluster backend,
//! and `rain_refused_total{limit}` wherever a per-client limit refuses).
//!
//! Also owns the [`Traffic`] counters, which are on the hot path (every
//! websocket frame, polling body and event): plain atomics, one relaxed add
//! each, no registry lookup; `/metrics` renders them, and `crate::stats`
//! turns them into rates. The process's own figures are read from `/proc`
//! ([`process`]) when rendered; latencies go into fixed-bucket
//! [`histogram`]s.

pub mod histogram;
pub mod process;

use std::fmt::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use histogram::Histogram;

/// What this process carried since it started. Process-wide, like the
/// recorder: nodes embedded in one process share it.
#[derive(Debug)]
pub struct Traffic {
    /// Bytes of websocket messages and polling bodies from clients.
    pub bytes_received: AtomicU64,
    /// Bytes of websocket messages and polling bodies to clients.
    pub bytes_sent: AtomicU64,
    /// Socket.IO events received from clients.
    pub events: AtomicU64,
    /// Events routed to a component's host (this node's calls).
    pub routed_events: AtomicU64,
    /// How long a routed call took to be answered.
    pub routed_latency: Histogram,
}

impl Traffic {
    const fn new() -> Traffic {
        Traffic {
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            events: AtomicU64::new(0),
            routed_events: AtomicU64::new(0),
            routed_latency: Histogram::new(),
        }
    }

    pub fn received(&self, bytes: usize) {
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// A routed call was answered (or gave up) after `latency`.
    pub fn routed(&self, latency: std::time::Duration) {
        self.routed_events.fetch_add(1, Ordering::Relaxed);
        self.routed_latency.record(latency);
    }
}

/// The process's traffic counters.
pub static TRAFFIC: Traffic = Traffic::new();

/// Buckets of `rain_api_request_duration_seconds` (API calls are local work
/// or one Redis round trip, or wait for another node up to ROUTE_TIMEOUT_MS).
const API_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// What `/metrics` shows of the node beside the recorded series.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    /// Open Engine.IO sessions.
    pub connections: usize,
    /// Socket.IO sockets on this node, over every namespace.
    pub sockets: usize,
    /// Whether the cluster backend is ready.
    pub ready: bool,
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder if nobody has; returns its handle when it is ours.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("rain_api_request_duration_seconds".into()),
                    &API_BUCKETS,
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            for kind in ["room", "namespace", "node"] {
                metrics::counter!("rain_cluster_published_total", "kind" => kind).increment(0);
            }
            for kind in ["room", "namespace", "node", "control"] {
                metrics::counter!("rain_cluster_received_total", "kind" => kind).increment(0);
            }
            metrics::counter!("rain_cluster_delivered_total").increment(0);
            metrics::counter!("rain_cluster_dropped_total").increment(0);
            metrics::counter!("rain_cluster_undecodable_total").increment(0);
            metrics::counter!("rain_routed_undecodable_total").increment(0);
            metrics::counter!("rain_routed_refused_total", "reason" => "overloaded").increment(0);
            metrics::counter!("rain_routed_refused_total", "reason" => "cluster").increment(0);
            for limit in [
                "namespace_max_length",
                "namespaces_per_connection",
                "log_line_max_length",
                "rooms_per_socket",
                "connections_per_address",
                "event_rate",
                "socket_max_in_flight",
                "log_lines_per_minute",
                "backend_answer_max_bytes",
                "max_payload",
                "outbound_queue",
                "polling_body_timeout",
                "polling_overlap",
                "connect_timeout",
            ] {
                metrics::counter!("rain_refused_total", "limit" => limit).increment(0);
            }
            metrics::gauge!("rain_cluster_subscriptions").set(0.0);
            Some(handle)
        })
        .as_ref()
}

/// The Prometheus text of every metric, with the live gauges refreshed.
pub fn render(live: Live) -> String {
    metrics::gauge!("rain_engine_sessions").set(live.connections as f64);
    metrics::gauge!("rain_cluster_ready").set(if live.ready { 1.0 } else { 0.0 });
    let Some(handle) = install() else {
        return String::new();
    };
    let mut text = handle.render();
    render_own(live, &mut text);
    text
}

/// Appends the series kept outside the recorder: the process's figures,
/// [`TRAFFIC`], and the live counts.
fn render_own(live: Live, out: &mut String) {
    let mut series = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    if let Some(cpu) = process::cpu_time() {
        series(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            cpu.as_secs_f64(),
        );
    }
    if let Some(bytes) = process::resident_memory() {
        series(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            bytes as f64,
        );
    }
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    series(
        "rain_bytes_received_total",
        "counter",
        "Bytes of websocket messages and polling bodies received from clients.",
        load(&TRAFFIC.bytes_received),
    );
    series(
        "rain_bytes_sent_total",
        "counter",
        "Bytes of websocket messages and polling bodies sent to clients.",
        load(&TRAFFIC.bytes_sent),
    );
    series(
        "rain_connections",
        "gauge",
        "Open Engine.IO connections.",
        live.connections as f64,
    );
    series(
        "rain_sockets",
        "gauge",
        "Socket.IO sockets on this node, over every namespace.",
        live.sockets as f64,
    );
    series(
        "rain_events_total",
        "counter",
        "Socket.IO events received from clients.",
        load(&TRAFFIC.events),
    );
    series(
        "rain_routed_events_total",
        "counter",
        "Events this node routed to a component's host.",
        load(&TRAFFIC.routed_events),
    );
    TRAFFIC.routed_latency.snapshot().render(
        "rain_routed_duration_seconds",
        "How long a routed event took to be answered, in seconds.",
        out,
    );
}
