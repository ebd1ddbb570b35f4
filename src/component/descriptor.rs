//! A component's descriptor (RAIN's `meta.json`) and versions.
//!
//! Owns parsing and checking descriptors, and version matching: `1` and `1.2`
//! are fragments that match the newest registered `1.x` / `1.2.x`. Does not own
//! where descriptors come from (see `super::registry`) or handlers.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors in a descriptor or a version.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DescriptorError {
    #[error("invalid version {0:?}: expected major.minor[.micro]")]
    Version(String),
    #[error("invalid component id {0:?}: letters, digits, '-' and '_' only")]
    Id(String),
    #[error("invalid channel name {0:?}: letters, digits, '-' and '_' only")]
    Channel(String),
    #[error("component {0} has no channels")]
    NoChannels(String),
    #[error("cannot read descriptor {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("no built-in component {0:?} (there are echo@1.0 and chat@1.0)")]
    UnknownBuiltin(String),
    #[error(
        "no component {0} can be made here (not a built-in, not in COMPONENTS_DIR, never deployed)"
    )]
    UnknownComponent(String),
    #[error("a component has at most {max} {what}")]
    TooMany { what: &'static str, max: usize },
    #[error("timeout_ms {0} is not 1 to 600000")]
    Timeout(u64),
    #[error("component {0} is hosted twice")]
    Duplicate(String),
}

/// `major.minor[.micro]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub micro: Option<u32>,
}

impl Version {
    fn key(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.micro.unwrap_or(0))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key()
            .cmp(&other.key())
            .then(self.micro.is_some().cmp(&other.micro.is_some()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Version {
    type Err = DescriptorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || DescriptorError::Version(text.to_string());
        let parts: Vec<&str> = text.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u32>().map_err(|_| bad())
        };
        Ok(Version {
            major: number(parts[0])?,
            minor: number(parts[1])?,
            micro: parts.get(2).map(|p| number(p)).transpose()?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.micro {
            Some(micro) => write!(f, "{}.{}.{micro}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `version` is what a channel's version text asks for: the exact
/// version, or a fragment (`1`, `1.2`) of it.
/// Only canonical text matches: `1`, `1.0`, `1.0.3`, never `01` or `+1`, so
/// one version has one name per fragment.
pub fn version_matches(requested: &str, version: &Version) -> bool {
    let parts: Vec<&str> = requested.split('.').collect();
    let numbers = [Some(version.major), Some(version.minor), version.micro];
    canonical_version(requested)
        && parts
            .iter()
            .zip(numbers)
            .all(|(part, number)| number.is_some_and(|n| part.parse::<u32>() == Ok(n)))
}

/// `1`, `1.2` or `1.2.3`: one to three numbers of plain digits, no sign, no
/// leading zero, each fitting a `u32`.
pub fn canonical_version(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    (1..=3).contains(&parts.len())
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part.len() == 1 || !part.starts_with('0'))
                && part.parse::<u32>().is_ok()
        })
}

/// The most channels a component may have.
pub const MAX_CHANNELS: usize = 64;

/// The longest an HTTP backend may be given to answer, in ms.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The longest component id or channel name.
pub const MAX_NAME: usize = 64;

/// A component id or channel name: 1 to [`MAX_NAME`] letters, digits, `-`, `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An intent a component serves: `category`/`action`, answered by its `provider`
/// event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Intent {
    pub category: String,
    pub action: String,
    pub provider: String,
}

/// How a component's events are handled, when it is not a Rust component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HandlerSpec {
    /// Each event is POSTed as JSON to `url`; the JSON answer is the ack.
    Http {
        url: String,
        #[serde(default = "default_timeout_ms", deserialize_with = "whole_number")]
        #[schema(minimum = 1, maximum = 600_000)]
        timeout_ms: u64,
    },
}

/// A count of milliseconds as JSON may write it: `1500` or `1500.0` (JSON
/// Schema counts both as an integer); a fraction or a negative is refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_u64() {
        return Ok(whole);
    }
    match number.as_f64() {
        Some(float) if float >= 0.0 && float.fract() == 0.0 && float <= u64::MAX as f64 => {
            Ok(float as u64)
        }
        _ => Err(serde::de::Error::custom(format!(
            "expected a whole number of milliseconds, found {number}"
        ))),
    }
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// A component's descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Descriptor {
    /// Letters, digits, `-` and `_` (not `core`).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// `major.minor[.micro]`.
    #[schema(value_type = String, pattern = "^[0-9]{1,9}\\.[0-9]{1,9}(\\.[0-9]{1,9})?$")]
    pub version: Version,
    /// Channel names: letters, digits, `-` and `_`.
    #[schema(min_items = 1, max_items = 64)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub intents: Vec<Intent>,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Absent for components registered from Rust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<HandlerSpec>,
    /// Whether the component is told of clients connecting to and leaving its
    /// channels (`on_connect`/`on_disconnect`). Each notice is routed to a host
    /// like an event, so components that ignore them say no. HTTP backends are
    /// told unless their descriptor says `"lifecycle": false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<bool>,
}

