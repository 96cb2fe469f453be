//! Bearer-token check for every admin request when `admin.token` is set:
//! `Authorization: Bearer TOKEN`, else 401 with a JSON reason. The token is
//! compared in constant time (for a given length).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};

use super::Admin;

pub(super) async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let token = req.app_data::<web::Data<Admin>>().map(|a| a.token.clone()).unwrap_or_default();
    if token.is_empty() || presented(&req).is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let reason = if presented(&req).is_some() { "wrong bearer token" } else { "missing bearer token" };
    let response = HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"usher\""))
        .json(serde_json::json!({ "error": reason }));
    Ok(req.into_response(response).map_into_right_body())
}

/// The token of an `Authorization: Bearer TOKEN` header (scheme in any case).
fn presented(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Equal, without stopping at the first different byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
