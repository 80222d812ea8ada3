//! Route lookup on the hot path: one `ArcSwap` load plus host/path match
//! and a backend pick, with 1, 100 and 10,000 routes, and the same while
//! another thread publishes new tables as fast as it can.
//!
//! Run: `cargo bench --bench route_lookup`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cutover_proxy::{AppId, Backend, HostMatch, ProxyMetrics, RouteTable, TableHandle};

/// `n` routes: a catch-all, then exact hosts (`host-17.test`) with a few
/// path prefixes each, then wildcards, like a multi-tenant edge.
fn table(n: usize, metrics: &ProxyMetrics, backends: &[Arc<Backend>]) -> RouteTable {
    let mut b = RouteTable::builder();
    b.app(AppId(0), "web", backends.to_vec(), metrics.app("web"));
    b.route(HostMatch::Any, "/", AppId(0)).unwrap();
    let mut added = 1;
    let mut host = 0;
    while added < n {
        for path in ["/", "/api", "/api/v2", "/static/"] {
            if added >= n {
                break;
            }
            let h = if host % 10 == 9 {
                HostMatch::Wildcard(format!("tenant-{host}.test"))
            } else {
                HostMatch::Exact(format!("host-{host}.test"))
            };
            b.route(h, path, AppId(0)).unwrap();
            added += 1;
        }
        host += 1;
    }
    b.build()
}

fn lookup(handle: &TableHandle, host: &str, path: &str) -> bool {
    let table = handle.load();
    let Some(app) = table.route(host, path) else {
        return false;
    };
    table.app(app).and_then(|a| a.pick(&[])).is_some()
}

fn bench(c: &mut Criterion) {
    let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
    let backends: Vec<_> = (0..2)
        .map(|i| Backend::new(([127, 0, 0, 1], 9000 + i).into(), format!("web-{i}"), u64::from(i) + 1))
        .collect();

    let mut group = c.benchmark_group("route_lookup");
    for n in [1usize, 100, 10_000] {
        let handle = TableHandle::new(table(n, &metrics, &backends));
        let host = if n > 1 { "host-7.test" } else { "example.test" };
        group.bench_with_input(BenchmarkId::new("exact_host", n), &n, |b, _| {
            b.iter(|| black_box(lookup(&handle, black_box(host), black_box("/api/v2/users"))))
        });
        if n >= 100 {
            group.bench_with_input(BenchmarkId::new("wildcard_host", n), &n, |b, _| {
                b.iter(|| black_box(lookup(&handle, black_box("a.tenant-9.test"), black_box("/api"))))
            });
        }
        group.bench_with_input(BenchmarkId::new("catch_all", n), &n, |b, _| {
            b.iter(|| black_box(lookup(&handle, black_box("unknown.test"), black_box("/x"))))
        });
    }

    // Readers while a writer builds and publishes tables back to back.
    for n in [100usize, 10_000] {
        let handle = TableHandle::new(table(n, &metrics, &backends));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (handle, stop, metrics, backends) = (
                Arc::clone(&handle),
                Arc::clone(&stop),
                metrics.clone(),
                backends.clone(),
            );
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    handle.publish(table(n, &metrics, &backends));
                    swaps += 1;
                }
                swaps
            })
        };
        group.bench_with_input(BenchmarkId::new("exact_host_during_swaps", n), &n, |b, _| {
            b.iter(|| black_box(lookup(&handle, black_box("host-7.test"), black_box("/api/v2/users"))))
        });
        stop.store(true, Ordering::Relaxed);
        let swaps = writer.join().unwrap();
        eprintln!("  ({swaps} table swaps while measuring with {n} routes)");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
