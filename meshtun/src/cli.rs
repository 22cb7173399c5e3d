//! The `meshtun` command line, as clap definitions. The binary parses it and calls the
//! library; man pages and shell completions are generated from the same definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

/// A userspace WireGuard VPN with membership gating; a replacement for wg-quick.
#[derive(Debug, Parser)]
#[command(name = "meshtun", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. "info" or "meshtun=debug".
    #[arg(long, global = true, env = "MESHTUN_LOG", default_value = "info")]
    pub log: String,

    /// Directory for host-setup state files and pid files (`up`, `down`).
    #[arg(long, global = true, env = "MESHTUN_STATE_DIR", value_name = "DIR",
          default_value = crate::host::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Directory for UAPI sockets (`up`, `down`, `show`); `wg` looks in /var/run/wireguard.
    #[arg(long, global = true, env = "MESHTUN_UAPI_DIR", value_name = "DIR",
          default_value = crate::uapi::SOCKET_DIR)]
    pub uapi_dir: PathBuf,

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
        /// Attach to a tun device created beforehand (`ip tuntap add NAME mode tun user
        /// USER`), leaving its MTU and link state alone and never deleting it. With this,
        /// meshtun needs no capability when the configuration sets no addresses, routes
        /// (`table = "off"`), DNS or fwmark.
        #[arg(long)]
        existing_tun: bool,
        /// Started as root: become USER (its uid, gid and groups) once the UAPI socket, the
        /// tun device and the UDP sockets are open, keeping CAP_NET_ADMIN alone. The state
        /// directory (and its subdirectory for this network namespace) is given to USER;
        /// the UAPI directory stays root's. Linux only.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
    },
    /// Stop the daemon running the interface, and clean up after one that crashed.
    Down {
        /// An interface name (wg0) or the configuration file it was started from.
        target: String,
    },
    /// Show interfaces, peers, handshakes and transfer counters (no secrets); for a gated
    /// interface its membership and controller; and whether each peer answers a ping over
    /// the tunnel.
    Show {
        /// Only this interface.
        name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Do not ping the peers.
        #[arg(long)]
        no_probe: bool,
        /// How long to wait for the peers' replies, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(1..=60_000))]
        probe_timeout: u64,
        /// Colour the states: auto (on a terminal, unless NO_COLOR is set), always or never.
        #[arg(long, value_name = "WHEN", value_enum, default_value_t = crate::show::ColorWhen::Auto)]
        color: crate::show::ColorWhen,
        /// Draw the report again every second until Ctrl-C.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
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
    /// Enroll this node at a controller with an invite TICKET and write its configuration.
    Join(JoinArgs),
    /// Evaluate a node as a registered evaluator: run a harness against it, sign what the
    /// harness prints as a statement, and submit it to the controller. A missing key file
    /// is created (0600) and its public key printed, to register with
    /// `meshtun-controller evaluator add`.
    Evaluate(EvaluateArgs),
    /// Show membership gating live: a controller and three nodes in network namespaces on
    /// this machine (Linux, root). node-c's low score cuts it off; its score recovers
    /// half-way and it is readmitted. With --ha, two controllers on one PostgreSQL, and the
    /// leader is killed on the way. With --nat, every node behind a NAT, found through
    /// STUN, and node-c denied half-way. With --evaluators, node-c's own claim against three
    /// evaluators' statements, which cut it off half-way. Cleans up on exit and on Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
}

/// `meshtun join`'s arguments. `Debug` leaves the ticket out: it carries the invite token.
#[derive(Args)]
pub struct JoinArgs {
    /// The ticket `meshtun-controller invite` printed, or `-` to read it from standard input.
    pub ticket: String,
    /// Where to write the configuration [default: /etc/meshtun/INTERFACE.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The interface name.
    #[arg(long, default_value = "wg0")]
    pub interface: String,
    /// The UDP port to listen on.
    #[arg(long, default_value_t = 51820)]
    pub listen_port: u16,
    /// This node's overlay address (repeatable, or comma-separated); an address the invite
    /// assigns wins.
    #[arg(long = "address", value_name = "CIDR", value_delimiter = ',')]
    pub addresses: Vec<IpNet>,
    /// Where other nodes reach this node; an endpoint the invite sets wins.
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
    /// The benchmark harness and its arguments, split as a shell would (no shell runs it).
    #[arg(long, value_name = "COMMAND", conflicts_with = "simulated")]
    pub benchmark_command: Option<String>,
    /// Simulated scores drawn from N(MEAN, STDDEV) instead of a harness (STDDEV defaults to
    /// 0); for tests.
    #[arg(long, value_name = "MEAN[,STDDEV]")]
    pub simulated: Option<String>,
    /// Replace an existing configuration file.
    #[arg(long)]
    pub force: bool,
    /// The operator's membership signature over this node's keys (`meshtun-controller
    /// membership sign`), for a mesh with a membership key; a join without it prints what
    /// to sign and stops.
    #[arg(long, value_name = "SIGNATURE")]
    pub membership_sig: Option<String>,
}

