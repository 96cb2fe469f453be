//! Run-time topology: `POST /backends/{b}/servers/{s}` adds a server (body:
//! the keys of a `[backends.B.servers.S]` table, as JSON) and `DELETE` on
//! the same path removes one. Both are applied as a reload of the settings
//! in force (see `broker/runtime_topology.rs`), answer the reload's summary,
//! and last until the next reload or restart.

use actix_web::{web, HttpRequest, HttpResponse};
use slog::info;

use super::routes::{client, json_body, refused, unavailable};
use super::Admin;

const SERVER_TABLE: &str = r#"a JSON object with the keys of a server table, e.g. {"address": "10.0.0.7:5432", "maxconn": 50}"#;

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
