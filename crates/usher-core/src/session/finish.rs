//! Finish: the session is counted and lets go of what it holds, its hooks
//! are told, then it is logged.

use super::admission_hooks::{end_hooks, HookedSession};
use super::{AccessRecord, FrontendContext, Holdings, SessionEnded, Termination};

/// Sends the session's one `SessionEnded` (do_send: one message per session
/// bounds the Stats mailbox), carrying its slot and admission, then tells
/// its hooks, then writes its access record — so that whoever has read the
/// record finds the session counted and what its hooks were told done.
/// The slot goes back before the hooks run: a slow `on_end` never keeps a
/// server's slot from the next client.
pub(super) fn finish(
    front: &FrontendContext,
    record: &AccessRecord,
    end: Termination,
    hooked: Option<Box<HookedSession>>,
    holdings: Holdings,
) {
    let summary = record.summary(front.settings.frontend, end);
    front.handles.stats.do_send(SessionEnded { summary, holdings });
    end_hooks(front, hooked, record, end);
    record.write(&front.handles.log, end);
}
