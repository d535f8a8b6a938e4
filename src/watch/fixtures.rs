//! What the watcher's tests share: a manifest with one group, and how to look at it.

use crate::manifest::{Kind, ObjectKey};
use crate::watch::store::Desired;

pub(super) fn gkey(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::AutoScalingGroup, "default", name)
}

pub(super) fn manifest(name: &str, desired: u32) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata:\n  name: {name}\nspec:\n  image: nginx\n\
         ---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: {name}\n\
         spec:\n  launchConfiguration: {name}\n  minSize: 0\n  maxSize: 100\n  desiredCapacity: {desired}\n"
    )
}

pub(super) fn desired_of(d: &Desired, name: &str) -> Option<u32> {
    d.group(&gkey(name)).and_then(|g| g.spec.desired_capacity)
}
