//! The original microscaler's instance type catalogue (EC2 names → CPU and memory limits).
//!
//! The first five entries are the original's own numbers (including `m1.xlarge`'s 8196 MiB, a
//! typo kept for compatibility); the rest are that EC2 generation's published vCPU counts and
//! memory sizes converted from GiB to MiB (rounded to the nearest MiB).

/// One instance type: a name and the CPU and memory limits it stands for.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceType {
    /// EC2-style name, e.g. `m1.small`.
    pub name: &'static str,
    /// CPU limit (Docker's `--cpus`).
    pub cpus: f64,
    /// Memory limit in MiB (Docker's `--memory`).
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
}

const fn t(name: &'static str, cpus: f64, memory_mib: u64) -> InstanceType {
    InstanceType {
        name,
        cpus,
        memory_mib,
    }
}

/// The catalogue, in the order `ms get instancetypes` shows it.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    t("t1.micro", 1.0, 512),
    t("m1.small", 1.0, 1024),
    t("m1.medium", 1.0, 2048),
    t("m1.large", 2.0, 4096),
    t("m1.xlarge", 4.0, 8196),
    t("m3.xlarge", 4.0, 15360),
    t("m3.2xlarge", 8.0, 30720),
    t("c1.medium", 2.0, 1741),
    t("c1.xlarge", 8.0, 7168),
    t("m2.xlarge", 2.0, 17510),
    t("m2.2xlarge", 4.0, 35021),
    t("m2.4xlarge", 8.0, 70042),
    t("cc2.8xlarge", 32.0, 61952),
    t("cg1.4xlarge", 16.0, 23040),
    t("cr1.8xlarge", 32.0, 249856),
    t("hi1.4xlarge", 16.0, 61952),
    t("hs1.8xlarge", 16.0, 119808),
];

/// Looks an instance type up by its exact name.
pub fn lookup(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

/// Names of every instance type, for suggestions and messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    INSTANCE_TYPES.iter().map(|t| t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_types_keep_their_numbers() {
        let small = lookup("m1.small").unwrap();
        assert_eq!((small.cpus, small.memory_mib), (1.0, 1024));
        assert_eq!(lookup("m1.xlarge").unwrap().memory_mib, 8196);
        assert_eq!(lookup("t1.micro").unwrap().memory_mib, 512);
    }

    #[test]
    fn the_catalogue_runs_through_hs1_8xlarge_without_duplicates() {
        assert_eq!(INSTANCE_TYPES.last().unwrap().name, "hs1.8xlarge");
        assert_eq!(INSTANCE_TYPES.len(), 17);
        let mut seen = std::collections::BTreeSet::new();
        assert!(INSTANCE_TYPES.iter().all(|t| seen.insert(t.name)));
        assert!(lookup("m9.huge").is_none());
    }
}
