//! Durations as users write them: a number of seconds (`90`) or a string (`90s`, `5m`, `1h30m`, `500ms`).

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration the parser accepts at all (validation bounds each field much tighter):
/// far beyond any sensible setting, far below where time arithmetic could overflow.
pub const MAX_PARSED_DAYS: u64 = 100 * 366;

/// A duration from a manifest; serializes back in the compact form (`90s`, `5m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    pub fn from_secs(s: u64) -> Self {
        DurationSpec(Duration::from_secs(s))
    }

    /// Parses `90`, `90s`, `5m`, `1h30m`, `500ms`, `1.5s`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!("invalid duration `{s}`: write a number of seconds or a string such as `90s`, `5m`, `1h`")
        };
        if t.is_empty() {
            return Err(bad());
        }
        // Hostile input (`1e30`, `99999999999999999999d`) must give an error, never a panic:
        // every conversion and sum below is checked.
        let too_long =
            || format!("duration `{s}` is too long: write at most {MAX_PARSED_DAYS} days");
        let secs = |n: f64| -> Result<Duration, String> {
            if n < 0.0 || !n.is_finite() {
                return Err(bad());
            }
            Duration::try_from_secs_f64(n)
                .ok()
                .filter(|d| d.as_secs() <= MAX_PARSED_DAYS * 86_400)
                .ok_or_else(too_long)
        };
        if let Ok(n) = t.parse::<f64>() {
            return secs(n).map(DurationSpec);
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if num_end == 0 {
                return Err(bad());
            }
            let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_end];
            rest = &rest[unit_end..];
            let part = match unit {
                "ms" => n / 1000.0,
                "s" => n,
                "m" => n * 60.0,
                "h" => n * 3600.0,
                "d" => n * 86400.0,
                _ => return Err(bad()),
            };
            total = total
                .checked_add(secs(part)?)
                .filter(|d| d.as_secs() <= MAX_PARSED_DAYS * 86_400)
                .ok_or_else(too_long)?;
        }
        Ok(DurationSpec(total))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 || d.as_secs() == 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: a number of seconds or a string such as `90s`, `5m`, `1h`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationSpec, E> {
                DurationSpec::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationSpec, E> {
                if v < 0 {
                    return Err(E::custom("a duration cannot be negative"));
                }
                DurationSpec::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationSpec, E> {
                DurationSpec::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationSpec, E> {
                DurationSpec::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of seconds, or a string such as `90s`, `5m`, `1h30m`, `500ms`.",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_unit_strings() {
        assert_eq!(
            DurationSpec::parse("90").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            DurationSpec::parse("90s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            DurationSpec::parse("5m").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            DurationSpec::parse("1h30m").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(
            DurationSpec::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert!(DurationSpec::parse("5 minutes").is_err());
        assert!(DurationSpec::parse("m5").is_err());
        assert!(DurationSpec::parse("").is_err());
    }

    #[test]
    fn absurd_durations_are_errors_not_panics() {
        for s in [
            "1e30",
            "99999999999999999999d",
            "18446744073709551615s1s",
            "1e308h",
            "inf",
            "NaN",
            "-1",
            "36601d",
            "36600d1d",
        ] {
            let err = DurationSpec::parse(s).unwrap_err();
            assert!(err.contains(s), "{s}: {err}");
        }
        assert!(DurationSpec::parse("36600d").is_ok());
        let huge: Result<DurationSpec, _> = serde_yaml_ng::from_str("1e30");
        assert!(huge.unwrap_err().to_string().contains("too long"));
        let huge: Result<DurationSpec, _> = serde_yaml_ng::from_str("18446744073709551615");
        assert!(huge.unwrap_err().to_string().contains("too long"));
    }

    #[test]
    fn durations_display_in_compact_form() {
        assert_eq!(DurationSpec::from_secs(300).to_string(), "5m");
        assert_eq!(DurationSpec::from_secs(90).to_string(), "90s");
        assert_eq!(DurationSpec::from_secs(7200).to_string(), "2h");
        assert_eq!(
            DurationSpec(Duration::from_millis(250)).to_string(),
            "250ms"
        );
    }
}
