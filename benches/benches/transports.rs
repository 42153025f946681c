//! Our adapters against the raw libraries, per transport: `throughput/<transport>/{tlab,raw}` (pipelines of
//! 1000 messages of 256 B, criterion reports elements/s) and `latency/<transport>/{tlab,raw}` (one message and its
//! echo per iteration; criterion's median is the p50 round trip). The `tlab` side is every reliable,
//! bidirectional mode of the registry ([`reliable_bidirectional`]), so a new mode is benchmarked without editing
//! this file; the `raw` side is written per library. `ws-mux` has no raw baseline of its own: raw tokio-tungstenite has no multiplexing, so it
//! compares with `ws/raw`. `scripts/bench-ratios.py` prints the ratios.

use std::future::Future;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tlab_benches::raw_sse::Http;
use tlab_benches::{
    EchoPair, EchoReceiver, EchoSender, raw_grpc, raw_h3, raw_quic, raw_sse, raw_ws, raw_wt, reliable_bidirectional, tlab,
};
use tokio::runtime::Runtime;

/// Messages per throughput iteration.
const BATCH: u64 = 1000;

/// Runs both benchmarks of one side of one transport on the pair `setup` makes, then drops it.
fn bench<S: EchoSender, R: EchoReceiver>(
    c: &mut Criterion,
    rt: &Runtime,
    transport: &str,
    side: &str,
    setup: impl Future<Output = EchoPair<S, R>>,
) {
    let mut pair = rt.block_on(setup);
    let id = BenchmarkId::new(transport, side);
    let mut group = c.benchmark_group("throughput");
    // One iteration is 1000 messages (up to ~0.1 s for POST-per-message SSE): flat sampling bounds the run time.
    group.throughput(Throughput::Elements(BATCH)).sampling_mode(SamplingMode::Flat);
    group.bench_function(id.clone(), |b| b.iter_custom(|iters| rt.block_on(pair.pipelines(iters, BATCH))));
    group.finish();
    let mut group = c.benchmark_group("latency");
    group.bench_function(id, |b| b.iter_custom(|iters| rt.block_on(pair.round_trips(iters))));
    group.finish();
    // Its tasks and servers belong to the runtime: drop them inside it.
    rt.block_on(async move { drop(pair) });
}

fn transports(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    for transport in reliable_bidirectional() {
        bench(c, &rt, transport.name(), "tlab", tlab::pair(&*transport));
    }
    bench(c, &rt, "ws", "raw", raw_ws::pair());
    bench(c, &rt, "grpc", "raw", raw_grpc::pair());
    bench(c, &rt, "sse-h1", "raw", raw_sse::pair(Http::V1));
    bench(c, &rt, "sse-h2", "raw", raw_sse::pair(Http::V2));
    bench(c, &rt, "quic", "raw", raw_quic::pair());
    bench(c, &rt, "h3", "raw", raw_h3::pair());
    bench(c, &rt, "wt-stream", "raw", raw_wt::pair());
}

fn main() {
    // What `criterion_group!`/`criterion_main!` expand to, without their undocumented public function.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    transports(&mut c);
    c.final_summary();
}
