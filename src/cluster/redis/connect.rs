//! Opening Redis: the client every connection of the node is made from, and
//! the check at start.
//!
//! Owns how `REDIS_SERVER` and `REDIS_CA_FILE` become a [`redis::Client`]
//! (TLS with rustls for `rediss://`, trusting the CA file or else the system's
//! roots; the user name and password from the URL), so that the command
//! connections and the pub/sub connection, all made from that one client,
//! use the same TLS and credentials. Owns [`check`] too: one connection at
//! start that tells a mistake retrying cannot fix (credentials refused,
//! certificate not trusted, an ACL that does not cover `KEY_PREFIX`) from a
//! Redis that is just not up yet. Never shows the password: every error and
//! log line carries the URL through [`redact_url`]. Does not own the
//! connections themselves (`super::commands`, `super::subscriber`).

use redis::{ErrorKind, RedisError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::OP_TIMEOUT;
use crate::cluster::ClusterError;
use crate::cluster::keys::Keys;
use crate::config::redact_url;

/// The client of `url`, over TLS trusting the CA certificates of `ca_file`
/// when given (only with `rediss://`; the settings refuse it otherwise).
pub(super) fn client(url: &str, ca_file: Option<&str>) -> Result<redis::Client, ClusterError> {
    // rustls picks its crypto provider per process; naming ring here keeps
    // that choice ours even if another dependency enables a second provider
    // (rustls would then refuse to guess). Already installed → nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let invalid = |source: RedisError| ClusterError::InvalidUrl {
        url: redact_url(url),
        source: source.into(),
    };
    let client = match ca_file {
        None => redis::Client::open(url).map_err(invalid)?,
        Some(path) => client_trusting(url, path)?,
    };
    // The crate would refuse it only when connecting, which looks like Redis
    // being down; there is no way to skip verification, so say so now.
    if let redis::ConnectionAddr::TcpTls { insecure: true, .. } = client.get_connection_info().addr
    {
        return Err(ClusterError::InvalidUrl {
            url: redact_url(url),
            source: "`#insecure` (no certificate verification) is not supported; \
                     trust the server's CA with REDIS_CA_FILE"
                .into(),
        });
    }
    Ok(client)
}

/// The `rediss://` client of `url` trusting the CA certificates in the PEM
/// file at `path` (and only those).
fn client_trusting(url: &str, path: &str) -> Result<redis::Client, ClusterError> {
    let invalid = |source: RedisError| ClusterError::InvalidUrl {
        url: redact_url(url),
        source: source.into(),
    };
    let ca_error = |reason: String| ClusterError::CaFile {
        path: path.to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    // An empty trust store would only show later as every handshake failing.
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(format!("not PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(ca_error("holds no PEM certificate".to_string()));
    }
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(url, certificates).map_err(|e| match e.kind() {
        ErrorKind::InvalidClientConfig => invalid(e),
        _ => ca_error(e.to_string()),
    })
}

/// Connects once and reads one key under the prefix. A mistake in the
/// settings (credentials refused, TLS failed, the user may not use the
/// node's keys) is an error; Redis unreachable or slow is not (the node
/// starts, reports not ready, and its connections keep retrying), only a
/// warning.
pub(super) async fn check(
    client: &redis::Client,
    url: &str,
    keys: &Keys,
) -> Result<(), ClusterError> {
    let attempt = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("EXISTS")
            .arg(keys.nodes())
            .query_async::<i64>(&mut connection)
            .await
    };
    let url = redact_url(url);
    match tokio::time::timeout(OP_TIMEOUT, attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => match settings_error(error, &url, keys) {
            Err(mistake) => Err(mistake),
            Ok(error) => {
                tracing::warn!(redis = %url, %error, "Redis is unreachable at start; retrying in the background");
                Ok(())
            }
        },
        Err(_) => {
            tracing::warn!(redis = %url, "Redis did not answer at start; retrying in the background");
            Ok(())
        }
    }
}

/// The error as a mistake in the settings (`Err`), or back as it was when
/// retrying may cure it (`Ok`).
fn settings_error(error: RedisError, url: &str, keys: &Keys) -> Result<RedisError, ClusterError> {
    if error.kind() == ErrorKind::InvalidClientConfig {
        return Err(ClusterError::InvalidUrl {
            url: url.to_string(),
            source: error.into(),
        });
    }
    if error.kind() == ErrorKind::AuthenticationFailed {
        return Err(ClusterError::AuthenticationFailed {
            url: url.to_string(),
        });
    }
    if error.code() == Some("NOPERM") {
        return Err(ClusterError::NoPermission {
            url: url.to_string(),
            prefix: keys.prefix().to_string(),
            source: error,
        });
    }
    if let Some(tls) = tls_error(&error) {
        return Err(ClusterError::Tls {
            url: url.to_string(),
            source: tls.clone(),
        });
    }
    Ok(error)
}

/// The rustls error under a failed connection, if TLS is what failed.
fn tls_error(error: &RedisError) -> Option<&rustls::Error> {
    let io = std::error::Error::source(error)?.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("rain-connect-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_refused() {
        let url = "rediss://rain:s3cret@127.0.0.1:1";
        let missing = client(url, Some("/nonexistent/ca.pem")).unwrap_err();
        assert!(matches!(&missing, ClusterError::CaFile { .. }), "{missing}");
        let empty = temp_file("empty.pem", b"no certificate here\n");
        let error = client(url, empty.to_str()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("holds no PEM certificate"), "{text}");
        assert!(text.contains(empty.to_str().unwrap()), "{text}");
        let _ = std::fs::remove_file(empty);
    }

    #[test]
    fn an_invalid_url_is_shown_without_its_password() {
        let error = client("redis://rain:s3cret@host:notaport", None).unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(matches!(error, ClusterError::InvalidUrl { .. }), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("rain:***@host"), "{text}");
    }

    #[test]
    fn skipping_certificate_verification_is_refused() {
        let error = client("rediss://rain:s3cret@127.0.0.1:1/#insecure", None).unwrap_err();
        let text = format!("{error}: {}", std::error::Error::source(&error).unwrap());
        assert!(
            text.contains("`#insecure`") && text.contains("not supported"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        client("rediss://rain:s3cret@127.0.0.1:1/", None).unwrap();
    }

    #[test]
    fn only_credentials_tls_and_permissions_are_mistakes() {
        let keys = Keys::new("rain:");
        let wrong = RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(matches!(
            settings_error(wrong, "u", &keys),
            Err(ClusterError::AuthenticationFailed { .. })
        ));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(settings_error(refused, "u", &keys).is_ok());
        let untrusted = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(matches!(
            settings_error(untrusted, "u", &keys),
            Err(ClusterError::Tls { .. })
        ));
    }
}
