//! The gRPC demo's listener: `demo.Demo` over h2c (prior knowledge) and,
//! on the same port, `/health` (what cutover's readiness probe asks, over
//! HTTP/1.1), `/proto` (the HTTP version the request came in) and a
//! WebSocket echo at `/ws` (so an `h2c` app's WebSocket path can be shown
//! to work). Counts the connections it accepts.
//!
//! Shared with the tests (`#[path]`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::echo::Demo;

/// The whole app: gRPC beside the HTTP/1.1 routes.
pub fn router(version: &str, instance: &str) -> Router {
    let version: Arc<str> = version.into();
    let http1 = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/proto",
            get(|req: Request| async move { format!("{:?}", req.version()) }),
        )
        .route("/ws", get(websocket))
        .with_state(Arc::clone(&version));
    tonic::service::Routes::new(Demo::new(&version, instance))
        .into_axum_router()
        .merge(http1)
}

async fn websocket(ws: WebSocketUpgrade, State(version): State<Arc<str>>) -> Response {
    ws.on_upgrade(move |socket| echo(socket, version))
}

/// Greets with the version, then echoes text until the client closes.
async fn echo(mut socket: WebSocket, version: Arc<str>) {
    if socket
        .send(Message::Text(format!("hello from {version}").into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let echoed = match message {
            Message::Text(text) => socket.send(Message::Text(text)).await,
            Message::Close(_) => return,
            _ => Ok(()),
        };
        if echoed.is_err() {
            return;
        }
    }
}

/// Serves `router` on `listener` until the task is dropped; `accepted`
/// counts connections. HTTP/1.1 (with upgrades) and HTTP/2 prior
/// knowledge, told apart by the connection's first bytes.
pub async fn serve(listener: TcpListener, router: Router, accepted: Arc<AtomicUsize>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
