//! The PROXY protocol (HAProxy, version 1 text and version 2 binary): how a
//! balancer in front of usher tells it the real client address
//! (`frontends.X.accept_proxy`), and how usher tells its servers
//! (`servers.Y.send_proxy`).
//!
//! [`codec`] is plain functions over bytes: where a header ends
//! ([`codec::frame`], the one framing that both the socket reader and the
//! tests' `codec::parse` follow), what it says, and how usher writes one.
//! [`socket`] reads a client's header under a time limit without consuming
//! a byte past it, and writes one to a server; it is tested on real sockets
//! here and in `integration-tests`.

pub mod codec;
pub mod socket;

pub use codec::encode_unknown;
pub use socket::{read_header, send_header};
