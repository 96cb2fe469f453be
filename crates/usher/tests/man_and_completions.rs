//! `usher man` and `usher completions SHELL`, generated from the command
//! line's own definitions: the man page lists every subcommand, the pages
//! written with `--dir` exist, and the bash completion offers `check`.

use std::process::{Command, Output, Stdio};

const USHER: &str = env!("CARGO_BIN_EXE_usher");
const SUBCOMMANDS: [&str; 6] = ["run", "check", "demo", "status", "man", "completions"];

fn usher(args: &[&str]) -> Output {
    let out = Command::new(USHER).args(args).stdin(Stdio::null()).output().expect("run usher");
    assert!(out.status.success(), "usher {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn man_page_is_roff_and_lists_every_subcommand() {
    let page = String::from_utf8(usher(&["man"]).stdout).expect("utf-8");
    assert!(page.contains(".TH usher 1"), "not a roff man page:\n{page}");
    let subcommands = &page[page.find(".SH SUBCOMMANDS").expect("a SUBCOMMANDS section")..];
    for name in SUBCOMMANDS {
        // roff escapes the dash: usher\-run(1).
        assert!(subcommands.contains(&format!("usher\\-{name}(1)")), "man page lacks {name}:\n{page}");
    }
}

#[test]
fn man_dir_writes_the_page_of_every_subcommand() {
    let dir = std::env::temp_dir().join(format!("usher-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    usher(&["man", "--dir", dir.to_str().expect("utf-8 path")]);
    let written = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(written("usher.1").contains(".TH usher 1"), "usher.1");
    for name in SUBCOMMANDS {
        let page = written(&format!("usher-{name}.1"));
        assert!(page.contains(".TH usher-"), "usher-{name}.1 missing or not roff");
    }
    assert!(written("usher-status.1").contains("\\-\\-watch"), "usher-status.1 documents --watch");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bash_completion_offers_the_subcommands() {
    let script = String::from_utf8(usher(&["completions", "bash"]).stdout).expect("utf-8");
    assert!(!script.trim().is_empty(), "empty completion script");
    assert!(script.contains("complete -F"), "not a bash completion script:\n{script}");
    for name in ["check", "status"] {
        assert!(script.split_whitespace().any(|w| w == name), "bash completion lacks {name}");
    }
}

#[test]
fn every_supported_shell_gets_a_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = usher(&["completions", shell]).stdout;
        assert!(!script.is_empty(), "no {shell} completion");
    }
    let refused = Command::new(USHER).args(["completions", "tcsh"]).output().expect("run usher");
    assert!(!refused.status.success(), "an unknown shell is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bash"), "the error lists the shells");
}
