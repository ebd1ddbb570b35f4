//! `rain-node healthcheck`: probes the node that the same settings describe,
//! for a container's `HEALTHCHECK` (slim images have no curl).
//!
//! Owns which URL is probed (`http://SERVER_HOST:SERVER_PORT/healthz`, a
//! wildcard host probed on loopback), the short timeout, and the one-line
//! verdict. Does not own the route itself (see `crate::server`) nor the exit
//! code policy beyond [`Verdict::exit_code`].

use std::time::Duration;

use crate::config::Settings;

/// How long the probe may take in all: well under the image's `HEALTHCHECK
/// --timeout`, so the verdict, not Docker's timeout, is what gets recorded.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// What a probe found: a one-line message, and whether the node is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub message: String,
}

impl Verdict {
    /// 0 when healthy, else 1 (what Docker reads as unhealthy).
    pub fn exit_code(&self) -> u8 {
        if self.healthy { 0 } else { 1 }
    }
}

/// The URL of `/healthz` on the public listener these settings bind; `None`
/// when `SERVER_PORT` is 0 (a free port nobody can know from the settings).
/// `0.0.0.0` and `::` listen everywhere, loopback included, so loopback is
/// probed: the probe runs inside the node's own container or host.
pub fn url(settings: &Settings) -> Option<String> {
    if settings.server_port == 0 {
        return None;
    }
    let host = match settings.server_host.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        host => host,
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(format!("http://{host}:{}/healthz", settings.server_port))
}

/// GETs `/healthz` once, within [`TIMEOUT`]; healthy only on a 200.
pub async fn probe(settings: &Settings) -> Verdict {
    let unhealthy = |message: String| Verdict {
        healthy: false,
        message,
    };
    let Some(url) = url(settings) else {
        return unhealthy(
            "unhealthy: SERVER_PORT is 0 (a free port): set SERVER_PORT to probe the node"
                .to_string(),
        );
    };
    // No proxy: an HTTP_PROXY in the container's environment must not carry a
    // probe of loopback elsewhere.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(error) => return unhealthy(format!("unhealthy: cannot make an HTTP client: {error}")),
    };
    match client.get(&url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => Verdict {
            healthy: true,
            message: format!("healthy: GET {url} answered 200"),
        },
        Ok(response) => unhealthy(format!(
            "unhealthy: GET {url} answered {}",
            response.status()
        )),
        Err(error) if error.is_timeout() => unhealthy(format!(
            "unhealthy: GET {url} got no answer within {} s",
            TIMEOUT.as_secs()
        )),
        Err(error) if error.is_connect() => {
            unhealthy(format!("unhealthy: GET {url}: cannot connect"))
        }
        Err(error) => unhealthy(format!("unhealthy: GET {url}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(host: &str, port: u16) -> Option<String> {
        url(&Settings {
            server_host: host.to_string(),
            server_port: port,
            ..Settings::default()
        })
    }

    #[test]
    fn wildcard_hosts_are_probed_on_loopback() {
        let cases = [
            ("0.0.0.0", "http://127.0.0.1:3000/healthz"),
            ("::", "http://[::1]:3000/healthz"),
            ("127.0.0.1", "http://127.0.0.1:3000/healthz"),
            ("::1", "http://[::1]:3000/healthz"),
            ("node-1.example", "http://node-1.example:3000/healthz"),
        ];
        for (host, want) in cases {
            assert_eq!(url_of(host, 3000).as_deref(), Some(want), "{host}");
        }
        assert_eq!(url_of("0.0.0.0", 0), None);
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy_in_one_line() {
        // A port just freed: nothing listens there.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let settings = Settings {
            server_port: port,
            ..Settings::default()
        };
        let verdict = probe(&settings).await;
        assert_eq!(verdict.exit_code(), 1, "{verdict:?}");
        assert!(verdict.message.starts_with("unhealthy: "), "{verdict:?}");
        assert!(!verdict.message.contains('\n'), "{verdict:?}");
        let verdict = probe(&Settings::default()).await;
        assert!(verdict.message.contains("SERVER_PORT is 0"), "{verdict:?}");
    }
}
