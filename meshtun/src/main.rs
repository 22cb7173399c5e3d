//! The `meshtun` command: parses the command line, sets up logging and calls the library.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use meshtun::cli::{Cli, Command, EvaluateArgs, JoinArgs};
use meshtun::{config, daemon, join, keys, show};
use meshtun_proto::membership::MembershipSig;

fn main() -> ExitCode {
    // SAFETY: no other thread exists yet (the async runtime is built later).
    let inherited = unsafe { meshtun::uapi::take_listen_fds() };
    let cli = Cli::parse();
    init_logging(log_filter(&cli));
    meshtun::supervise::exit_on_panic();
    let opts = daemon::Options {
        state_dir: cli.state_dir,
        uapi_dir: cli.uapi_dir,
        existing_tun: false,
        user: None,
    };
    match run(cli.command, &opts, inherited) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "meshtun: {}",
                meshtun_proto::report::describe(error.as_ref())
            );
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

fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(meshtun::sched::parked)
        .on_thread_unpark(meshtun::sched::unparked)
        .build()
        .context("cannot start the async runtime")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(meshtun::sched::parked)
        .on_thread_unpark(meshtun::sched::unparked)
        .build()
        .context("cannot start the async runtime")
}

fn run(
    command: Command,
    opts: &daemon::Options,
    inherited: Option<meshtun::uapi::Inherited>,
) -> Result<()> {
    match command {
        Command::Up {
            config,
            existing_tun,
            user,
        } => {
            // Capabilities are per thread: after a user switch, every task must run on the
            // thread that kept CAP_NET_ADMIN.
            let runtime = match user {
                Some(_) => current_thread_runtime()?,
                None => runtime()?,
            };
            let opts = daemon::Options {
                existing_tun,
                user,
                ..opts.clone()
            };
            runtime.block_on(daemon::up(&config, &opts, inherited))?
        }
        Command::Down { target } => match runtime()?.block_on(daemon::down(&target, opts))? {
            daemon::DownOutcome::Stopped(pid) => eprintln!("stopped meshtun (pid {pid})"),
            daemon::DownOutcome::CleanedUp => {
                eprintln!("no daemon was running; cleaned up what it left")
            }
            daemon::DownOutcome::NotRunning => anyhow::bail!("{target} is not running"),
        },
        Command::Show {
            name,
            json,
            no_probe,
            probe_timeout,
            color,
            watch,
        } => {
            let probe = (!no_probe).then(|| std::time::Duration::from_millis(probe_timeout));
            let stdout = std::io::stdout();
            let colour = show::use_colour(color, &stdout);
            if watch {
                let watch = show::Watch {
                    dir: &opts.uapi_dir,
                    name: name.as_deref(),
                    probe,
                    colour,
                    clear: stdout.is_terminal() || color == show::ColorWhen::Always,
                };
                runtime()?.block_on(watch.run(&mut stdout.lock()))?
            } else {
                runtime()?.block_on(show_command(name, json, probe, colour, opts))?
            }
        }
        Command::Genkey => println!("{}", *keys::genkey()),
        Command::Genpsk => println!("{}", *keys::genpsk()),
        Command::Pubkey => println!("{}", keys::pubkey(std::io::stdin().lock())?),
        Command::Check { config } => check(&config)?,
        Command::Import { wg_quick_conf } => import(&wg_quick_conf)?,
        Command::Join(args) => join_command(args)?,
        Command::Evaluate(args) => evaluate(args)?,
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
        duration: Duration::from_secs(args.duration.unwrap_or(if args.nat {
            meshtun::demo::plan::NAT_DEFAULT_DURATION_SECS
        } else if args.evaluators {
            meshtun::demo::plan::EVALUATORS_DEFAULT_DURATION_SECS
        } else {
            meshtun::demo::plan::DEFAULT_DURATION_SECS
        })),
        keep_going: args.keep_going,
        keep: args.keep,
        ha: args.ha,
        nat: args.nat,
        evaluators: args.evaluators,
        dashboard: args.dashboard,
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

fn evaluate(args: EvaluateArgs) -> Result<()> {
    use meshtun::gate::evaluator::Evaluation;
    let loaded = config::load_or_create_identity(&args.key_file)?;
    if let Some(warning) = &loaded.warning {
        eprintln!("warning: {warning}");
    }
    if loaded.created {
        anyhow::bail!(
            "created the evaluator key {} (public key {}): register it with \
             `meshtun-controller evaluator add {} {} --dimensions …`, then run this again",
            args.key_file.display(),
            loaded.key.public(),
            args.name,
            loaded.key.public()
        );
    }
    let keys = args
        .controller_keys
        .iter()
        .map(|k| meshtun_proto::IdentityPublic::from_base64(k))
        .collect::<Result<Vec<_>, _>>()
        .context("--controller-key")?;
    let command = shlex::split(&args.command)
        .filter(|argv| !argv.is_empty())
        .context("--command: not a command line (unbalanced quotes, or empty)")?;
    let evaluation = Evaluation {
        urls: args.controllers,
        controller_keys: meshtun_proto::KeySet::new(keys).context("--controller-key")?,
        ca_file: args.ca_file,
        name: args.name,
        key: loaded.key,
        target: args.target,
        command,
        timeout: std::time::Duration::from_secs(args.timeout),
        dimensions: args.dimensions,
    };
    let done = current_thread_runtime()?.block_on(evaluation.run())?;
    let s = &done.statement.statement;
    let scores: Vec<String> = s.scores.iter().map(|(d, v)| format!("{d}={v}")).collect();
    println!(
        "statement {} about {} stored by {}: {} (evidence sha256 {})",
        done.id,
        s.subject,
        done.url,
        scores.join(" "),
        s.evidence
    );
    Ok(())
}

fn join_command(args: JoinArgs) -> Result<()> {
    let text = if args.ticket == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .context("cannot read the ticket from standard input")?;
        text
    } else {
        args.ticket
    };
    let ticket = meshtun_proto::wire::Ticket::decode(&text).map_err(join::JoinError::from)?;
    let options = join::JoinOptions {
        ticket,
        config: args.config,
        interface: args.interface,
        listen_port: args.listen_port,
        addresses: args.addresses,
        endpoint: args.endpoint,
        benchmark: join::benchmark_source(
            args.benchmark_command.as_deref(),
            args.simulated.as_deref(),
        )?,
        force: args.force,
        membership_sig: args
            .membership_sig
            .as_deref()
            .map(MembershipSig::from_base64)
            .transpose()
            .context("--membership-sig")?,
    };
    let joined = runtime()?.block_on(join::join(&options))?;
    print_joined(&joined);
    Ok(())
}

fn print_joined(joined: &join::Joined) {
    let addresses: Vec<String> = joined.addresses.iter().map(ToString::to_string).collect();
    println!("enrolled node {} at {}", joined.node_id, joined.url);
    println!("wrote {} (mode 0600)", joined.path.display());
    println!("  overlay address:      {}", addresses.join(", "));
    println!(
        "  endpoint:             {}",
        joined.endpoint.as_deref().unwrap_or("(none)")
    );
    println!("  WireGuard public key: {}", joined.wg_public_key);
    println!(
        "  identity key:         {} ({})",
        joined.identity_file.display(),
        if joined.identity_created {
            "created"
        } else {
            "reused from an earlier attempt"
        }
    );
    for note in &joined.notes {
        eprintln!("note: {note}");
    }
    println!("start it with: meshtun up {}", joined.path.display());
}

async fn show_command(
    name: Option<String>,
    json: bool,
    probe: Option<std::time::Duration>,
    colour: bool,
    opts: &daemon::Options,
) -> Result<()> {
    let names = match name {
        Some(name) => vec![name],
        None => show::interfaces(&opts.uapi_dir)?,
    };
    let reports = show::reports(&opts.uapi_dir, &names, probe).await?;
    let now = std::time::SystemTime::now();
    if json {
        let views: Vec<show::InterfaceView> = reports
            .iter()
            .map(|r| show::InterfaceView::new(r, now))
            .collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        let texts: Vec<String> = reports
            .iter()
            .map(|r| show::render_styled(r, now, colour))
            .collect();
        print!("{}", texts.join("\n"));
    }
    Ok(())
}
