//! The floor under cutover's data plane: a minimal pingora 0.9 proxy (one
//! fixed upstream, no routing, no metrics, no headers) with the same
//! server settings as cutover (one thread, per-thread runtime).
//! `benches/peers.sh` with `BASELINE=1` measures it beside cutover, to
//! tell pingora's own per-request cost from cutover's.
//!
//! Run: `cargo run --release --example pingora_baseline -- 127.0.0.1:18086 127.0.0.1:<backend port>`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Fixed(std::net::SocketAddr);

#[async_trait]
impl ProxyHttp for Fixed {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora_baseline LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("UPSTREAM must be ip:port");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Fixed(upstream));
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
