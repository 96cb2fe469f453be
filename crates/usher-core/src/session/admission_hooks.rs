//! Admission hooks: every admission actor (a `CheckClient` extension) is
//! asked about the client, in order, before it takes a place in a queue.

use super::{Session, Termination};
use crate::extension::{CheckClient, Verdict};

impl Session<'_> {
    /// Ends the session with `PR` at the first actor that denies the
    /// client, or that died (it was meant to filter: it fails closed).
    pub(super) async fn admission_hooks(&self) -> Result<(), Termination> {
        let front = self.front;
        for checker in &front.handles.admission {
            let check = CheckClient { client: self.record.client, frontend: front.settings.frontend_name.clone() };
            match checker.send(check).await {
                Ok(Verdict::Allow) => {}
                Ok(Verdict::Deny { reason }) => {
                    slog::debug!(front.handles.log, "client denied"; "client" => %self.record.client, "reason" => reason);
                    return Err(Termination::DeniedByPolicy);
                }
                Err(_) => return Err(Termination::DeniedByPolicy),
            }
        }
        Ok(())
    }
}
