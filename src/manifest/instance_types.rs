//! The original microscaler's instance type catalogue (EC2 names → CPU and memory limits).

/// One instance type.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceType {
    pub name: &'static str,
    pub cpus: f64,
    pub memory_mib: u64,
}

/// The catalogue.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        name: "t1.micro",
        cpus: 1.0,
        memory_mib: 512,
    },
    InstanceType {
        name: "m1.small",
        cpus: 1.0,
        memory_mib: 1024,
    },
    InstanceType {
        name: "m1.medium",
        cpus: 1.0,
        memory_mib: 2048,
    },
    InstanceType {
        name: "m1.large",
        cpus: 2.0,
        memory_mib: 4096,
    },
    InstanceType {
        name: "m1.xlarge",
        cpus: 4.0,
        memory_mib: 8196,
    },
];

/// Looks an instance type up by name.
pub fn lookup(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}
