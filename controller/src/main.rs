//! The `meshtun-controller` command: parses the command line, sets up logging and calls the
//! library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use meshtun_controller::cli::{
    AuditCommand, Cli, Command, EvaluatorCommand, KeyCommand, NodeCommand, PinArg,
};
use meshtun_controller::cli::{MembershipCommand, MembershipKeyCommand};
use meshtun_controller::config::ControllerConfig;
use meshtun_controller::model::Pin;
use meshtun_controller::store::Database;
use meshtun_controller::{commands, enrollment_sig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "meshtun-controller: {}",
                meshtun_proto::report::describe(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

fn run(cli: Cli) -> Result<()> {
    // The membership key is kept offline: its commands need no controller configuration.
    let command = match cli.command {
        Command::Membership(command) => return membership_command(command),
        command => command,
    };
    let config = ControllerConfig::load(&cli.config)?;
    match command {
        Command::Membership(command) => membership_command(command)?,
        Command::Init => {
            let report = commands::init(&config)?;
            for path in &report.created {
                println!("created {}", path.display());
            }
            println!("controller key: {}", report.public_key);
        }
        Command::Check => {
            commands::check(&config)?;
            println!(
                "{}: valid (listen {}, status_listen {}, url {}, {}, database {})",
                cli.config.display(),
                config.listen,
                config.status_listen,
                config.url,
                if config.tls.is_some() {
                    "TLS"
                } else {
                    "plain HTTP"
                },
                config.database
            );
        }
        Command::Serve => runtime()?.block_on(commands::serve(&config, stop_signal()))?,
        Command::Node(node) => node_command(&config, node)?,
        Command::Evaluator(evaluator) => evaluator_command(&config, evaluator)?,
        Command::Invite {
            name,
            addresses,
            endpoint,
            ttl,
        } => println!(
            "{}",
            commands::invite(&config, &name, &addresses, endpoint.as_deref(), ttl)?
        ),
        Command::Status => println!("{}", runtime()?.block_on(commands::status(&config))?),
        Command::Rotate => println!("epoch {}", runtime()?.block_on(commands::rotate(&config))?),
        Command::Key(KeyCommand::New { file }) => {
            println!("{}: new key {}", file.display(), commands::key_new(&file)?);
        }
        Command::Key(KeyCommand::Show) => {
            let keys = commands::key_show(&config)?;
            println!("signing: {}", keys.primary());
            for previous in &keys.keys()[1..] {
                println!("previous: {previous}");
            }
        }
        Command::Migrate {
            from,
            to,
            to_password_file,
        } => {
            let cwd = std::env::current_dir()?;
            let from = Database::parse(&from, &cwd, None).context("--from")?;
            let to = Database::parse(&to, &cwd, to_password_file).context("--to")?;
            let (copied, report) = commands::migrate(&config, &from, &to)?;
            for (table, rows) in copied {
                println!("{table}: {rows} rows");
            }
            println!(
                "copied {from} into {to}; audit log verified there: {} entries, head {}",
                report.chain.entries, report.chain.head_hash
            );
        }
        Command::Backup { file } => {
            let report = commands::backup::backup(&config, &file)?;
            println!(
                "{}: {} backup of {} bytes, mode 0600",
                file.display(),
                report.header.backend_name(),
                report.bytes
            );
            eprintln!("{}: {}", file.display(), commands::backup::SECRETS_NOTICE);
        }
        Command::Restore { file, force } => {
            let (header, report) = commands::backup::restore(&config, &file, force)?;
            println!(
                "restored the backup of {} (created_ms {}) into {}; audit log verified: {} \
                 entries, {} decisions recomputed, head {}",
                file.display(),
                header.created_ms,
                config.database,
                report.chain.entries,
                report.decisions_recomputed,
                report.chain.head_hash
            );
        }
        Command::Audit(AuditCommand::Verify {
            database,
            password_file,
        }) => {
            let report = match database {
                Some(text) => {
                    let db = Database::parse(&text, &std::env::current_dir()?, password_file)
                        .context("--database")?;
                    commands::audit_verify_at(&config, &db)?
                }
                None => commands::audit_verify(&config)?,
            };
            let pruned = match report.chain.pruned_through {
                Some(seq) => format!(" (entries up to {seq} pruned behind a signed checkpoint)"),
                None => String::new(),
            };
            println!(
                "audit log verified: {} entries{pruned}, {} benchmark signatures checked, {} statement signatures checked ({} stored statements), {} peer observation signatures checked ({} stored observations), {} decisions recomputed, {} statements they record matched to signed ones ({} pruned, not checked), head {}",
                report.chain.entries,
                report.chain.signatures_verified,
                report.chain.statement_signatures,
                report.chain.statement_rows_verified,
                report.chain.observation_signatures,
                report.chain.observation_rows_verified,
                report.decisions_recomputed,
                report.chain.decision_statements_matched,
                report.chain.decision_statements_pruned,
                report.chain.head_hash
            );
        }
        Command::Audit(AuditCommand::Show { from, limit }) => {
            let store = meshtun_controller::store::Store::connect(&config.database)?;
            for entry in store.audit_entries(from, limit)? {
                println!("{}", serde_json::to_string(&entry)?);
            }
        }
    }
    Ok(())
}

fn membership_command(command: MembershipCommand) -> Result<()> {
    match command {
        MembershipCommand::Key(MembershipKeyCommand::New { file }) => {
            let public = enrollment_sig::key_new(&file)?;
            println!("{}: new membership key {public}", file.display());
        }
        MembershipCommand::Sign {
            key,
            node,
            wg_key,
            identity_key,
        } => println!(
            "{}",
            enrollment_sig::sign(&key, &node, &wg_key, &identity_key)?
        ),
    }
    Ok(())
}

fn node_command(config: &ControllerConfig, command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Add {
            name,
            wg_key,
            identity_key,
            addresses,
            endpoint,
            membership_sig,
        } => {
            let node = commands::node_add(
                config,
                &name,
                &wg_key,
                &identity_key,
                addresses,
                endpoint,
                membership_sig.as_deref(),
            )?;
            println!("enrolled {}", node.id);
        }
        NodeCommand::List => {
            for n in commands::node_list(config)? {
                let addresses: Vec<String> = n.addresses.iter().map(|a| a.to_string()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    n.id,
                    n.wg_public_key,
                    addresses.join(","),
                    n.endpoint.as_deref().unwrap_or("-"),
                    n.pin.map_or("-", |p| if p == Pin::Allow {
                        "pinned allow"
                    } else {
                        "pinned deny"
                    })
                );
            }
        }
        NodeCommand::Remove { name } => {
            commands::node_remove(config, &name)?;
            println!(
                "removed {name}; with rotate_on_deny the running controller cuts it off within \
                 a second, otherwise at the next epoch"
            );
        }
        NodeCommand::Pin { name, state } => {
            let pin = match state {
                PinArg::Allow => Some(Pin::Allow),
                PinArg::Deny => Some(Pin::Deny),
                PinArg::None => None,
            };
            commands::node_pin(config, &name, pin)?;
            println!("{name}: pin {state:?}");
        }
    }
    Ok(())
}

fn evaluator_command(config: &ControllerConfig, command: EvaluatorCommand) -> Result<()> {
    use commands::evaluators;
    match command {
        EvaluatorCommand::Add {
            name,
            pubkey,
            dimensions,
            group,
        } => {
            let e = evaluators::add(config, &name, &pubkey, dimensions, group)?;
            println!(
                "added evaluator {} for {}; a running controller accepts its statements within a second",
                e.name,
                e.dimensions.join(",")
            );
        }
        EvaluatorCommand::List => {
            let now = meshtun_proto::time::unix_ms();
            for listing in evaluators::list(config)? {
                println!("{}", evaluators::listing_line(&listing, now));
            }
        }
        EvaluatorCommand::Remove { name } => {
            evaluators::remove(config, &name)?;
            println!("removed evaluator {name}; its later statements are refused");
        }
    }
    Ok(())
}