impl std::fmt::Debug for JoinArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ticket = if self.ticket == "-" {
            "-"
        } else {
            "<redacted>"
        };
        f.debug_struct("JoinArgs")
            .field("ticket", &ticket)
            .field("config", &self.config)
            .field("interface", &self.interface)
            .field("listen_port", &self.listen_port)
            .field("addresses", &self.addresses)
            .field("endpoint", &self.endpoint)
            .field("benchmark_command", &self.benchmark_command)
            .field("simulated", &self.simulated)
            .field("force", &self.force)
            .field("membership_sig", &self.membership_sig)
            .finish()
    }
}

/// `meshtun evaluate`'s arguments.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The node evaluated (its id at the controller); the harness gets it in
    /// MESHTUN_EVALUATE_TARGET.
    #[arg(long, value_name = "NODE")]
    pub target: String,
    /// The harness and its arguments, split as a shell would (no shell runs it). It prints
    /// the scores as a node's `[benchmark]` command does.
    #[arg(long, value_name = "COMMAND")]
    pub command: String,
    /// The controller's URL (repeatable, or comma-separated: its instances, in order).
    #[arg(
        long = "controller",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub controllers: Vec<String>,
    /// The controller's Ed25519 key (base64), pinned; repeatable while it is rotated (the
    /// first is named in the request).
    #[arg(
        long = "controller-key",
        value_name = "KEY",
        value_delimiter = ',',
        required = true
    )]
    pub controller_keys: Vec<String>,
    /// A CA (PEM) to trust for an https controller.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// This evaluator's name, as registered.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// This evaluator's Ed25519 key file (created, mode 0600, if missing).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// Only these of the harness's dimensions (overall, refusal, honesty, policy),
    /// comma-separated; all four by default.
    #[arg(long, value_name = "DIMS", value_delimiter = ',')]
    pub dimensions: Vec<String>,
    /// The harness's time limit, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// The options of `meshtun demo`.
