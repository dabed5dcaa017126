//! Help that clap's parser does not give: `llama help llamacc` (the LLAMACC_* variables,
//! which `llamacc --help` cannot show: that is the compiler's help), `llama help settings`,
//! a subcommand's help, `llama completions SHELL` and `llama man`.

use std::process::Command;

use llama_testkit::{stderr, stdout};

#[test]
fn help_llamacc_lists_every_variable_even_when_the_config_is_broken() {
    let w = crate::world();
    // Help must not need a working configuration.
    let out = w
        .llama(&["help", "llamacc"])
        .env("LLAMA_JOBS", "zero")
        .output()
        .expect("llama help llamacc");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for var in llama_cc::variables() {
        assert!(
            text.contains(&format!("  {}", var.name)),
            "{} in:\n{text}",
            var.name
        );
    }
    assert!(
        text.contains("LLAMACC_BUILD_ID\n      the build its compiles are traced under"),
        "{text}"
    );
    assert!(text.contains("LLAMACC_LOCAL_CC (default: cc)"), "{text}");

    let settings = stdout(&w.run(&["help", "settings"]));
    assert!(
        settings.contains("  backend  (LLAMA_BACKEND, default: local)"),
        "{settings}"
    );
    // The main help says where the topics are.
    assert!(
        stdout(&w.run(&["--help"])).contains("llama help llamacc"),
        "{}",
        stdout(&w.run(&["--help"]))
    );
}

#[test]
fn help_of_a_subcommand_and_of_nothing_known() {
    let w = crate::world();
    let out = w.run(&["help", "daemon", "start"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Usage: llama daemon start"),
        "{}",
        stdout(&out)
    );
    let out = w.run(&["help", "no-such-thing"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("the topics are: llamacc"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_for_each_shell_and_bash_parses_them() {
    let w = crate::world();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = w.run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["invoke", "xargs", "doctor", "no-cache"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    w.write("llama.bash", &w.run(&["completions", "bash"]).stdout);
    let check = Command::new("bash")
        .arg("-n")
        .arg(w.path("llama.bash"))
        .output()
        .expect("bash");
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    let out = w.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
}

#[test]
fn man_pages_of_llama_with_its_environment_and_of_a_subcommand() {
    let w = crate::world();
    let out = w.run(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH llama 1"), "{page}");
    for part in [
        ".SH SYNOPSIS",
        ".SH ENVIRONMENT",
        "\\fBLLAMA_BACKEND\\fR",
        "\\fBLLAMACC_VERBOSE\\fR",
        "the build its compiles are traced under",
    ] {
        assert!(page.contains(part), "{part:?} in:\n{page}");
    }
    let out = w.run(&["man", "invoke"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(".TH llama-invoke 1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(w.run(&["man", "nope"]).status.code(), Some(125));
}
