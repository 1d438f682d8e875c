//! `/metrics`, `/healthz`, `/readyz`, `/status` on the listen address, and the
//! admin socket (`state_dir/admin.sock`, owner only) for operator actions such as
//! `breaker reset`: never on the network.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::daemon::Shared;
use crate::metrics::CONTENT_TYPE;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(shared)
}

fn admin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/breaker/reset", post(breaker_reset))
        .route("/status", get(status))
        .with_state(shared)
}

async fn until(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
}

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    if let Err(e) = axum::serve(listener, router(shared))
        .with_graceful_shutdown(until(stop))
        .await
    {
        tracing::error!("HTTP server failed: {e}");
    }
}

/// Binds the admin socket, readable and writable by the daemon's user only. A
/// socket left by a crashed daemon is replaced; one a running daemon answers on is
/// not (two daemons must not share a state_dir).
pub fn bind_admin(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another session-reaper daemon uses this state_dir",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve_admin(listener: UnixListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    if let Err(e) = axum::serve(listener, admin_router(shared))
        .with_graceful_shutdown(until(stop))
        .await
    {
        tracing::error!("admin socket failed: {e}");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        shared.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let why = shared.not_ready();
    let body = serde_json::json!({ "ready": why.is_empty(), "not_ready": why });
    let code = if why.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.snapshot()).into_response()
}

#[derive(Deserialize)]
struct BreakerQuery {
    target: String,
    policy: String,
}

async fn breaker_reset(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<BreakerQuery>,
) -> Response {
    match shared.reset_breaker(&q.target, &q.policy) {
        Ok(was) => axum::Json(serde_json::json!({
            "target": q.target,
            "policy": q.policy,
            "was_open": was.is_some(),
            "open_since": was.map(crate::audit::timestamp),
        }))
        .into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}
