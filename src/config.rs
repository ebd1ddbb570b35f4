//! Node settings: what they are, their defaults, and how they are read.
//!
//! Layers, lowest first: built-in defaults < an optional TOML file (`--config`,
//! else `RAIN_CONFIG`, else `./rain.toml` when present) < environment variables <
//! command-line flags. The merge is done with the `config` crate; environment
//! variables and flags are parsed here, per setting, so a bad value is reported
//! under the setting's environment name (`SERVER_PORT`), whichever layer it
//! came from. Only the known names are read from the environment (plus
//! `RAIN_CONFIG`, and `RUST_LOG` as a fallback for `LOG`). A secret setting
//! (`API_TOKENS`, `REDIS_SERVER`) may instead be read from the file its `_FILE`
//! twin names (`API_TOKENS_FILE=/run/secrets/api_tokens`: Docker secrets), at
//! the environment's layer; what the file holds never appears in an error
//! about reading or parsing it.
//!
//! Owns validation too: a bad value stops the node with a message naming the
//! setting (exit code 2 at the binary's edge, see [`Settings::load_or_exit`]),
//! and how the Redis URL is shown anywhere ([`redact_url`]: never its password).
//! Also owns the command line's one subcommand (`rain-node healthcheck`, see
//! [`Command`]). Does not own logging set-up or the listening socket.

use std::ffi::OsString;
use std::num::{IntErrorKind, ParseIntError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use config::{Source, Value, ValueKind};
use serde::{Deserialize, Serialize};

mod api_tokens;

pub use api_tokens::{ApiScope, ApiToken, MIN_SECRET_LENGTH};

/// Every setting of a node. Field names are the TOML keys; the environment
/// variable is the upper-case name (`server_port` → `SERVER_PORT`); the flag is
/// the kebab-case name (`--server-port`). [`Settings::env_table`] lists them all
/// with their defaults.
///
/// Its `Debug` hides the password of `redis_server` (see [`redact_url`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `redis://host:port/db` (or `rediss://`, `unix://`), with
    /// `user:password@` when Redis asks for them; unset or empty → the embedded
    /// in-process backend (one node). Never logged as is: see [`redact_url`].
    pub redis_server: Option<String>,
    /// A PEM file of the CA certificate(s) that `rediss://` trusts; unset →
    /// the system's roots. Only with a `rediss://` `redis_server`.
    pub redis_ca_file: Option<String>,
    /// Address to listen on: an IP address or a host name.
    pub server_host: String,
    /// Port to listen on; 0 → a free port, printed at start.
    pub server_port: u16,
    /// Address the HTTP API (for operators and backends) listens on.
    pub admin_host: String,
    /// Port of the HTTP API; 0 → a free port, printed at start.
    pub admin_port: u16,
    /// Bearer tokens of the HTTP API, `name:scope:secret` each; empty → every
    /// call but `/healthz` and `/readyz` is refused (401).
    pub api_tokens: Vec<ApiToken>,
    /// This node's id in the cluster (1–64 of `A-Z a-z 0-9 . _ -`, not `all`);
    /// default: a fresh UUID v4.
    pub node_id: String,
    /// The group this node belongs to (same characters as `node_id`): stack
    /// replicas share one, since their ids are generated; recorded in the
    /// node's record for the Cloud API.
    pub node_group: String,
    /// The HTTP path Socket.IO is served under; starts and ends with `/`.
    pub socketio_path: String,
    /// Engine.IO heartbeat: how often the server pings (ms, ≥ 1).
    pub ping_interval_ms: u64,
    /// Engine.IO heartbeat: how long a pong may take before the session is closed (ms, ≥ 1).
    pub ping_timeout_ms: u64,
    /// How long a new Engine.IO session may go without joining a namespace (ms, ≥ 1).
    pub connect_timeout_ms: u64,
    /// The largest Engine.IO message or polling body accepted, in bytes (≥ 1).
    pub max_payload: u64,
    /// How long a polling POST may take to send its body; past it: 408 and the session is closed (ms, ≥ 1).
    pub polling_body_timeout_ms: u64,
    /// The most binary attachments one Socket.IO packet may announce.
    pub max_attachments: usize,
    /// Frames queued for one client before it is judged too slow and disconnected (≥ 1).
    pub outbound_queue: usize,
    /// Most Engine.IO sessions one client address may have open at once (≥ 1).
    pub connections_per_address: usize,
    /// Events (and namespace connects) per second one connection may send, on average (≥ 1).
    pub event_rate: u64,
    /// Events one connection may send in a burst before `event_rate` applies (≥ 1).
    pub event_burst: usize,
    /// Origins whose pages may connect (CORS headers, and the `Origin` a
    /// handshake may carry besides the node's own); empty → no other origin.
    /// In the environment and on the command line: a comma-separated list.
    pub cors_origins: Vec<String>,
    /// Proxies (IP addresses or CIDRs) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed; empty → the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// How long a graceful shutdown may take before the process exits anyway (ms, ≥ 1).
    pub shutdown_timeout_ms: u64,
    /// How long a node that got SIGTERM keeps serving everything while
    /// reporting not ready, so the balancer stops sending it new connections
    /// (ms, < `shutdown_timeout_ms`).
    pub drain_delay_ms: u64,
    /// Clients closed at once while draining (≥ 1).
    pub drain_batch: usize,
    /// The pause between two batches of clients closed while draining (ms).
    pub drain_batch_pause_ms: u64,
    /// Prefix of every Redis key and channel.
    pub key_prefix: String,
    /// A node whose last heartbeat is older than this is dead: the others drop it
    /// and its sockets from the cluster state (ms).
    pub node_ttl_ms: u64,
    /// How often a node refreshes its registration in Redis (ms).
    pub heartbeat_ms: u64,
    /// How long a session's data lives after its last use (ms).
    pub session_ttl_ms: u64,
    /// Built-in components this node hosts, as `id@version` (`echo@1.0`, `chat@1.0`).
    pub components: Vec<String>,
    /// A folder of component descriptors (`*.json`, HTTP backends) this node hosts.
    pub components_dir: Option<String>,
    /// URL prefixes a component deployed at run time (through the API) may
    /// have its backend at; empty → no run-time deploy of an HTTP component.
    pub backend_urls: Vec<String>,
    /// Largest answer read from an HTTP backend component; past it reading stops and the client gets a backend error (bytes, ≥ 1).
    pub backend_answer_max_bytes: usize,
    /// How a component's events are spread over its hosts (`local` or
    /// `round-robin`).
    pub routing: Routing,
    /// How long a routed event may wait for its handler's answer (ms).
    pub route_timeout_ms: u64,
    /// Most rooms one socket may be in at once (≥ 1).
    pub rooms_per_socket: usize,
    /// Longest client log line (message and error) accepted (bytes, ≥ 1).
    pub log_line_max_length: usize,
    /// Client log lines one socket may send per minute (a token bucket of that size, ≥ 1).
    pub log_lines_per_minute: usize,
    /// Longest namespace name a client may connect to (bytes, ≥ 1).
    pub namespace_max_length: usize,
    /// Most namespaces one connection may join at once (≥ 1).
    pub namespaces_per_connection: usize,
    /// Routed events this node waits on at once, at most; past it an event is
    /// refused at once with `{error: "overloaded"}` (≥ 1).
    pub route_max_in_flight: usize,
    /// Component and /core events one socket may have queued or running at once; they are handled one at a time in the order sent (≥ 1).
    pub socket_max_in_flight: usize,
    /// Most sockets of a dead node one purge step removes, so purging a large
    /// node never blocks Redis for long (≥ 1).
    pub purge_batch: usize,
    /// How long a rendered instance lives after its rendering socket left (ms).
    pub instance_ttl_ms: u64,
    /// How long a chat room's history lives after its last message (ms).
    pub chat_history_ttl_ms: u64,
    /// Longest chat message text (bytes, ≥ 1).
    pub chat_text_max_length: usize,
    /// Longest chat room name or nick (characters, ≥ 1).
    pub chat_name_max_length: usize,
    /// Secret (at least 32 bytes) that signs session tokens; shared by every
    /// node; required with `REDIS_SERVER`. Unset (embedded backend): a random
    /// one per process.
    pub session_secret: Option<Secret>,
    /// The secret before a rotation: its tokens still verify, none is minted.
    pub session_secret_previous: Option<Secret>,
    /// When the session cookie gets `Secure`.
    pub cookie_secure: CookieSecure,
    /// URL a node POSTs each namespace CONNECT to for a decision; unset → every
    /// CONNECT is accepted, without a user.
    pub auth_url: Option<String>,
    /// The URL other nodes reach this node's public listener at (forwarded
    /// polls and relayed websockets); unset → derived from the bound address
    /// (see [`Settings::advertise_url_for`]).
    pub advertise_url: Option<String>,
    /// How long the `AUTH_URL` answer may take before the CONNECT is refused (ms).
    pub auth_timeout_ms: u64,
    /// Secret that signs every request a node sends to a backend
    /// (`X-Rain-Signature`); unset → no signature headers.
    pub backend_secret: Option<Secret>,
    /// Largest value a client's session field may hold (bytes, ≥ 1).
    pub session_value_max_bytes: usize,
    /// Largest total size of a client's session (names and values, bytes, ≥ 1).
    pub session_max_bytes: usize,
    /// `tracing` filter, e.g. `info` or `rain_node=debug`; `RUST_LOG` is used
    /// when `LOG` is not set.
    pub log: String,
    /// How the node's own log lines (on stderr) are written: `text` or `json`.
    pub log_format: LogFormat,
}

/// The shortest `SESSION_SECRET` accepted, in bytes (an HMAC-SHA256 key
/// shorter than its output weakens it).
pub const MIN_SECRET_LEN: usize = 32;

/// A secret setting: its `Debug` never shows it (it has no `Display`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// When the session cookie is marked `Secure`: the `COOKIE_SECURE` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CookieSecure {
    /// `auto`: when the request reached the first trusted proxy over HTTPS
    /// (`X-Forwarded-Proto: https` from a `TRUSTED_PROXIES` peer; the node
    /// itself serves plain HTTP).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// `true`: always.
    #[serde(rename = "true")]
    Always,
    /// `false`: never.
    #[serde(rename = "false")]
    Never,
}

impl FromStr for CookieSecure {
    type Err = String;

    fn from_str(text: &str) -> Result<CookieSecure, String> {
        match text {
            "auto" => Ok(CookieSecure::Auto),
            "true" => Ok(CookieSecure::Always),
            "false" => Ok(CookieSecure::Never),
            _ => Err("must be auto, true or false".to_string()),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            redis_server: None,
            redis_ca_file: None,
            server_host: "127.0.0.1".to_string(),
            server_port: 0,
            admin_host: "127.0.0.1".to_string(),
            admin_port: 0,
            api_tokens: Vec::new(),
            node_id: uuid::Uuid::new_v4().to_string(),
            node_group: "default".to_string(),
            socketio_path: "/socket.io/".to_string(),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            connect_timeout_ms: 45_000,
            max_payload: 1_000_000,
            polling_body_timeout_ms: 10_000,
            max_attachments: 16,
            outbound_queue: 1024,
            connections_per_address: 256,
            event_rate: 100,
            event_burst: 200,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            shutdown_timeout_ms: 10_000,
            // Longer than haproxy.cfg's `inter 1s × fall 2`.
            drain_delay_ms: 3_000,
            drain_batch: 100,
            drain_batch_pause_ms: 100,
            key_prefix: "rain:".to_string(),
            node_ttl_ms: 5_000,
            heartbeat_ms: 1_000,
            session_ttl_ms: 86_400_000,
            components: vec!["echo@1.0".to_string(), "chat@1.0".to_string()],
            components_dir: None,
            backend_urls: Vec::new(),
            backend_answer_max_bytes: 1_000_000,
            routing: Routing::PreferLocal,
            route_timeout_ms: 10_000,
            route_max_in_flight: 10_000,
            socket_max_in_flight: 32,
            namespace_max_length: 256,
            log_line_max_length: 2048,
            log_lines_per_minute: 60,
            rooms_per_socket: 256,
            namespaces_per_connection: 32,
            purge_batch: 1_000,
            instance_ttl_ms: 3_600_000,
            chat_history_ttl_ms: 86_400_000,
            chat_text_max_length: 2_000,
            chat_name_max_length: 200,
            session_secret: None,
            session_secret_previous: None,
            cookie_secure: CookieSecure::Auto,
            auth_url: None,
            advertise_url: None,
            auth_timeout_ms: 5_000,
            backend_secret: None,
            session_value_max_bytes: 4_096,
            session_max_bytes: 65_536,
            log: "info".to_string(),
            log_format: LogFormat::Text,
        }
    }
}

/// How a node spreads a component's events over the component's hosts: the
/// `ROUTING` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Routing {
    /// `local`: this node's own handler when it hosts the component, else the
    /// live hosts in turn.
    #[default]
    #[serde(rename = "local")]
    PreferLocal,
    /// `round-robin`: every live host in turn, this node included.
    #[serde(rename = "round-robin")]
    RoundRobin,
}

impl Routing {
    /// The setting's text for this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::PreferLocal => "local",
            Routing::RoundRobin => "round-robin",
        }
    }
}

impl FromStr for Routing {
    type Err = String;

    /// `local` or `round-robin`; anything else is refused with the reason.
    fn from_str(text: &str) -> Result<Routing, String> {
        match text {
            "local" => Ok(Routing::PreferLocal),
            "round-robin" => Ok(Routing::RoundRobin),
            _ => Err("must be local or round-robin".to_string()),
        }
    }
}

impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a node writes its own log lines (always on stderr): the `LOG_FORMAT`
/// setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFormat {
    /// `text`: one human-readable line per event.
    #[default]
    #[serde(rename = "text")]
    Text,
    /// `json`: one JSON object per line, for log collectors.
    #[serde(rename = "json")]
    Json,
}

