//! `GET /admin`: the one self-contained page that draws the infrastructure map
//! (`admin.html`, compiled into the binary: no build step, no file to deploy).
//!
//! Owns serving the page and its headers: the page holds no data and needs no
//! token (it asks for one and then reads `GET /map` with it, see
//! [`super::map`]), so it is mounted outside the API's authentication, like
//! the health checks. Its Content-Security-Policy allows exactly its own inline
//! script and style (by their SHA-256), requests to its own origin only, and
//! no framing. Does not own the map's data or the page's drawing.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The page, as written in `src/api/admin.html`.
pub const PAGE: &str = include_str!("admin.html");

/// The policy, computed once from the page's own inline blocks.
static POLICY: LazyLock<String> = LazyLock::new(|| policy(PAGE));

/// `GET /admin`: the page with its headers (mounted by `crate::server`,
/// outside the API's authentication).
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY.as_str()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

/// A policy allowing `page`'s inline `<script>` and `<style>` blocks by hash,
/// and nothing else inline: a string of the map that slipped into markup
/// could not run.
fn policy(page: &str) -> String {
    let hashes = |tag: &str| -> String {
        blocks(page, tag)
            .into_iter()
            .map(|block| {
                let digest = Sha256::digest(block.as_bytes());
                format!(
                    " 'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            })
            .collect()
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes("script"),
        hashes("style"),
    )
}

/// The text of every `<tag>…</tag>` block of `page` (written without
/// attributes in admin.html, so the plain opening tag finds them).
fn blocks<'a>(page: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    page.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once(close.as_str()).map(|(block, _)| block))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_pages_own_blocks_only() {
        let policy = policy(PAGE);
        assert_eq!(blocks(PAGE, "script").len(), 1, "one inline script");
        assert_eq!(blocks(PAGE, "style").len(), 1, "one inline style");
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        // Nothing is loaded from elsewhere: the page is whole (`http://`
        // appears only in the SVG namespace's name).
        for outside in ["<script src", "<link rel=\"stylesheet\"", "https://"] {
            assert!(!PAGE.contains(outside), "the page refers to {outside}");
        }
        let svg = "http://www.w3.org/2000/svg";
        assert_eq!(PAGE.matches("http://").count(), PAGE.matches(svg).count());
    }

    #[test]
    fn a_block_is_hashed_as_written() {
        let page = "<style>a{}</style><script>x()</script><script>y()</script>";
        assert_eq!(blocks(page, "script"), ["x()", "y()"]);
        let digest = Sha256::digest(b"a{}");
        let expected = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(policy(page).contains(&format!("style-src 'sha256-{expected}';")));
    }
}
