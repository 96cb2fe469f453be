//! Bearer-token check for every admin request when `admin.token` is set:
//! `Authorization: Bearer TOKEN`, else 401 with a JSON reason. The one
//! exception is reading the dashboard page, which holds no data and which a
//! browser cannot load with a header ([`super::dashboard`]).
//!
//! The token is never compared as written: the configured one is kept as its
//! SHA-256 digest (computed once at start) and a presented one is hashed the
//! same way, then the two 32-byte digests are compared in constant time. So
//! how long a refusal takes says nothing about the token — neither where the
//! first wrong byte is nor how long the token is.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{dashboard, Admin};

/// Who may use the API.
pub(super) enum Access {
    /// No token configured (loopback only, enforced by the configuration).
    Open,
    /// Requests must present the token whose SHA-256 digest this is.
    Bearer([u8; 32]),
}

impl Access {
    /// `admin.token` as configured; empty means no token.
    pub(super) fn of(token: &str) -> Access {
        if token.is_empty() {
            Access::Open
        } else {
            Access::Bearer(Sha256::digest(token.as_bytes()).into())
        }
    }

    /// Whether a request presenting `given` (its bearer token, if any) may pass.
    fn admits(&self, given: Option<&str>) -> bool {
        match self {
            Access::Open => true,
            Access::Bearer(expected) => {
                given.is_some_and(|given| bool::from(Sha256::digest(given.as_bytes()).ct_eq(expected)))
            }
        }
    }

    /// For the start record: what a client needs.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Access::Open => "none",
            Access::Bearer(_) => "bearer token",
        }
    }
}

pub(super) async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let given = presented(&req);
    let admitted = dashboard::reads_the_page(req.method(), req.path())
        || req.app_data::<web::Data<Admin>>().is_some_and(|admin| admin.access.admits(given));
    if admitted {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let reason = if given.is_some() { "wrong bearer token" } else { "missing bearer token" };
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

#[cfg(test)]
mod tests {
    use super::Access;

    #[test]
    fn only_the_same_token_is_admitted_whatever_its_length() {
        let access = Access::of("secret");
        assert!(access.admits(Some("secret")));
        for other in ["secreT", "secret2", "secre", "", "s", "secretsecretsecretsecretsecretsecretsecret"] {
            assert!(!access.admits(Some(other)), "{other:?} admitted");
        }
        assert!(!access.admits(None), "no token admitted");
        let long = "x".repeat(4096);
        assert!(Access::of(&long).admits(Some(&long)), "a token longer than its digest");
        assert!(!Access::of(&long).admits(Some(&long[1..])));
    }

    #[test]
    fn no_configured_token_admits_everyone() {
        let open = Access::of("");
        assert!(open.admits(None));
        assert!(open.admits(Some("anything")));
        assert_eq!(open.describe(), "none");
        assert_eq!(Access::of("t").describe(), "bearer token");
    }
}
