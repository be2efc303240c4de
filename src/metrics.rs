//! The operator's Prometheus metrics, and the HTTP endpoint that serves them (`/metrics`) with a
//! liveness answer (`/healthz`). Builds and rollouts are counted when their status changes, from the
//! same transitions that make events.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `kube`, `registry` or `invalid`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub platform: String,
    /// `native` or `emulated`.
    pub mode: String,
    /// `succeeded` or `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `rolled_out`, `blocked` or `stalled`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `true` when the reconcile called the registry (verified the children, pushed the index): its
    /// time is mostly the registry's, and apart from the others' on a dashboard.
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `observe` (the caches; a ConfigMap or Secret read where they have not caught up),
    /// `tool_images` and `base_images` (their registries, where not kept), `plan`, `placing` (waiting
    /// for the placing lock; observe to plan run again after it), `jobs` (creating and deleting Jobs),
    /// `publish`, `rollout`, `status` (the status patch) or `events` (handed to their sender).
    pub phase: &'static str,
}

/// A reconcile's or a phase's time: 1 ms to about 16 s.
const RECONCILE_BUCKETS: [f64; 8] = [0.001, 0.004, 0.016, 0.064, 0.256, 1.0, 4.0, 16.0];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_seconds: HistogramFamily<ReconcileLabels>,
    pub reconcile_phase_seconds: HistogramFamily<PhaseLabels>,
    pub platform_builds: Family<BuildLabels, Counter>,
    pub platform_build_seconds: HistogramFamily<BuildLabels>,
    pub rollouts: Family<RolloutLabels, Counter>,
    /// 1 while this replica reconciles (holds the Lease, or runs without leader election), else 0.
    pub leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("archway");
        let metrics = Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_seconds: Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS)),
            reconcile_phase_seconds: Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS)),
            platform_builds: Family::default(),
            // 5 s to about 85 min: native builds of small images up to emulated builds of large ones.
            platform_build_seconds: Family::new_with_constructor(|| {
                Histogram::new([5.0, 20.0, 60.0, 180.0, 600.0, 1800.0, 5120.0])
            }),
            rollouts: Family::default(),
            leading: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Reconciles of MultiArchBuilds", metrics.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile, by whether it called the registry",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "reconcile_phase_duration_seconds",
            "Time of one phase of a reconcile (where a slow reconcile waits)",
            metrics.reconcile_phase_seconds.clone(),
        );
        registry.register(
            "platform_builds",
            "Platform builds that ended, by platform, mode and result",
            metrics.platform_builds.clone(),
        );
        registry.register(
            "platform_build_duration_seconds",
            "Time from a platform build's start to its end",
            metrics.platform_build_seconds.clone(),
        );
        registry.register("rollouts", "Rollout targets that reached an end state", metrics.rollouts.clone());
        registry.register(
            "leading",
            "1 while this replica reconciles; 0 while it waits for the leader Lease",
            metrics.leading.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// A stopwatch for the phases of one reconcile, started now.
    pub fn laps(&self) -> Laps<'_> {
        Laps { metrics: self, last: Instant::now() }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Times the phases of one reconcile: each lap observes the time since the one before.
pub struct Laps<'a> {
    metrics: &'a Metrics,
    last: Instant,
}

impl Laps<'_> {
    pub fn lap(&mut self, phase: &'static str) {
        let now = Instant::now();
        let family = &self.metrics.reconcile_phase_seconds;
        family.get_or_create(&PhaseLabels { phase }).observe(now.duration_since(self.last).as_secs_f64());
        self.last = now;
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends. A port that cannot be bound is
/// logged, not fatal: the operator's work does not depend on being scraped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) {
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => return warn!(%addr, "cannot serve metrics: {e}"),
    };
    info!(%addr, "serving /metrics and /healthz");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("metrics connection: {e}");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(&metrics, request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                warn!("metrics connection: {e}");
            }
        });
    }
}

fn respond(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode()),
        // Alive either way (a standby must not be restarted for waiting); the body says which it is.
        "/healthz" => (StatusCode::OK, "text/plain", health(metrics.leading.get() == 1).to_string()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn health(leading: bool) -> &'static str {
    if leading { "ok: leading\n" } else { "ok: standby, not leading (waiting for the leader Lease)\n" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_appear_with_their_labels() {
        let metrics = Metrics::default();
        metrics.reconciles.inc();
        let labels = BuildLabels { platform: "linux/arm/v7".into(), mode: "native".into(), result: "succeeded".into() };
        metrics.platform_builds.get_or_create(&labels).inc();
        metrics.platform_build_seconds.get_or_create(&labels).observe(12.0);
        metrics.rollouts.get_or_create(&RolloutLabels { result: "blocked".into() }).inc();
        metrics.reconcile_seconds.get_or_create(&ReconcileLabels { registry: "false".into() }).observe(0.002);
        metrics.laps().lap("observe");
        let text = metrics.encode();
        assert!(text.contains("archway_reconciles_total 1"), "{text}");
        assert!(
            text.contains(
                r#"archway_platform_builds_total{platform="linux/arm/v7",mode="native",result="succeeded"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("archway_platform_build_duration_seconds_sum{"), "{text}");
        assert!(text.contains(r#"archway_rollouts_total{result="blocked"} 1"#), "{text}");
        assert!(text.contains(r#"archway_reconcile_duration_seconds_bucket{le="0.004",registry="false"} 1"#), "{text}");
        assert!(text.contains(r#"archway_reconcile_phase_duration_seconds_count{phase="observe"} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn unknown_paths_are_404() {
        let metrics = Metrics::default();
        assert_eq!(respond(&metrics, "/metrics").status(), StatusCode::OK);
        assert_eq!(respond(&metrics, "/healthz").status(), StatusCode::OK);
        assert_eq!(respond(&metrics, "/").status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn healthz_says_whether_this_replica_leads() {
        use http_body_util::BodyExt;
        let metrics = Metrics::default();
        let body = |metrics: &Metrics| {
            let response = respond(metrics, "/healthz");
            async move { String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap() }
        };
        assert!(body(&metrics).await.starts_with("ok: standby"));
        metrics.leading.set(1);
        assert_eq!(body(&metrics).await, "ok: leading\n");
    }
}
