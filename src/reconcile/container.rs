//! What a group's containers are made of: the container spec of one instance, the hash that
//! says whether a container is up to date, and the launch mark that says we launched it.

use rand::Rng;

use crate::config::tenancy::ContainerLimits;
use crate::engine::{labels, ContainerSpec};
use crate::manifest::{AutoScalingGroup, LaunchConfiguration, LaunchConfigurationSpec, ObjectKey};

/// Hash of what a container runs: the launch configuration's spec and the group's domain.
/// A change of either rolls out; sizes and zones do not, nor do `healthCheck` (the controller's
/// probes) and the lifecycle hooks (the controller runs them): neither is part of the container.
pub fn container_hash(lc: &LaunchConfiguration, group: &AutoScalingGroup) -> String {
    let spec = hashed_spec(lc);
    let text = serde_json::to_string(&(&*spec, &group.spec.domain)).expect("serializable");
    crate::manifest::short_hash(text.as_bytes())
}

/// The part of a launch configuration's spec that the container is made of.
fn hashed_spec(lc: &LaunchConfiguration) -> std::borrow::Cow<'_, LaunchConfigurationSpec> {
    if lc.spec.lifecycle.is_none() && lc.spec.health_check.is_none() {
        return std::borrow::Cow::Borrowed(&lc.spec);
    }
    let mut spec = lc.spec.clone();
    spec.lifecycle = None;
    spec.health_check = None;
    std::borrow::Cow::Owned(spec)
}

/// The mark this controller puts on a container it launches: bound to the container's name,
/// so a copy started by hand with the same labels (necessarily under another name) carries a
/// mark that does not match. A safety net against mistakes, not a security feature.
pub fn launch_mark(controller: &str, container_name: &str) -> String {
    crate::manifest::short_hash(format!("{controller}\n{container_name}").as_bytes())
}

/// [`container_hash`] when the containers run with `limits`: limits the namespace's defaults
/// filled in count too (new defaults roll out), while a launch configuration that sets its own
/// hashes as before.
pub fn container_hash_with_limits(
    lc: &LaunchConfiguration,
    group: &AutoScalingGroup,
    limits: ContainerLimits,
) -> String {
    if limits == lc.spec.limits() {
        return container_hash(lc, group);
    }
    let spec = hashed_spec(lc);
    let text = serde_json::to_string(&(&*spec, &group.spec.domain, limits.0, limits.1))
        .expect("serializable");
    crate::manifest::short_hash(text.as_bytes())
}

/// The container for one instance of `group` in `zone`.
pub fn container_spec(
    key: &ObjectKey,
    lc: &LaunchConfiguration,
    group: &AutoScalingGroup,
    zone: &str,
    hash: &str,
    controller: &str,
    limits: ContainerLimits,
) -> ContainerSpec {
    let suffix: String = {
        let mut rng = rand::rng();
        (0..5)
            .map(|_| {
                let n = rng.random_range(0..36u8);
                (if n < 10 { b'0' + n } else { b'a' + n - 10 }) as char
            })
            .collect()
    };
    let base: String = key.name.chars().take(56).collect();
    let hostname = format!("{base}-{suffix}");
    let name = if key.namespace == "default" {
        hostname.clone()
    } else {
        format!("{}-{hostname}", key.namespace)
    };
    let spec = &lc.spec;
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(ud) = &spec.user_data {
        env.push((
            "USER_DATA".to_string(),
            serde_json::to_string(ud).expect("json"),
        ));
    }
    let mut all_labels = spec.labels.clone();
    for (k, v) in [
        (labels::MANAGED_BY, labels::MANAGER),
        (labels::NAMESPACE, key.namespace.as_str()),
        (labels::GROUP, key.name.as_str()),
        (labels::LAUNCH_CONFIGURATION, lc.metadata.name.as_str()),
        (labels::SPEC_HASH, hash),
        (labels::ZONE, zone),
        (labels::CONTROLLER, controller),
        (labels::INSTANCE, &launch_mark(controller, &name)),
    ] {
        all_labels.insert(k.to_string(), v.to_string());
    }
    let (cpus, memory_mib) = limits;
    ContainerSpec {
        name,
        image: spec.image.clone(),
        command: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env,
        labels: all_labels,
        hostname: Some(hostname),
        domainname: group.spec.domain.clone(),
        // Float-to-int casts saturate, and memory is bounded in validation; checked anyway, so
        // no input can wrap into a tiny or negative limit.
        nano_cpus: cpus.map(|c| (c * 1e9) as i64),
        memory_bytes: memory_mib
            .map(|m| i64::try_from(m.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        ports: spec.ports.clone(),
        network: spec.network.clone(),
        stop_timeout: spec
            .stop_grace_period
            .map(|d| i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX)),
        pull_policy: spec.image_pull_policy.unwrap_or_default(),
    }
}
