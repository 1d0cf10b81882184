//! The HTTP API: routes, JSON bodies and JSON errors. Every error a client sees is
//! `{"error":{"code":"...","message":"..."}}` with the fitting 4xx status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State as Shared};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tagcast_plugin_api::{Data, Op, Options};

use super::{ws, State};
use crate::metrics::Exposition;

/// The content-manager module, served to browsers.
const CONTENT_MANAGER_JS: &str = include_str!("../../../clients/js/content-manager.js");

/// The peer address of a request's connection, put in its extensions by [`service`].
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Every route.
pub fn router(state: Arc<State>, demo: bool) -> Router {
    let api = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/v1/changes", post(changes))
        .route("/v1/publish", post(publish))
        .route("/v1/tags", post(tags))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/client/content-manager.js", get(content_manager))
        .with_state(state);
    let app = if demo {
        api.merge(crate::demo::routes())
    } else {
        api
    };
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The router as a hyper service for one connection, tagging requests with the peer.
pub fn service(
    router: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let router = router.clone();
        async move {
            use tower_service::Service;
            let mut router = router;
            router.call(req.map(Body::new)).await
        }
    })
}

/// An API error: status, stable code, readable message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// A JSON request body, read within `limits.max_body_bytes` and parsed with errors in the
/// API's format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<State>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<State>) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let limit = state.limits.max_body_bytes;
        let body: Bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body is over the limit of {limit} bytes"),
                )
            })?;
        serde_json::from_slice(&body).map(ApiJson).map_err(|err| {
            if err.is_data() {
                ApiError::invalid(err.to_string())
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("invalid JSON: {err}"),
                )
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesRequest {
    #[serde(default)]
    author: Option<String>,
    changes: Vec<ChangeItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeItem {
    op: OpName,
    data: Data,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum OpName {
    Insert,
    Update,
    Delete,
}

impl From<OpName> for Op {
    fn from(op: OpName) -> Op {
        match op {
            OpName::Insert => Op::Insert,
            OpName::Update => Op::Update,
            OpName::Delete => Op::Delete,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    #[serde(default)]
    author: Option<String>,
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsRequest {
    data: Data,
    #[serde(default)]
    collection: bool,
    #[serde(default)]
    nested: bool,
}

#[derive(Serialize)]
struct TagsResponse {
    tags: Vec<String>,
}

async fn changes(
    Shared(state): Shared<Arc<State>>,
    ApiJson(req): ApiJson<ChangesRequest>,
) -> Json<TagsResponse> {
    let mut all: Vec<String> = Vec::new();
    // A batch can carry thousands of changes: de-duplicate with a set, not a scan.
    let mut seen = std::collections::HashSet::new();
    for change in &req.changes {
        let tags =
            state
                .publisher
                .publish_change(req.author.as_deref(), change.op.into(), &change.data);
        for tag in tags {
            if seen.insert(tag.clone()) {
                all.push(tag);
            }
        }
    }
    Json(TagsResponse { tags: all })
}

async fn publish(
    Shared(state): Shared<Arc<State>>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<TagsResponse>, ApiError> {
    let max = state.limits.max_tag_bytes;
    if let Some(bad) = req.tags.iter().find(|t| t.is_empty() || t.len() > max) {
        return Err(ApiError::invalid(format!(
            "tags must be non-empty and at most {max} bytes long; got one of {} bytes",
            bad.len()
        )));
    }
    state
        .publisher
        .publish_tags(req.author.as_deref(), &req.tags);
    Ok(Json(TagsResponse { tags: req.tags }))
}

async fn tags(
    Shared(state): Shared<Arc<State>>,
    ApiJson(req): ApiJson<TagsRequest>,
) -> Json<TagsResponse> {
    let options = Options {
        collection: req.collection,
        nested: req.nested,
    };
    Json(TagsResponse {
        tags: state.publisher.chain().tags(&req.data, options),
    })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(Shared(state): Shared<Arc<State>>) -> Response {
    let mut reasons: Vec<String> = Vec::new();
    if !state.ready.load(Ordering::SeqCst) {
        reasons.push("the server is starting or shutting down".to_owned());
    }
    reasons.extend(state.sources.down());
    if reasons.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let body = json!({"status": "not_ready", "reasons": reasons});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(Shared(state): Shared<Arc<State>>) -> Response {
    let hub = &state.hub.stats;
    let mut e = Exposition::default();
    e.family(
        "tagcast_connections",
        "gauge",
        "Open WebSocket connections.",
    )
    .sample(
        "tagcast_connections",
        hub.connections.load(Ordering::Relaxed),
    )
    .family(
        "tagcast_subscriptions",
        "gauge",
        "Tags tracked, summed over connections.",
    )
    .sample(
        "tagcast_subscriptions",
        hub.subscriptions.load(Ordering::Relaxed),
    )
    .family(
        "tagcast_tags",
        "gauge",
        "Distinct tags tracked by at least one connection.",
    )
    .sample("tagcast_tags", state.hub.distinct_tags())
    .family(
        "tagcast_changes_received_total",
        "counter",
        "Changes published.",
    )
    .sample(
        "tagcast_changes_received_total",
        hub.changes.load(Ordering::Relaxed),
    )
    .family(
        "tagcast_tags_published_total",
        "counter",
        "Tags published, counted per change.",
    )
    .sample(
        "tagcast_tags_published_total",
        hub.tags_published.load(Ordering::Relaxed),
    )
    .family(
        "tagcast_notifications_delivered_total",
        "counter",
        "Outdated frames written to connections.",
    )
    .sample(
        "tagcast_notifications_delivered_total",
        state.deliveries.notifications.load(Ordering::Relaxed),
    )
    .histogram(
        "tagcast_delivery_latency_seconds",
        "Time from a change's arrival to its frame being written to a connection.",
        &state.deliveries,
    )
    .family(
        "tagcast_generation_errors_total",
        "counter",
        "Failed or panicked tag generations, per plugin.",
    );
    for (plugin, count) in state.publisher.chain().error_counts() {
        e.labelled("tagcast_generation_errors_total", "plugin", plugin, count);
    }
    state.sources.render_metrics(&mut e);
    let mut response = e.finish().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn content_manager() -> Response {
    let mut response = CONTENT_MANAGER_JS.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/protocol.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see docs/protocol.md",
    )
}
