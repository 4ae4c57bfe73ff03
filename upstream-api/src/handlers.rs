//! Health, introspection and test-friendly endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::request_id::RequestId;
use crate::AppState;

/// Liveness: the process runs and answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 503 while draining after SIGTERM or while the maintenance file exists.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.not_ready_reason() {
        None => Json(json!({ "status": "ready", "replica": state.replica_id() })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": reason, "replica": state.replica_id() })),
        )
            .into_response(),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Value {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        Value::Null
    } else {
        Value::String(values.join(", "))
    }
}

/// What this replica saw of the request: tests use it to check what the gateway forwarded.
pub async fn whoami(
    State(state): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> impl IntoResponse {
    let all: BTreeMap<&str, Value> = headers
        .keys()
        .map(|k| (k.as_str(), header(&headers, k.as_str())))
        .collect();
    // Like many frameworks (Express, PHP), announce ourselves: the edge should strip it.
    let announce = [
        ("server", "upstream-api/0.1"),
        ("x-powered-by", "upstream-api"),
    ];
    let body = Json(json!({
        "replica": state.replica_id(),
        "request_id": id,
        "method": method.as_str(),
        "uri": uri.to_string(),
        "host": header(&headers, "host"),
        "x_forwarded_for": header(&headers, "x-forwarded-for"),
        "x_forwarded_proto": header(&headers, "x-forwarded-proto"),
        "x_forwarded_host": header(&headers, "x-forwarded-host"),
        "headers": all,
    }));
    (announce, body)
}

#[derive(Deserialize)]
pub struct SlowQuery {
    ms: Option<u64>,
}

/// Answers after `ms` milliseconds (at most 60 s): a stand-in for a slow endpoint.
pub async fn slow(State(state): State<AppState>, Query(q): Query<SlowQuery>) -> Json<Value> {
    let ms = q.ms.unwrap_or(1000).min(60_000);
    tracing::info!(ms, "slow request started");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "slept_ms": ms, "replica": state.replica_id() }))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    count: Option<u32>,
    interval_ms: Option<u64>,
}

/// Server-sent events: `count` events (at most 100) `interval_ms` apart (at most 10 s),
/// the first at once: a progress feed, which a proxy must pass on as each is sent.
pub async fn events(
    Query(q): Query<EventsQuery>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let count = q.count.unwrap_or(3).min(100);
    let interval = Duration::from_millis(q.interval_ms.unwrap_or(500).min(10_000));
    let feed = futures_util::stream::unfold(0, move |i| async move {
        if i >= count {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = Event::default()
            .id(i.to_string())
            .data(format!("event {i}"));
        Some((Ok(event), i + 1))
    });
    Sse::new(feed)
}

/// Counts the request body's bytes (for body-forwarding and size-limit checks).
/// The body's length and FNV-1a digest: enough for a client (or a test) to tell that
/// the bytes arrived whole, in order, once.
pub async fn echo(State(state): State<AppState>, body: Bytes) -> Json<Value> {
    let digest = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Json(json!({
        "bytes": body.len(),
        "fnv1a": format!("{digest:016x}"),
        "replica": state.replica_id(),
    }))
}

/// WebSocket echo: text and binary frames come back as sent.
pub async fn ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let replica = state.replica_id().to_owned();
    upgrade.on_upgrade(move |socket| echo_socket(socket, replica))
}

async fn echo_socket(mut socket: WebSocket, replica: String) {
    if socket
        .send(Message::Text(format!("hello from {replica}").into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
    )
}
