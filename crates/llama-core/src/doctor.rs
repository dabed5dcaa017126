//! The outcome of one of `llama doctor`'s checks, and where checks put them.
//!
//! Shared by the crates that check a backend (llama-aws for Lambda, llama-cli for this
//! machine and REAPI servers), so that `llama doctor` prints or collects every check the same
//! way, whichever crate made it.

use std::io;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In order; the detail says what was found.
    Ok(String),
    /// Wrong or missing; `fix` is the command (or step) that puts it right.
    Problem {
        /// What is wrong.
        what: String,
        /// The command (or step) that puts it right.
        fix: String,
    },
    /// Not checked, because something it needs is missing.
    Skipped(String),
}

impl Outcome {
    /// A problem and its fix.
    pub fn problem(what: impl Into<String>, fix: impl Into<String>) -> Outcome {
        Outcome::Problem {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// True for [`Outcome::Problem`].
    pub fn is_problem(&self) -> bool {
        matches!(self, Outcome::Problem { .. })
    }
}

/// Where checks put their outcomes, as each is known (checks that talk to servers take
/// seconds: a person watching should see each line when it is decided).
pub trait Findings {
    /// Records the outcome of the check `name`. The error is only a failed write.
    fn check(&mut self, name: &str, outcome: Outcome) -> io::Result<()>;
}
