//! Queue control endpoints:
//!
//! - `POST /backends/{b}/pause` and `POST /backends/{b}/resume`: stop and
//!   restart granting slots in a backend (clients queue meanwhile);
//! - `POST /backends/{b}/servers/{s}/shutdown-sessions`: close every
//!   session relaying on a server (`AD`);
//! - `POST /backends/{b}/servers/{s}/wait-idle` with `{"timeout_ms": n}`:
//!   answers once the server serves no session, or at the timeout, saying
//!   which.
//!
//! Same auth, errors and logs as the other routes: a request record names
//! the client, the outcome record what was done.

use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use slog::info;

use super::routes::{client, error, json_body, method_not_allowed, refused, unavailable};
use super::Admin;
use crate::broker::{IdleWait, MAX_IDLE_WAIT};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    let post = |path: &str, route| {
        web::resource(path.to_owned()).route(route).default_service(web::to(method_not_allowed))
    };
    cfg.service(post("/backends/{backend}/pause", web::post().to(pause)))
        .service(post("/backends/{backend}/resume", web::post().to(resume)))
        .service(post("/backends/{backend}/servers/{server}/shutdown-sessions", web::post().to(shutdown_sessions)))
        .service(post("/backends/{backend}/servers/{server}/wait-idle", web::post().to(wait_idle)));
}

fn path_part(req: &HttpRequest, name: &str) -> String {
    req.match_info().get(name).unwrap_or_default().to_owned()
}

async fn pause(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    set_paused(req, admin, true).await
}

async fn resume(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    set_paused(req, admin, false).await
}

async fn set_paused(req: HttpRequest, admin: web::Data<Admin>, paused: bool) -> HttpResponse {
    let backend = path_part(&req, "backend");
    let Ok((handle, _)) = admin.view().await else { return unavailable() };
    info!(admin.log, "backend pause requested"; "client" => client(&req), "backend" => &backend, "paused" => paused);
    // The BackendQueue logs `backend paused` / `backend resumed`.
    match handle.set_backend_paused(&backend, paused).await {
        Ok(status) => HttpResponse::Ok().json(json!({
            "backend": backend,
            "paused": status.since.is_some(),
            "paused_since": status.since.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
            "changed": status.changed,
            "queued": status.queued,
        })),
        Err(err) => refused(err),
    }
}

async fn shutdown_sessions(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    let backend = path_part(&req, "backend");
    let server = path_part(&req, "server");
    let Ok((handle, _)) = admin.view().await else { return unavailable() };
    info!(admin.log, "server sessions shutdown requested"; "client" => client(&req), "backend" => &backend,
        "server" => &server);
    match handle.shut_down_server_sessions(&backend, &server).await {
        Ok(sessions) => {
            info!(admin.log, "server sessions shut down"; "backend" => &backend, "server" => &server,
                "sessions" => sessions);
            HttpResponse::Ok().json(json!({ "backend": backend, "server": server, "sessions": sessions }))
        }
        Err(err) => refused(err),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitIdleBody {
    timeout_ms: u64,
}

const WAIT_IDLE_BODY: &str = r#"{"timeout_ms": n} (0 to 3600000)"#;

async fn wait_idle(req: HttpRequest, admin: web::Data<Admin>, body: web::Payload) -> HttpResponse {
    let backend = path_part(&req, "backend");
    let server = path_part(&req, "server");
    let Ok((handle, _)) = admin.view().await else { return unavailable() };
    let body: WaitIdleBody = match json_body(body, WAIT_IDLE_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let timeout = Duration::from_millis(body.timeout_ms);
    if timeout > MAX_IDLE_WAIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!("timeout_ms {} is out of range; expected {WAIT_IDLE_BODY}", body.timeout_ms),
        );
    }
    info!(admin.log, "server idle wait requested"; "client" => client(&req), "backend" => &backend,
        "server" => &server, "timeout_ms" => body.timeout_ms);
    match handle.wait_server_idle(&backend, &server, timeout).await {
        Ok(outcome) => {
            let (idle, waited) = match outcome {
                IdleWait::Idle { waited } => (true, waited),
                IdleWait::TimedOut { waited } => (false, waited),
            };
            let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
            info!(admin.log, "server idle wait answered"; "backend" => &backend, "server" => &server,
                "idle" => idle, "waited_ms" => waited_ms);
            HttpResponse::Ok().json(json!({
                "backend": backend,
                "server": server,
                "idle": idle,
                "outcome": if idle { "idle" } else { "timeout" },
                "waited_ms": waited_ms,
            }))
        }
        Err(err) => refused(err),
    }
}
