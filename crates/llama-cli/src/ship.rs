//! Which programs `llama invoke` and `llama xargs` ship with their jobs: those `--ship`
//! names, and on a remote backend the command's own program (`ship_command`), so that a
//! function made from llama's generic image runs any program this machine has.

use std::ffi::OsString;

use anyhow::Context as _;
use llama_jobs::{Program, ShipError, Shipment};

use crate::context::Context;

/// The programs to ship: each of `named` (an error if one cannot be), then `command` — the
/// command's program as typed — when the backend is remote and shipping it is on. A
/// command program that is not on this machine is left to the function's image.
pub async fn shipment(
    ctx: &Context,
    named: &[String],
    command: Option<&str>,
    no_ship: bool,
) -> anyhow::Result<Shipment> {
    let path = std::env::var_os("PATH");
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut programs = Vec::new();
    for name in named {
        let program = Program::find(name, path.as_deref(), &cwd, &env)
            .await
            .with_context(|| format!("--ship {name}"))?;
        programs.push(program);
    }
    let auto = ctx.remote && ctx.ship_command && !no_ship;
    if let Some(name) =
        command.filter(|c| auto && !c.contains("{{") && !named.iter().any(|n| n == c))
    {
        match Program::find(name, path.as_deref(), &cwd, &env).await {
            Ok(program) => programs.push(program),
            // Not a program here (or nothing at all): the function's image may have it.
            Err(ShipError::NotFound(_) | ShipError::NotAProgram(_)) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "shipping the command's program {name} (--no-ship, or ship_command = false, if the function's image has it)"
                )));
            }
        }
    }
    Ok(Shipment::new(programs))
}

/// What to tell the user when a shipped job failed because a library was not shipped: the
/// loader names it on standard error.
pub fn missing_library_hint(shipment: &Shipment, stderr: &[u8]) -> Option<String> {
    const MARK: &str = "error while loading shared libraries: ";
    if shipment.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(stderr);
    let rest = &text[text.find(MARK)? + MARK.len()..];
    let library = rest.split(':').next()?.trim();
    Some(format!(
        "llama: {library} was not shipped: it is not in the DT_NEEDED closure of the shipped programs (a library loaded with dlopen, or one an LD_LIBRARY_PATH found here); ship it with -f LOCAL:.llama/ship/LOCAL, LOCAL being its absolute path"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loader_error_names_the_library_to_ship() {
        let cwd = std::env::current_dir().unwrap();
        let sh = Program::find("sh", Some("/usr/bin:/bin".as_ref()), &cwd, &[])
            .await
            .unwrap();
        let shipment = Shipment::new(vec![sh]);
        let err = b"optipng: error while loading shared libraries: libpng16.so.16: cannot open shared object file: No such file or directory\n";
        let hint = missing_library_hint(&shipment, err).unwrap();
        assert!(
            hint.contains("libpng16.so.16") && hint.contains("-f"),
            "{hint}"
        );
        assert_eq!(missing_library_hint(&shipment, b"plain failure\n"), None);
        assert_eq!(missing_library_hint(&Shipment::default(), err), None);
    }
}
