//! Which containers of a group are warm pool members: the name says it, since labels cannot
//! change after creation and a member must become an instance in place.
//!
//! A pool member of instance-to-be `web-k3j9x` is named `web-k3j9x-warm` and carries the launch
//! mark of `web-k3j9x`; taking it renames it to `web-k3j9x` (then the mark matches its name, as
//! for any instance we launch), and giving an instance back renames it the other way. So after
//! a restart (or a `kill -9` between two steps) the engine alone tells pool members and
//! instances apart: no record of the controller's is needed.

use super::Observed;

/// What a pool member's name adds to the name of the instance it becomes. Instance names end
/// in `-` and five characters, so no instance name ends in this.
pub const SUFFIX: &str = "-warm";

/// The name of the pool member that becomes instance `instance_name`.
pub fn member_name(instance_name: &str) -> String {
    format!("{instance_name}{SUFFIX}")
}

/// The instance name a pool member named `name` becomes; `None` for an instance's name.
pub fn instance_name(name: &str) -> Option<&str> {
    name.strip_suffix(SUFFIX).filter(|base| !base.is_empty())
}

/// Whether a container of a group is a warm pool member (not an instance): never counted in
/// capacity, metrics, readiness or load balancers.
pub fn is_member(o: &Observed) -> bool {
    instance_name(&o.name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_map_back_to_their_instance_and_instances_are_not_members() {
        assert_eq!(member_name("web-k3j9x"), "web-k3j9x-warm");
        assert_eq!(instance_name("web-k3j9x-warm"), Some("web-k3j9x"));
        assert_eq!(instance_name("web-k3j9x"), None);
        assert_eq!(instance_name("-warm"), None);
        // A group named `warm` still has instance names that are not member names.
        assert_eq!(instance_name("warm-abcde"), None);
    }
}
