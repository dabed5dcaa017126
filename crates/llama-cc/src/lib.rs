/*!
Compiler knowledge for llamacc: which gcc/clang invocations can be cached, and what they
read and write.

# Brief overview

* [`parse`] reads one compiler command line (after its `@file`s) with sorted tables of
  gcc's and clang's flags and returns a [`Verdict`]: either a [`Compilation`] (one source,
  one object or assembly file, with its language, output, depfile, extra outputs, include
  search and every other file a flag makes the compiler read), or the [`LocalReason`] to
  run the real compiler directly, with a stable [`LocalReason::name`] for statistics.
* [`Driver`] / [`Family`]: whose rules apply (gcc or clang, C or C++ driver).
* [`CompileService`]: what the llamacc daemon does with a compile: identify the compiler,
  look the compile up by what it read last time (a [`Manifest`]), deliver a cached result,
  or compile in place and record what the compiler's depfile says it read.
  A miss compiles on a remote executor when one is set ([`CompileService::with_remote`]),
  else in place; either way its result is recorded through the `llama_exec::Engine`.
* [`Settings`]: the `LLAMACC_*` variables ([`variables`] lists them for help and docs).
  [`Stats`]: a counter for every outcome, with the reasons named by enums ([`LocalReason`],
  [`CannotCache`], [`NotRemote`], [`TrustReason`]) so the keys of `llama stats` are a fixed
  set.
* [`launcher`]: which compiler a `llamacc` process stands in for: the settings', the
  first argument's (`llamacc gcc -c x.c`, CMake's launcher), or the real one behind a link
  named `gcc` (masquerade).
* [`protocol`] and [`client`]: the daemon's one wire format (the service's own
  [`CompileRequest`] and [`CompileReply`]) and the client half of it, which the thin
  `llamacc` binary uses without linking the service.

Not here: running the daemon (its socket server and lifetime: llama-cli), executors and
the store (llama-exec, llama-core).

# Example

```
use std::ffi::OsString;
use std::path::Path;

use llama_cc::{DepKind, Family, Language, LocalReason, Mode, Verdict, parse};

let args = |line: &str| line.split(' ').map(OsString::from).collect::<Vec<_>>();
let cwd = Path::new("/src/lua");

let verdict = parse(&args("-O2 -MMD -c src/lapi.c"), cwd, Family::Gcc);
let Verdict::Compile(compile) = verdict else { panic!("{verdict:?}") };
assert_eq!(compile.language, Language::C);
assert_eq!(compile.mode, Mode::Object);
// gcc writes the object in the working directory, not beside the source.
assert_eq!(compile.output, Path::new("lapi.o"));
let depfile = compile.depfile.unwrap();
assert_eq!((depfile.path.as_path(), depfile.kind), (Path::new("lapi.d"), DepKind::UserHeadersOnly));

let verdict = parse(&args("-o lua lua.o liblua.a -lm"), cwd, Family::Gcc);
assert_eq!(verdict, Verdict::Local(LocalReason::Link));

let verdict = parse(&args("-save-temps -c lapi.c"), cwd, Family::Clang);
assert_eq!(verdict, Verdict::Local(LocalReason::TooHard("-save-temps")));
assert_eq!(LocalReason::TooHard("-save-temps").name(), "too-hard:-save-temps");
```
*/

#![deny(missing_docs)]

mod args;
pub mod client;
mod compilation;
mod compile_env;
mod depfile;
mod error;
pub mod explain;
mod flags;
mod identity;
pub mod launcher;
mod manifest;
#[cfg(test)]
mod props;
pub mod protocol;
mod remote_args;
mod response_file;
mod scan;
pub mod scanner;
mod service;
mod settings;
mod stats;
mod sysdirs;
mod toolchain;

pub use crate::{
    args::parse,
    compilation::{
        Compilation, DepFile, DepKind, DepTarget, Driver, Family, IncludeSearch, Language,
        LocalReason, Mode, Verdict,
    },
    compile_env::needed_by_compile,
    depfile::prerequisites,
    error::CcError,
    identity::{Identity, IdentityCache},
    manifest::{Entry, Manifest},
    protocol::{CompileReply, CompileRequest},
    service::{CompileService, resolve_compiler},
    settings::{BOOLEANS, Settings, VarHelp, truthy, variables, variables_markdown},
    stats::{
        CannotCache, ERROR_REASON, NotRemote, Outcome, Stats, StatsSnapshot, TrustReason, cost,
    },
    sysdirs::SystemDirs,
};