impl LogFormat {
    /// The setting's text for this format.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;

    /// `text` or `json`; anything else is refused with the reason.
    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("must be text or json".to_string()),
        }
    }
}

/// What the command line asks for besides running a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// GET /healthz of the node these settings describe (SERVER_HOST:SERVER_PORT,
    /// 0.0.0.0 → 127.0.0.1) and exit 0 if it answers 200, else 1: the image's HEALTHCHECK
    Healthcheck,
}

/// Why the settings could not be loaded. Every variant about a value names the
/// setting by its environment name.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line could not be parsed, or `--help` / `--version` was
    /// asked for: see [`clap::Error::kind`] (`DisplayHelp`, `DisplayVersion`).
    /// Its `Display` is clap's rendered message (or the help text).
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// A value (from the environment, a flag, or after merging) is malformed or
    /// out of range. `value` is as given (strings quoted), or `<redacted>`
    /// for a secret setting's text.
    #[error("invalid setting {name}={value}: {reason}")]
    Invalid {
        /// Environment name of the setting, e.g. `SERVER_PORT`.
        name: &'static str,
        value: String,
        reason: String,
    },
    /// A value in the TOML file has the wrong type or is out of range.
    #[error("invalid setting {name}={value} in config file {}: {reason}", path.display())]
    FileValue {
        /// Environment name of the setting, e.g. `SERVER_PORT`.
        name: &'static str,
        path: PathBuf,
        value: String,
        reason: String,
    },
    /// The TOML file has a key that is not a setting.
    #[error(
        "config file {}: unknown key `{key}` (known keys: {})",
        path.display(),
        known_keys()
    )]
    UnknownKey { path: PathBuf, key: String },
    /// The TOML file is missing (when named explicitly), unreadable, or not TOML.
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A secret setting is given both directly and through its `_FILE` twin.
    #[error("{name} and {file_name} are both set: set only one of them")]
    SecretTwice {
        /// Environment name of the setting, e.g. `API_TOKENS`.
        name: &'static str,
        /// Its twin, e.g. `API_TOKENS_FILE`.
        file_name: &'static str,
    },
    /// The file a `_FILE` variable names cannot be read. The message names the
    /// file, never what it holds.
    #[error("cannot read {file_name}={}: {reason}", path.display())]
    SecretFile {
        /// The `_FILE` variable, e.g. `API_TOKENS_FILE`.
        file_name: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The layers could not be merged (not expected once every value was checked).
    #[error("merging settings: {0}")]
    Merge(#[source] config::ConfigError),
}

/// How a setting's text (environment or flag) is parsed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Optional string; empty → unset.
    OptString,
    String,
    U16,
    U64,
    Usize,
    /// Comma-separated list; blanks dropped.
    List,
}

/// One setting: TOML key, environment name, how to parse it, the default as
/// shown to people, what it means, and the `--help` line built from those.
/// A secret one (`field!(secret …)`) also has a `_FILE` twin in the
/// environment, and its value is never shown in an error.
struct Field {
    key: &'static str,
    env: &'static str,
    /// `Some("X_FILE")` for a secret setting `X`.
    file_env: Option<&'static str>,
    kind: Kind,
    default: &'static str,
    meaning: &'static str,
    help: &'static str,
}

macro_rules! field {
    ($key:literal, $env:literal, $kind:ident, $default:literal, $meaning:literal) => {
        Field {
            key: $key,
            env: $env,
            file_env: None,
            kind: Kind::$kind,
            default: $default,
            meaning: $meaning,
            help: concat!($meaning, " [env: ", $env, "] [default: ", $default, "]"),
        }
    };
    (secret $key:literal, $env:literal, $kind:ident, $default:literal, $meaning:literal) => {
        Field {
            key: $key,
            env: $env,
            file_env: Some(concat!($env, "_FILE")),
            kind: Kind::$kind,
            default: $default,
            meaning: $meaning,
            help: concat!(
                $meaning,
                " [env: ",
                $env,
                "] [or a file named by: ",
                $env,
                "_FILE] [default: ",
                $default,
                "]"
            ),
        }
    };
}

// Secret: a URL may carry a password.
const REDIS_SERVER: Field = field!(
    secret "redis_server",
    "REDIS_SERVER",
    OptString,
    "unset",
    "Redis URL (redis://, rediss:// or unix://); unset or empty runs alone on the embedded backend"
);
const REDIS_CA_FILE: Field = field!(
    "redis_ca_file",
    "REDIS_CA_FILE",
    OptString,
    "unset",
    "PEM file of the CA certificate(s) to trust for rediss://; unset trusts the system's roots"
);
const SERVER_HOST: Field = field!(
    "server_host",
    "SERVER_HOST",
    String,
    "127.0.0.1",
    "Address to listen on (IP address or host name)"
);
const SERVER_PORT: Field = field!(
    "server_port",
    "SERVER_PORT",
    U16,
    "0",
    "Port to listen on; 0 picks a free port"
);
const ADMIN_HOST: Field = field!(
    "admin_host",
    "ADMIN_HOST",
    String,
    "127.0.0.1",
    "Address the HTTP API (/emit, /metrics) listens on; keep it off the public network"
);
const ADMIN_PORT: Field = field!(
    "admin_port",
    "ADMIN_PORT",
    U16,
    "0",
    "Port of the HTTP API; 0 picks a free port"
);
const API_TOKENS: Field = field!(
    secret "api_tokens",
    "API_TOKENS",
    List,
    "empty",
    "Comma-separated name:scope:secret bearer tokens of the HTTP API (scope emit, read or admin); empty refuses every call"
);
const NODE_ID: Field = field!(
    "node_id",
    "NODE_ID",
    String,
    "a fresh UUID v4",
    "This node's id in the cluster: 1 to 64 of A-Z a-z 0-9 . _ -, not \"all\""
);
const NODE_GROUP: Field = field!(
    "node_group",
    "NODE_GROUP",
    String,
    "default",
    "The group of nodes this one belongs to (replicas of one stack share it): 1 to 64 of A-Z a-z 0-9 . _ -"
);
const SOCKETIO_PATH: Field = field!(
    "socketio_path",
    "SOCKETIO_PATH",
    String,
    "/socket.io/",
    "HTTP path Socket.IO is served under (starts and ends with /)"
);
const PING_INTERVAL_MS: Field = field!(
    "ping_interval_ms",
    "PING_INTERVAL_MS",
    U64,
    "25000",
    "Engine.IO heartbeat: how often the server pings, in ms"
);
const PING_TIMEOUT_MS: Field = field!(
    "ping_timeout_ms",
    "PING_TIMEOUT_MS",
    U64,
    "20000",
    "Engine.IO heartbeat: how long a pong may take before the session is closed, in ms"
);
const CONNECT_TIMEOUT_MS: Field = field!(
    "connect_timeout_ms",
    "CONNECT_TIMEOUT_MS",
    U64,
    "45000",
    "How long a new Engine.IO session may go without joining a namespace, in ms"
);
const MAX_PAYLOAD: Field = field!(
    "max_payload",
    "MAX_PAYLOAD",
    U64,
    "1000000",
    "Largest Engine.IO message or polling body accepted, in bytes"
);
const MAX_ATTACHMENTS: Field = field!(
    "max_attachments",
    "MAX_ATTACHMENTS",
    Usize,
    "16",
    "Most binary attachments one Socket.IO packet may announce"
);
const OUTBOUND_QUEUE: Field = field!(
    "outbound_queue",
    "OUTBOUND_QUEUE",
    Usize,
    "1024",
    "Frames queued for one client before it is judged too slow and disconnected"
);
const CORS_ORIGINS: Field = field!(
    "cors_origins",
    "CORS_ORIGINS",
    List,
    "empty",
    "Comma-separated origins whose pages may connect (CORS, handshake Origin); empty allows none but the node's own"
);
const TRUSTED_PROXIES: Field = field!(
    "trusted_proxies",
    "TRUSTED_PROXIES",
    List,
    "empty",
    "Comma-separated IP addresses or CIDRs of proxies whose X-Forwarded-For is believed"
);
const SHUTDOWN_TIMEOUT_MS: Field = field!(
    "shutdown_timeout_ms",
    "SHUTDOWN_TIMEOUT_MS",
    U64,
    "10000",
    "How long a graceful shutdown may take before the process exits anyway, in ms"
);
const DRAIN_DELAY_MS: Field = field!(
    "drain_delay_ms",
    "DRAIN_DELAY_MS",
    U64,
    "3000",
    "After SIGTERM, how long the node reports not ready but keeps serving everything (longer than the balancer's health-check interval × fall), in ms"
);
const DRAIN_BATCH: Field = field!(
    "drain_batch",
    "DRAIN_BATCH",
    Usize,
    "100",
    "While draining, how many clients are closed at once (they reconnect to the other nodes)"
);
const DRAIN_BATCH_PAUSE_MS: Field = field!(
    "drain_batch_pause_ms",
    "DRAIN_BATCH_PAUSE_MS",
    U64,
    "100",
    "While draining, the pause between two batches of closed clients, in ms"
);
const KEY_PREFIX: Field = field!(
    "key_prefix",
    "KEY_PREFIX",
    String,
    "rain:",
    "Prefix of every Redis key and channel"
);
const NODE_TTL_MS: Field = field!(
    "node_ttl_ms",
    "NODE_TTL_MS",
    U64,
    "5000",
    "A node silent for this long is dead: the cluster drops it and its sockets, in ms"
);
const HEARTBEAT_MS: Field = field!(
    "heartbeat_ms",
    "HEARTBEAT_MS",
    U64,
    "1000",
    "How often a node refreshes its registration in Redis, in ms"
);
const SESSION_TTL_MS: Field = field!(
    "session_ttl_ms",
    "SESSION_TTL_MS",
    U64,
    "86400000",
    "How long a session's data lives after its last use, in ms"
);
const COMPONENTS: Field = field!(
    "components",
    "COMPONENTS",
    List,
    "echo@1.0,chat@1.0",
    "Comma-separated built-in components this node hosts; empty hosts none"
);
const BACKEND_URLS: Field = field!(
    "backend_urls",
    "BACKEND_URLS",
    List,
    "empty",
    "Comma-separated URL prefixes the backend of a component deployed through the API must start with; empty refuses such deploys"
);
const COMPONENTS_DIR: Field = field!(
    "components_dir",
    "COMPONENTS_DIR",
    OptString,
    "unset",
    "Folder of component descriptors (*.json, HTTP backends) this node hosts"
);
const ROUTING: Field = field!(
    "routing",
    "ROUTING",
    String,
    "local",
    "local: a node runs its own components' events; round-robin: every live host in turn"
);
const ROUTE_TIMEOUT_MS: Field = field!(
    "route_timeout_ms",
    "ROUTE_TIMEOUT_MS",
    U64,
    "10000",
    "How long a routed event waits for its handler's answer, in ms"
);
const NAMESPACE_MAX_LENGTH: Field = field!(
    "namespace_max_length",
    "NAMESPACE_MAX_LENGTH",
    Usize,
    "256",
    "Longest namespace name a client may connect to, in bytes"
);
const ROOMS_PER_SOCKET: Field = field!(
    "rooms_per_socket",
    "ROOMS_PER_SOCKET",
    Usize,
    "256",
    "Most rooms one socket may be in at once"
);
const LOG_LINE_MAX_LENGTH: Field = field!(
    "log_line_max_length",
    "LOG_LINE_MAX_LENGTH",
    Usize,
    "2048",
    "Longest client log line (message and error) a node accepts, in bytes"
);
const NAMESPACES_PER_CONNECTION: Field = field!(
    "namespaces_per_connection",
    "NAMESPACES_PER_CONNECTION",
    Usize,
    "32",
    "Most namespaces one connection may join at once"
);
const ROUTE_MAX_IN_FLIGHT: Field = field!(
    "route_max_in_flight",
    "ROUTE_MAX_IN_FLIGHT",
    Usize,
    "10000",
    "Routed events a node waits on at once; past it an event is refused as overloaded"
);
const PURGE_BATCH: Field = field!(
    "purge_batch",
    "PURGE_BATCH",
    Usize,
    "1000",
    "Most sockets of a dead node removed from Redis in one step of its purge"
);
const INSTANCE_TTL_MS: Field = field!(
    "instance_ttl_ms",
    "INSTANCE_TTL_MS",
    U64,
    "3600000",
    "How long a rendered instance lives after its rendering socket left, in ms"
);
const CHAT_HISTORY_TTL_MS: Field = field!(
    "chat_history_ttl_ms",
    "CHAT_HISTORY_TTL_MS",
    U64,
    "86400000",
    "How long a chat room's history lives after its last message, in ms"
);
const CHAT_TEXT_MAX_LENGTH: Field = field!(
    "chat_text_max_length",
    "CHAT_TEXT_MAX_LENGTH",
    Usize,
    "2000",
    "Longest chat message text, in bytes"
);
const CHAT_NAME_MAX_LENGTH: Field = field!(
    "chat_name_max_length",
    "CHAT_NAME_MAX_LENGTH",
    Usize,
    "200",
    "Longest chat room name or nick, in characters"
);
const SESSION_SECRET: Field = field!(
    secret "session_secret",
    "SESSION_SECRET",
    OptString,
    "unset",
    "Secret (at least 32 bytes) signing session tokens, the same on every node; required with REDIS_SERVER, else random per process"
);
const SESSION_SECRET_PREVIOUS: Field = field!(
    secret "session_secret_previous",
    "SESSION_SECRET_PREVIOUS",
    OptString,
    "unset",
    "The session secret before a rotation: its tokens still verify, new ones use SESSION_SECRET"
);
const COOKIE_SECURE: Field = field!(
    "cookie_secure",
    "COOKIE_SECURE",
    String,
    "auto",
    "Secure flag of the session cookie: true, false, or auto (when a trusted proxy says X-Forwarded-Proto: https)"
);
const AUTH_URL: Field = field!(
    "auth_url",
    "AUTH_URL",
    OptString,
    "unset",
    "http:// URL each namespace CONNECT is POSTed to for a decision; unset accepts every CONNECT without a user"
);
const ADVERTISE_URL: Field = field!(
    "advertise_url",
    "ADVERTISE_URL",
    OptString,
    "http://<bound address> (0.0.0.0 or :: → this host's name)",
    "http:// URL other nodes reach this node's public listener at, for requests of its sessions that land elsewhere"
);
const AUTH_TIMEOUT_MS: Field = field!(
    "auth_timeout_ms",
    "AUTH_TIMEOUT_MS",
    U64,
    "5000",
    "How long AUTH_URL may take to answer before the CONNECT is refused (auth unavailable), in ms"
);
const BACKEND_SECRET: Field = field!(
    secret "backend_secret",
    "BACKEND_SECRET",
    OptString,
    "unset",
    "Secret signing every request to a backend (X-Rain-Timestamp, X-Rain-Signature); unset sends no signature"
);
const SESSION_VALUE_MAX_BYTES: Field = field!(
    "session_value_max_bytes",
    "SESSION_VALUE_MAX_BYTES",
    Usize,
    "4096",
    "Largest value one session field may hold, in bytes"
);
const SESSION_MAX_BYTES: Field = field!(
    "session_max_bytes",
    "SESSION_MAX_BYTES",
    Usize,
    "65536",
    "Largest total size of one session (field names and values), in bytes"
);
const LOG: Field = field!(
    "log",
    "LOG",
    String,
    "info",
    "tracing filter, e.g. info or rain_node=debug (RUST_LOG is used if LOG is unset)"
);
const LOG_FORMAT: Field = field!(
    "log_format",
    "LOG_FORMAT",
    String,
    "text",
    "How log lines (on stderr) are written: text, or json (one object per line)"
);

