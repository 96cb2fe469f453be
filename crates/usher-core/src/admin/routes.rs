//! The admin endpoints: the dashboard page (`/`, `/ui`), reports
//! (`/health`, `/stats`, `/metrics`) and run-time changes
//! (`PUT /backends/{b}/servers/{s}`, `PUT /frontends/{f}`); queue control
//! (pause, shutdown-sessions, wait-idle) is in `queue_control.rs`.
//!
//! A change is validated whole before anything is sent (a bad value
//! changes nothing), then applied through the owning actor, which logs it;
//! a `server change requested` or `frontend change requested` record names
//! the client. Unknown names are 404, bad
//! values 400, an actor that no longer answers 503 — always as JSON
//! `{"error": "<reason>"}`.


use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use slog::info;

use super::{dashboard, metrics, stats_json, Admin, MAX_BODY};
use crate::backend::AdminState;
use crate::broker::{ControlError, ReloadError, ServerChange, MAX_MAXCONN};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    for path in dashboard::PATHS {
        cfg.service(web::resource(path).route(web::get().to(dashboard::page)).default_service(web::to(method_not_allowed)));
    }
    cfg.service(web::resource("/health").route(web::get().to(health)).default_service(web::to(method_not_allowed)))
        .service(web::resource("/stats").route(web::get().to(stats)).default_service(web::to(method_not_allowed)))
        .service(web::resource("/metrics").route(web::get().to(metrics)).default_service(web::to(method_not_allowed)))
        .service(
            web::resource("/backends/{backend}/servers/{server}")
                .route(web::put().to(put_server))
                .route(web::post().to(super::topology_routes::add_server))
                .route(web::delete().to(super::topology_routes::remove_server))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/frontends/{frontend}")
                .route(web::put().to(put_frontend))
                .default_service(web::to(method_not_allowed)),
        )
        .service(web::resource("/reload").route(web::post().to(reload)).default_service(web::to(method_not_allowed)));
    super::queue_control::configure(cfg);
    super::topology_routes::configure(cfg);
}

// === POST /reload ===

async fn reload(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    info!(admin.log, "reload requested"; "client" => client(&req));
    // The Topology logs the outcome.
    match admin.broker.reload().await {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(err @ (ReloadError::Config(_) | ReloadError::Bind(_))) => error(StatusCode::BAD_REQUEST, err.to_string()),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

pub(super) fn error(status: StatusCode, reason: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": reason.into() }))
}

pub(super) fn unavailable() -> HttpResponse {
    error(StatusCode::SERVICE_UNAVAILABLE, ControlError::Stopped.to_string())
}

/// Unknown names are 404, refused values 400, a broker that no longer
/// answers 503.
pub(super) fn refused(err: ControlError) -> HttpResponse {
    let status = match err {
        ControlError::UnknownBackend(_) | ControlError::UnknownServer { .. } | ControlError::UnknownFrontend(_) => {
            StatusCode::NOT_FOUND
        }
        ControlError::Rejected(_) => StatusCode::BAD_REQUEST,
        ControlError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, err.to_string())
}

pub(super) async fn not_found(req: HttpRequest) -> HttpResponse {
    error(StatusCode::NOT_FOUND, format!("no such endpoint: {} {}", req.method(), req.path()))
}

pub(super) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    error(StatusCode::METHOD_NOT_ALLOWED, format!("method {} is not allowed on {}", req.method(), req.path()))
}

async fn health(admin: web::Data<Admin>) -> HttpResponse {
    if admin.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "stopping" }))
    } else {
        HttpResponse::Ok().json(json!({ "status": "ok" }))
    }
}

async fn stats(admin: web::Data<Admin>) -> HttpResponse {
    match stats_json::collect(&admin).await {
        Ok(snapshot) => HttpResponse::Ok().json(snapshot),
        Err(_) => unavailable(),
    }
}

async fn metrics(admin: web::Data<Admin>) -> HttpResponse {
    match stats_json::collect(&admin).await {
        Ok(snapshot) => HttpResponse::Ok().content_type(metrics::CONTENT_TYPE).body(metrics::render(&snapshot)),
        Err(_) => unavailable(),
    }
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(body: web::Payload, expected: &str) -> Result<T, HttpResponse> {
    let bytes = match body.to_bytes_limited(MAX_BODY).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => return Err(error(StatusCode::BAD_REQUEST, format!("cannot read the body: {err}"))),
        Err(_) => {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY} bytes")));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|err| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {err}; expected {expected}")))
}

pub(super) fn client(req: &HttpRequest) -> String {
    req.peer_addr().map_or_else(|| "-".to_owned(), |a| a.to_string())
}

fn shown(value: Option<u32>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

// === PUT /backends/{b}/servers/{s} ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerBody {
    state: Option<String>,
    weight: Option<u64>,
    maxconn: Option<u64>,
}

const SERVER_BODY: &str = r#"{"state": "ready" | "drain" | "maint", "weight": 0..256, "maxconn": n} (any of them)"#;

