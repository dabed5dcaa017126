//! `llama xargs --halt`: when to stop starting jobs after failures, as GNU parallel.

/// When to stop after failures (`--halt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halt {
    /// Kill running jobs (`now`) or let them finish (`soon`).
    pub kill_running: bool,
    /// Number of failed jobs that triggers the halt.
    pub failures: usize,
}

/// A `--halt` value that is not `now,fail=N` or `soon,fail=N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--halt {0:?}: expected now,fail=N or soon,fail=N (N at least 1), as GNU parallel")]
pub struct HaltError(pub String);

/// Parses GNU parallel's `now,fail=N` / `soon,fail=N`.
///
/// # Errors
///
/// Any other form, or N below 1.
pub fn parse_halt(spec: &str) -> Result<Halt, HaltError> {
    let bad = || HaltError(spec.to_string());
    let (when, cond) = spec.split_once(',').ok_or_else(bad)?;
    let kill_running = match when {
        "now" => true,
        "soon" => false,
        _ => return Err(bad()),
    };
    let failures = cond
        .strip_prefix("fail=")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(bad)?;
    Ok(Halt {
        kill_running,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_specs_parse_as_gnu_parallel() {
        assert_eq!(
            parse_halt("now,fail=1").unwrap(),
            Halt {
                kill_running: true,
                failures: 1
            }
        );
        assert_eq!(
            parse_halt("soon,fail=3").unwrap(),
            Halt {
                kill_running: false,
                failures: 3
            }
        );
        for bad in [
            "now",
            "later,fail=1",
            "now,fail=0",
            "now,fail=x",
            "now,success=1",
        ] {
            assert!(parse_halt(bad).is_err(), "{bad}");
        }
    }
}
