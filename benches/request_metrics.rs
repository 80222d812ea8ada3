//! What the metrics cost a request: `AppMetrics::observe` (status counter
//! through a pre-resolved handle, duration histogram), against the
//! `with_label_values` lookup it replaces.
//!
//! Run: `cargo bench --bench request_metrics`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use cutover_proxy::ProxyMetrics;
use prometheus::{IntCounterVec, Opts, Registry};

fn bench(c: &mut Criterion) {
    let registry = Registry::new();
    let metrics = ProxyMetrics::new(&registry).unwrap();
    let app = metrics.app("web");
    let mut group = c.benchmark_group("request_metrics");
    group.bench_function("observe_pre_resolved", |b| {
        b.iter(|| app.observe(black_box(200), black_box(0.0012)))
    });
    let vec = IntCounterVec::new(Opts::new("x_total", "x"), &["app", "code"]).unwrap();
    group.bench_function("with_label_values_lookup", |b| {
        b.iter(|| vec.with_label_values(&[black_box("web"), black_box("200")]).inc())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