/// Reads the body into a change. The ranges are the handle's to check
/// ([`ServerChange::check`]); a number too big for a `u32` saturates, which
/// is out of every range.
fn parse_server(change: ServerBody) -> Result<ServerChange, String> {
    if change.state.is_none() && change.weight.is_none() && change.maxconn.is_none() {
        return Err(format!("nothing to change; expected {SERVER_BODY}"));
    }
    let state = match change.state.as_deref() {
        None => None,
        Some(word) => Some(
            AdminState::parse(word)
                .ok_or_else(|| format!("unknown state {word:?}; expected \"ready\", \"drain\" or \"maint\""))?,
        ),
    };
    let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(ServerChange { state, weight: change.weight.map(narrow), maxconn: change.maxconn.map(narrow) })
}

async fn put_server(req: HttpRequest, admin: web::Data<Admin>, body: web::Payload) -> HttpResponse {
    let backend = req.match_info().get("backend").unwrap_or_default().to_owned();
    let server = req.match_info().get("server").unwrap_or_default().to_owned();
    let Ok((handle, layout)) = admin.view().await else { return unavailable() };
    let Some((_, layout)) = layout.backend(&backend) else {
        return refused(ControlError::UnknownBackend(backend));
    };
    let Some(configured) = layout.servers.iter().find(|s| s.name == server) else {
        return refused(ControlError::UnknownServer { backend, server });
    };
    let configured_maxconn = configured.maxconn;
    let change: ServerBody = match json_body(body, SERVER_BODY).await {
        Ok(change) => change,
        Err(response) => return response,
    };
    let plan = match parse_server(change) {
        Ok(plan) => plan,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    // Checked before the request is logged: a rejected change logs nothing.
    if let Err(err) = plan.check(configured_maxconn) {
        return refused(err);
    }
    info!(admin.log, "server change requested"; "client" => client(&req), "backend" => &backend, "server" => &server,
        "state" => plan.state.map_or("-", AdminState::as_str), "weight" => shown(plan.weight),
        "maxconn" => shown(plan.maxconn));
    // Each actor logs its own change record.
    match handle.change_server(&backend, &server, plan).await {
        Ok(status) => HttpResponse::Ok().json(json!({
            "backend": backend,
            "server": server,
            "op": status.op.as_str(),
            "admin": status.admin.as_str(),
            "weight": status.weight,
            "maxconn": status.maxconn,
        })),
        Err(err) => refused(err),
    }
}

// === PUT /frontends/{f} ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontendChange {
    maxconn: u64,
}

const FRONTEND_BODY: &str = r#"{"maxconn": n} (0 = only the global limit)"#;

async fn put_frontend(req: HttpRequest, admin: web::Data<Admin>, body: web::Payload) -> HttpResponse {
    let frontend = req.match_info().get("frontend").unwrap_or_default().to_owned();
    let Ok((handle, layout)) = admin.view().await else { return unavailable() };
    if !layout.frontends.iter().any(|f| f.name == frontend) {
        return refused(ControlError::UnknownFrontend(frontend));
    }
    let change: FrontendChange = match json_body(body, FRONTEND_BODY).await {
        Ok(change) => change,
        Err(response) => return response,
    };
    if change.maxconn > u64::from(MAX_MAXCONN) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("maxconn {} is out of range; expected 0 (only the global limit) to {MAX_MAXCONN}", change.maxconn),
        );
    }
    let maxconn = change.maxconn as u32;
    info!(admin.log, "frontend change requested"; "client" => client(&req), "frontend" => &frontend, "maxconn" => maxconn);
    match handle.set_frontend_maxconn(&frontend, maxconn).await {
        Ok(previous) => {
            HttpResponse::Ok().json(json!({ "frontend": frontend, "maxconn": maxconn, "previous": previous }))
        }
        Err(err) => refused(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32) -> Option<std::num::NonZeroU32> {
        std::num::NonZeroU32::new(n)
    }

    fn change(state: Option<&str>, weight: Option<u64>, maxconn: Option<u64>) -> ServerBody {
        ServerBody { state: state.map(str::to_owned), weight, maxconn }
    }

    #[test]
    fn server_changes_are_validated_whole() {
        let plan = |body, configured| parse_server(body).and_then(|c: ServerChange| match c.check(configured) {
            Ok(()) => Ok(c),
            Err(err) => Err(err.to_string()),
        });
        assert_eq!(
            plan(change(Some("drain"), Some(0), Some(3)), limit(10)),
            Ok(ServerChange { state: Some(AdminState::Drain), weight: Some(0), maxconn: Some(3) })
        );
        assert!(plan(change(Some("DRAIN"), None, None), limit(10)).unwrap_err().contains("unknown state"));
        assert!(plan(change(None, Some(257), None), limit(10)).unwrap_err().contains("weight 257"));
        assert!(plan(change(None, Some(1 << 40), None), limit(10)).unwrap_err().contains("out of range"));
        assert!(plan(change(None, None, Some(0)), limit(10)).unwrap_err().contains("maxconn 0"));
        assert!(plan(change(None, None, Some(1 << 40)), limit(10)).unwrap_err().contains("out of range"));
        assert!(plan(change(None, None, Some(5)), None).unwrap_err().contains("unlimited"));
        assert!(plan(change(None, None, None), limit(10)).unwrap_err().contains("nothing to change"));
    }
}
