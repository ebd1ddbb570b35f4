//! What the components hosted here did: events handled, errors, and how long
//! their handlers took, per component (`id@version`).
//!
//! Owns the counters the router updates around each handler call (atomics
//! and a fixed-bucket histogram per component: no lock is written once a
//! component has its entry) and their snapshot. Counts since the node
//! started; the Cloud API sums them across nodes. Does not own when they are
//! read or how they are shown (see `crate::stats`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::metrics::histogram::{Histogram, Snapshot};

/// One component's counters.
#[derive(Debug, Default)]
struct Counts {
    events: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

/// One component's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ComponentFigures {
    /// Requests its handler ran here (renders included).
    pub events: u64,
    /// Of those, answered with an error.
    pub errors: u64,
    pub latency: Snapshot,
}

/// The counters of every component hosted here. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ComponentCounters {
    by_component: Arc<RwLock<HashMap<String, Arc<Counts>>>>,
}

impl ComponentCounters {
    /// A handler of `component` answered after `took`, with an error or not.
    pub(super) fn handled(&self, component: &str, ok: bool, took: Duration) {
        let existing = self.by_component.read().get(component).cloned();
        let counts = existing.unwrap_or_else(|| {
            self.by_component
                .write()
                .entry(component.to_string())
                .or_default()
                .clone()
        });
        counts.events.fetch_add(1, Ordering::Relaxed);
        if !ok {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
        counts.latency.record(took);
    }

    /// Every component's figures so far (those that handled nothing yet are
    /// not in it).
    pub fn snapshot(&self) -> HashMap<String, ComponentFigures> {
        self.by_component
            .read()
            .iter()
            .map(|(component, counts)| {
                let figures = ComponentFigures {
                    events: counts.events.load(Ordering::Relaxed),
                    errors: counts.errors.load(Ordering::Relaxed),
                    latency: counts.latency.snapshot(),
                };
                (component.clone(), figures)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_component_counts_its_own() {
        let counters = ComponentCounters::default();
        counters.handled("chat@1.0.0", true, Duration::from_millis(3));
        counters.handled("chat@1.0.0", false, Duration::from_millis(30));
        counters.handled("echo@2.0.0", true, Duration::from_millis(1));
        let figures = counters.snapshot();
        assert_eq!(figures["chat@1.0.0"].events, 2);
        assert_eq!(figures["chat@1.0.0"].errors, 1);
        assert_eq!(figures["chat@1.0.0"].latency.count(), 2);
        assert_eq!(figures["echo@2.0.0"].events, 1);
        assert_eq!(figures["echo@2.0.0"].errors, 0);
    }
}
