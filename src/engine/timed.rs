//! A decorator over [`Engine`] that times every call into
//! `microscaler_engine_request_duration_seconds{operation,zone}`, and the connector that hands
//! out such engines, so every stage that reaches a zone is measured without knowing it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::observe::Connector;
use super::{
    ContainerSpec, Engine, EngineEvent, EngineIdentity, ExecOutcome, Observed, Result, StatsSample,
    Transition,
};
use crate::health::telemetry::Telemetry;

/// An engine of one zone whose calls are timed (failed calls too: a timeout is latency).
pub struct Timed {
    inner: Arc<dyn Engine>,
    zone: String,
    telemetry: Arc<Telemetry>,
}

impl Timed {
    async fn time<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.telemetry
            .engine_call(operation, &self.zone, started.elapsed());
        out
    }
}

/// `inner`, its calls timed under `zone` (the lease keeper's engine, which no connector of
/// the builder wraps).
pub fn timed(inner: Arc<dyn Engine>, zone: &str, telemetry: Arc<Telemetry>) -> Arc<dyn Engine> {
    Arc::new(Timed {
        inner,
        zone: zone.to_string(),
        telemetry,
    })
}

/// `connect`, with every engine it hands out timed under `zone`.
pub fn timed_connector(connect: Connector, zone: String, telemetry: Arc<Telemetry>) -> Connector {
    Arc::new(move || {
        let (connect, zone, telemetry) = (connect.clone(), zone.clone(), telemetry.clone());
        Box::pin(async move {
            let inner = connect().await?;
            Ok(Arc::new(Timed {
                inner,
                zone,
                telemetry,
            }) as Arc<dyn Engine>)
        })
    })
}

#[async_trait]
impl Engine for Timed {
    async fn ping(&self) -> Result<()> {
        self.time("ping", self.inner.ping()).await
    }
    async fn list(&self, filter: &[(String, String)]) -> Result<Vec<Observed>> {
        self.time("list", self.inner.list(filter)).await
    }
    async fn inspect(&self, id: &str) -> Result<Observed> {
        self.time("inspect", self.inner.inspect(id)).await
    }
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<Observed> {
        self.time("create_and_start", self.inner.create_and_start(spec))
            .await
    }
    async fn remove(&self, id: &str, grace: Duration) -> Result<()> {
        self.time("remove", self.inner.remove(id, grace)).await
    }
    /// Times the subscription, not the stream.
    async fn events(
        &self,
        filter: &[(String, String)],
    ) -> Result<BoxStream<'static, Result<EngineEvent>>> {
        self.time("events", self.inner.events(filter)).await
    }
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String> {
        self.time("logs_tail", self.inner.logs_tail(id, lines))
            .await
    }
    async fn stats(&self, id: &str) -> Result<StatsSample> {
        self.time("stats", self.inner.stats(id)).await
    }
    async fn create_marker(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Observed> {
        self.time("create_marker", self.inner.create_marker(name, labels))
            .await
    }
    async fn identity(&self) -> Result<EngineIdentity> {
        self.time("identity", self.inner.identity()).await
    }
    async fn exec_wait(&self, id: &str, cmd: &[String], keep: usize) -> Result<ExecOutcome> {
        self.time("exec", self.inner.exec_wait(id, cmd, keep)).await
    }

    async fn run_hook(&self, id: &str, cmd: &[String]) -> Result<(i64, String)> {
        self.time("run_hook", self.inner.run_hook(id, cmd)).await
    }
    async fn transition(&self, id: &str, t: Transition) -> Result<()> {
        let operation = match t {
            Transition::Pause => "pause",
            Transition::Unpause => "unpause",
            Transition::Start => "start",
            Transition::Stop(_) => "stop",
        };
        self.time(operation, self.inner.transition(id, t)).await
    }
    async fn rename(&self, id: &str, name: &str) -> Result<()> {
        self.time("rename", self.inner.rename(id, name)).await
    }
    async fn ensure_image(&self, spec: &ContainerSpec) -> Result<()> {
        self.time("ensure_image", self.inner.ensure_image(spec))
            .await
    }
    fn pulls(&self) -> Vec<super::docker::pull::PullProgress> {
        self.inner.pulls()
    }
}
