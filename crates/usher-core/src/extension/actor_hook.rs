//! An actor as a session hook: each new client is a [`CheckClient`]
//! message, its [`Verdict`] the hook's decision. The session waits for the
//! answer up to the hook's `timeout`; an actor that is gone fails the
//! session (`IR`): it was meant to filter, so it fails closed.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;

use crate::session::{Answer, Decision, HookContext, HookFailure, RouteTo, SessionHook};

/// Asked of admission actors for every new client.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Verdict")]
pub struct CheckClient {
    pub client: SocketAddr,
    pub frontend: Arc<str>,
}

/// An admission actor's answer.
#[derive(MessageResponse, Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny {
        reason: String,
    },
    /// Go on with these choices (backend, priority, hashing key).
    Route(RouteTo),
}

/// A [`SessionHook`] whose `on_accept` asks an actor.
pub struct ActorHook {
    actor: Recipient<CheckClient>,
}

impl ActorHook {
    pub fn new(actor: Recipient<CheckClient>) -> ActorHook {
        ActorHook { actor }
    }
}

impl SessionHook for ActorHook {
    fn on_accept(&self, session: &mut HookContext) -> Answer {
        let check = CheckClient { client: session.client, frontend: session.frontend.clone() };
        let asked = self.actor.send(check);
        Answer::Later(Box::pin(async move {
            match asked.await {
                Ok(Verdict::Allow) => Ok(Decision::Pass),
                Ok(Verdict::Deny { reason }) => Ok(Decision::Deny { reason: reason.into() }),
                Ok(Verdict::Route(route)) => Ok(Decision::Route(route)),
                Err(err) => Err(HookFailure(format!("the admission actor did not answer: {err}"))),
            }
        }))
    }
}