impl Descriptor {
    /// Whether connect/disconnect notices are routed to the component.
    pub fn wants_lifecycle(&self) -> bool {
        self.lifecycle.unwrap_or(self.handler.is_some())
    }

    /// `id@version`, the name the registry and intents use.
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    pub fn validate(&self) -> Result<(), DescriptorError> {
        let name_ok = valid_name;
        if !name_ok(&self.id) || self.id == "core" {
            return Err(DescriptorError::Id(self.id.clone()));
        }
        if self.channels.is_empty() {
            return Err(DescriptorError::NoChannels(self.id.clone()));
        }
        if let Some(bad) = self.channels.iter().find(|c| !name_ok(c)) {
            return Err(DescriptorError::Channel(bad.clone()));
        }
        if self.channels.len() > MAX_CHANNELS {
            return Err(DescriptorError::TooMany {
                what: "channels",
                max: MAX_CHANNELS,
            });
        }
        if let Some(HandlerSpec::Http { timeout_ms, .. }) = &self.handler
            && !(1..=MAX_TIMEOUT_MS).contains(timeout_ms)
        {
            return Err(DescriptorError::Timeout(*timeout_ms));
        }
        Ok(())
    }

    /// Reads and checks a JSON descriptor file.
    pub fn from_file(path: &std::path::Path) -> Result<Descriptor, DescriptorError> {
        let read = |reason: String| DescriptorError::Read {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        let descriptor: Descriptor =
            serde_json::from_str(&text).map_err(|e| read(e.to_string()))?;
        descriptor.validate()?;
        Ok(descriptor)
    }
}

/// A parsed component channel name, `/{id}/{version}/{channel}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelName<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub channel: &'a str,
}

