//! Finish: the session is counted, then logged.

use super::{AccessRecord, FrontendContext, SessionEnded, Termination};

/// Sends the session's one `SessionEnded` (do_send: one message per session
/// bounds the Stats mailbox) before writing its access record, so that
/// whoever has read the record finds the session counted.
pub(super) fn finish(front: &FrontendContext, record: &AccessRecord, end: Termination) {
    let settings = &front.settings;
    front.handles.stats.do_send(SessionEnded(record.summary(settings.frontend, end)));
    record.write(&front.handles.log, end);
}
