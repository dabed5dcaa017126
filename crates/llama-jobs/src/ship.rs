//! Programs shipped with a job, so that a function with no image of its own runs them.
//!
//! Each program's files (see [`llama_exec::ship`]) are laid out under `.llama/ship/`, at
//! their absolute paths here, and a small `/bin/sh` launcher per program under
//! `.llama/bin/` starts it through the shipped loader. The command runs with `.llama/bin`
//! first on `PATH`, so the command's own program, and any shipped program a script it runs
//! calls by name, is the shipped one. The files are inputs like any other: their content is
//! part of the action's key, so a program upgraded here never gets an older result.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use llama_core::{HashCache, TreeBuilder, TreeError};
pub use llama_exec::ship::{Program, ShipError};

/// Where the shipped files are laid out, below the job's directory.
pub const SHIP_DIR: &str = ".llama/ship";
/// Where the launchers are.
pub const LAUNCHER_DIR: &str = ".llama/bin";

/// Puts the launchers first on `PATH`, then runs the command (`$1`...).
const PREFIX: &str = r#"PATH="$(pwd -P)/.llama/bin${PATH:+:$PATH}"; export PATH; exec "$@""#;

/// The programs a batch of jobs ships.
#[derive(Debug, Clone, Default)]
pub struct Shipment {
    programs: Vec<Program>,
}

impl Shipment {
    /// Ships `programs` (the first of a name wins).
    pub fn new(programs: Vec<Program>) -> Shipment {
        let mut seen = std::collections::HashSet::new();
        let programs = programs
            .into_iter()
            .filter(|p| seen.insert(launcher_name(&p.name)))
            .collect();
        Shipment { programs }
    }

    /// Whether nothing is shipped.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// The programs shipped.
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    /// Adds every shipped file and launcher to `tree`.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, or that clashes with a job's own input.
    pub fn add_to(&self, tree: &mut TreeBuilder, hash_cache: &HashCache) -> Result<(), TreeError> {
        // Programs share libraries (and the loader): each file once, executable if any
        // program runs it.
        let mut files: BTreeMap<&Path, bool> = BTreeMap::new();
        for program in &self.programs {
            for f in &program.files {
                *files.entry(&f.local).or_default() |= f.executable;
            }
        }
        for local in files.keys() {
            let remote = format!("{SHIP_DIR}{}", local.display());
            tree.add_path(hash_cache, local, &remote)?;
        }
        for program in &self.programs {
            let script = format!(
                "#!/bin/sh\n# Starts {} as shipped by llama.\nr=$(cd \"${{0%/*}}/../ship\" && pwd -P) || exit 127\nexec {} \"$@\"\n",
                program.path.display(),
                program.launch_words()
            );
            tree.add_bytes(
                Arc::from(script.into_bytes()),
                &format!("{LAUNCHER_DIR}/{}", launcher_name(&program.name)),
                true,
            )?;
        }
        Ok(())
    }

    /// The command that runs `args` with the shipped programs first on `PATH`: a command
    /// whose program is shipped calls it by its launcher's name.
    pub fn command(&self, mut args: Vec<String>) -> Vec<String> {
        if self.is_empty() {
            return args;
        }
        if let Some(first) = args.first_mut()
            && self.programs.iter().any(|p| &p.name == first)
        {
            *first = launcher_name(first);
        }
        let mut command = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            PREFIX.to_string(),
            "llama-ship".to_string(),
        ];
        command.extend(args);
        command
    }
}

/// The launcher's file name for a program called `name` (`./tools/x.sh`: `x.sh`).
fn launcher_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shipped_command_runs_its_launcher_first_on_path() {
        let cwd = std::env::current_dir().unwrap();
        let sh = Program::find("sh", Some("/usr/bin:/bin".as_ref()), &cwd, &[])
            .await
            .unwrap();
        let shipment = Shipment::new(vec![sh.clone(), sh]);
        assert_eq!(shipment.programs().len(), 1);
        let args = shipment.command(vec!["sh".into(), "-c".into(), "echo hi".into()]);
        assert_eq!(args[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(args[4..], ["sh", "-c", "echo hi"]);
        let mut tree = TreeBuilder::new();
        shipment.add_to(&mut tree, &HashCache::in_memory()).unwrap();
        assert_eq!(
            Shipment::default().command(vec!["x".into()]),
            vec!["x".to_string()]
        );
    }
}
