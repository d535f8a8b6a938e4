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

fn group_labels(namespace: &str, group: &str, cause: Option<&str>) -> Labels {
    let mut l = vec![
        ("namespace", namespace.to_string()),
        ("group", group.to_string()),
    ];
    if let Some(c) = cause {
        l.push(("cause", cause_label(c).to_string()));
    }
    l
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// A short, bounded label for an activity's cause (the cause itself is a sentence).
pub fn cause_label(cause: &str) -> &'static str {
    let c = cause.to_ascii_lowercase();
    if c.contains("rolling update") || c.contains("no longer in the group") {
        "rollout"
    } else if c.contains("replacing") {
        "replace"
    } else if c.contains("rebalanc") {
        "rebalance"
    } else if c.contains("started outside") {
        "foreign"
    } else if c.contains("desired capacity")
        || c.contains("than desired")
        || c.contains("group started")
    {
        "scale"
    } else {
        "other"
    }
}

/// The handle: cheap to clone into each stage (every metric is an `Arc` inside).
#[derive(Clone)]
pub struct Telemetry {
    reconcile_duration: Histogram,
    reconcile_errors: Family<Labels, Counter>,
    engine_requests: Family<Labels, Histogram, fn() -> Histogram>,
    status_writes: Counter,
    status_write_failures: Counter,
    launches: Family<Labels, Counter>,
    terminations: Family<Labels, Counter>,
    launch_failures: Family<Labels, Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            reconcile_duration: histogram(),
            reconcile_errors: Family::default(),
            engine_requests: Family::new_with_constructor(histogram),
            status_writes: Counter::default(),
            status_write_failures: Counter::default(),
            launches: Family::default(),
            terminations: Family::default(),
            launch_failures: Family::default(),
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

    /// The reconciler launched an instance of `namespace`/`group` (`cause`: the activity's
    /// sentence, labelled by [`cause_label`]).
    pub fn launched(&self, namespace: &str, group: &str, cause: &str) {
        self.launches
            .get_or_create(&group_labels(namespace, group, Some(cause)))
            .inc();
    }

    /// The reconciler terminated an instance of `namespace`/`group`.
    pub fn terminated(&self, namespace: &str, group: &str, cause: &str) {
        self.terminations
            .get_or_create(&group_labels(namespace, group, Some(cause)))
            .inc();
    }

    /// A pass of `namespace`/`group` failed to launch.
    pub fn launch_failed(&self, namespace: &str, group: &str) {
        self.launch_failures
            .get_or_create(&group_labels(namespace, group, None))
            .inc();
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
        r.register(
            "instance_launches",
            "Instances launched, by group and cause",
            self.launches.clone(),
        );
        r.register(
            "instance_terminations",
            "Instances terminated, by group and cause",
            self.terminations.clone(),
        );
        r.register(
            "instance_launch_failures",
            "Reconcile passes whose launch failed, by group",
            self.launch_failures.clone(),
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
        t.launched("ns", "web", "group started with desired capacity 2");
        t.terminated("ns", "web", "replacing failed instance web-1");
        t.launch_failed("ns", "web");
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
            "microscaler_instance_launches_total{namespace=\"ns\",group=\"web\",cause=\"scale\"} 1",
            "microscaler_instance_terminations_total{namespace=\"ns\",group=\"web\",cause=\"replace\"} 1",
            "microscaler_instance_launch_failures_total{namespace=\"ns\",group=\"web\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
    }

    #[test]
    fn causes_become_a_few_labels() {
        assert_eq!(
            cause_label("rolling update to launch configuration web (abc)"),
            "rollout"
        );
        assert_eq!(
            cause_label("desired capacity raised from 1 to 3 by policy/cpu"),
            "scale"
        );
        assert_eq!(cause_label("replacing failed instance web-1"), "replace");
        assert_eq!(cause_label("fewer instances than desired (2)"), "scale");
        assert_eq!(cause_label("something new"), "other");
    }
}
