//! `meshtun-docgen OUT_DIR`: writes the man pages and shell completions of `meshtun` and
//! `meshtun-controller`, generated from their command-line definitions, for the packages:
//!
//! - `OUT_DIR/NAME/man/man1/`: `NAME.1`, `NAME-SUBCOMMAND.1`, … (one page per subcommand);
//! - `OUT_DIR/NAME/completions/`: `NAME.bash`, `_NAME` (zsh) and `NAME.fish`,
//!
//! where NAME is `meshtun` or `meshtun-controller`, one directory per package.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: meshtun-docgen OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meshtun-docgen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A failure naming the file it concerns.
#[derive(Debug)]
struct Error {
    path: PathBuf,
    source: io::Error,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

/// Writes every page and completion file under `out`; returns the files written.
fn generate(out: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for cmd in [
        meshtun::cli::Cli::command(),
        meshtun_controller::cli::Cli::command(),
    ] {
        written.extend(generate_one(out, cmd)?);
    }
    Ok(written)
}

/// Writes the pages and completions of one binary under `out/NAME`.
fn generate_one(out: &Path, cmd: clap::Command) -> Result<Vec<PathBuf>, Error> {
    let name = cmd.get_name().to_owned();
    let man = out.join(&name).join("man").join("man1");
    let completions = out.join(&name).join("completions");
    for dir in [&man, &completions] {
        fs::create_dir_all(dir).map_err(|source| Error {
            path: dir.clone(),
            source,
        })?;
    }
    clap_mangen::generate_to(cmd.clone(), &man).map_err(|source| Error {
        path: man.clone(),
        source,
    })?;
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), &name, &completions)
            .map_err(|source| Error {
                path: completions.clone(),
                source,
            })?;
        written.push(path);
    }
    let mut pages: Vec<PathBuf> = fs::read_dir(&man)
        .and_then(|dir| dir.map(|e| e.map(|e| e.path())).collect())
        .map_err(|source| Error {
            path: man.clone(),
            source,
        })?;
    pages.sort();
    written.extend(pages);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_cover_both_binaries_and_their_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "meshtun.1",
            "meshtun-up.1",
            "meshtun-down.1",
            "meshtun-controller.1",
            "meshtun-controller-serve.1",
            "meshtun-controller-check.1",
            "meshtun.bash",
            "_meshtun",
            "meshtun.fish",
            "meshtun-controller.bash",
            "_meshtun-controller",
            "meshtun-controller.fish",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing: {names:?}"
            );
        }
        let up = fs::read_to_string(dir.path().join("meshtun/man/man1/meshtun-up.1")).unwrap();
        assert!(up.contains("existing\\-tun"), "{up}");
        // Each package gets its own binary's files only.
        let daemon_pages = fs::read_dir(dir.path().join("meshtun/man/man1")).unwrap();
        assert!(daemon_pages
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .all(|n| !n.starts_with("meshtun-controller")));
        let bash = fs::read_to_string(dir.path().join("meshtun/completions/meshtun.bash")).unwrap();
        assert!(bash.contains("--existing-tun"));
    }
}
