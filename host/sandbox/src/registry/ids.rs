//! How plugins are named: content hash, references, worlds, version order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// blake3 of a component's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginHash(pub [u8; 32]);

impl PluginHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for PluginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PluginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginHash({})", &self.to_hex()[..16])
    }
}

impl FromStr for PluginHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("blake3:").unwrap_or(s);
        blake3::Hash::from_hex(hex)
            .map(|h| Self(*h.as_bytes()))
            .map_err(|e| format!("{s:?} is not a blake3 hash (64 hex digits): {e}"))
    }
}

impl Serialize for PluginHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PluginHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which plugin an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginRef {
    /// By name; `version: None` means the highest version loaded.
    Name {
        name: String,
        version: Option<String>,
    },
    /// Exactly this code (a retry or an audit).
    Hash(PluginHash),
}

impl FromStr for PluginRef {
    type Err = String;
    /// `name`, `name@version`, or `blake3:<hex>`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(h) = s.strip_prefix("blake3:") {
            return Ok(Self::Hash(h.parse()?));
        }
        match s.split_once('@') {
            Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok(Self::Name {
                name: n.into(),
                version: Some(v.into()),
            }),
            None if !s.is_empty() => Ok(Self::Name {
                name: s.into(),
                version: None,
            }),
            _ => Err(format!(
                "{s:?} is not a plugin reference (name, name@version or blake3:<hex>)"
            )),
        }
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name {
                name,
                version: Some(v),
            } => write!(f, "{name}@{v}"),
            Self::Name {
                name,
                version: None,
            } => f.write_str(name),
            Self::Hash(h) => write!(f, "blake3:{h}"),
        }
    }
}

/// Which `tasker:plugin` world a component exports (checked once, at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    StepHandler,
    EventHook,
    RetryPolicy,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::StepHandler => "step-handler",
            World::EventHook => "event-hook",
            World::RetryPolicy => "retry-policy",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Orders versions numerically where they are dotted numbers, textually otherwise.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct VersionKey(Vec<Result<u64, String>>, pub(super) String);

impl VersionKey {
    pub(super) fn new(v: &str) -> Self {
        Self(
            v.split(['.', '-', '+'])
                .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
                .collect(),
            v.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_refs_parse() {
        assert_eq!(
            "echo".parse::<PluginRef>().unwrap(),
            PluginRef::Name {
                name: "echo".into(),
                version: None
            }
        );
        assert_eq!(
            "echo@1.2.0".parse::<PluginRef>().unwrap(),
            PluginRef::Name {
                name: "echo".into(),
                version: Some("1.2.0".into())
            }
        );
        let h = PluginHash::of(b"x");
        assert_eq!(
            format!("blake3:{h}").parse::<PluginRef>().unwrap(),
            PluginRef::Hash(h)
        );
        assert_eq!(
            PluginRef::Hash(h).to_string().parse::<PluginRef>().unwrap(),
            PluginRef::Hash(h)
        );
        assert!("blake3:zz".parse::<PluginRef>().is_err());
        assert!("@1".parse::<PluginRef>().is_err());
        assert!("".parse::<PluginRef>().is_err());
    }

    #[test]
    fn versions_order_numerically() {
        let mut v = ["1.10.0", "1.2.0", "1.9.9", "0.0.0"]
            .map(VersionKey::new)
            .to_vec();
        v.sort();
        let names: Vec<_> = v.iter().map(|k| k.1.as_str()).collect();
        assert_eq!(names, ["0.0.0", "1.2.0", "1.9.9", "1.10.0"]);
    }
}
