//! Run-time topology: `POST /backends/{b}/servers/{s}` adds a server (body:
//! the keys of a `[backends.B.servers.S]` table, as JSON) and `DELETE` on
//! the same path removes one; `POST /backends/{b}` (the keys of a
//! `[backends.B]` table, `servers` included) and `DELETE /backends/{b}` do
//! the same for a backend. Both are applied as a reload of the settings
//! in force (see `broker/runtime_topology.rs`), answer the reload's summary,
//! and last until the next reload or restart.

use actix_web::{web, HttpRequest, HttpResponse};
use slog::info;

use super::routes::{client, json_body, method_not_allowed, refused, unavailable};
use super::Admin;

const SERVER_TABLE: &str = r#"a JSON object with the keys of a server table, e.g. {"address": "10.0.0.7:5432", "maxconn": 50}"#;

const BACKEND_TABLE: &str =
    r#"a JSON object with the keys of a backend table, e.g. {"balance": "leastconn", "servers": {"a": {"address": "10.0.0.7:6379"}}}"#;

/// `/backends/{b}`: its own resource (the server routes share theirs with
/// `PUT`, in `routes.rs`).
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/backends/{backend}")
            .route(web::post().to(add_backend))
            .route(web::delete().to(remove_backend))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn add_backend(req: HttpRequest, admin: web::Data<Admin>, body: web::Payload) -> HttpResponse {
    let (backend, _) = names(&req);
    let Ok((handle, _)) = admin.view().await else { return unavailable() };
    let settings: serde_json::Value = match json_body(body, BACKEND_TABLE).await {
        Ok(settings) => settings,
        Err(response) => return response,
    };
    info!(admin.log, "backend add requested"; "client" => client(&req), "backend" => &backend);
    match handle.add_backend(&backend, settings).await {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(err) => refused(err),
    }
}

async fn remove_backend(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    let (backend, _) = names(&req);
    let Ok((handle, _)) = admin.view().await else { return unavailable() };
    info!(admin.log, "backend removal requested"; "client" => client(&req), "backend" => &backend);
    match handle.remove_backend(&backend).await {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(err) => refused(err),
    }
}

fn names(req: &HttpRequest) -> (String, String) {
    let part = |name| req.match_info().get(name).unwrap_or_default().to_owned();
    (part("backend"), part("server"))
}

pub(super) async fn add_server(req: HttpRequest, admin: web::Data<Admin>, body: web::Payload) -> HttpResponse {
    let (backend, server) = names(&req);
    let Ok((handle, _)) = admin.view().await else { return unavailable() };
    let settings: serde_json::Value = match json_body(body, SERVER_TABLE).await {
        Ok(settings) => settings,
        Err(response) => return response,
    };
    info!(admin.log, "server add requested"; "client" => client(&req), "backend" => &backend, "server" => &server);
    // The Topology logs the outcome, as for a reload.
    match handle.add_server(&backend, &server, settings).await {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(err) => refused(err),
    }
}

pub(super) async fn remove_server(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    let (backend, server) = names(&req);
    let Ok((handle, _)) = admin.view().await else { return unavailable() };
    info!(admin.log, "server removal requested"; "client" => client(&req), "backend" => &backend, "server" => &server);
    match handle.remove_server(&backend, &server).await {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(err) => refused(err),
    }
}
