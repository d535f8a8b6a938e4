//! `GET /metrics`: the controller in Prometheus text format (prometheus-client), read from what
//! the API serves (the desired store, the status board) at each scrape.
//!
//! # Rules
//! - Gauges are rebuilt at every scrape from the current state, so a deleted group's series
//!   disappear with it.
//! - Launches, terminations, the reconcile, engine-call and status-write series are counted
//!   where they happen (not derived from the status at the scrape), through
//!   [`crate::health::telemetry::Telemetry`], and only registered here.
//! - No token is needed (like `/healthz`): the metrics name groups and namespaces, so expose
//!   the API port only where that is acceptable, or scrape through a proxy.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Context;
use crate::manifest::{Kind, ObjectKey};
use crate::util::unpoisoned::RwLockExt;

type Labels = Vec<(&'static str, String)>;

/// The counters that live across scrapes and belong to this endpoint.
#[derive(Default)]
pub struct Counters {
    /// `microscaler_metrics_scrapes_total`.
    scrapes: Counter,
}

fn labels(key: &ObjectKey) -> Labels {
    vec![
        ("namespace", key.namespace.clone()),
        ("group", key.name.clone()),
    ]
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

/// The text of one scrape.
pub fn render(ctx: &Context, counters: &Counters) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("microscaler");
    let desired_g = gauge_family(
        &mut r,
        "group_desired_capacity",
        "Capacity the controller converges each group to (0 when stopped)",
    );
    let current_g = gauge_family(
        &mut r,
        "group_current_instances",
        "Instances of each group that exist",
    );
    let ready_g = gauge_family(
        &mut r,
        "group_ready_instances",
        "Instances of each group running and healthy",
    );
    let updated_g = gauge_family(
        &mut r,
        "group_updated_instances",
        "Instances of each group on the current launch configuration (rollout progress)",
    );
    let min_g = gauge_family(&mut r, "group_min_size", "minSize of each group");
    let max_g = gauge_family(&mut r, "group_max_size", "maxSize of each group");
    let state_g = gauge_family(
        &mut r,
        "group_instances",
        "Instances of each group by container state",
    );
    let cond_g = gauge_family(&mut r, "group_condition", "1 when the group's condition (Ready, Progressing, Degraded, Invalid, DeletionHeld) is True");
    let policy_g = gauge_family(
        &mut r,
        "group_policy_desired_capacity",
        "Capacity of each group's latest policy decision",
    );
    let cpu_g = gauge_family(
        &mut r,
        "group_cpu_percent",
        "Average CPU of each group's measured instances, percent of their allotment",
    );
    let mem_g = gauge_family(
        &mut r,
        "group_memory_percent",
        "Average memory of each group's measured instances, percent of their limit",
    );
    let pushed_g = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    r.register(
        "group_pushed_metric",
        "Latest fresh value of each pushed metric of each group",
        pushed_g.clone(),
    );
    let zone_g = gauge_family(
        &mut r,
        "zone_reachable",
        "0 when a group reports the zone's engine unreachable, else 1",
    );
    let objects_g = gauge_family(
        &mut r,
        "manifest_objects",
        "Objects loaded from the manifest directory, by kind",
    );
    let file_errors = Gauge::<i64>::default();
    r.register(
        "manifest_files_with_errors",
        "Manifest files that do not load (the last valid version keeps running)",
        file_errors.clone(),
    );
    let status_problems = Gauge::<i64>::default();
    r.register(
        "status_write_problems",
        "Manifest files whose status block cannot be written",
        status_problems.clone(),
    );
    let build = Family::<Labels, Gauge>::default();
    r.register(
        "build_info",
        "Version of the running controller",
        build.clone(),
    );
    build
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    r.register(
        "metrics_scrapes",
        "Scrapes of this endpoint",
        counters.scrapes.clone(),
    );
    counters.scrapes.inc();
    ctx.telemetry.register(&mut r);

    let desired = ctx.desired.borrow().clone();
    for kind in Kind::ALL {
        let n = desired.objects.keys().filter(|k| k.kind == kind).count();
        objects_g
            .get_or_create(&vec![("kind", kind.as_str().to_string())])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    file_errors.set(i64::try_from(desired.file_errors.len()).unwrap_or(i64::MAX));
    status_problems.set(i64::try_from(ctx.status_problems.all().len()).unwrap_or(i64::MAX));
    let mut unreachable: BTreeMap<String, bool> = ctx
        .config
        .zones
        .iter()
        .map(|z| (z.name.clone(), false))
        .collect();
    let board = ctx.status.read_locked();
    for (key, _, _) in desired.groups() {
        let Some(g) = desired.objects.get(key) else {
            continue;
        };
        let l = labels(key);
        if let crate::manifest::Object::AutoScalingGroup(m) = &g.object {
            min_g.get_or_create(&l).set(i64::from(m.spec.min_size));
            max_g.get_or_create(&l).set(i64::from(m.spec.max_size));
        }
        let Some(st) = board.get(key) else { continue };
        desired_g
            .get_or_create(&l)
            .set(i64::from(st.desired_capacity));
        current_g.get_or_create(&l).set(i64::from(st.current));
        ready_g.get_or_create(&l).set(i64::from(st.ready));
        updated_g.get_or_create(&l).set(i64::from(st.updated));
        let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
        for i in &st.instances {
            *by_state.entry(i.state.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            let mut ls = l.clone();
            ls.push(("state", state.to_string()));
            state_g.get_or_create(&ls).set(n);
        }
        for c in &st.conditions {
            let mut lc = l.clone();
            lc.push(("condition", c.type_.clone()));
            cond_g.get_or_create(&lc).set(i64::from(c.status == "True"));
        }
        if let Some(d) = &st.last_decision {
            policy_g.get_or_create(&l).set(i64::from(d.desired));
        }
        if let Some(m) = &st.metrics {
            if let Some(c) = m.cpu_percent {
                cpu_g.get_or_create(&l).set(i64::from(c));
            }
            if let Some(c) = m.memory_percent {
                mem_g.get_or_create(&l).set(i64::from(c));
            }
            for (metric, v) in &m.pushed {
                let mut lp = l.clone();
                lp.push(("metric", metric.clone()));
                pushed_g.get_or_create(&lp).set(*v);
            }
        }
        for z in &st.unreachable_zones {
            unreachable.insert(z.clone(), true);
        }
    }
    drop(board);
    for (zone, down) in unreachable {
        zone_g
            .get_or_create(&vec![("zone", zone)])
            .set(i64::from(!down));
    }
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

async fn metrics(State((ctx, counters)): State<(Arc<Context>, Arc<Counters>)>) -> Response {
    match render(&ctx, &counters) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The `/metrics` route, with its counters.
pub fn routes(ctx: &Arc<Context>) -> Router<Arc<Context>> {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state((ctx.clone(), Arc::new(Counters::default())))
}
