//! The controller's own counters and latencies for `/metrics`: recorded where they happen (the
//! reconcile runner, the engines, the status writer) through one shared handle, read by the API.
//!
//! A leaf (it knows no stage), so every stage can hold the handle without importing the API.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a series: a few bounded names and their values.
pub type Labels = Vec<(&'static str, String)>;

/// Buckets in seconds: from a millisecond (a pass with nothing to do) to a minute (a slow pull).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The handle: cheap to clone into each stage (every metric is an `Arc` inside).
#[derive(Clone)]
pub struct Telemetry {
    reconcile_duration: Histogram,
    reconcile_errors: Family<Labels, Counter>,
    engine_requests: Family<Labels, Histogram, fn() -> Histogram>,
    status_writes: Counter,
    status_write_failures: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            reconcile_duration: histogram(),
            reconcile_errors: Family::default(),
            engine_requests: Family::new_with_constructor(histogram),
            status_writes: Counter::default(),
            status_write_failures: Counter::default(),
        }
    }
}

impl Telemetry {
    /// One reconcile pass took `took`; `error` is the reason it failed, if it did.
    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc();
        }
    }

    /// One call `operation` (the `Engine` method) to the engine of `zone` took `took`.
    pub fn engine_call(&self, operation: &'static str, zone: &str, took: Duration) {
        self.engine_requests
            .get_or_create(&vec![
                ("operation", operation.to_string()),
                ("zone", zone.to_string()),
            ])
            .observe(took.as_secs_f64());
    }

    /// A manifest file's status was written (`ok`), or could not be.
    pub fn status_write(&self, ok: bool) {
        if ok {
            self.status_writes.inc();
        } else {
            self.status_write_failures.inc();
        }
    }

    /// Adds every series to `registry` (prefixed `microscaler_` by the caller's registry).
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile pass of one group",
            prometheus_client::registry::Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconcile passes that failed, by reason",
            self.reconcile_errors.clone(),
        );
        r.register_with_unit(
            "engine_request_duration",
            "Duration of calls to the engines, by operation and zone",
            prometheus_client::registry::Unit::Seconds,
            self.engine_requests.clone(),
        );
        r.register(
            "status_writes",
            "Manifest files (or sidecar files) whose status block was written",
            self.status_writes.clone(),
        );
        r.register(
            "status_write_failures",
            "Status writes that failed (see status_write_problems for the files now failing)",
            self.status_write_failures.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_are_named_with_units_and_totals() {
        let t = Telemetry::default();
        t.reconciled(Duration::from_millis(3), None);
        t.reconciled(Duration::from_millis(20), Some("LaunchFailed"));
        t.engine_call("list", "a", Duration::from_millis(2));
        t.status_write(true);
        t.status_write(false);
        let mut r = Registry::with_prefix("microscaler");
        t.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encodes");
        for line in [
            "microscaler_reconcile_duration_seconds_count 2",
            "microscaler_reconcile_errors_total{reason=\"LaunchFailed\"} 1",
            "microscaler_engine_request_duration_seconds_count{operation=\"list\",zone=\"a\"} 1",
            "microscaler_status_writes_total 1",
            "microscaler_status_write_failures_total 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
    }
}
