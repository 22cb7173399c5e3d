//! The `meshtun` command line, as clap definitions. The binary parses it and calls the
//! library; man pages and shell completions are generated from the same definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A userspace WireGuard VPN with membership gating; a replacement for wg-quick.
#[derive(Debug, Parser)]
#[command(name = "meshtun", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. "info" or "meshtun=debug".
    #[arg(long, global = true, env = "MESHTUN_LOG", default_value = "info")]
    pub log: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring up the interface described by CONFIG and run in the foreground until stopped
    /// (SIGTERM, SIGINT or `meshtun down`). SIGHUP rereads CONFIG.
    Up {
        /// The TOML configuration file, e.g. /etc/meshtun/wg0.toml.
        config: PathBuf,
    },
    /// Stop the daemon running the interface, and clean up after one that crashed.
    Down {
        /// An interface name (wg0) or the configuration file it was started from.
        target: String,
    },
    /// Show interfaces, peers, handshakes and transfer counters (no secrets).
    Show {
        /// Only this interface.
        name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a new private key (base64), as `wg genkey`.
    Genkey,
    /// Read a private key on stdin and print its public key, as `wg pubkey`.
    Pubkey,
    /// Print a new preshared key (base64), as `wg genpsk`.
    Genpsk,
    /// Validate CONFIG and report every problem; change nothing.
    Check {
        /// The TOML configuration file.
        config: PathBuf,
    },
    /// Print the meshtun TOML equivalent of a wg-quick configuration file.
    Import {
        /// A wg-quick file such as /etc/wireguard/wg0.conf.
        wg_quick_conf: PathBuf,
    },
    /// Show membership gating live: a controller and three nodes in network namespaces on
    /// this machine (Linux, root). node-c's low score cuts it off; its score recovers
    /// half-way and it is readmitted. Cleans up on exit and on Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
}

/// The options of `meshtun demo`.
#[cfg(feature = "demo")]
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Epoch length in seconds (4 to 300).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub epoch: u64,
    /// Seconds from the first epoch to the end; node-c's score recovers half-way.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub duration: u64,
    /// Keep running after the duration, until Ctrl-C.
    #[arg(long)]
    pub keep_going: bool,
    /// Keep the demo's directory (configurations, keys, logs, the controller's database).
    #[arg(long)]
    pub keep: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_up_and_show() {
        let cli = Cli::try_parse_from(["meshtun", "up", "/etc/meshtun/wg0.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Up { .. }));
        let cli = Cli::try_parse_from(["meshtun", "show", "wg0", "--json"]).unwrap();
        assert!(matches!(cli.command, Command::Show { json: true, .. }));
    }

    #[cfg(feature = "demo")]
    #[test]
    fn parses_demo_with_its_defaults_and_options() {
        let cli = Cli::try_parse_from(["meshtun", "demo"]).unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo: {:?}", cli.command);
        };
        assert_eq!((args.epoch, args.duration), (10, 120));
        assert!(!args.keep_going && !args.keep);
        let cli = Cli::try_parse_from([
            "meshtun",
            "demo",
            "--epoch",
            "5",
            "--duration",
            "60",
            "--keep-going",
            "--keep",
        ])
        .unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo: {:?}", cli.command);
        };
        assert_eq!((args.epoch, args.duration), (5, 60));
        assert!(args.keep_going && args.keep);
    }
}
