//! What a billed executor consumed, and what that costs.

use std::fmt;

/// Lambda compute, x86, us-east-1: dollars per GB-second (memory size × billed duration).
pub const LAMBDA_USD_PER_GB_SECOND: f64 = 0.000_016_666_7;

/// Lambda requests: $0.20 per million invocations.
pub const LAMBDA_USD_PER_REQUEST: f64 = 0.20 / 1_000_000.0;

/// S3 Standard PUT, COPY, POST and LIST requests: $0.005 per 1,000.
pub const S3_USD_PER_PUT: f64 = 0.005 / 1_000.0;

/// S3 Standard GET, HEAD and other reads: $0.0004 per 1,000.
pub const S3_USD_PER_GET: f64 = 0.0004 / 1_000.0;

/// A snapshot of what an executor consumed since it was made.
///
/// Prices are us-east-1's list prices for x86 functions and S3 Standard requests
/// (the constants above); storage, transfer and free tiers are not counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// The executor's name.
    pub executor: &'static str,
    /// Function invocations made.
    pub invocations: u64,
    /// Actions served from the remote action cache without an invocation.
    pub remote_cache_hits: u64,
    /// Billed milliseconds summed over invocations.
    pub billed_ms: u64,
    /// Memory size × billed duration, in GB-seconds (1 GB = 1024 MB, as Lambda bills).
    pub gb_seconds: f64,
    /// S3 PUT-class requests (by this client and by the functions).
    pub s3_puts: u64,
    /// S3 GET requests (by this client and by the functions).
    pub s3_gets: u64,
    /// S3 HEAD requests (by this client and by the functions).
    pub s3_heads: u64,
    /// S3 LIST requests.
    pub s3_lists: u64,
    /// Bytes this client uploaded to the object store.
    pub bytes_up: u64,
    /// Bytes this client downloaded from the object store.
    pub bytes_down: u64,
    /// Calls this client made to a REAPI server (round trips; retries count).
    pub calls: u64,
    /// Whether the executor bills at the list prices above (Lambda and S3). A REAPI cluster
    /// bills nothing per request that llama can know, so it has no dollar figure at all
    /// rather than one priced at Lambda's rates.
    pub priced: bool,
}

impl Usage {
    /// Every S3 request counted.
    pub fn s3_requests(&self) -> u64 {
        self.s3_puts + self.s3_gets + self.s3_heads + self.s3_lists
    }

    /// The cost in dollars at the list prices above; `None` for an executor that is not
    /// [`priced`](Usage::priced).
    pub fn dollars(&self) -> Option<f64> {
        self.priced.then(|| {
            self.gb_seconds * LAMBDA_USD_PER_GB_SECOND
                + self.invocations as f64 * LAMBDA_USD_PER_REQUEST
                + (self.s3_puts + self.s3_lists) as f64 * S3_USD_PER_PUT
                + (self.s3_gets + self.s3_heads) as f64 * S3_USD_PER_GET
        })
    }

    /// GB-seconds of one invocation of a function of `memory_mb` billed for `billed_ms`.
    pub fn gb_seconds_of(memory_mb: u32, billed_ms: u64) -> f64 {
        f64::from(memory_mb) / 1024.0 * billed_ms as f64 / 1000.0
    }
}

impl fmt::Display for Usage {
    /// One line: `lambda: 50 invocations, 12.3 GB-s, 104 S3 requests, $0.0003`.
    /// A REAPI cluster bills nothing per request that llama can see: `reapi: 10 executions,
    /// 41 calls, 12.0 KiB up, 3.0 KiB down, 2 from the remote action cache`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.executor == "reapi" {
            write!(
                f,
                "{}: {} execution{}, {} calls, {} up, {} down",
                self.executor,
                self.invocations,
                if self.invocations == 1 { "" } else { "s" },
                self.calls,
                bytesize::ByteSize(self.bytes_up).display().iec(),
                bytesize::ByteSize(self.bytes_down).display().iec(),
            )?;
            if self.remote_cache_hits > 0 {
                write!(
                    f,
                    ", {} from the remote action cache",
                    self.remote_cache_hits
                )?;
            }
            return Ok(());
        }
        write!(
            f,
            "{}: {} invocation{}, {:.1} GB-s, {} S3 request{}",
            self.executor,
            self.invocations,
            if self.invocations == 1 { "" } else { "s" },
            self.gb_seconds,
            self.s3_requests(),
            if self.s3_requests() == 1 { "" } else { "s" },
        )?;
        if self.remote_cache_hits > 0 {
            write!(f, ", {} from the S3 action cache", self.remote_cache_hits)?;
        }
        match self.dollars() {
            Some(dollars) => write!(f, ", ${dollars:.4}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_the_line() {
        let u = Usage {
            executor: "lambda",
            invocations: 1_000_000,
            gb_seconds: 1000.0,
            s3_puts: 1000,
            s3_gets: 500,
            s3_heads: 500,
            priced: true,
            ..Default::default()
        };
        // $0.20 requests + $0.0166667 compute + $0.005 PUTs + $0.0004 GET/HEAD.
        let dollars = u.dollars().unwrap_or_default();
        assert!((dollars - 0.2220667).abs() < 1e-6, "{dollars}");
        assert_eq!(
            u.to_string(),
            "lambda: 1000000 invocations, 1000.0 GB-s, 2000 S3 requests, $0.2221"
        );
        assert_eq!(Usage::gb_seconds_of(1024, 1000), 1.0);
        assert_eq!(Usage::gb_seconds_of(1769, 0), 0.0);
    }

    #[test]
    fn a_reapi_cluster_has_no_price() {
        // 34 compiles over a REAPI server once showed "$0.0000068": Lambda's request price.
        let u = Usage {
            executor: "reapi",
            invocations: 34,
            calls: 120,
            ..Default::default()
        };
        assert_eq!(u.dollars(), None);
        assert!(!u.to_string().contains('$'), "{u}");
    }
}
