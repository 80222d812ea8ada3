//! The gRPC demo backend: `demo.Demo` (unary `Echo` naming `APP_VERSION`,
//! server-streaming `Ticks`) over h2c on `127.0.0.1:$PORT`, with `/health`
//! and a WebSocket echo at `/ws` on the same port over HTTP/1.1. Run by
//! the tests as an app with `upstream: h2c`.

mod echo;
mod server;

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(50051);
    let version = std::env::var("APP_VERSION").unwrap_or_else(|_| "dev".into());
    let instance = std::env::var("CUTOVER_INSTANCE").unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let mut term = signal(SignalKind::terminate())?;
    let serving = server::serve(listener, server::router(&version, &instance), Arc::default());
    tokio::select! {
        () = serving => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
