//! Route lookup on the hot path: one `ArcSwap` load plus host/path match
//! and a backend pick, with 1, 100 and 10,000 routes, and the same while
//! another thread publishes new tables as fast as it can. Then the pick
//! alone (`split_pick`): on a plain entry, on an entry with a canary split
//! (the weighted choice), and with a sticky cookie read from the request's
//! `Cookie` header, so the split's cost can be compared with the plain
//! pick.
//!
//! Run: `cargo bench --bench route_lookup` (only the picks:
//! `cargo bench --bench route_lookup -- split_pick`)

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cutover_proxy::split::sticky;
use cutover_proxy::{AppId, Backend, HostMatch, ProxyMetrics, RouteTable, Split, SplitStats, TableHandle};

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

/// The pick alone, on one app with two stable backends: plain, with a 5%
/// canary split (two canary backends), and with a sticky split whose
/// client sends its cookie (the header is parsed as the request path
/// does, then the pick honours it).
fn bench_split_pick(c: &mut Criterion) {
    let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
    let backend = |i: u16| Backend::new(([127, 0, 0, 1], 9000 + i).into(), format!("web-{i}"), u64::from(i) + 1);
    let stable: Vec<_> = (0..2).map(backend).collect();
    let canary: Vec<_> = (2..4).map(backend).collect();
    let table = |split: Option<Split>| {
        let mut b = RouteTable::builder();
        b.app(AppId(0), "web", stable.clone(), metrics.app("web"));
        if let Some(split) = split {
            b.split(AppId(0), split);
        }
        b.build()
    };
    let split = |sticky: bool| Split {
        canary: canary.clone(),
        weight_bp: 500,
        sticky,
        stable_tag: "v1".into(),
        canary_tag: "v2".into(),
        stats: SplitStats::new(),
    };
    let plain = table(None);
    let weighted = table(Some(split(false)));
    let sticky_split = table(Some(split(true)));
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        "session=abc123; cutover-web=v2; theme=dark".parse().unwrap(),
    );

    let mut group = c.benchmark_group("split_pick");
    let app = plain.app(AppId(0)).unwrap();
    group.bench_function("plain", |b| {
        b.iter(|| black_box(app.choose(black_box(&[]), None)).is_some())
    });
    let app = weighted.app(AppId(0)).unwrap();
    group.bench_function("weighted", |b| {
        b.iter(|| black_box(app.choose(black_box(&[]), None)).is_some())
    });
    let app = sticky_split.app(AppId(0)).unwrap();
    group.bench_function("sticky_cookie", |b| {
        b.iter(|| {
            let cookie = sticky::find(black_box(&headers), "web");
            black_box(app.choose(black_box(&[]), cookie)).is_some()
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_split_pick);
criterion_main!(benches);
