//! `llama xargs --joblog`: one tab-separated line per finished job, after a header.

use std::fmt;
use std::io::{self, Write};

use llama_core::display_name;

/// Which job: its 0-based index and its input line. Displays as `job N (line "...")`, the
/// way every message about one job starts.
#[derive(Debug, Clone, Copy)]
pub struct JobId<'a> {
    /// The job's 0-based position in the input.
    pub idx: usize,
    /// The job's input line, in llama's escaped form where it is not UTF-8.
    pub line: &'a str,
}

impl fmt::Display for JobId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} (line {:?})", self.idx, display_name(self.line))
    }
}

/// One finished job, as the job log records it.
#[derive(Debug, Clone, Copy)]
pub struct JobRecord<'a> {
    /// Which job.
    pub id: JobId<'a>,
    /// The shell status of the command, or -1 when it did not run.
    pub exit: i32,
    /// Wall time from start to end, in seconds.
    pub seconds: f64,
    /// Whether the result came from the action cache.
    pub cached: bool,
}

/// The job log: a header, then one line per job in the order jobs finish. Each line is
/// flushed, so a log of an interrupted run holds every job that ended.
pub struct JobLog<W: Write> {
    w: W,
}

impl<W: Write> JobLog<W> {
    /// Writes the header.
    ///
    /// # Errors
    ///
    /// Writing to `w` failed.
    pub fn new(mut w: W) -> io::Result<Self> {
        writeln!(w, "Idx\tLine\tExit\tSeconds\tCached")?;
        Ok(JobLog { w })
    }

    /// Continues a log that already has its header (`--joblog +FILE` on a file with lines).
    pub fn continuing(w: W) -> Self {
        JobLog { w }
    }

    /// Appends one job's line and flushes it. Tabs in the line are escaped so columns stay.
    ///
    /// # Errors
    ///
    /// Writing to the log failed.
    pub fn record(&mut self, r: &JobRecord<'_>) -> io::Result<()> {
        writeln!(
            self.w,
            "{}\t{}\t{}\t{:.3}\t{}",
            r.id.idx,
            display_name(r.id.line).replace('\t', "\\t"),
            r.exit,
            r.seconds,
            r.cached
        )?;
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tab_separated_with_tabs_escaped() {
        let mut out = Vec::new();
        let mut log = JobLog::new(&mut out).unwrap();
        log.record(&JobRecord {
            id: JobId {
                idx: 3,
                line: "a\tb",
            },
            exit: 1,
            seconds: 0.25,
            cached: false,
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Idx\tLine\tExit\tSeconds\tCached\n3\ta\\tb\t1\t0.250\tfalse\n"
        );
        assert_eq!(
            JobId { idx: 0, line: "x" }.to_string(),
            "job 0 (line \"x\")"
        );
    }
}
