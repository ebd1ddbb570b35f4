//! Prometheus metrics: the recorder, the names every node exports, and the
//! `/metrics` text.
//!
//! Owns installing the process-wide recorder (once; an embedding application
//! that installed its own keeps it, and `/metrics` is then empty) and making
//! every counter visible from the start, at zero. The counters themselves are
//! incremented where things happen (`metrics::counter!` in the cluster backend,
//! and `rain_refused_total{limit}` wherever a per-client limit refuses).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder if nobody has; returns its handle when it is ours.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
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
pub fn render(sessions: usize, ready: bool) -> String {
    metrics::gauge!("rain_engine_sessions").set(sessions as f64);
    metrics::gauge!("rain_cluster_ready").set(if ready { 1.0 } else { 0.0 });
    install().map(PrometheusHandle::render).unwrap_or_default()
}
