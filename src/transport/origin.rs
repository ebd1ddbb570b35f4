//! Which web pages may talk to a node: the `Origin` check of every Engine.IO
//! request, handshakes included.
//!
//! CORS headers only tell a browser whether a page may *read* an answer; a
//! websocket is not subject to CORS at all, so a page of any site could open
//! one with the visitor's cookies (cross-site websocket hijacking). Hence the
//! check here, on every request of the Socket.IO path: a request with no
//! `Origin` (Node, Python and other non-browser clients) passes; one whose
//! origin is the node's own (the `Origin`'s host and port are the `Host`'s)
//! passes; one from an origin of `CORS_ORIGINS` passes; anything else is
//! refused (403). Owns that rule only; the CORS headers are `crate::server`'s.

use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, Uri, header};

/// Whether the request's `Origin` may talk to this server. `authority` is the
/// request's own (from `Host`, else the URI's, as over HTTP/2).
pub fn allowed(headers: &HeaderMap, uri_authority: Option<&Authority>, list: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if list
        .iter()
        .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<Authority>().ok())
        .or_else(|| uri_authority.cloned());
    host.is_some_and(|host| same_origin(origin, &host))
}

/// Whether `origin` (`scheme://host[:port]`) names the server reached at `host`.
/// A missing port is the scheme's default, on both sides: behind a TLS proxy
/// `https://example.com` reaches the node as `Host: example.com`.
fn same_origin(origin: &str, host: &Authority) -> bool {
    let Ok(origin) = origin.parse::<Uri>() else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
        return false;
    };
    let default_port = if *scheme == Scheme::HTTPS {
        443
    } else if *scheme == Scheme::HTTP {
        80
    } else {
        return false;
    };
    authority.host().eq_ignore_ascii_case(host.host())
        && authority.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn check(origin: Option<&str>, host: Option<&str>, list: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        allowed(&headers, None, &list)
    }

    #[test]
    fn no_origin_always_passes() {
        assert!(check(None, Some("127.0.0.1:3000"), &[]));
        assert!(check(None, None, &["http://a"]));
    }

    #[test]
    fn the_nodes_own_origin_always_passes() {
        let host = Some("127.0.0.1:3000");
        assert!(check(Some("http://127.0.0.1:3000"), host, &[]));
        assert!(check(
            Some("http://127.0.0.1:3000"),
            host,
            &["http://other"]
        ));
        assert!(check(Some("https://Example.com"), Some("example.com"), &[]));
        assert!(check(
            Some("http://example.com"),
            Some("example.com:80"),
            &[]
        ));
        assert!(!check(Some("http://127.0.0.1:3001"), host, &[]));
        assert!(!check(Some("http://localhost:3000"), host, &[]));
        assert!(!check(
            Some("https://example.com"),
            Some("example.com:80"),
            &[]
        ));
        assert!(!check(Some("http://127.0.0.1:3000"), None, &[]));
    }

    #[test]
    fn other_origins_pass_only_when_listed() {
        let host = Some("127.0.0.1:3000");
        let list = ["http://127.0.0.1:8000", "https://app.example/"];
        assert!(check(Some("http://127.0.0.1:8000"), host, &list));
        assert!(check(Some("https://app.example"), host, &list));
        assert!(!check(Some("http://127.0.0.1:8001"), host, &list));
        assert!(!check(Some("https://evil.example"), host, &list));
        assert!(!check(Some("null"), host, &list));
        assert!(!check(Some("https://evil.example"), host, &[]));
        assert!(!check(Some("ws://127.0.0.1:3000"), host, &[]));
    }
}