#[cfg(feature = "demo")]
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Epoch length in seconds (4 to 300).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub epoch: u64,
    /// Seconds from the first epoch to the end; node-c's score recovers half-way (with
    /// --nat, drops half-way; with --evaluators, the evaluators judge it half-way)
    /// [default: 120; 30 with --nat or --evaluators].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Keep running after the duration, until Ctrl-C.
    #[arg(long)]
    pub keep_going: bool,
    /// Keep the demo's directory (configurations, keys, logs, the controller's database).
    #[arg(long)]
    pub keep: bool,
    /// High availability: two controllers (ctl-1, ctl-2) on one PostgreSQL database that the
    /// demo starts in a temporary directory (initdb and postgres as `nobody`; needs Debian's
    /// postgresql package). Every node lists both. A third of the way the demo kills the
    /// leader with SIGKILL: the other takes over, the epochs go on, node-c stays cut off, and
    /// node-a and node-b lose no ping (counted at 10 per second each way); node-c recovers at
    /// two thirds. Needs --duration of at least three times (epoch + 15 s).
    #[arg(long)]
    pub ha: bool,
    /// NAT traversal: every node behind its own NAT router namespace (nftables masquerade;
    /// node-c's symmetric, `random,fully-random`), enrolled with no endpoint. The nodes learn
    /// their public addresses from the controller's STUN server; node-a and node-b connect
    /// directly; the demo shows node-c's path and the TURN relay (coturn, started by the
    /// demo: needs Debian's coturn and nftables packages). Half-way node-c's score drops and
    /// it is cut off everywhere.
    #[arg(long, conflicts_with = "ha")]
    pub nat: bool,
    /// Evaluators: node-c claims 0.90 about itself, but the controller takes every node's
    /// overall score from three registered evaluators (e1, e2, e3: the median of at least
    /// 2), each running `meshtun evaluate` with a harness script in the demo's directory.
    /// Half-way their second pass scores node-c 0.40: the demo shows the claim, each
    /// statement, the controller's reason and node-c cut off.
    #[arg(long, conflicts_with_all = ["ha", "nat"])]
    pub evaluators: bool,
    /// The operator's view, with any story: the controller's live dashboard (`/ui`), served
    /// inside its namespace, forwarded to ADDR on this machine's loopback (default
    /// 127.0.0.1:8780; port 0 picks one) for a browser here; the demo prints the URL and
    /// tells what the page shows as it changes (each node's membership and reason, and the
    /// cut-offs the nodes report). Loopback only: the page is served there without a token.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8780")]
    pub dashboard: Option<std::net::SocketAddr>,
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
        assert!(matches!(
            cli.command,
            Command::Show {
                json: true,
                no_probe: false,
                probe_timeout: 1000,
                ..
            }
        ));
    }

    #[test]
    fn runtime_directories_default_to_where_wg_and_down_look() {
        let cli = Cli::try_parse_from(["meshtun", "down", "wg0"]).unwrap();
        assert_eq!(cli.state_dir, PathBuf::from("/run/meshtun"));
        assert_eq!(cli.uapi_dir, PathBuf::from("/var/run/wireguard"));
        let cli = Cli::try_parse_from([
            "meshtun",
            "up",
            "wg0.toml",
            "--state-dir",
            "/tmp/s",
            "--uapi-dir",
            "/tmp/u",
        ])
        .unwrap();
        assert_eq!(cli.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(cli.uapi_dir, PathBuf::from("/tmp/u"));
    }

    #[test]
    fn up_attaches_to_an_existing_tun_only_when_asked() {
        let cli = Cli::try_parse_from(["meshtun", "up", "wg0.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Up {
                existing_tun: false,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["meshtun", "up", "--existing-tun", "wg0.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Up {
                existing_tun: true,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["meshtun", "up", "--user", "meshtun", "wg0.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Up { user: Some(u), .. } if u == "meshtun"));
    }

    #[test]
    fn show_probe_flags() {
        let cli = Cli::try_parse_from(["meshtun", "show", "--no-probe", "--probe-timeout", "250"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Show {
                name: None,
                no_probe: true,
                probe_timeout: 250,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["meshtun", "show", "--watch", "--color", "always"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Show {
                watch: true,
                color: crate::show::ColorWhen::Always,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["meshtun", "show"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Show {
                watch: false,
                color: crate::show::ColorWhen::Auto,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["meshtun", "show", "--watch", "--json"]).is_err());
        assert!(Cli::try_parse_from(["meshtun", "show", "--color", "sometimes"]).is_err());
        for bad in ["0", "60001", "-5", "1s"] {
            let parsed = Cli::try_parse_from(["meshtun", "show", "--probe-timeout", bad]);
            assert!(parsed.is_err(), "--probe-timeout {bad} was accepted");
        }
    }

    #[test]
    fn parses_join_with_its_defaults_and_options() {
        let cli = Cli::try_parse_from(["meshtun", "join", "meshtun-ticket-v1:x"]).unwrap();
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert_eq!(args.ticket, "meshtun-ticket-v1:x");
        // Finding #21: the ticket carries the invite token; `Debug` must not show it.
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("meshtun-ticket-v1:x") && shown.contains("wg0"),
            "{shown}"
        );
        assert_eq!((args.interface.as_str(), args.listen_port), ("wg0", 51820));
        assert!(args.config.is_none() && args.addresses.is_empty() && !args.force);

        let cli = Cli::try_parse_from([
            "meshtun",
            "join",
            "-",
            "--config=/tmp/m/wg1.toml",
            "--interface=wg1",
            "--listen-port=51821",
            "--address=100.64.0.4/24,fd00::4/64",
            "--endpoint=192.0.2.4:51821",
            "--simulated=0.9,0.02",
            "--force",
        ])
        .unwrap();
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert_eq!(args.addresses.len(), 2);
        assert_eq!(args.simulated.as_deref(), Some("0.9,0.02"));
        assert!(args.force);

        let both = Cli::try_parse_from([
            "meshtun",
            "join",
            "t",
            "--simulated=0.9",
            "--benchmark-command=h",
        ]);
        assert!(both.is_err());
        let bad_address = Cli::try_parse_from(["meshtun", "join", "t", "--address=100.64.0.4"]);
        assert!(bad_address.is_err());
    }

    #[cfg(feature = "demo")]
    #[test]
    fn parses_demo_with_its_defaults_and_options() {
        let cli = Cli::try_parse_from(["meshtun", "demo"]).unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo: {:?}", cli.command);
        };
        assert_eq!((args.epoch, args.duration), (10, None));
        assert!(!args.keep_going && !args.keep && !args.ha && !args.nat);
        let cli = Cli::try_parse_from([
            "meshtun",
            "demo",
            "--epoch",
            "5",
            "--duration",
            "60",
            "--keep-going",
            "--keep",
            "--ha",
        ])
        .unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo: {:?}", cli.command);
        };
        assert_eq!((args.epoch, args.duration), (5, Some(60)));
        assert!(args.keep_going && args.keep && args.ha);
        let cli = Cli::try_parse_from(["meshtun", "demo", "--nat"]).unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo: {:?}", cli.command);
        };
        assert!(args.nat && !args.ha);
        assert!(Cli::try_parse_from(["meshtun", "demo", "--nat", "--ha"]).is_err());
        let cli = Cli::try_parse_from(["meshtun", "demo", "--evaluators"]).unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo: {:?}", cli.command);
        };
        assert!(args.evaluators && !args.nat && !args.ha);
        for other in ["--ha", "--nat"] {
            let both = Cli::try_parse_from(["meshtun", "demo", "--evaluators", other]);
            assert!(both.is_err(), "--evaluators with {other}");
        }
    }
}