const POLLING_BODY_TIMEOUT_MS: Field = field!(
    "polling_body_timeout_ms",
    "POLLING_BODY_TIMEOUT_MS",
    U64,
    "10000",
    "How long a polling POST may take to send its body before it is answered 408 and the session closed, in ms"
);

const CONNECTIONS_PER_ADDRESS: Field = field!(
    "connections_per_address",
    "CONNECTIONS_PER_ADDRESS",
    Usize,
    "256",
    "Most connections one client address may have open at once; more are refused with 429"
);

const EVENT_RATE: Field = field!(
    "event_rate",
    "EVENT_RATE",
    U64,
    "100",
    "Events (and connects) per second one connection may send on average; past it they are refused"
);

const EVENT_BURST: Field = field!(
    "event_burst",
    "EVENT_BURST",
    Usize,
    "200",
    "Events one connection may send at once before EVENT_RATE applies"
);

const SOCKET_MAX_IN_FLIGHT: Field = field!(
    "socket_max_in_flight",
    "SOCKET_MAX_IN_FLIGHT",
    Usize,
    "32",
    "Component events one socket may have queued or running; they run one at a time, in order; past it: too many requests"
);

const LOG_LINES_PER_MINUTE: Field = field!(
    "log_lines_per_minute",
    "LOG_LINES_PER_MINUTE",
    Usize,
    "60",
    "Client log lines one socket may send per minute; past it they are refused as too many requests"
);

const BACKEND_ANSWER_MAX_BYTES: Field = field!(
    "backend_answer_max_bytes",
    "BACKEND_ANSWER_MAX_BYTES",
    Usize,
    "1000000",
    "Largest answer read from an HTTP backend component, in bytes; larger: backend error"
);

/// Every setting, in `--help` order.
const FIELDS: [&Field; 59] = [
    &REDIS_SERVER,
    &REDIS_CA_FILE,
    &SERVER_HOST,
    &SERVER_PORT,
    &ADMIN_HOST,
    &ADMIN_PORT,
    &API_TOKENS,
    &NODE_ID,
    &NODE_GROUP,
    &SOCKETIO_PATH,
    &PING_INTERVAL_MS,
    &PING_TIMEOUT_MS,
    &CONNECT_TIMEOUT_MS,
    &MAX_PAYLOAD,
    &POLLING_BODY_TIMEOUT_MS,
    &MAX_ATTACHMENTS,
    &OUTBOUND_QUEUE,
    &CONNECTIONS_PER_ADDRESS,
    &EVENT_RATE,
    &EVENT_BURST,
    &CORS_ORIGINS,
    &TRUSTED_PROXIES,
    &SHUTDOWN_TIMEOUT_MS,
    &DRAIN_DELAY_MS,
    &DRAIN_BATCH,
    &DRAIN_BATCH_PAUSE_MS,
    &KEY_PREFIX,
    &NODE_TTL_MS,
    &HEARTBEAT_MS,
    &SESSION_TTL_MS,
    &COMPONENTS,
    &COMPONENTS_DIR,
    &BACKEND_URLS,
    &BACKEND_ANSWER_MAX_BYTES,
    &ROUTING,
    &ROUTE_TIMEOUT_MS,
    &ROUTE_MAX_IN_FLIGHT,
    &SOCKET_MAX_IN_FLIGHT,
    &NAMESPACE_MAX_LENGTH,
    &NAMESPACES_PER_CONNECTION,
    &LOG_LINE_MAX_LENGTH,
    &LOG_LINES_PER_MINUTE,
    &ROOMS_PER_SOCKET,
    &PURGE_BATCH,
    &INSTANCE_TTL_MS,
    &CHAT_HISTORY_TTL_MS,
    &CHAT_TEXT_MAX_LENGTH,
    &CHAT_NAME_MAX_LENGTH,
    &SESSION_SECRET,
    &SESSION_SECRET_PREVIOUS,
    &COOKIE_SECURE,
    &AUTH_URL,
    &AUTH_TIMEOUT_MS,
    &ADVERTISE_URL,
    &BACKEND_SECRET,
    &SESSION_VALUE_MAX_BYTES,
    &SESSION_MAX_BYTES,
    &LOG,
    &LOG_FORMAT,
];

fn known_keys() -> String {
    FIELDS.iter().map(|f| f.key).collect::<Vec<_>>().join(", ")
}

const LONG_ABOUT: &str = "rain-node: one node of a horizontally scalable Socket.IO cluster. \
With no REDIS_SERVER it runs alone on an embedded backend.

Settings are layered, lowest first: built-in defaults < TOML file (--config, else \
RAIN_CONFIG, else ./rain.toml if present) < environment variables < command-line flags.";

/// The command line. Values are kept as text and parsed by [`parse_text`], so
/// that errors name the setting and the layering stays in one place; clap
/// never reads the environment itself (the `[env: …]` notes are only help text).
#[derive(Debug, Parser)]
#[command(
    name = "rain-node",
    version,
    about = "rain-node: one node of a horizontally scalable Socket.IO cluster.",
    long_about = LONG_ABOUT
)]
struct Cli {
    /// TOML file of settings (same as RAIN_CONFIG) [default: ./rain.toml if present]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, value_name = "URL", help = REDIS_SERVER.help)]
    redis_server: Option<String>,
    #[arg(long, value_name = "FILE", help = REDIS_CA_FILE.help)]
    redis_ca_file: Option<String>,
    #[arg(long, value_name = "HOST", help = SERVER_HOST.help)]
    server_host: Option<String>,
    #[arg(long, value_name = "PORT", help = SERVER_PORT.help)]
    server_port: Option<String>,
    #[arg(long, value_name = "HOST", help = ADMIN_HOST.help)]
    admin_host: Option<String>,
    #[arg(long, value_name = "PORT", help = ADMIN_PORT.help)]
    admin_port: Option<String>,
    #[arg(long, value_name = "TOKENS", help = API_TOKENS.help)]
    api_tokens: Option<String>,
    #[arg(long, value_name = "ID", help = NODE_ID.help)]
    node_id: Option<String>,
    #[arg(long, value_name = "GROUP", help = NODE_GROUP.help)]
    node_group: Option<String>,
    #[arg(long, value_name = "PATH", help = SOCKETIO_PATH.help)]
    socketio_path: Option<String>,
    #[arg(long, value_name = "MS", help = PING_INTERVAL_MS.help)]
    ping_interval_ms: Option<String>,
    #[arg(long, value_name = "MS", help = PING_TIMEOUT_MS.help)]
    ping_timeout_ms: Option<String>,
    #[arg(long, value_name = "MS", help = CONNECT_TIMEOUT_MS.help)]
    connect_timeout_ms: Option<String>,
    #[arg(long, value_name = "BYTES", help = MAX_PAYLOAD.help)]
    max_payload: Option<String>,
    #[arg(long, value_name = "MS", help = POLLING_BODY_TIMEOUT_MS.help)]
    polling_body_timeout_ms: Option<String>,
    #[arg(long, value_name = "N", help = MAX_ATTACHMENTS.help)]
    max_attachments: Option<String>,
    #[arg(long, value_name = "FRAMES", help = OUTBOUND_QUEUE.help)]
    outbound_queue: Option<String>,
    #[arg(long, value_name = "N", help = CONNECTIONS_PER_ADDRESS.help)]
    connections_per_address: Option<String>,
    #[arg(long, value_name = "N", help = EVENT_RATE.help)]
    event_rate: Option<String>,
    #[arg(long, value_name = "N", help = EVENT_BURST.help)]
    event_burst: Option<String>,
    #[arg(long, value_name = "ORIGINS", help = CORS_ORIGINS.help)]
    cors_origins: Option<String>,
    #[arg(long, value_name = "CIDRS", help = TRUSTED_PROXIES.help)]
    trusted_proxies: Option<String>,
    #[arg(long, value_name = "MS", help = SHUTDOWN_TIMEOUT_MS.help)]
    shutdown_timeout_ms: Option<String>,
    #[arg(long, value_name = "MS", help = DRAIN_DELAY_MS.help)]
    drain_delay_ms: Option<String>,
    #[arg(long, value_name = "N", help = DRAIN_BATCH.help)]
    drain_batch: Option<String>,
    #[arg(long, value_name = "MS", help = DRAIN_BATCH_PAUSE_MS.help)]
    drain_batch_pause_ms: Option<String>,
    #[arg(long, value_name = "PREFIX", help = KEY_PREFIX.help)]
    key_prefix: Option<String>,
    #[arg(long, value_name = "MS", help = NODE_TTL_MS.help)]
    node_ttl_ms: Option<String>,
    #[arg(long, value_name = "MS", help = HEARTBEAT_MS.help)]
    heartbeat_ms: Option<String>,
    #[arg(long, value_name = "MS", help = SESSION_TTL_MS.help)]
    session_ttl_ms: Option<String>,
    #[arg(long, value_name = "LIST", help = COMPONENTS.help)]
    components: Option<String>,
    #[arg(long, value_name = "DIR", help = COMPONENTS_DIR.help)]
    components_dir: Option<String>,
    #[arg(long, value_name = "URLS", help = BACKEND_URLS.help)]
    backend_urls: Option<String>,
    #[arg(long, value_name = "BYTES", help = BACKEND_ANSWER_MAX_BYTES.help)]
    backend_answer_max_bytes: Option<String>,
    #[arg(long, value_name = "MODE", help = ROUTING.help)]
    routing: Option<String>,
    #[arg(long, value_name = "MS", help = ROUTE_TIMEOUT_MS.help)]
    route_timeout_ms: Option<String>,
    #[arg(long, value_name = "N", help = ROUTE_MAX_IN_FLIGHT.help)]
    route_max_in_flight: Option<String>,
    #[arg(long, value_name = "N", help = SOCKET_MAX_IN_FLIGHT.help)]
    socket_max_in_flight: Option<String>,
    #[arg(long, value_name = "BYTES", help = NAMESPACE_MAX_LENGTH.help)]
    namespace_max_length: Option<String>,
    #[arg(long, value_name = "N", help = NAMESPACES_PER_CONNECTION.help)]
    namespaces_per_connection: Option<String>,
    #[arg(long, value_name = "BYTES", help = LOG_LINE_MAX_LENGTH.help)]
    log_line_max_length: Option<String>,
    #[arg(long, value_name = "N", help = LOG_LINES_PER_MINUTE.help)]
    log_lines_per_minute: Option<String>,
    #[arg(long, value_name = "N", help = ROOMS_PER_SOCKET.help)]
    rooms_per_socket: Option<String>,
    #[arg(long, value_name = "N", help = PURGE_BATCH.help)]
    purge_batch: Option<String>,
    #[arg(long, value_name = "MS", help = INSTANCE_TTL_MS.help)]
    instance_ttl_ms: Option<String>,
    #[arg(long, value_name = "MS", help = CHAT_HISTORY_TTL_MS.help)]
    chat_history_ttl_ms: Option<String>,
    #[arg(long, value_name = "BYTES", help = CHAT_TEXT_MAX_LENGTH.help)]
    chat_text_max_length: Option<String>,
    #[arg(long, value_name = "N", help = CHAT_NAME_MAX_LENGTH.help)]
    chat_name_max_length: Option<String>,
    #[arg(long, value_name = "SECRET", help = SESSION_SECRET.help)]
    session_secret: Option<String>,
    #[arg(long, value_name = "SECRET", help = SESSION_SECRET_PREVIOUS.help)]
    session_secret_previous: Option<String>,
    #[arg(long, value_name = "MODE", help = COOKIE_SECURE.help)]
    cookie_secure: Option<String>,
    #[arg(long, value_name = "URL", help = AUTH_URL.help)]
    auth_url: Option<String>,
    #[arg(long, value_name = "MS", help = AUTH_TIMEOUT_MS.help)]
    auth_timeout_ms: Option<String>,
    #[arg(long, value_name = "URL", help = ADVERTISE_URL.help)]
    advertise_url: Option<String>,
    #[arg(long, value_name = "SECRET", help = BACKEND_SECRET.help)]
    backend_secret: Option<String>,
    #[arg(long, value_name = "BYTES", help = SESSION_VALUE_MAX_BYTES.help)]
    session_value_max_bytes: Option<String>,
    #[arg(long, value_name = "BYTES", help = SESSION_MAX_BYTES.help)]
    session_max_bytes: Option<String>,
    #[arg(long, value_name = "FILTER", help = LOG.help)]
    log: Option<String>,
    #[arg(long, value_name = "FORMAT", help = LOG_FORMAT.help)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// The value given on the command line for each setting, in [`FIELDS`] order.
    fn values(&self) -> [Option<&String>; 59] {
        [
            self.redis_server.as_ref(),
            self.redis_ca_file.as_ref(),
            self.server_host.as_ref(),
            self.server_port.as_ref(),
            self.admin_host.as_ref(),
            self.admin_port.as_ref(),
            self.api_tokens.as_ref(),
            self.node_id.as_ref(),
            self.node_group.as_ref(),
            self.socketio_path.as_ref(),
            self.ping_interval_ms.as_ref(),
            self.ping_timeout_ms.as_ref(),
            self.connect_timeout_ms.as_ref(),
            self.max_payload.as_ref(),
            self.polling_body_timeout_ms.as_ref(),
            self.max_attachments.as_ref(),
            self.outbound_queue.as_ref(),
            self.connections_per_address.as_ref(),
            self.event_rate.as_ref(),
            self.event_burst.as_ref(),
            self.cors_origins.as_ref(),
            self.trusted_proxies.as_ref(),
            self.shutdown_timeout_ms.as_ref(),
            self.drain_delay_ms.as_ref(),
            self.drain_batch.as_ref(),
            self.drain_batch_pause_ms.as_ref(),
            self.key_prefix.as_ref(),
            self.node_ttl_ms.as_ref(),
            self.heartbeat_ms.as_ref(),
            self.session_ttl_ms.as_ref(),
            self.components.as_ref(),
            self.components_dir.as_ref(),
            self.backend_urls.as_ref(),
            self.backend_answer_max_bytes.as_ref(),
            self.routing.as_ref(),
            self.route_timeout_ms.as_ref(),
            self.route_max_in_flight.as_ref(),
            self.socket_max_in_flight.as_ref(),
            self.namespace_max_length.as_ref(),
            self.namespaces_per_connection.as_ref(),
            self.log_line_max_length.as_ref(),
            self.log_lines_per_minute.as_ref(),
            self.rooms_per_socket.as_ref(),
            self.purge_batch.as_ref(),
            self.instance_ttl_ms.as_ref(),
            self.chat_history_ttl_ms.as_ref(),
            self.chat_text_max_length.as_ref(),
            self.chat_name_max_length.as_ref(),
            self.session_secret.as_ref(),
            self.session_secret_previous.as_ref(),
            self.cookie_secure.as_ref(),
            self.auth_url.as_ref(),
            self.auth_timeout_ms.as_ref(),
            self.advertise_url.as_ref(),
            self.backend_secret.as_ref(),
            self.session_value_max_bytes.as_ref(),
            self.session_max_bytes.as_ref(),
            self.log.as_ref(),
            self.log_format.as_ref(),
        ]
    }
}

