//! `s3://BUCKET[/PREFIX]`: where the CAS and the action cache live, and the keys under it.

use std::fmt;
use std::str::FromStr;

use llama_core::Digest;

use super::S3Error;

/// `s3://BUCKET[/PREFIX]`: where the CAS and the action cache live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectStoreUrl {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` ("" for the bucket's root).
    pub prefix: String,
}

impl ObjectStoreUrl {
    /// The key of `rest` under the prefix.
    fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// The key of a blob.
    pub fn cas_key(&self, digest: &Digest) -> String {
        self.key(&format!("cas/{}", digest.hex()))
    }

    /// The key of an action-cache entry.
    pub fn ac_key(&self, action: &Digest) -> String {
        self.key(&format!("ac/{}", action.hex()))
    }
}

impl fmt::Display for ObjectStoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl FromStr for ObjectStoreUrl {
    type Err = S3Error;

    fn from_str(url: &str) -> Result<Self, S3Error> {
        let bad = |why: &str| S3Error::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's rules for bucket names, the parts that catch typos.
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(bad("the prefix must not contain '.', '..' or empty parts"));
        }
        Ok(ObjectStoreUrl {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}
