//! The live dashboard: one HTML page (style and script inline, embedded in
//! the binary) served at `/` and `/ui`. It holds no figure and no secret:
//! the script reads `GET /stats` every second and changes a server's admin
//! state through `PUT /backends/{b}/servers/{s}`, both under the API's
//! usual rules (token, per-client cap, request deadline).
//!
//! So the page itself is the one thing served without the token: a browser
//! cannot attach `Authorization: Bearer` to the navigation that loads it,
//! and it is the same bytes for everyone. With `admin.token` set, its first
//! `/stats` read is refused (401) and it asks for the token, which it keeps
//! in the tab's session storage — never in the page the server sends.

use actix_web::http::{header, Method};
use actix_web::HttpResponse;

/// The page, as shipped: no build step, no external resource.
const PAGE: &str = include_str!("dashboard/index.html");

/// The paths the page is served at.
pub(super) const PATHS: [&str; 2] = ["/", "/ui"];

/// Only a request that reads the page (`GET`/`HEAD` of one of [`PATHS`])
/// passes without the token; any other method on those paths is an API
/// request like the rest (401 without the token, then 405).
pub(super) fn reads_the_page(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && PATHS.contains(&path)
}

pub(super) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // Always the binary's own page: a cached one could outlive an upgrade.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // The page talks to this API only and may not be framed (a framing
        // site could trick a click on a maint button).
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ))
        .body(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_the_page_is_exempt_from_the_token() {
        assert!(reads_the_page(&Method::GET, "/"));
        assert!(reads_the_page(&Method::GET, "/ui"));
        assert!(reads_the_page(&Method::HEAD, "/ui"));
        assert!(!reads_the_page(&Method::PUT, "/"), "a change on the page path");
        assert!(!reads_the_page(&Method::POST, "/ui"));
        for path in ["/stats", "/metrics", "/health", "/reload", "/ui/", "/ui/../stats", "//", ""] {
            assert!(!reads_the_page(&Method::GET, path), "{path}");
        }
    }

    #[test]
    fn the_page_is_self_contained_and_holds_no_secret() {
        // No CDN, font or script from elsewhere: the page must work on a
        // host without internet access. (The SVG namespace is a name, not a fetch.)
        let external: Vec<&str> = PAGE
            .match_indices("http")
            .map(|(at, _)| &PAGE[at..PAGE.len().min(at + 40)])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(external.is_empty(), "external references: {external:?}");
        assert!(!PAGE.contains(" src="), "a resource loaded from elsewhere");
        assert!(PAGE.contains("fetch(\"/stats\""), "the page reads /stats");
        assert!(PAGE.contains("sessionStorage"), "the token is kept in the tab, not the page");
    }
}