/// Parses one `TRUSTED_PROXIES` entry: an IP address (one host) or a CIDR.
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(address) = text.parse::<std::net::IpAddr>() {
        return Ok(address.into());
    }
    text.parse::<ipnet::IpNet>()
        .map_err(|_| "expected an IP address or a CIDR such as 10.0.0.0/8".to_string())
}

/// Parses an unsigned integer, saying what range is allowed when it overflows.
fn parse_uint<T: FromStr<Err = ParseIntError>>(text: &str, max: u64) -> Result<T, String> {
    text.parse::<T>().map_err(|e| match e.kind() {
        IntErrorKind::Empty => "expected a whole number, got an empty value".to_string(),
        IntErrorKind::PosOverflow => format!("number too large (at most {max})"),
        _ => e.to_string(),
    })
}

/// Parses the text of a setting (from the environment or a flag) into a
/// `config` value; `name` is what the error calls it. A secret's text is never
/// quoted.
fn parse_text(field: &Field, name: &'static str, text: &str) -> Result<Value, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name,
        value: if field.file_env.is_some() {
            "<redacted>".to_string()
        } else {
            format!("{text:?}")
        },
        reason,
    };
    let kind: ValueKind = match field.kind {
        Kind::OptString if text.is_empty() => ValueKind::Nil,
        Kind::OptString | Kind::String => text.into(),
        Kind::U16 => parse_uint::<u16>(text, u16::MAX.into())
            .map_err(invalid)?
            .into(),
        Kind::U64 => parse_uint::<u64>(text, u64::MAX).map_err(invalid)?.into(),
        Kind::Usize => {
            let n = parse_uint::<usize>(text, usize::MAX as u64).map_err(invalid)?;
            (n as u64).into()
        }
        Kind::List => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
            .into(),
    };
    Ok(Value::new(None, kind))
}

/// Checks that a value from the TOML file has the setting's type, strictly
/// (the `config` crate alone would turn `1.5` into `2` or `5` into `"5"`).
fn check_file_value(field: &Field, path: &Path, value: &Value) -> Result<(), ConfigError> {
    let integer: Option<i128> = match value.kind {
        ValueKind::I64(n) => Some(n.into()),
        ValueKind::U64(n) => Some(n.into()),
        ValueKind::I128(n) => Some(n),
        ValueKind::U128(n) => Some(i128::try_from(n).unwrap_or(i128::MAX)),
        _ => None,
    };
    let max: u64 = match field.kind {
        Kind::U16 => u16::MAX.into(),
        Kind::Usize => usize::MAX as u64,
        _ => u64::MAX,
    };
    let checked = match field.kind {
        Kind::OptString | Kind::String => match value.kind {
            ValueKind::String(_) => Ok(()),
            _ => Err("expected a string".to_string()),
        },
        Kind::U16 | Kind::U64 | Kind::Usize => match integer {
            Some(n) if (0..=i128::from(max)).contains(&n) => Ok(()),
            Some(_) => Err(format!("out of range (0 to {max})")),
            None => Err("expected a whole number".to_string()),
        },
        Kind::List => match &value.kind {
            ValueKind::Array(items)
                if items.iter().all(|i| matches!(i.kind, ValueKind::String(_))) =>
            {
                Ok(())
            }
            _ => Err("expected an array of strings".to_string()),
        },
    };
    checked.map_err(|reason| ConfigError::FileValue {
        name: field.env,
        path: path.to_path_buf(),
        value: render(value),
        reason,
    })
}

/// A TOML value as it would be written (strings quoted).
fn render(value: &Value) -> String {
    match &value.kind {
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Array(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        _ => value.to_string(),
    }
}

/// Reads the TOML file, rejecting unknown keys and ill-typed values.
fn read_file(path: &Path) -> Result<config::Config, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let cfg = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .map_err(|e| file_error(e.to_string()))?;
    let map = cfg.collect().map_err(|e| file_error(e.to_string()))?;
    let mut keys: Vec<_> = map.keys().collect();
    keys.sort();
    for key in keys {
        let Some(field) = FIELDS.iter().find(|f| f.key == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            });
        };
        check_file_value(field, path, &map[key])?;
    }
    Ok(cfg)
}

