//! Blob transfers between registries and the errors and hints they give.

use super::*;

pub(super) async fn blob_exists(
    client: &Client,
    reference: &Reference,
    digest: &str,
    name: &str,
) -> Result<bool, ImageError> {
    client.blob_exists(reference, digest).await.map_err(|e| {
        registry_error(
            format!("looking for {name} ({digest}) in"),
            reference,
            Role::Target,
            e,
        )
    })
}

pub(super) async fn push_blob(
    client: &Client,
    reference: &Reference,
    data: Vec<u8>,
    digest: &str,
    name: &str,
) -> Result<(), ImageError> {
    client
        .push_blob(reference, data, digest)
        .await
        .map(drop)
        .map_err(|e| {
            registry_error(
                format!("uploading {name} ({digest}) to"),
                reference,
                Role::Target,
                e,
            )
        })
}

/// Streams one blob from the base's registry to the target's, verified against its digest
/// on the way (a mismatch fails the upload before it is committed).
pub(super) async fn copy_blob(
    from_client: &Client,
    from: &Reference,
    to_client: &Client,
    to: &Reference,
    blob: &Descriptor,
) -> Result<(), OciDistributionError> {
    let stream = from_client
        .pull_blob_stream(from, blob.digest.as_str())
        .await?
        .map(|chunk| chunk.map_err(OciDistributionError::from));
    to_client
        .push_blob_stream(to, stream, &blob.digest, Some(blob.size))
        .await?;
    Ok(())
}

/// Which side of the push a registry is, for the hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Base,
    Target,
}

pub(super) fn registry_error(
    action: String,
    reference: &Reference,
    role: Role,
    error: OciDistributionError,
) -> ImageError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    let shown = match role {
        Role::Base => reference.whole(),
        Role::Target => format!("{}/{}", reference.registry(), reference.repository()),
    };
    ImageError::Registry {
        action,
        hint: registry_hint(&error, reference.resolve_registry(), role),
        reference: shown,
        message,
    }
}

/// The registry's error codes (`NAME_UNKNOWN`, ...). oci-client parses the error body of a
/// failed GET, but hands over the body of a failed upload or manifest PUT as text.
pub(super) fn error_codes(error: &OciDistributionError) -> Vec<String> {
    let body = match error {
        OciDistributionError::RegistryError { envelope, .. } => serde_json::to_value(envelope).ok(),
        OciDistributionError::ServerError { message, .. } => serde_json::from_str(message).ok(),
        _ => None,
    };
    let Some(body) = body else {
        return Vec::new();
    };
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("code").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn registry_hint(error: &OciDistributionError, registry: &str, role: Role) -> String {
    let codes = error_codes(error);
    let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(&c.as_str()));
    let status = match error {
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::RequestError(e) => e.status().map(|s| s.as_u16()),
        OciDistributionError::UnauthorizedError { .. } => Some(401),
        _ => None,
    };
    let denied = matches!(status, Some(401 | 403))
        || matches!(error, OciDistributionError::AuthenticationFailure(_))
        || has(&["UNAUTHORIZED", "DENIED"]);
    let unknown_name = has(&["NAME_UNKNOWN"]);
    let not_found = status == Some(404) || has(&["MANIFEST_UNKNOWN", "NOT_FOUND", "BLOB_UNKNOWN"]);
    let throttled = status == Some(429) || has(&["TOOMANYREQUESTS"]);
    if denied {
        format!(
            "; {registry} refused the credentials: for ECR, get fresh ones (they last 12 hours); otherwise check the user and password given for {registry}"
        )
    } else if throttled {
        "; the registry is throttling requests: wait a minute and run the command again".into()
    } else if unknown_name && role == Role::Target {
        "; the repository does not exist: create it (`llama bootstrap` creates one)".into()
    } else if (unknown_name || not_found) && role == Role::Base {
        "; check the image's name and tag (it must exist for linux, e.g. debian:bookworm-slim)"
            .into()
    } else if let OciDistributionError::RequestError(e) = error {
        if e.is_connect() || e.is_timeout() {
            format!(
                "; check that {registry} is reachable; a registry speaking plain HTTP must be listed among the insecure registries"
            )
        } else {
            String::new()
        }
    } else {
        String::new()
    }
}
