//! JSON Schemas of the manifest kinds, for editors (`# yaml-language-server: $schema=...`).
//!
//! Generated from the serde types with schemars, then adjusted where the types say less than
//! the parser checks: `apiVersion` and `kind` become constants, `status` is allowed (the
//! controller writes it back into the files), and a port may be a bare number.

use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::instance_types;
use super::types::{
    AutoScalingGroup, Kind, LaunchConfiguration, LoadBalancer, ScalingPolicy, API_VERSION,
};
use super::validate::{MAX_GROUP_SIZE, MIN_MEMORY_MIB};

/// `(file name, pretty JSON)` for each kind's schema, as committed under `schema/`
/// (`cargo run --example gen-schema` rewrites them).
pub fn schemas() -> Vec<(&'static str, String)> {
    vec![
        (
            "launch-configuration.schema.json",
            render::<LaunchConfiguration>(Kind::LaunchConfiguration),
        ),
        (
            "autoscaling-group.schema.json",
            render::<AutoScalingGroup>(Kind::AutoScalingGroup),
        ),
        (
            "scaling-policy.schema.json",
            render::<ScalingPolicy>(Kind::ScalingPolicy),
        ),
        (
            "load-balancer.schema.json",
            render::<LoadBalancer>(Kind::LoadBalancer),
        ),
    ]
}

fn render<T: JsonSchema>(kind: Kind) -> String {
    let schema = schemars::schema_for!(T);
    let mut value = schema.to_value();
    adjust(&mut value, kind);
    let mut text = serde_json::to_string_pretty(&value).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// Post-processes one generated schema (see the module docs for why).
fn adjust(schema: &mut Value, kind: Kind) {
    let root = schema
        .as_object_mut()
        .expect("a schema of a struct is an object");
    root.insert("title".into(), json!(kind.as_str()));
    root.insert(
        "description".into(),
        json!(format!("A microscaler `{kind}` manifest.")),
    );
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "apiVersion".into(),
            json!({ "description": format!("Always `{API_VERSION}`."), "type": "string", "const": API_VERSION }),
        );
        props.insert(
            "kind".into(),
            json!({ "description": "The kind of object.", "type": "string", "const": kind.as_str() }),
        );
        props.insert(
            "status".into(),
            json!({ "description": "Written by the controller; ignored when read." }),
        );
    }
    if let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.remove("Kind");
        if let Some(port) = defs.remove("PortSpec") {
            defs.insert(
                "PortSpec".into(),
                json!({
                    "description": "A container port: a number (`8080`) or a map with `containerPort` and optional `hostPort`, `hostIp`, `protocol`.",
                    "anyOf": [
                        { "type": "integer", "minimum": 1, "maximum": 65535 },
                        port
                    ]
                }),
            );
        }
        tighten(defs);
    }
}

/// Bounds the parser enforces that the derived schema cannot know about.
fn tighten(defs: &mut Map<String, Value>) {
    let set = |defs: &mut Map<String, Value>, def: &str, field: &str, key: &str, v: Value| {
        if let Some(m) = defs
            .get_mut(def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
            .and_then(Value::as_object_mut)
        {
            m.insert(key.into(), v);
        }
    };
    const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    for field in ["name", "namespace"] {
        set(defs, "Metadata", field, "pattern", json!(DNS_LABEL));
        set(defs, "Metadata", field, "maxLength", json!(63));
    }
    set(
        defs,
        "Resources",
        "memoryMiB",
        "minimum",
        json!(MIN_MEMORY_MIB),
    );
    set(defs, "Resources", "cpus", "exclusiveMinimum", json!(0));
    set(
        defs,
        "AutoScalingGroupSpec",
        "maxSize",
        "maximum",
        json!(MAX_GROUP_SIZE),
    );
    set(
        defs,
        "LaunchConfigurationSpec",
        "image",
        "minLength",
        json!(1),
    );
    set(
        defs,
        "LaunchConfigurationSpec",
        "instanceType",
        "enum",
        Value::Array(
            instance_types::names()
                .map(|n| json!(n))
                .chain([Value::Null])
                .collect(),
        ),
    );
    for field in ["scaleOutStep", "scaleInStep"] {
        set(defs, "ScalingPolicySpec", field, "minimum", json!(1));
    }
    for field in ["lowerThreshold", "upperThreshold"] {
        set(defs, "ScalingPolicySpec", field, "minimum", json!(0));
    }
    // The percentage form of maxSurge/maxUnavailable.
    if let Some(Value::Array(options)) = defs
        .get_mut("IntOrPercent")
        .and_then(|d| d.get_mut("anyOf"))
    {
        for option in options {
            if option.get("type") == Some(&json!("string")) {
                option["pattern"] = json!("^[0-9]+%$");
            }
        }
    }
}
