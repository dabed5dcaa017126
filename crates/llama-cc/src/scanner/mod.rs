//! The include scanner: what a compile reads, found without running the preprocessor.
//!
//! A remote compile must ship every header the compiler will open. Asking the compiler
//! (`-M`) costs 20–46 % of compiling the unit outright, on the client, for every compile;
//! the scanner instead keeps each file's preprocessor directives, extracted once per
//! content digest ([`directives`]), and walks them with the compile's include paths and a
//! macro table. It may list a header that is not needed; it must never miss one, so where
//! it cannot decide it says so and the compile falls back to `-M`.
//!
//! - [`directives`]: a file's directives and include guard, from its text in one pass.
//! - [`expr`]: `#if` expressions, expanded and evaluated as the preprocessor does.
//! - [`walk`]: the includes of a compile followed along its search path.
//! - [`setup`]: what a walk starts from, taken from the command line: the probe for the
//!   compiler's predefined macros, `-D`/`-U` in order, the search path as gcc orders it.
//!
//! - [`macros`]: a walk's macro table, sharing the predefined macros between walks.
//! - [`cache`]: each file's directives, kept by the daemon by content digest.
//!
//! The daemon's remote path (`service::listing`) runs the probes once per compiler set-up,
//! walks, and falls back to `-M` with the reason counted.

pub mod cache;
pub mod directives;
pub mod expr;
pub mod macros;
pub mod setup;
#[cfg(test)]
mod testing;
pub mod walk;
