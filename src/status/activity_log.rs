//! One INFO line per launch, termination and failed launch, with its cause, taken from the
//! activities each published status adds (so every path that records an activity logs it).

use crate::manifest::ObjectKey;
use crate::status::GroupStatus;

/// Logs the activities of `after` that `before` (the status it replaces) did not have.
pub fn log_new(key: &ObjectKey, before: Option<&GroupStatus>, after: &GroupStatus) {
    let newest_before = before.and_then(|b| b.activities.first()).map(|a| a.time);
    // Activities are newest first; the new ones come before the first already known.
    for a in after
        .activities
        .iter()
        .take_while(|a| newest_before.is_none_or(|t| a.time > t))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        tracing::info!(
            namespace = %key.namespace,
            group = %key.name,
            action = %a.action,
            instance = %a.instance,
            zone = %a.zone,
            cause = %a.cause,
            "{}",
            a.action.to_ascii_lowercase()
        );
    }
}