fn invalid(name: &'static str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl Settings {
    /// Loads the settings from this process's command line and environment.
    pub fn load() -> Result<Settings, ConfigError> {
        Settings::from_sources(std::env::args_os(), |name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// [`Settings::load`], for `main`: on `--help` / `--version` prints it and
    /// exits 0; on a command-line usage error prints clap's message and exits 2;
    /// on any other error prints `rain-node: <error>` to stderr and exits 2.
    pub fn load_or_exit() -> Settings {
        match Settings::load() {
            Ok(settings) => settings,
            Err(ConfigError::Cli(e)) => e.exit(),
            Err(e) => {
                eprintln!("rain-node: {e}");
                std::process::exit(2);
            }
        }
    }

    /// [`Settings::load_or_exit`], for a binary with subcommands: also returns
    /// the [`Command`] the command line names (`None`: run the node).
    pub fn load_with_command_or_exit() -> (Settings, Option<Command>) {
        let loaded = Settings::with_command(
            std::env::args_os(),
            |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
            Path::new("rain.toml"),
        );
        match loaded {
            Ok(loaded) => loaded,
            Err(ConfigError::Cli(e)) => e.exit(),
            Err(e) => {
                eprintln!("rain-node: {e}");
                std::process::exit(2);
            }
        }
    }

    /// Loads the settings from the given command line (`args[0]` is the
    /// program name) and environment lookup, and from the TOML file they name
    /// (or `./rain.toml` if present). Does not read the process environment.
    pub fn from_sources(
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        Settings::from_sources_with_fallback(args, env, Path::new("rain.toml"))
    }

    /// [`Settings::from_sources`] with the file used when none is named.
    fn from_sources_with_fallback(
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
        env: impl Fn(&str) -> Option<String>,
        fallback_file: &Path,
    ) -> Result<Settings, ConfigError> {
        Settings::with_command(args, env, fallback_file).map(|(settings, _)| settings)
    }

    /// The settings, and the subcommand the command line names (if any).
    fn with_command(
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
        env: impl Fn(&str) -> Option<String>,
        fallback_file: &Path,
    ) -> Result<(Settings, Option<Command>), ConfigError> {
        let cli = Cli::try_parse_from(args)?;

        let named_file = cli.config.clone().or_else(|| {
            env("RAIN_CONFIG")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
        let file = match named_file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::File {
                    path,
                    message: "not found (named by --config or RAIN_CONFIG)".to_string(),
                });
            }
            Some(path) => Some(path),
            None => fallback_file.is_file().then(|| fallback_file.to_path_buf()),
        };

        let defaults =
            config::Config::try_from(&Settings::default()).map_err(ConfigError::Merge)?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = &file {
            builder = builder.add_source(read_file(path)?);
        }

        // Environment, then flags: a later override of the same key wins.
        for field in FIELDS {
            let from_env = match env(field.env) {
                Some(text) if field.env == "LOG" && text.is_empty() => None,
                Some(text) => Some((field.env, text)),
                None => None,
            };
            // An empty `X` beside `X_FILE` is no conflict: the file is meant.
            let from_env = match secret_from_file(field, &env)? {
                Some(_) if from_env.as_ref().is_some_and(|(_, text)| !text.is_empty()) => {
                    return Err(ConfigError::SecretTwice {
                        name: field.env,
                        file_name: field.file_env.unwrap_or(field.env),
                    });
                }
                Some(from_file) => Some(from_file),
                None => from_env,
            };
            let from_env = from_env.or_else(|| {
                (field.env == "LOG")
                    .then(|| env("RUST_LOG"))
                    .flatten()
                    .filter(|t| !t.is_empty())
                    .map(|t| ("RUST_LOG", t))
            });
            if let Some((name, text)) = from_env {
                if name == "RUST_LOG" {
                    check_log(name, &text)?;
                }
                builder = builder
                    .set_override(field.key, parse_text(field, name, &text)?)
                    .map_err(ConfigError::Merge)?;
            }
        }
        for (field, text) in FIELDS.iter().zip(cli.values()) {
            if let Some(text) = text {
                builder = builder
                    .set_override(field.key, parse_text(field, field.env, text)?)
                    .map_err(ConfigError::Merge)?;
            }
        }

        let merged = builder.build().map_err(ConfigError::Merge)?;
        // The mode is read from the merged text, so a later layer may correct
        // an earlier one, and a bad value is reported under its setting's name.
        let routing = merged.get_string(ROUTING.key).map_err(ConfigError::Merge)?;
        if let Err(reason) = routing.parse::<Routing>() {
            return Err(invalid(ROUTING.env, format!("{routing:?}"), &reason));
        }
        let log_format = merged
            .get_string(LOG_FORMAT.key)
            .map_err(ConfigError::Merge)?;
        if let Err(reason) = log_format.parse::<LogFormat>() {
            return Err(invalid(LOG_FORMAT.env, format!("{log_format:?}"), &reason));
        }
        // Tokens are parsed here, not by serde, so a bad one is reported under
        // API_TOKENS and without its secret.
        // (An empty list is absent from the merge; a value of the wrong type was
        // refused when read.)
        let tokens: Vec<String> = merged.get(API_TOKENS.key).unwrap_or_default();
        for entry in &tokens {
            if let Err(reason) = entry.parse::<ApiToken>() {
                return Err(invalid(API_TOKENS.env, ApiToken::redacted(entry), &reason));
            }
        }
        let cookie_secure = merged
            .get_string(COOKIE_SECURE.key)
            .map_err(ConfigError::Merge)?;
        if let Err(reason) = cookie_secure.parse::<CookieSecure>() {
            return Err(invalid(
                COOKIE_SECURE.env,
                format!("{cookie_secure:?}"),
                &reason,
            ));
        }
        let mut settings: Settings = merged.try_deserialize().map_err(ConfigError::Merge)?;
        if settings.redis_server.as_deref() == Some("") {
            settings.redis_server = None;
        }
        for secret in [
            &mut settings.session_secret,
            &mut settings.session_secret_previous,
            &mut settings.backend_secret,
        ] {
            if secret.as_ref().is_some_and(Secret::is_empty) {
                *secret = None;
            }
        }
        if settings.auth_url.as_deref() == Some("") {
            settings.auth_url = None;
        }
        if settings.advertise_url.as_deref() == Some("") {
            settings.advertise_url = None;
        }
        settings.validate()?;
        Ok((settings, cli.command))
    }

    /// Checks every rule; the error names the first setting that breaks one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            (PING_INTERVAL_MS.env, self.ping_interval_ms),
            (PING_TIMEOUT_MS.env, self.ping_timeout_ms),
            (CONNECT_TIMEOUT_MS.env, self.connect_timeout_ms),
            (MAX_PAYLOAD.env, self.max_payload),
            (POLLING_BODY_TIMEOUT_MS.env, self.polling_body_timeout_ms),
            (OUTBOUND_QUEUE.env, self.outbound_queue as u64),
            (
                CONNECTIONS_PER_ADDRESS.env,
                self.connections_per_address as u64,
            ),
            (EVENT_RATE.env, self.event_rate),
            (EVENT_BURST.env, self.event_burst as u64),
            (SHUTDOWN_TIMEOUT_MS.env, self.shutdown_timeout_ms),
            (DRAIN_BATCH.env, self.drain_batch as u64),
            (NODE_TTL_MS.env, self.node_ttl_ms),
            (HEARTBEAT_MS.env, self.heartbeat_ms),
            (SESSION_TTL_MS.env, self.session_ttl_ms),
            (ROUTE_TIMEOUT_MS.env, self.route_timeout_ms),
            (ROUTE_MAX_IN_FLIGHT.env, self.route_max_in_flight as u64),
            (SOCKET_MAX_IN_FLIGHT.env, self.socket_max_in_flight as u64),
            (
                BACKEND_ANSWER_MAX_BYTES.env,
                self.backend_answer_max_bytes as u64,
            ),
            (LOG_LINES_PER_MINUTE.env, self.log_lines_per_minute as u64),
            (NAMESPACE_MAX_LENGTH.env, self.namespace_max_length as u64),
            (
                NAMESPACES_PER_CONNECTION.env,
                self.namespaces_per_connection as u64,
            ),
            (LOG_LINE_MAX_LENGTH.env, self.log_line_max_length as u64),
            (ROOMS_PER_SOCKET.env, self.rooms_per_socket as u64),
            (PURGE_BATCH.env, self.purge_batch as u64),
            (INSTANCE_TTL_MS.env, self.instance_ttl_ms),
            (CHAT_HISTORY_TTL_MS.env, self.chat_history_ttl_ms),
            (CHAT_TEXT_MAX_LENGTH.env, self.chat_text_max_length as u64),
            (CHAT_NAME_MAX_LENGTH.env, self.chat_name_max_length as u64),
            (AUTH_TIMEOUT_MS.env, self.auth_timeout_ms),
            (
                SESSION_VALUE_MAX_BYTES.env,
                self.session_value_max_bytes as u64,
            ),
            (SESSION_MAX_BYTES.env, self.session_max_bytes as u64),
        ];
        for (name, value) in at_least_one {
            if value < 1 {
                return Err(invalid(name, value, "must be at least 1"));
            }
        }
        // The delay is only the first part of a drain: closing the clients,
        // finishing routed calls and flushing need time left within the bound.
        if self.drain_delay_ms >= self.shutdown_timeout_ms {
            return Err(invalid(
                DRAIN_DELAY_MS.env,
                self.drain_delay_ms,
                &format!(
                    "must be less than SHUTDOWN_TIMEOUT_MS={} (the drain's delay is part of the shutdown)",
                    self.shutdown_timeout_ms
                ),
            ));
        }
        // A node must beat at least three times within its TTL, or one slow
        // beat would have the others purge a live node.
        if self.heartbeat_ms.saturating_mul(3) > self.node_ttl_ms {
            return Err(invalid(
                HEARTBEAT_MS.env,
                self.heartbeat_ms,
                &format!(
                    "three heartbeats must fit in NODE_TTL_MS={} (HEARTBEAT_MS × 3 ≤ NODE_TTL_MS)",
                    self.node_ttl_ms
                ),
            ));
        }
        if let Some(url) = &self.redis_server
            && !["redis://", "rediss://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid(
                REDIS_SERVER.env,
                format!("{:?}", redact_url(url)),
                "must start with redis://, rediss:// or unix://",
            ));
        }
        // A CA file that would be ignored is a mistake worth stopping for: the
        // operator believes the connection is verified against it.
        if let Some(path) = &self.redis_ca_file
            && !self
                .redis_server
                .as_deref()
                .is_some_and(|url| url.starts_with("rediss://"))
        {
            return Err(invalid(
                REDIS_CA_FILE.env,
                format!("{path:?}"),
                "is only used with a rediss:// REDIS_SERVER",
            ));
        }
        for (name, host) in [
            (SERVER_HOST.env, &self.server_host),
            (ADMIN_HOST.env, &self.admin_host),
        ] {
            let is_host_name = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if host.parse::<std::net::IpAddr>().is_err() && !is_host_name {
                return Err(invalid(
                    name,
                    format!("{host:?}"),
                    "must be an IP address or a host name (letters, digits, '-', '.', '_')",
                ));
            }
        }
        // The API must never be served on the public port.
        if self.admin_port != 0
            && self.admin_port == self.server_port
            && self.admin_host == self.server_host
        {
            return Err(invalid(
                ADMIN_PORT.env,
                self.admin_port,
                "must differ from SERVER_PORT (the API has a listener of its own)",
            ));
        }
        for origin in &self.cors_origins {
            if !is_origin(origin) {
                return Err(invalid(
                    CORS_ORIGINS.env,
                    format!("{origin:?}"),
                    "each entry must be an origin, scheme://host[:port] (no path, no wildcard)",
                ));
            }
        }
        for prefix in &self.backend_urls {
            let parsed = reqwest::Url::parse(prefix).ok();
            let fine = parsed.as_ref().is_some_and(|url| {
                url.scheme() == "http"
                    && url.host_str().is_some_and(|host| !host.is_empty())
                    && url.username().is_empty()
                    && url.password().is_none()
                    && url.path().ends_with('/')
                    && prefix.ends_with('/')
                    && url.query().is_none()
            });
            if !fine {
                return Err(invalid(
                    BACKEND_URLS.env,
                    format!("{:?}", redact_url(prefix)),
                    "each entry must be an http:// URL with a host, no user or password, and a path ending in '/'",
                ));
            }
        }
        if let Err(reason) = api_tokens::check_list(&self.api_tokens) {
            return Err(invalid(API_TOKENS.env, "<redacted>", &reason));
        }
        // Node ids travel in Redis keys, channel names, sids and (with the
        // Cloud API) URL paths, where `all` names every node.
        let id = &self.node_id;
        if !valid_node_id(id) {
            return Err(invalid(
                NODE_ID.env,
                format!("{id:?}"),
                "must be 1 to 64 of A-Z a-z 0-9 . _ - and not \"all\"",
            ));
        }
        // A group names nodes in URL paths and in the node records.
        let group = &self.node_group;
        if !valid_node_id(group) {
            return Err(invalid(
                NODE_GROUP.env,
                format!("{group:?}"),
                "must be 1 to 64 of A-Z a-z 0-9 . _ - and not \"all\"",
            ));
        }
        let path = &self.socketio_path;
        if !path.starts_with('/') || !path.ends_with('/') {
            return Err(invalid(
                SOCKETIO_PATH.env,
                format!("{path:?}"),
                "must start and end with '/'",
            ));
        }
        // Secrets are named, never shown: the error says how long it was.
        for (name, secret) in [
            (SESSION_SECRET.env, &self.session_secret),
            (SESSION_SECRET_PREVIOUS.env, &self.session_secret_previous),
        ] {
            if let Some(secret) = secret
                && secret.len() < MIN_SECRET_LEN
            {
                return Err(invalid(
                    name,
                    format!("<{} bytes, not shown>", secret.len()),
                    &format!("must be at least {} bytes", MIN_SECRET_LEN),
                ));
            }
        }
        if self.redis_server.is_some() && self.session_secret.is_none() {
            return Err(invalid(
                SESSION_SECRET.env,
                "unset",
                "required with REDIS_SERVER: every node must verify the session tokens the others mint (at least 32 bytes, the same on every node)",
            ));
        }
        if let Some(url) = &self.auth_url
            && !(url.starts_with("http://") && url.len() > "http://".len())
        {
            return Err(invalid(
                AUTH_URL.env,
                format!("{url:?}"),
                "must be an absolute http:// URL",
            ));
        }
        if let Some(url) = &self.advertise_url
            && !(url.starts_with("http://")
                && url.len() > "http://".len()
                && !url.contains(char::is_whitespace))
        {
            return Err(invalid(
                ADVERTISE_URL.env,
                format!("{url:?}"),
                "must be an absolute http:// URL (this node's public listener as other nodes reach it)",
            ));
        }
        for proxy in &self.trusted_proxies {
            if let Err(reason) = parse_network(proxy) {
                return Err(invalid(TRUSTED_PROXIES.env, format!("{proxy:?}"), &reason));
            }
        }
        check_log(LOG.env, &self.log)
    }

    /// How often the server pings.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// How long a pong may take.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    /// How long a new session may go without joining a namespace.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// How long a polling POST may take to send its body.
    pub fn polling_body_timeout(&self) -> Duration {
        Duration::from_millis(self.polling_body_timeout_ms)
    }

    /// How long a graceful shutdown may take.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    pub fn drain_batch_pause(&self) -> Duration {
        Duration::from_millis(self.drain_batch_pause_ms)
    }

    pub fn node_ttl(&self) -> Duration {
        Duration::from_millis(self.node_ttl_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_millis(self.session_ttl_ms)
    }

    /// How long a rendered instance lives after its rendering socket left.
    pub fn instance_ttl(&self) -> Duration {
        Duration::from_millis(self.instance_ttl_ms)
    }

    /// How long a chat room's history lives after its last message.
    pub fn chat_history_ttl(&self) -> Duration {
        Duration::from_millis(self.chat_history_ttl_ms)
    }

    /// The URL other nodes reach this node at, given the address its public
    /// listener is bound to: `ADVERTISE_URL` when set; else `http://` and the
    /// bound address, where an unspecified one (`0.0.0.0`, `::`) becomes this
    /// host's name (`HOSTNAME`, else the kernel's): in a container that name
    /// resolves to the container's address on its network.
    pub fn advertise_url_for(&self, bound: std::net::SocketAddr) -> String {
        if let Some(url) = &self.advertise_url {
            return url.trim_end_matches('/').to_string();
        }
        if !bound.ip().is_unspecified() {
            return format!("http://{bound}");
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("http://{host}:{}", bound.port())
    }

    /// How long the `AUTH_URL` answer may take.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    pub fn route_timeout(&self) -> Duration {
        Duration::from_millis(self.route_timeout_ms)
    }

    /// Every setting as (environment name, default as shown to people, meaning),
    /// in `--help` order: the README's settings table.
    pub fn env_table() -> Vec<(&'static str, String, &'static str)> {
        FIELDS
            .iter()
            .map(|f| (f.env, f.default.to_string(), f.meaning))
            .collect()
    }
}

/// The value of a secret setting read from the file its `_FILE` twin names, as
/// (the twin's name, the file's text less its trailing newlines), or `None`
/// when the setting is not secret or the twin is unset or empty. Errors name
/// the file, never its contents.
fn secret_from_file(
    field: &Field,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(&'static str, String)>, ConfigError> {
    let Some(file_name) = field.file_env else {
        return Ok(None);
    };
    let Some(path) = env(file_name).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    // Not `read_to_string`'s error alone: make "is a directory" and bad UTF-8
    // plain; neither shows the contents.
    let text = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())
        })
        .map_err(|reason| ConfigError::SecretFile {
            file_name,
            path: path.clone(),
            reason,
        })?;
    // `echo secret > file` and editors end the file with a newline that is not
    // part of the secret.
    Ok(Some((
        file_name,
        text.trim_end_matches(['\n', '\r']).to_string(),
    )))
}

/// Whether `text` is an origin as browsers send it: `scheme://host[:port]`
/// (a trailing `/` is forgiven).
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !authority.is_empty()
        && authority.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        })
}

/// `url` with its password hidden: the password of `user:password@` (or the
/// whole user part when it has no `:`) and a `pass=` query value (`unix://`
/// URLs) become `***`. What every log line, error and `Debug` shows of
/// A node id or group name: 1 to 64 of `A-Z a-z 0-9 . _ -`, never `all`
/// (ids travel in Redis keys, channel names, sids and URL paths, where `all`
/// names every node).
pub fn valid_node_id(id: &str) -> bool {
    let id_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !id.is_empty() && id.len() <= 64 && id.chars().all(id_chars) && id != "all"
}

/// `REDIS_SERVER`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    // The user part ends at the last `@`, whatever a careless password holds
    // (`/`, `?`, `#`, `@`).
    let (user, rest) = match rest.rsplit_once('@') {
        Some((user_info, rest)) => match user_info.split_once(':') {
            Some((user, _password)) => (format!("{user}:***@"), rest),
            None => ("***@".to_string(), rest),
        },
        None => (String::new(), rest),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key == "pass" || key == "password" => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest.to_string(),
    };
    format!("{scheme}{user}{rest}")
}

impl std::fmt::Debug for Settings {
    /// Every field as its serialized value, secrets redacted: `redis_server`
    /// without its password, API tokens by name only, every key of
    /// secret setting as `<redacted>`. Built from the serialized form so that
    /// a new setting shows without touching this; a new *secret* setting is
    /// declared `field!(secret …)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Settings");
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) {
            for (key, value) in fields {
                match (key.as_str(), &self.redis_server) {
                    ("redis_server", Some(url)) => out.field(&key, &redact_url(url)),
                    ("api_tokens", _) => out.field(&key, &self.api_tokens),
                    (secret, _) if is_secret(secret) && !value.is_null() => {
                        out.field(&key, &format_args!("<redacted>"))
                    }
                    _ => out.field(&key, &format_args!("{value}")),
                };
            }
        }
        out.finish()
    }
}

