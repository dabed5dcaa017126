//! Turning a setting's text into its value, and masking credentials wherever a value is
//! shown.

use std::time::Duration;

use super::Backend;

/// A FUNCTION and its REAPI platform properties.
pub type FunctionPlatform = (String, Vec<(String, String)>);

/// Parses `FUNCTION: key=value, key2=value2; FUNCTION2: key=value` into (function,
/// properties) pairs, in order.
pub(super) fn parse_platforms(text: &str) -> Result<Vec<FunctionPlatform>, String> {
    let expected = |why: String| {
        format!("platforms as `FUNCTION: key=value, key2=value2; *: key=value` ({why})")
    };
    let mut out = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((function, properties)) = item.split_once(':') else {
            return Err(expected(format!("{item:?} names no FUNCTION before `:`")));
        };
        let function = function.trim();
        if function.is_empty() {
            return Err(expected(format!("{item:?} names no FUNCTION before `:`")));
        }
        let mut props = Vec::new();
        for pair in properties
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(expected(format!("{pair:?} is not key=value")));
            };
            if key.trim().is_empty() {
                return Err(expected(format!("{pair:?} has an empty key")));
            }
            props.push((key.trim().to_string(), value.trim().to_string()));
        }
        out.push((function.to_string(), props));
    }
    Ok(out)
}

/// Words in a setting's name that say its value is a credential.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "credential",
    "api_key",
];

/// A setting's value as `llama config` (and its error messages) may show it: credentials
/// replaced by their length. Every header value of `reapi_headers` is masked (keeping an
/// auth scheme such as `Bearer`), as is a setting whose name says it holds a secret, and
/// the password of a `scheme://user:password@host` URL in any setting. Where the value
/// came from is shown as before.
pub fn mask_secret<'a>(key: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    let redacted = |v: &str| format!("<redacted, {} bytes>", v.len());
    if value.is_empty() {
        return Cow::Borrowed(value);
    }
    let lower = key.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return Cow::Owned(redacted(value));
    }
    if key == super::keys::REAPI_HEADERS.name() {
        let Ok(headers) = parse_headers(value) else {
            return Cow::Owned(redacted(value));
        };
        let shown: Vec<String> = headers
            .iter()
            .map(|(name, v)| match v.split_once(' ') {
                // `Bearer TOKEN`, `Basic B64`: the scheme says which credential is in use.
                Some((scheme, rest))
                    if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic()) =>
                {
                    format!("{name}: {scheme} {}", redacted(rest.trim_start()))
                }
                _ => format!("{name}: {}", redacted(v)),
            })
            .collect();
        return Cow::Owned(shown.join("; "));
    }
    // scheme://user:password@host...
    if let Some(scheme_end) = value.find("://") {
        let rest = &value[scheme_end + 3..];
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            let end = scheme_end + 3 + at;
            return Cow::Owned(format!(
                "{}{}{}",
                &value[..start],
                redacted(&value[start..end]),
                &value[end..]
            ));
        }
    }
    Cow::Borrowed(value)
}

/// Parses `name: value; name2: value2` (gRPC metadata: names lowercased, printable ASCII).
pub(super) fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once(':') else {
            // The item is not echoed: it may well be a bare token.
            return Err(format!(
                "headers as `name: value; name2: value2` (header {} has no `:`)",
                out.len() + 1
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "headers as `name: value; name2: value2` ({name:?} is not a header name)"
            ));
        }
        if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(format!(
                "headers as `name: value; name2: value2` (the value of {name} is not printable ASCII)"
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// `1`, `true`, `yes`, `on` (any case) are on; `0`, `false`, `no`, `off` and empty are off,
/// as for every llama boolean (the `LLAMACC_*` variables too); anything else is refused.
pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("a boolean: 1/true/yes/on or 0/false/no/off".into()),
    }
}

pub(super) fn parse_backend(v: &str) -> Result<Backend, String> {
    [Backend::Local, Backend::Lambda, Backend::Reapi]
        .into_iter()
        .find(|b| b.name() == v)
        .ok_or_else(|| "one of local, lambda, reapi".to_string())
}

pub(super) fn parse_size(v: &str) -> Result<u64, String> {
    let expected = || "a size such as 10GiB, 500MB or 1073741824".to_string();
    let size: bytesize::ByteSize = v.trim().parse().map_err(|_| expected())?;
    if size.as_u64() == 0 {
        return Err(expected());
    }
    Ok(size.as_u64())
}

pub(super) fn parse_count(v: &str) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a whole number of at least 1".into()),
    }
}

pub(super) fn parse_jobs(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a whole number of at least 1".into()),
    }
}

pub(super) fn parse_duration(v: &str) -> Result<Duration, String> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err("a duration such as 90s, 15m or 1h".into()),
    }
}
