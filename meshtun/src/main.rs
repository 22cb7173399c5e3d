//! The `meshtun` command: parses the command line, sets up logging and calls the library.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use meshtun::cli::{Cli, Command};
use meshtun::{config, daemon, keys, show};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(log_filter(&cli));
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meshtun: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter: `--log`, except that the demo, which tells its own story on stdout,
/// logs only warnings unless asked for more.
fn log_filter(cli: &Cli) -> &str {
    match &cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(_) if cli.log == "info" => "warn",
        _ => &cli.log,
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(command: Command) -> Result<()> {
    let opts = daemon::Options::default();
    match command {
        Command::Up { config } => runtime()?.block_on(daemon::up(&config, &opts))?,
        Command::Down { target } => match runtime()?.block_on(daemon::down(&target, &opts))? {
            daemon::DownOutcome::Stopped(pid) => eprintln!("stopped meshtun (pid {pid})"),
            daemon::DownOutcome::CleanedUp => {
                eprintln!("no daemon was running; cleaned up what it left")
            }
            daemon::DownOutcome::NotRunning => anyhow::bail!("{target} is not running"),
        },
        Command::Show { name, json } => runtime()?.block_on(show_command(name, json, &opts))?,
        Command::Genkey => println!("{}", *keys::genkey()),
        Command::Genpsk => println!("{}", *keys::genpsk()),
        Command::Pubkey => println!("{}", keys::pubkey(std::io::stdin().lock())?),
        Command::Check { config } => check(&config)?,
        Command::Import { wg_quick_conf } => import(&wg_quick_conf)?,
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo(&args)?,
    }
    Ok(())
}

#[cfg(all(feature = "demo", target_os = "linux"))]
fn demo(args: &meshtun::cli::DemoArgs) -> Result<()> {
    use meshtun::demo::{narrative::Style, DemoOptions};
    use std::io::IsTerminal;
    use std::time::Duration;
    let opts = DemoOptions {
        epoch: Duration::from_secs(args.epoch),
        duration: Duration::from_secs(args.duration),
        keep_going: args.keep_going,
        keep: args.keep,
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    runtime()?.block_on(meshtun::demo::run(opts, Style::new(color)))?;
    Ok(())
}

#[cfg(all(feature = "demo", not(target_os = "linux")))]
fn demo(_args: &meshtun::cli::DemoArgs) -> Result<()> {
    anyhow::bail!("meshtun demo runs only on Linux: it builds its network from network namespaces")
}

fn check(path: &Path) -> Result<()> {
    let (config, settings, warnings) = runtime()?.block_on(daemon::check(path))?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: valid (interface {}, {} peer{})",
        path.display(),
        config.interface.name,
        settings.peers.len(),
        if settings.peers.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn import(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let toml = config::import_wg_quick(&text, path)?;
    std::io::stdout().write_all(toml.as_bytes())?;
    Ok(())
}

async fn show_command(name: Option<String>, json: bool, opts: &daemon::Options) -> Result<()> {
    let names = match name {
        Some(name) => vec![name],
        None => show::interfaces(&opts.uapi_dir)?,
    };
    let mut statuses = Vec::new();
    for name in &names {
        statuses.push(show::fetch(&opts.uapi_dir, name).await?);
    }
    if json {
        let views: Vec<show::InterfaceView> =
            statuses.iter().map(show::InterfaceView::from).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        let now = std::time::SystemTime::now();
        let texts: Vec<String> = statuses.iter().map(|s| show::render_text(s, now)).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(())
}