/// Whether the setting `key` is a secret (`field!(secret …)`): never shown
/// by `Debug`, logs or errors.
fn is_secret(key: &str) -> bool {
    FIELDS
        .iter()
        .any(|field| field.key == key && field.file_env.is_some())
}

/// Checks that `text` is a valid `tracing` filter.
fn check_log(name: &'static str, text: &str) -> Result<(), ConfigError> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(drop)
        .map_err(|e| invalid(name, format!("{text:?}"), &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A temporary file removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "rain-config-test-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const NO_FILE: &str = "/nonexistent/rain-config-test/rain.toml";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const OLD_SECRET: &str = "fedcba9876543210fedcba9876543210";

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = std::iter::once("rain-node").chain(args.iter().copied());
        Settings::from_sources_with_fallback(args, |k| env.get(k).cloned(), Path::new(NO_FILE))
    }

    fn err(args: &[&str], env: &[(&str, &str)]) -> String {
        load(args, env).unwrap_err().to_string()
    }

    impl Settings {
        /// These settings with `other`'s node id (a fresh UUID each load).
        fn with_id(self, other: &Settings) -> Settings {
            Settings {
                node_id: other.node_id.clone(),
                ..self
            }
        }
    }

    fn same_but_node_id(a: &Settings, b: &Settings) -> bool {
        Settings {
            node_id: String::new(),
            ..a.clone()
        } == Settings {
            node_id: String::new(),
            ..b.clone()
        }
    }

    #[test]
    fn defaults() {
        let s = load(&[], &[]).unwrap();
        assert!(same_but_node_id(&s, &Settings::default()));
        assert!(uuid::Uuid::parse_str(&s.node_id).is_ok());
        assert_eq!(s.redis_server, None);
        assert_eq!(s.server_host, "127.0.0.1");
        assert_eq!(s.server_port, 0);
        assert_eq!(s.ping_interval(), Duration::from_secs(25));
        assert_eq!(s.ping_timeout(), Duration::from_secs(20));
        assert_eq!(s.connect_timeout(), Duration::from_secs(45));
        assert_eq!(s.shutdown_timeout(), Duration::from_secs(10));
        Settings::default().validate().unwrap();
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let f = TempFile::new(
            "server_port = 4000\nserver_host = \"0.0.0.0\"\nkey_prefix = \"file:\"\n\
             cors_origins = [\"http://a\", \"http://b\"]\nredis_server = \"redis://file\"\n\
             session_secret = \"0123456789abcdef0123456789abcdef\"\n",
        );
        let s = load(&[], &[("RAIN_CONFIG", f.path())]).unwrap();
        assert_eq!(s.server_port, 4000);
        assert_eq!(s.server_host, "0.0.0.0");
        assert_eq!(s.key_prefix, "file:");
        assert_eq!(s.cors_origins, ["http://a", "http://b"]);
        assert_eq!(s.redis_server.as_deref(), Some("redis://file"));
        assert_eq!(s.ping_interval_ms, 25_000);

        let s = load(
            &[],
            &[
                ("RAIN_CONFIG", f.path()),
                ("SERVER_PORT", "5000"),
                ("CORS_ORIGINS", "http://c"),
                ("REDIS_SERVER", ""),
            ],
        )
        .unwrap();
        assert_eq!(s.server_port, 5000);
        assert_eq!(s.server_host, "0.0.0.0");
        assert_eq!(s.cors_origins, ["http://c"]);
        assert_eq!(s.redis_server, None);

        // --config wins over RAIN_CONFIG; the fallback file is used when none is named.
        let g = TempFile::new("server_port = 4001\n");
        let s = load(&["--config", g.path()], &[("RAIN_CONFIG", f.path())]).unwrap();
        assert_eq!(s.server_port, 4001);
        let args = ["rain-node"];
        let s = Settings::from_sources_with_fallback(args, |_| None, &g.0).unwrap();
        assert_eq!(s.server_port, 4001);
    }

    #[test]
    fn cli_overrides_env() {
        let f = TempFile::new("server_port = 4000\nlog = \"warn\"\n");
        let s = load(
            &[
                "--server-port",
                "6000",
                "--node-id=n1",
                "--redis-server",
                "redis://cli:6379/0",
                "--cors-origins",
                "http://a,http://b",
            ],
            &[
                ("RAIN_CONFIG", f.path()),
                ("SERVER_PORT", "5000"),
                ("NODE_ID", "env-node"),
                ("REDIS_SERVER", "redis://env"),
                ("SESSION_SECRET", SECRET),
                ("CORS_ORIGINS", "http://x"),
                ("LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(s.server_port, 6000);
        assert_eq!(s.node_id, "n1");
        assert_eq!(s.redis_server.as_deref(), Some("redis://cli:6379/0"));
        assert_eq!(s.cors_origins, ["http://a", "http://b"]);
        assert_eq!(s.log, "debug");
        // An empty flag unsets REDIS_SERVER too.
        let s = load(&["--redis-server="], &[("REDIS_SERVER", "redis://env")]).unwrap();
        assert_eq!(s.redis_server, None);
    }

    #[test]
    fn every_setting_from_env_and_cli() {
        let values = [
            ("REDIS_SERVER", "rediss://rain:pw@redis.example:6380/1"),
            ("REDIS_CA_FILE", "/etc/rain/redis-ca.pem"),
            ("SERVER_HOST", "::1"),
            ("SERVER_PORT", "65535"),
            ("ADMIN_HOST", "::"),
            ("ADMIN_PORT", "9100"),
            (
                "API_TOKENS",
                "ci:emit:0123456789abcdef,ops:admin:fedcba9876543210",
            ),
            ("NODE_ID", "node-7"),
            ("NODE_GROUP", "stack.a_1"),
            ("SOCKETIO_PATH", "/io/"),
            ("PING_INTERVAL_MS", "1"),
            ("PING_TIMEOUT_MS", "2"),
            ("CONNECT_TIMEOUT_MS", "3"),
            ("MAX_PAYLOAD", "4"),
            ("POLLING_BODY_TIMEOUT_MS", "22"),
            ("MAX_ATTACHMENTS", "0"),
            ("OUTBOUND_QUEUE", "6"),
            ("CONNECTIONS_PER_ADDRESS", "23"),
            ("EVENT_RATE", "24"),
            ("EVENT_BURST", "25"),
            ("CORS_ORIGINS", "http://a"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,::1"),
            ("SHUTDOWN_TIMEOUT_MS", "7"),
            ("DRAIN_DELAY_MS", "6"),
            ("DRAIN_BATCH", "31"),
            ("DRAIN_BATCH_PAUSE_MS", "32"),
            ("KEY_PREFIX", ""),
            ("NODE_TTL_MS", "30"),
            ("HEARTBEAT_MS", "9"),
            ("SESSION_TTL_MS", "10"),
            ("COMPONENTS", "echo@1.0"),
            ("COMPONENTS_DIR", "/srv/components"),
            ("BACKEND_URLS", "http://backends.local/,http://127.0.0.1:9/"),
            ("BACKEND_ANSWER_MAX_BYTES", "28"),
            ("ROUTING", "round-robin"),
            ("ROUTE_TIMEOUT_MS", "11"),
            ("ROUTE_MAX_IN_FLIGHT", "15"),
            ("SOCKET_MAX_IN_FLIGHT", "26"),
            ("NAMESPACE_MAX_LENGTH", "16"),
            ("NAMESPACES_PER_CONNECTION", "17"),
            ("LOG_LINE_MAX_LENGTH", "18"),
            ("LOG_LINES_PER_MINUTE", "27"),
            ("ROOMS_PER_SOCKET", "21"),
            ("PURGE_BATCH", "12"),
            ("INSTANCE_TTL_MS", "13"),
            ("CHAT_HISTORY_TTL_MS", "14"),
            ("CHAT_TEXT_MAX_LENGTH", "19"),
            ("CHAT_NAME_MAX_LENGTH", "20"),
            ("SESSION_SECRET", SECRET),
            ("SESSION_SECRET_PREVIOUS", OLD_SECRET),
            ("COOKIE_SECURE", "true"),
            ("AUTH_URL", "http://auth.local:8080/check"),
            ("AUTH_TIMEOUT_MS", "22"),
            ("ADVERTISE_URL", "http://node-7.rain:3000"),
            ("BACKEND_SECRET", "b"),
            ("SESSION_VALUE_MAX_BYTES", "23"),
            ("SESSION_MAX_BYTES", "24"),
            ("LOG", "rain_node=debug,warn"),
            ("LOG_FORMAT", "json"),
        ];
        let expected = Settings {
            redis_server: Some("rediss://rain:pw@redis.example:6380/1".into()),
            redis_ca_file: Some("/etc/rain/redis-ca.pem".into()),
            server_host: "::1".into(),
            server_port: 65535,
            admin_host: "::".into(),
            admin_port: 9100,
            api_tokens: vec![
                "ci:emit:0123456789abcdef".parse().unwrap(),
                "ops:admin:fedcba9876543210".parse().unwrap(),
            ],
            node_id: "node-7".into(),
            node_group: "stack.a_1".into(),
            socketio_path: "/io/".into(),
            ping_interval_ms: 1,
            ping_timeout_ms: 2,
            connect_timeout_ms: 3,
            max_payload: 4,
            polling_body_timeout_ms: 22,
            max_attachments: 0,
            outbound_queue: 6,
            connections_per_address: 23,
            event_rate: 24,
            event_burst: 25,
            cors_origins: vec!["http://a".into()],
            trusted_proxies: vec!["10.0.0.0/8".into(), "::1".into()],
            shutdown_timeout_ms: 7,
            drain_delay_ms: 6,
            drain_batch: 31,
            drain_batch_pause_ms: 32,
            key_prefix: String::new(),
            node_ttl_ms: 30,
            heartbeat_ms: 9,
            session_ttl_ms: 10,
            components: vec!["echo@1.0".into()],
            components_dir: Some("/srv/components".into()),
            backend_urls: vec![
                "http://backends.local/".into(),
                "http://127.0.0.1:9/".into(),
            ],
            backend_answer_max_bytes: 28,
            routing: Routing::RoundRobin,
            route_timeout_ms: 11,
            route_max_in_flight: 15,
            socket_max_in_flight: 26,
            namespace_max_length: 16,
            namespaces_per_connection: 17,
            log_line_max_length: 18,
            log_lines_per_minute: 27,
            rooms_per_socket: 21,
            purge_batch: 12,
            instance_ttl_ms: 13,
            chat_history_ttl_ms: 14,
            chat_text_max_length: 19,
            chat_name_max_length: 20,
            session_secret: Some(Secret::new(SECRET)),
            session_secret_previous: Some(Secret::new(OLD_SECRET)),
            cookie_secure: CookieSecure::Always,
            auth_url: Some("http://auth.local:8080/check".into()),
            auth_timeout_ms: 22,
            advertise_url: Some("http://node-7.rain:3000".into()),
            backend_secret: Some(Secret::new("b")),
            session_value_max_bytes: 23,
            session_max_bytes: 24,
            log: "rain_node=debug,warn".into(),
            log_format: LogFormat::Json,
        };
        assert_eq!(load(&[], &values).unwrap(), expected);
        let flags: Vec<String> = values
            .iter()
            .map(|(env, v)| format!("--{}={v}", env.to_lowercase().replace('_', "-")))
            .collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        assert_eq!(load(&flags, &[]).unwrap(), expected);
    }

    #[test]
    fn secrets_read_from_their_file_twin() {
        let secret = "0123456789abcdef";
        let tokens = format!("ci:emit:{secret},ops:admin:{secret}-2");
        // The trailing newline `echo` leaves is not part of the secret.
        let f = TempFile::new(&format!("{tokens}\n"));
        let s = load(&[], &[("API_TOKENS_FILE", f.path())]).unwrap();
        assert_eq!(
            s,
            load(&[], &[("API_TOKENS", &tokens)]).unwrap().with_id(&s)
        );
        let f = TempFile::new("redis://:pw@redis:6379/0\r\n");
        let s = load(
            &[],
            &[("REDIS_SERVER_FILE", f.path()), ("SESSION_SECRET", SECRET)],
        )
        .unwrap();
        assert_eq!(s.redis_server.as_deref(), Some("redis://:pw@redis:6379/0"));
        // At the environment's layer: a flag still wins; an empty twin is unset.
        let s = load(&["--redis-server="], &[("REDIS_SERVER_FILE", f.path())]).unwrap();
        assert_eq!(s.redis_server, None);
        let s = load(
            &[],
            &[
                ("REDIS_SERVER_FILE", ""),
                ("REDIS_SERVER", "redis://h"),
                ("SESSION_SECRET", SECRET),
            ],
        );
        assert_eq!(s.unwrap().redis_server.as_deref(), Some("redis://h"));
        // Only secret settings have a twin.
        let port = TempFile::new("4000\n");
        let s = load(&[], &[("SERVER_PORT_FILE", port.path())]).unwrap();
        assert_eq!(s.server_port, 0);
    }

    #[test]
    fn a_secret_and_its_file_twin_together_are_refused() {
        let f = TempFile::new("redis://h\n");
        let e = load(
            &[],
            &[
                ("REDIS_SERVER", "redis://h"),
                ("REDIS_SERVER_FILE", f.path()),
            ],
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::SecretTwice { .. }), "{e:?}");
        // An empty one beside the file is not a second value.
        let s = load(
            &[],
            &[
                ("REDIS_SERVER", ""),
                ("REDIS_SERVER_FILE", f.path()),
                ("SESSION_SECRET", SECRET),
            ],
        );
        assert_eq!(s.unwrap().redis_server.as_deref(), Some("redis://h"));
        assert_eq!(
            e.to_string(),
            "REDIS_SERVER and REDIS_SERVER_FILE are both set: set only one of them"
        );
    }

    #[test]
    fn an_unreadable_secret_file_is_named_and_its_contents_never_shown() {
        let e = err(&[], &[("API_TOKENS_FILE", NO_FILE)]);
        assert!(
            e.starts_with(&format!("cannot read API_TOKENS_FILE={NO_FILE}: ")),
            "{e}"
        );
        let dir = std::env::temp_dir();
        let e = err(&[], &[("API_TOKENS_FILE", dir.to_str().unwrap())]);
        assert!(e.starts_with("cannot read API_TOKENS_FILE="), "{e}");
        let secret = "0123456789abcdef";
        let mut bytes = format!("ci:emit:{secret}").into_bytes();
        bytes.push(0xff);
        let f = TempFile::new("");
        std::fs::write(&f.0, &bytes).unwrap();
        let e = err(&[], &[("API_TOKENS_FILE", f.path())]);
        assert!(e.contains("not UTF-8") && !e.contains(secret), "{e}");
        // A bad value read from the file: named, never shown.
        let f = TempFile::new(&format!("ci:write:{secret}\n"));
        let e = err(&[], &[("API_TOKENS_FILE", f.path())]);
        assert!(e.starts_with("invalid setting API_TOKENS="), "{e}");
        assert!(!e.contains(secret), "{e}");
    }

    #[test]
    fn secret_settings_are_marked_and_their_help_names_the_twin() {
        let secret: Vec<_> = FIELDS.iter().filter_map(|f| f.file_env).collect();
        assert_eq!(
            secret,
            [
                "REDIS_SERVER_FILE",
                "API_TOKENS_FILE",
                "SESSION_SECRET_FILE",
                "SESSION_SECRET_PREVIOUS_FILE",
                "BACKEND_SECRET_FILE"
            ]
        );
        for field in FIELDS.iter().filter(|f| f.file_env.is_some()) {
            assert!(field.help.contains(&format!("{}_FILE", field.env)));
        }
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(load(&[], &[]).unwrap().log_format, LogFormat::Text);
        let s = load(&[], &[("LOG_FORMAT", "json")]).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        let s = load(&["--log-format=text"], &[("LOG_FORMAT", "json")]).unwrap();
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(
            err(&[], &[("LOG_FORMAT", "logfmt")]),
            r#"invalid setting LOG_FORMAT="logfmt": must be text or json"#
        );
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.as_str().parse::<LogFormat>(), Ok(format));
        }
    }

    #[test]
    fn healthcheck_is_a_subcommand_with_the_same_settings() {
        let run = |args: &[&str]| {
            let args = std::iter::once("rain-node").chain(args.iter().copied());
            Settings::with_command(args, |_| None, Path::new(NO_FILE))
        };
        let (s, command) = run(&["--server-port=3000", "healthcheck"]).unwrap();
        assert_eq!((s.server_port, command), (3000, Some(Command::Healthcheck)));
        assert_eq!(run(&[]).unwrap().1, None);
        assert!(run(&["no-such-command"]).is_err());
    }

    #[test]
    fn three_heartbeats_must_fit_in_the_node_ttl() {
        let ok = load(&[], &[("HEARTBEAT_MS", "1000"), ("NODE_TTL_MS", "3000")]);
        assert_eq!(ok.unwrap().node_ttl_ms, 3000);
        let err = load(&[], &[("HEARTBEAT_MS", "1000"), ("NODE_TTL_MS", "2999")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("HEARTBEAT_MS") && text.contains("NODE_TTL_MS=2999"),
            "{text}"
        );
    }

    #[test]
    fn node_ids_are_short_plain_names_and_never_all() {
        for good in ["a", "node-7", "rain_node.1.x9", &"n".repeat(64)] {
            assert_eq!(load(&[], &[("NODE_ID", good)]).unwrap().node_id, good);
        }
        for bad in ["all", "a b", "a/b", "a:b", "é", &"n".repeat(65)] {
            let e = err(&[], &[("NODE_ID", bad)]);
            assert!(e.starts_with("invalid setting NODE_ID="), "{bad}: {e}");
        }
    }

    #[test]
    fn node_groups_are_short_plain_names() {
        assert_eq!(load(&[], &[]).unwrap().node_group, "default");
        for good in ["a", "stack-7", "eu.west_1", &"g".repeat(64)] {
            assert_eq!(load(&[], &[("NODE_GROUP", good)]).unwrap().node_group, good);
        }
        for bad in ["", "all", "a b", "a/b", "a:b", "é", &"g".repeat(65)] {
            let e = err(&[], &[("NODE_GROUP", bad)]);
            assert!(e.starts_with("invalid setting NODE_GROUP="), "{bad}: {e}");
        }
    }

    #[test]
    fn backend_urls_are_plain_http_prefixes_ending_in_a_slash() {
        assert!(load(&[], &[]).unwrap().backend_urls.is_empty());
        let good = "http://127.0.0.1:9/,http://backends.internal/quiz/";
        assert_eq!(
            load(&[], &[("BACKEND_URLS", good)]).unwrap().backend_urls,
            ["http://127.0.0.1:9/", "http://backends.internal/quiz/"]
        );
        for bad in [
            "http://backends.internal",
            "http://backends.internal/quiz",
            "https://backends.internal/",
            "http://user:pw@backends.internal/",
            "http://backends.internal/?a=1",
            "file:///etc/",
            "backends.internal/",
        ] {
            let e = err(&[], &[("BACKEND_URLS", bad)]);
            assert!(e.starts_with("invalid setting BACKEND_URLS="), "{bad}: {e}");
            assert!(!e.contains("pw"), "the password is not shown: {e}");
        }
    }

    #[test]
    fn trusted_proxies_must_be_addresses_or_cidrs() {
        let s = load(&[], &[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).unwrap();
        assert_eq!(s.trusted_proxies, ["10.0.0.0/8", "127.0.0.1"]);
        let message = err(&[], &[("TRUSTED_PROXIES", "10.0.0.0/8,proxy.local")]);
        assert!(message.contains("TRUSTED_PROXIES"), "{message}");
        assert!(message.contains("proxy.local"), "{message}");
    }

    #[test]
    fn api_tokens_are_checked_and_never_shown() {
        let secret = "0123456789abcdef";
        let s = load(
            &[],
            &[(
                "API_TOKENS",
                &format!(" ci:emit:{secret} , ops:read:{secret}x "),
            )],
        )
        .unwrap();
        let names: Vec<_> = s.api_tokens.iter().map(ApiToken::name).collect();
        assert_eq!(names, ["ci", "ops"]);
        assert_eq!(s.api_tokens[1].scope(), ApiScope::Read);
        assert!(!format!("{s:?}").contains(secret), "Debug shows a secret");
        let f = TempFile::new(&format!("api_tokens = [\"file:admin:{secret}\"]\n"));
        let s = load(&[], &[("RAIN_CONFIG", f.path())]).unwrap();
        assert_eq!(s.api_tokens[0].scope(), ApiScope::Admin);

        for (value, reason) in [
            (format!("ci:write:{secret}"), "is not emit, read or admin"),
            (format!(":emit:{secret}"), "name must not be empty"),
            ("ci:emit:".to_string(), "empty secret"),
            ("ci:emit:too-short".to_string(), "at least 16 characters"),
            (format!("ci:emit:{secret},ci:read:{secret}-2"), "used twice"),
            (format!("a:emit:{secret},b:read:{secret}"), "same secret"),
            (secret.to_string(), "name:scope:secret"),
        ] {
            for e in [
                err(&[], &[("API_TOKENS", &value)]),
                err(&[&format!("--api-tokens={value}")], &[]),
            ] {
                assert!(e.starts_with("invalid setting API_TOKENS="), "{value}: {e}");
                assert!(e.contains(reason), "{value}: {e}");
                assert!(!e.contains(secret), "the error shows the secret: {e}");
            }
        }
        let f = TempFile::new(&format!("api_tokens = [\"ci:nope:{secret}\"]\n"));
        let e = err(&[], &[("RAIN_CONFIG", f.path())]);
        assert!(e.starts_with("invalid setting API_TOKENS="), "{e}");
        assert!(!e.contains(secret), "{e}");
    }

    #[test]
    fn the_api_has_a_listener_of_its_own() {
        let s = load(&[], &[]).unwrap();
        assert_eq!((s.admin_host.as_str(), s.admin_port), ("127.0.0.1", 0));
        let e = err(&[], &[("SERVER_PORT", "4000"), ("ADMIN_PORT", "4000")]);
        assert!(e.starts_with("invalid setting ADMIN_PORT=4000: "), "{e}");
        load(&[], &[("SERVER_PORT", "4000"), ("ADMIN_PORT", "4001")]).unwrap();
        let e = err(&[], &[("ADMIN_HOST", "my host")]);
        assert!(e.starts_with("invalid setting ADMIN_HOST="), "{e}");
    }

    #[test]
    fn cors_origins_list() {
        let s = load(&[], &[("CORS_ORIGINS", " http://a , ,http://b,")]).unwrap();
        assert_eq!(s.cors_origins, ["http://a", "http://b"]);
        let s = load(&[], &[("CORS_ORIGINS", "")]).unwrap();
        assert!(s.cors_origins.is_empty());
        let s = load(
            &[],
            &[("CORS_ORIGINS", "http://127.0.0.1:8000/,https://[::1]:3")],
        )
        .unwrap();
        assert_eq!(
            s.cors_origins,
            ["http://127.0.0.1:8000/", "https://[::1]:3"]
        );
        for bad in [
            "*",
            "127.0.0.1:8000",
            "http://a/path",
            "http://*.example",
            "://a",
            "http://",
        ] {
            let e = err(&[], &[("CORS_ORIGINS", bad)]);
            assert!(e.starts_with("invalid setting CORS_ORIGINS="), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_redis_server_is_none() {
        assert_eq!(
            load(&[], &[("REDIS_SERVER", "")]).unwrap().redis_server,
            None
        );
        let f = TempFile::new("redis_server = \"\"\n");
        let s = load(&[], &[("RAIN_CONFIG", f.path())]).unwrap();
        assert_eq!(s.redis_server, None);
    }

    #[test]
    fn rust_log_is_a_fallback_for_log() {
        assert_eq!(load(&[], &[("RUST_LOG", "trace")]).unwrap().log, "trace");
        let s = load(&[], &[("RUST_LOG", "trace"), ("LOG", "warn")]).unwrap();
        assert_eq!(s.log, "warn");
        let s = load(&["--log", "error"], &[("RUST_LOG", "trace")]).unwrap();
        assert_eq!(s.log, "error");
        let e = err(&[], &[("RUST_LOG", "=[")]);
        assert!(e.contains("RUST_LOG"), "{e}");
    }

    #[test]
    fn type_errors_name_the_setting() {
        assert_eq!(
            err(&[], &[("SERVER_PORT", "abc")]),
            r#"invalid setting SERVER_PORT="abc": invalid digit found in string"#
        );
        let e = err(&[], &[("SERVER_PORT", "70000")]);
        assert!(
            e.starts_with(r#"invalid setting SERVER_PORT="70000": "#),
            "{e}"
        );
        assert!(e.contains("65535"), "{e}");
        let e = err(&["--server-port", "70000"], &[]);
        assert!(e.starts_with("invalid setting SERVER_PORT="), "{e}");
        let e = err(&[], &[("MAX_ATTACHMENTS", "-1")]);
        assert!(e.starts_with("invalid setting MAX_ATTACHMENTS="), "{e}");
        let e = err(&[], &[("PING_INTERVAL_MS", "")]);
        assert!(e.starts_with("invalid setting PING_INTERVAL_MS="), "{e}");

        let f = TempFile::new("server_port = 70000\n");
        let e = err(&[], &[("RAIN_CONFIG", f.path())]);
        assert!(
            e.starts_with("invalid setting SERVER_PORT=70000 in config file"),
            "{e}"
        );
        assert!(e.contains(f.path()), "{e}");
        let f = TempFile::new("max_payload = \"lots\"\n");
        let e = err(&[], &[("RAIN_CONFIG", f.path())]);
        assert!(e.starts_with("invalid setting MAX_PAYLOAD="), "{e}");
        for (toml, name) in [
            ("cors_origins = 3", "CORS_ORIGINS"),
            ("cors_origins = [\"a\", 1]", "CORS_ORIGINS"),
            ("max_payload = 1.5", "MAX_PAYLOAD"),
            ("max_payload = -5", "MAX_PAYLOAD"),
            ("server_port = true", "SERVER_PORT"),
            ("key_prefix = 5", "KEY_PREFIX"),
            ("redis_server = 5", "REDIS_SERVER"),
        ] {
            let f = TempFile::new(toml);
            let e = err(&[], &[("RAIN_CONFIG", f.path())]);
            assert!(
                e.starts_with(&format!("invalid setting {name}=")),
                "{toml}: {e}"
            );
        }
    }

    #[test]
    fn validation_errors_name_the_setting() {
        for name in [
            "PING_INTERVAL_MS",
            "PING_TIMEOUT_MS",
            "CONNECT_TIMEOUT_MS",
            "MAX_PAYLOAD",
            "OUTBOUND_QUEUE",
            "SHUTDOWN_TIMEOUT_MS",
        ] {
            assert_eq!(
                err(&[], &[(name, "0")]),
                format!("invalid setting {name}=0: must be at least 1")
            );
        }
        let cases = [
            ("SOCKETIO_PATH", "socket.io/"),
            ("SOCKETIO_PATH", "/socket.io"),
            ("REDIS_SERVER", "http://localhost:6379"),
            ("REDIS_SERVER", "localhost:6379"),
            ("SERVER_HOST", ""),
            ("SERVER_HOST", "my host"),
            ("SERVER_HOST", "localhost:80"),
            ("NODE_ID", ""),
            ("NODE_ID", "node 1"),
            ("LOG", "=["),
        ];
        for (name, value) in cases {
            let e = err(&[], &[(name, value)]);
            assert!(
                e.starts_with(&format!("invalid setting {name}={value:?}: ")),
                "{name}={value:?}: {e}"
            );
        }
        // Rules apply to values from the file too.
        let f = TempFile::new("ping_timeout_ms = 0\n");
        assert_eq!(
            err(&[], &[("RAIN_CONFIG", f.path())]),
            "invalid setting PING_TIMEOUT_MS=0: must be at least 1"
        );
        // The accepted forms.
        for (name, value) in [
            ("SOCKETIO_PATH", "/"),
            ("REDIS_SERVER", "rediss://h:1/2"),
            ("SERVER_HOST", "localhost"),
            ("SERVER_HOST", "::"),
            ("SERVER_HOST", "node-1.example.com"),
        ] {
            load(&[], &[(name, value), ("SESSION_SECRET", SECRET)]).unwrap();
        }
    }

    #[test]
    fn session_secret_rules_and_secrets_stay_out_of_errors_and_debug() {
        // Required with Redis: the nodes must verify each other's tokens.
        let e = err(&[], &[("REDIS_SERVER", "redis://h:1")]);
        assert!(
            e.starts_with("invalid setting SESSION_SECRET=unset: required with REDIS_SERVER"),
            "{e}"
        );
        // Too short: named with its length, never shown.
        for name in ["SESSION_SECRET", "SESSION_SECRET_PREVIOUS"] {
            let e = err(&[], &[(name, "short-secret-xyz")]);
            assert_eq!(
                e,
                format!("invalid setting {name}=<16 bytes, not shown>: must be at least 32 bytes")
            );
        }
        let s = load(
            &[],
            &[
                ("SESSION_SECRET", SECRET),
                ("BACKEND_SECRET", "backend-s3cret"),
            ],
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains(SECRET) && !shown.contains("backend-s3cret"),
            "{shown}"
        );
        // Empty is unset.
        assert_eq!(
            load(&[], &[("SESSION_SECRET", "")]).unwrap().session_secret,
            None
        );
        // The other new settings are checked too.
        assert_eq!(
            err(&[], &[("COOKIE_SECURE", "yes")]),
            r#"invalid setting COOKIE_SECURE="yes": must be auto, true or false"#
        );
        for (value, expected) in [
            ("auto", CookieSecure::Auto),
            ("true", CookieSecure::Always),
            ("false", CookieSecure::Never),
        ] {
            assert_eq!(
                load(&[], &[("COOKIE_SECURE", value)])
                    .unwrap()
                    .cookie_secure,
                expected
            );
        }
        let e = err(&[], &[("AUTH_URL", "ftp://x")]);
        assert!(
            e.starts_with(r#"invalid setting AUTH_URL="ftp://x": "#),
            "{e}"
        );
        let e = err(&[], &[("ADVERTISE_URL", "node-2:3000")]);
        assert!(
            e.starts_with(r#"invalid setting ADVERTISE_URL="node-2:3000": "#),
            "{e}"
        );
        // Unset: the bound address, an unspecified one replaced by a host name.
        let s = Settings::default();
        let bound: std::net::SocketAddr = "127.0.0.1:3000".parse().unwrap();
        assert_eq!(s.advertise_url_for(bound), "http://127.0.0.1:3000");
        let any: std::net::SocketAddr = "0.0.0.0:3000".parse().unwrap();
        let derived = s.advertise_url_for(any);
        assert!(
            derived.starts_with("http://")
                && derived.ends_with(":3000")
                && !derived.contains("0.0.0.0"),
            "{derived}"
        );
        let set = Settings {
            advertise_url: Some("http://node-2.rain:3000/".into()),
            ..Settings::default()
        };
        assert_eq!(set.advertise_url_for(any), "http://node-2.rain:3000");
        for name in [
            "AUTH_TIMEOUT_MS",
            "SESSION_VALUE_MAX_BYTES",
            "SESSION_MAX_BYTES",
        ] {
            assert_eq!(
                err(&[], &[(name, "0")]),
                format!("invalid setting {name}=0: must be at least 1")
            );
        }
    }

    #[test]
    fn the_drain_delay_must_leave_time_within_the_shutdown_timeout() {
        let e = err(
            &[],
            &[("SHUTDOWN_TIMEOUT_MS", "2000"), ("DRAIN_DELAY_MS", "2000")],
        );
        assert!(
            e.starts_with(
                "invalid setting DRAIN_DELAY_MS=2000: must be less than SHUTDOWN_TIMEOUT_MS=2000"
            ),
            "{e}"
        );
        // The default delay does not fit in a short timeout either.
        let e = err(&[], &[("SHUTDOWN_TIMEOUT_MS", "500")]);
        assert!(
            e.starts_with("invalid setting DRAIN_DELAY_MS=3000: "),
            "{e}"
        );
        let s = load(
            &["--drain-delay-ms=1999"],
            &[("SHUTDOWN_TIMEOUT_MS", "2000"), ("SESSION_SECRET", SECRET)],
        )
        .unwrap();
        assert_eq!(s.drain_delay(), Duration::from_millis(1999));
        assert_eq!(
            err(&[], &[("DRAIN_BATCH", "0")]),
            "invalid setting DRAIN_BATCH=0: must be at least 1"
        );
    }

    #[test]
    fn redact_url_hides_passwords_and_keeps_the_rest() {
        for (url, shown) in [
            (
                "rediss://rain:s3cret@redis.example:6380/2",
                "rediss://rain:***@redis.example:6380/2",
            ),
            (
                "redis://:s3cret@127.0.0.1:6379",
                "redis://:***@127.0.0.1:6379",
            ),
            // `@` and `:` may be in a password (percent-encoding is optional
            // for the redis crate's parser in places): the host is after the last `@`.
            ("rediss://u:p@ss:w@h:1", "rediss://u:***@h:1"),
            ("redis://s3cret@h", "redis://***@h"),
            ("redis://u:pa/ss?w#d@h:1/0", "redis://u:***@h:1/0"),
            (
                "unix:///run/redis.sock?db=1&pass=s3cret",
                "unix:///run/redis.sock?db=1&pass=***",
            ),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("not a url s3cret", "not a url s3cret"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn the_redis_password_is_never_shown() {
        let password = "hunter2-s3cret";
        let url = format!("rediss://rain:{password}@h:1/0");
        let s = load(&[], &[("REDIS_SERVER", &url), ("SESSION_SECRET", SECRET)]).unwrap();
        assert_eq!(s.redis_server.as_deref(), Some(url.as_str()));
        for shown in [format!("{s:?}"), format!("{s:#?}")] {
            assert!(!shown.contains(password), "{shown}");
            assert!(shown.contains("rediss://rain:***@h:1/0"), "{shown}");
            assert!(shown.contains("server_port: 0"), "{shown}");
        }
        // A URL refused for its scheme is shown redacted too.
        let e = err(&[], &[("REDIS_SERVER", &format!("http://u:{password}@h"))]);
        assert!(!e.contains(password), "{e}");
        assert!(
            e.starts_with(r#"invalid setting REDIS_SERVER="http://u:***@h""#),
            "{e}"
        );
    }

    #[test]
    fn a_redis_ca_file_needs_a_tls_redis_server() {
        let s = load(
            &["--redis-ca-file=/ca.pem"],
            &[("REDIS_SERVER", "rediss://h:1"), ("SESSION_SECRET", SECRET)],
        )
        .unwrap();
        assert_eq!(s.redis_ca_file.as_deref(), Some("/ca.pem"));
        assert_eq!(
            load(&[], &[("REDIS_CA_FILE", "")]).unwrap().redis_ca_file,
            None
        );
        for redis in [None, Some("redis://h:1"), Some("unix:///r.sock")] {
            let mut env = vec![("REDIS_CA_FILE", "/ca.pem"), ("SESSION_SECRET", SECRET)];
            env.extend(redis.map(|url| ("REDIS_SERVER", url)));
            assert_eq!(
                err(&[], &env),
                r#"invalid setting REDIS_CA_FILE="/ca.pem": is only used with a rediss:// REDIS_SERVER"#,
                "{redis:?}"
            );
        }
    }

    #[test]
    fn routing_is_parsed_into_its_mode() {
        assert_eq!(load(&[], &[]).unwrap().routing, Routing::PreferLocal);
        let s = load(&[], &[("ROUTING", "round-robin")]).unwrap();
        assert_eq!(s.routing, Routing::RoundRobin);
        let s = load(&["--routing", "local"], &[("ROUTING", "round-robin")]).unwrap();
        assert_eq!(s.routing, Routing::PreferLocal);
        let f = TempFile::new("routing = \"round-robin\"\n");
        let s = load(&[], &[("RAIN_CONFIG", f.path())]).unwrap();
        assert_eq!(s.routing, Routing::RoundRobin);
        for mode in [Routing::PreferLocal, Routing::RoundRobin] {
            assert_eq!(mode.as_str().parse::<Routing>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }

        assert_eq!(
            err(&[], &[("ROUTING", "fastest")]),
            r#"invalid setting ROUTING="fastest": must be local or round-robin"#
        );
        assert_eq!(
            err(&["--routing=Local"], &[]),
            r#"invalid setting ROUTING="Local": must be local or round-robin"#
        );
        // The merged value counts: a flag corrects a bad environment value.
        let s = load(&["--routing=round-robin"], &[("ROUTING", "nope")]).unwrap();
        assert_eq!(s.routing, Routing::RoundRobin);
        let f = TempFile::new("routing = \"random\"\n");
        assert_eq!(
            err(&[], &[("RAIN_CONFIG", f.path())]),
            r#"invalid setting ROUTING="random": must be local or round-robin"#
        );
        let f = TempFile::new("routing = 1\n");
        let e = err(&[], &[("RAIN_CONFIG", f.path())]);
        assert!(
            e.starts_with("invalid setting ROUTING=1 in config file"),
            "{e}"
        );
    }

    #[test]
    fn file_errors() {
        let f = TempFile::new("server_port = 1\nlisten_port = 2\n");
        let e = load(&[], &[("RAIN_CONFIG", f.path())]).unwrap_err();
        assert!(matches!(&e, ConfigError::UnknownKey { key, .. } if key == "listen_port"));
        let e = e.to_string();
        assert!(e.contains(f.path()) && e.contains("listen_port"), "{e}");

        let f = TempFile::new("server_port = \n");
        let e = load(&[], &[("RAIN_CONFIG", f.path())]).unwrap_err();
        assert!(matches!(e, ConfigError::File { .. }), "{e}");
        assert!(e.to_string().contains(f.path()), "{e}");

        let e = err(&[], &[("RAIN_CONFIG", NO_FILE)]);
        assert!(e.contains(NO_FILE) && e.contains("not found"), "{e}");
        let e = err(&["--config", NO_FILE], &[]);
        assert!(e.contains(NO_FILE), "{e}");
    }

    #[test]
    fn only_known_env_names_are_read() {
        let s = load(
            &[],
            &[
                ("PATH", "/usr/bin:/bin"),
                ("HOME", "/root"),
                ("server_port", "1"),
                ("RAIN_SERVER_PORT", "2"),
                ("PORT", "3"),
            ],
        )
        .unwrap();
        assert!(same_but_node_id(&s, &Settings::default()));
    }

    #[test]
    fn help_and_version_are_errors_of_their_kind() {
        let Err(ConfigError::Cli(e)) = load(&["--help"], &[]) else {
            panic!("no help")
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = e.to_string();
        for (env, default, _) in Settings::env_table() {
            assert!(help.contains(&format!("[env: {env}]")), "{env} missing");
            assert!(help.contains(&format!("[default: {default}]")), "{env}");
        }
        assert!(help.contains("--config <FILE>"));
        assert!(help.contains("--cors-origins <ORIGINS>"));
        let Err(ConfigError::Cli(e)) = load(&["--version"], &[]) else {
            panic!("no version")
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(e.to_string().contains(env!("CARGO_PKG_VERSION")));
        let Err(ConfigError::Cli(e)) = load(&["--no-such-flag"], &[]) else {
            panic!("unknown flag accepted")
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn env_table_has_every_field_once_with_its_default() {
        use clap::CommandFactory;
        let serde_json::Value::Object(defaults) =
            serde_json::to_value(Settings::default()).unwrap()
        else {
            panic!("Settings is not an object")
        };
        let table = Settings::env_table();
        assert_eq!(table.len(), defaults.len());
        for (key, value) in &defaults {
            let env = key.to_uppercase();
            let rows: Vec<_> = table.iter().filter(|(e, ..)| *e == env).collect();
            assert_eq!(rows.len(), 1, "{env} appears {} times", rows.len());
            let shown = &rows[0].1;
            match value {
                serde_json::Value::String(s) if key != "node_id" => assert_eq!(shown, s),
                serde_json::Value::Number(n) => assert_eq!(shown, &n.to_string()),
                _ => assert!(!shown.is_empty(), "{env}"),
            }
        }
        // Each setting has a flag named after it, whose help is built from the table.
        let cmd = Cli::command();
        for field in FIELDS {
            let flag = field.key.replace('_', "-");
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(&flag))
                .unwrap_or_else(|| panic!("no --{flag}"));
            assert_eq!(arg.get_help().unwrap().to_string(), field.help);
        }
        cmd.debug_assert();
    }
}
