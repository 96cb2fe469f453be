//! The first step of every admin request (outside the token check): read its
//! body whole, at most [`MAX_BODY`] bytes, by the connection's request
//! deadline, before anything else looks at the request.
//!
//! actix-web bounds the time to receive a request's head
//! (`client_request_timeout`) but not its body. Reading every body here, for
//! every endpoint and before the token is checked, bounds the body too: a
//! PUT trickled a byte at a time is answered 408 at the deadline and never
//! applied, and neither a wrong token nor an endpoint that ignores bodies
//! leaves actix draining a chunked body for as long as the client sends it.
//! Handlers then read the body from memory.

use actix_web::body::{self, BodyStream, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _};

use super::connections::AdminConnection;
use super::routes::error;
use super::MAX_BODY;

pub(super) async fn read_whole_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(AdminConnection::Admitted(connection)) = req.conn_data::<AdminConnection>() else {
        // Refused connections are already shut down; serve nothing on them.
        let response = error(StatusCode::SERVICE_UNAVAILABLE, "connection refused: too many from this client");
        return Ok(req.into_response(response).map_into_right_body());
    };
    let (deadline, timeout) = (connection.deadline, connection.timeout);
    let mut payload = req.take_payload();
    let read = body::to_bytes_limited(BodyStream::new(&mut payload), MAX_BODY);
    let (status, reason) = match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(Ok(bytes))) => {
            req.set_payload(bytes.into());
            return Ok(next.call(req).await?.map_into_left_body());
        }
        Ok(Ok(Err(err))) => (StatusCode::BAD_REQUEST, format!("cannot read the body: {err}")),
        Ok(Err(_)) => (StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY} bytes")),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!("the request did not arrive within admin.timeout.request ({})", humantime::format_duration(timeout)),
        ),
    };
    // Re-borrowed: `req` was borrowed mutably above.
    if let Some(AdminConnection::Admitted(connection)) = req.conn_data::<AdminConnection>() {
        connection.abandon(payload);
    }
    Ok(req.into_response(error(status, reason)).map_into_right_body())
}
