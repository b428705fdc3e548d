//! `cargo run -p xtask -- man DIR` writes `DIR/wsproxy.1`; `cargo run -p xtask -- completions DIR`
//! writes `DIR/wsproxy.bash`, `DIR/_wsproxy` (zsh) and `DIR/wsproxy.fish`. Both come from
//! `wsproxy::cli::Cli`, the clap definition `wsproxy` parses, so they list exactly its options.
//! `scripts/deb` (make deb) puts them into the Debian package. A separate tool rather than a hidden
//! `wsproxy --generate`, so users' `wsproxy --help` shows only what they can use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use wsproxy::cli::Cli;

#[derive(Parser)]
#[command(about = "Generates wsproxy's man page and shell completions from its clap definition")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write the man page DIR/wsproxy.1 (roff)
    Man { dir: PathBuf },
    /// Write DIR/wsproxy.bash, DIR/_wsproxy (zsh) and DIR/wsproxy.fish
    Completions { dir: PathBuf },
}

fn main() -> ExitCode {
    let result = match Xtask::parse().task {
        Task::Man { dir } => man(&dir),
        Task::Completions { dir } => completions(&dir),
    };
    match result {
        Ok(written) => {
            for path in written {
                eprintln!("xtask: wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The man page, with the package's version in its footer.
fn man(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| format!("cannot render the man page: {e}"))?;
    let path = dir.join("wsproxy.1");
    write(&path, &page)?;
    Ok(vec![path])
}

fn completions(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "wsproxy.bash"),
        (Shell::Zsh, "_wsproxy"),
        (Shell::Fish, "wsproxy.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "wsproxy", &mut script);
        let path = dir.join(name);
        write(&path, &script)?;
        written.push(path);
    }
    Ok(written)
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