impl<'a> ChannelName<'a> {
    pub fn parse(namespace: &'a str) -> Option<ChannelName<'a>> {
        let mut parts = namespace.strip_prefix('/')?.split('/');
        let (id, version, channel) = (parts.next()?, parts.next()?, parts.next()?);
        // Only well-formed names are component channels, so a client cannot
        // make a node keep namespaces for made-up spellings of one.
        if parts.next().is_some()
            || !valid_name(id)
            || !canonical_version(version)
            || !valid_name(channel)
        {
            return None;
        }
        Some(ChannelName {
            id,
            version,
            channel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_timeout_is_a_whole_number_within_bounds() {
        let with = |timeout: serde_json::Value| {
            serde_json::from_value::<Descriptor>(serde_json::json!({
                "id": "quiz", "version": "1.0", "channels": ["main"],
                "handler": {"kind": "http", "url": "http://b/", "timeout_ms": timeout},
            }))
            .map_err(|e| e.to_string())
            .and_then(|d| d.validate().map(|()| d).map_err(|e| e.to_string()))
        };
        for (written, read) in [
            (serde_json::json!(1500), 1500),
            (serde_json::json!(1500.0), 1500),
        ] {
            let descriptor = with(written).unwrap();
            assert_eq!(
                descriptor.handler,
                Some(HandlerSpec::Http {
                    url: "http://b/".into(),
                    timeout_ms: read
                })
            );
        }
        for refused in [
            serde_json::json!(1.5),
            serde_json::json!(-1),
            serde_json::json!(0),
            serde_json::json!(600_001),
            serde_json::json!("1000"),
        ] {
            assert!(with(refused.clone()).is_err(), "{refused}");
        }
        let many: Vec<String> = (0..=MAX_CHANNELS).map(|i| format!("c{i}")).collect();
        let descriptor: Descriptor = serde_json::from_value(serde_json::json!({
            "id": "quiz", "version": "1.0", "channels": many,
        }))
        .unwrap();
        assert!(matches!(
            descriptor.validate(),
            Err(DescriptorError::TooMany { .. })
        ));
    }

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn only_canonical_well_formed_channel_names_are_channels() {
        for good in [
            "/chat/1/main",
            "/chat/1.0/main",
            "/chat/10.0.3/main",
            "/a-b_c/0/x",
        ] {
            assert!(ChannelName::parse(good).is_some(), "{good}");
        }
        let long = format!("/{}/1/main", "x".repeat(MAX_NAME + 1));
        for bad in [
            "/chat/01/main",
            "/chat/+1/main",
            "/chat/1.00/main",
            "/chat/1.0.0.0/main",
            "/chat/99999999999/main",
            "/chat/1/ma in",
            "/ch%at/1/main",
            long.as_str(),
        ] {
            assert!(ChannelName::parse(bad).is_none(), "{bad}");
        }
        assert!(!version_matches("+1", &v("1.0")));
        assert!(!version_matches("01", &v("1.0")));
        assert!(version_matches("1", &v("1.0")));
    }

    #[test]
    fn versions_parse_order_and_match_fragments() {
        assert_eq!(v("1.2").to_string(), "1.2");
        assert_eq!(v("1.2.3").to_string(), "1.2.3");
        assert!("1".parse::<Version>().is_err());
        assert!("1.x".parse::<Version>().is_err());
        assert!("1.2.3.4".parse::<Version>().is_err());
        assert!(v("1.10") > v("1.9"));
        assert!(v("2.0") > v("1.99.99"));
        assert!(version_matches("1", &v("1.4")));
        assert!(version_matches("1.4", &v("1.4.2")));
        assert!(version_matches("1.4.2", &v("1.4.2")));
        assert!(!version_matches("1.4.2", &v("1.4")));
        assert!(!version_matches("2", &v("1.4")));
        assert!(!version_matches("1.x", &v("1.4")));
    }

    #[test]
    fn descriptors_are_checked() {
        let json = r#"{"id":"chat","version":"1.0","channels":["main"],
            "intents":[{"category":"talk","action":"say","provider":"say"}],
            "handler":{"kind":"http","url":"http://127.0.0.1:9/x"}}"#;
        let descriptor: Descriptor = serde_json::from_str(json).unwrap();
        descriptor.validate().unwrap();
        assert_eq!(descriptor.key(), "chat@1.0");
        assert_eq!(
            descriptor.handler,
            Some(HandlerSpec::Http {
                url: "http://127.0.0.1:9/x".into(),
                timeout_ms: 5000
            })
        );
        let mut bad = descriptor.clone();
        bad.id = "core".into();
        assert!(bad.validate().is_err());
        bad.id = "a/b".into();
        assert!(bad.validate().is_err());
        let mut empty = descriptor;
        empty.channels.clear();
        assert!(empty.validate().is_err());
    }

    #[test]
    fn channel_names_parse() {
        assert_eq!(
            ChannelName::parse("/chat/1/room"),
            Some(ChannelName {
                id: "chat",
                version: "1",
                channel: "room"
            })
        );
        assert_eq!(ChannelName::parse("/chat/1"), None);
        assert_eq!(ChannelName::parse("/chat/1/room/x"), None);
        assert_eq!(ChannelName::parse("/core"), None);
    }
}
