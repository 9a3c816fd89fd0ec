//! The HTTP API: one router per resource, merged here, wrapped in the
//! middleware every route shares (request id, tracing, timeout, body limit,
//! JSON errors).

pub mod agent;
pub mod auth;
pub mod budget;
pub mod chat;
pub mod console;
pub mod documents;
pub mod error;
pub mod health;
pub mod me;
pub mod openai_compat;
pub mod ops;
pub mod search;
pub mod suggest;
pub mod usage;
pub mod views;

use axum::Router;
use axum::http::{HeaderName, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::api::error::error_response;
use crate::domain::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "stolid", description = "Retrieval-augmented AI backend: documents, search, chat, suggest, agent, usage."),
    paths(
        health::healthz, health::readyz, me::me, search::search,
        usage::get_usage, budget::get_budget, budget::put_budget, ops::get_signals, agent::run_agent, suggest::suggest_questions, openai_compat::chat_completions,
        chat::chat, chat::list_conversations, chat::get_conversation, chat::delete_conversation,
        documents::create_documents, documents::list_documents, documents::list_collections, documents::get_document,
        documents::list_chunks, documents::get_content, documents::delete_document, documents::reindex_document,
        documents::summarize_document, documents::reindex_documents, documents::summarize_documents,
    ),
    components(schemas(crate::api::error::ErrorBody, crate::llm::accounting::usage_rows::GroupBy)),
    modifiers(&ApiKeyAuth, &CommonResponses),
)]
pub struct ApiDoc;

/// The OpenAPI document `GET /openapi.json` serves; `docs/openapi.json` is its
/// committed copy (`make openapi` writes it, a test keeps it current).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The responses every route can give besides its own: the middleware's and the
/// extractors' errors (all in the `ErrorBody` shape), and the event streams of
/// the streaming endpoints. Added here once rather than on every handler.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let authenticated = path.starts_with("/v1/");
            let streams = ["/v1/chat", "/v1/agent", "/v1/chat/completions"].contains(&path.as_str());
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses.entry(status.to_string()).or_insert_with(|| error(description).into());
                };
                add("400", "malformed request (`bad_request`, `invalid_json`, `invalid_cursor`)");
                add("422", "invalid input (`invalid_request`, `invalid_body`, `invalid_character`)");
                add("503", "a dependency is unavailable (`unavailable`); see `Retry-After`");
                add("504", "the request took longer than REQUEST_TIMEOUT_SECS (`timeout`)");
                if authenticated {
                    add("401", "missing or invalid API key (`unauthorized`)");
                    add("429", "the model provider is rate limiting (`model_rate_limited`)");
                    add("502", "the model provider failed (`model_error`)");
                    // A path id, or an id in the body (a conversation), may name nothing of this tenant's.
                    add("404", "no such resource for this tenant (`not_found`)");
                }
                if has_body {
                    add("413", "body above MAX_BODY_BYTES (`payload_too_large`)");
                    add("415", "unsupported content type (`unsupported_media_type`)");
                }
                if streams && let Some(utoipa::openapi::RefOr::T(ok)) = responses.get_mut("200") {
                    use utoipa::openapi::schema::{ObjectBuilder, Type};
                    // One Server-Sent Event: its name and its JSON payload as text.
                    let event = ObjectBuilder::new()
                        .property("event", ObjectBuilder::new().schema_type(Type::String))
                        .property("data", ObjectBuilder::new().schema_type(Type::String))
                        .property("id", ObjectBuilder::new().schema_type(Type::String))
                        .property("retry", ObjectBuilder::new().schema_type(Type::Integer));
                    let events = ContentBuilder::new().schema(Some(event)).build();
                    ok.content.insert("text/event-stream".to_string(), events);
                }
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!(
                        "request",
                        request_id = %request_id,
                        method = %request.method(),
                        path = %request.uri().path(),
                        tenant_id = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(tower_http::LatencyUnit::Millis)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID));

    Router::new()
        .merge(health::router())
        .merge(console::router())
        .merge(me::router())
        .merge(documents::router())
        .merge(search::router())
        .merge(chat::router())
        .merge(usage::router())
        .merge(budget::router())
        .merge(ops::router())
        .merge(agent::router())
        .merge(suggest::router())
        .merge(openai_compat::router())
        .route("/openapi.json", get(|| async { axum::Json(openapi()) }))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        // Innermost first: each `.layer` wraps everything above it.
        // MAX_BODY_BYTES is the one limit: axum's own 2 MB extractor default is off.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(axum::middleware::from_fn(reject_nul_in_url))
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, config.request_timeout))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::map_response(json_errors))
        .layer(middleware)
        .with_state(state)
}

/// A `%00` in the path or query would reach SQL as a NUL, which Postgres text
/// cannot hold: refuse it here, once, for every route.
async fn reject_nul_in_url(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        return crate::api::error::Error::nul_character().into_response();
    }
    next.run(request).await
}

/// Errors produced outside handlers (body limit, timeout, method not allowed,
/// panics) come as plain text; give them our JSON shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    // A client error's text (an extractor's rejection, such as a query string
    // that does not parse) says what was wrong with the request: keep it.
    let text = if status.is_client_error() {
        axum::body::to_bytes(response.into_body(), 2048).await.ok().and_then(|b| String::from_utf8(b.to_vec()).ok())
    } else {
        None
    };
    let message = text
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
    let mut json = error_response(status, code, message);
    if let Some(allow) = allow {
        json.headers_mut().insert(header::ALLOW, allow);
    }
    json
}
