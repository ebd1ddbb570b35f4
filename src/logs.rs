//! Where a node's own log lines go and how they are written: the one set-up of
//! the `tracing` subscriber, shared by the `rain-node` binary and the examples.
//!
//! Every line goes to stderr, never stdout: stdout carries only the two
//! `listening on` lines that scripts and tests wait for, and a container
//! runtime collects both streams anyway. `LOG` filters, `LOG_FORMAT` picks
//! text or one JSON object per line. Does not own what is logged (each module
//! logs its own events) nor the clients' log lines the Mothership relays (see
//! `crate::mothership`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// Installs the global subscriber for these settings' `LOG` and `LOG_FORMAT`.
/// Does nothing if one is installed already (a test harness, an embedding
/// program's own).
pub fn init(settings: &Settings) {
    init_with(&settings.log, settings.log_format);
}

/// [`init`] from a filter and a format, for programs that build their settings
/// in code. A filter that does not parse falls back to `info` (the settings
/// have refused it already).
pub fn init_with(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // Flattened: an event's fields sit beside `timestamp`, `level` and
        // `target` rather than under `fields`, as log collectors index them.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
