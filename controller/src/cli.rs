//! The `meshtun-controller` command line (clap definitions).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

/// Decides which nodes may be in a meshtun mesh and hands out their keys.
#[derive(Debug, Parser)]
#[command(name = "meshtun-controller", version, about, long_about = None)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "MESHTUN_CONTROLLER_CONFIG",
        default_value = "/etc/meshtun/controller.toml"
    )]
    pub config: PathBuf,

    /// Log filter (tracing syntax), e.g. "info" or "meshtun_controller=debug".
    #[arg(long, global = true, env = "MESHTUN_LOG", default_value = "info")]
    pub log: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state directory, the controller key, the admin token and the database.
    Init,
    /// Validate the configuration file and the TLS files it names, changing nothing.
    Check,
    /// Run the controller until SIGTERM or SIGINT.
    Serve,
    /// Enroll, list, remove or pin nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Register, list or remove evaluators: Ed25519 identities that sign statements about
    /// nodes (`meshtun evaluate`).
    #[command(subcommand)]
    Evaluator(EvaluatorCommand),
    /// Print a one-time, expiring ticket with which a node joins (`meshtun join TICKET`).
    Invite {
        /// The node id the ticket is for.
        name: String,
        /// Overlay addresses to assign (otherwise the node's request decides).
        #[arg(long = "address")]
        addresses: Vec<IpNet>,
        /// Endpoint to assign (`host:port`).
        #[arg(long)]
        endpoint: Option<String>,
        /// Validity in seconds (default: the configuration's `api.invite_ttl`).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Print the running controller's status.
    Status,
    /// Ask the running controller to publish a new epoch now.
    Rotate,
    /// Make a new controller key, or show the keys in use (README "Rotating the controller
    /// key").
    #[command(subcommand)]
    Key(KeyCommand),
    /// Inspect and check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The operator's offline membership key: make one, sign a node's enrollment (README
    /// "Security model"). Needs no configuration file.
    #[command(subcommand)]
    Membership(MembershipCommand),
    /// Copy an SQLite database (which may be in use) into a new, empty PostgreSQL database,
    /// then verify the audit chain there with the configuration's controller key.
    Migrate {
        /// The source: `sqlite:///path/controller.db` or a path.
        #[arg(long)]
        from: String,
        /// The target: `postgres://user@host/db?sslmode=…` (it must be empty).
        #[arg(long)]
        to: String,
        /// The file holding the target's password (mode 0600), if it needs one.
        #[arg(long)]
        to_password_file: Option<PathBuf>,
    },
    /// Write a consistent snapshot of the database, taken while the controller runs, to a
    /// new file (mode 0600). It holds the epoch secrets: keep it as private as the key.
    Backup {
        /// The file to create (never over an existing one).
        file: PathBuf,
    },
    /// Restore a backup into the configured database of a stopped controller (a new one),
    /// then verify its audit chain.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace a database that is not empty.
        #[arg(long)]
        force: bool,
    },
}

/// `node …`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Enroll a node directly.
    Add {
        /// Node id: 1 to 64 characters from a-z 0-9 - _ .
        name: String,
        /// Its WireGuard public key (base64).
        #[arg(long)]
        wg_key: String,
        /// Its Ed25519 identity key (base64).
        #[arg(long)]
        identity_key: String,
        /// Overlay addresses.
        #[arg(long = "address", required = true)]
        addresses: Vec<IpNet>,
        /// Where other nodes reach it (`host:port`).
        #[arg(long)]
        endpoint: Option<String>,
        /// The membership signature over the node's id and keys (`membership sign`);
        /// required when `[membership] public_key` is set.
        #[arg(long)]
        membership_sig: Option<String>,
    },
    /// List enrolled nodes.
    List,
    /// Remove a node; with rotate_on_deny an allowed node is cut off at once by a new epoch.
    Remove {
        /// Node id.
        name: String,
    },
    /// Pin a node's membership, or clear the pin.
    Pin {
        /// Node id.
        name: String,
        /// allow, deny or none.
        state: PinArg,
    },
}

/// `evaluator …`.
#[derive(Debug, Subcommand)]
pub enum EvaluatorCommand {
    /// Register an evaluator: its statements are accepted for these dimensions only.
    Add {
        /// Its name: 1 to 64 characters from a-z 0-9 - _ . (never reused once removed).
        name: String,
        /// Its Ed25519 public key (base64), as `meshtun evaluate` prints it.
        pubkey: String,
        /// The dimensions it may score, comma-separated (e.g. honesty,refusal).
        #[arg(long, value_delimiter = ',', required = true)]
        dimensions: Vec<String>,
        /// A group a policy may name it by.
        #[arg(long)]
        group: Option<String>,
    },
    /// List evaluators: name, key, group, dimensions, last statement, state.
    List,
    /// Remove an evaluator: its later statements are refused; its row and statements stay
    /// for the audit.
    Remove {
        /// Its name.
        name: String,
    },
}

/// A pin on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PinArg {
    /// Always allowed.
    Allow,
    /// Always denied.
    Deny,
    /// No pin.
    None,
}

/// `key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new Ed25519 key to FILE (mode 0600; an existing file is never overwritten)
    /// and print its public half, for the nodes to pin beside the current key.
    New {
        /// Where to write it.
        file: PathBuf,
    },
    /// Print the public half of the configured key and the configuration's previous keys.
    Show,
}

/// `membership …`.
#[derive(Debug, Subcommand)]
pub enum MembershipCommand {
    /// Make a membership key.
    #[command(subcommand)]
    Key(MembershipKeyCommand),
    /// Print the membership signature over a node's id, WireGuard key and identity key.
    Sign {
        /// The membership key file.
        #[arg(long)]
        key: PathBuf,
        /// The node id.
        #[arg(long)]
        node: String,
        /// Its WireGuard public key (base64).
        #[arg(long)]
        wg_key: String,
        /// Its Ed25519 identity key (base64).
        #[arg(long)]
        identity_key: String,
    },
}

/// `membership key …`.
#[derive(Debug, Subcommand)]
pub enum MembershipKeyCommand {
    /// Write a new membership key to FILE (mode 0600; an existing file is never
    /// overwritten) and print its public half, for `[membership] public_key` and the nodes'
    /// `[controller] membership_key`.
    New {
        /// Where to write it.
        file: PathBuf,
    },
}

/// `audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain, check every benchmark signature and re-decide every
    /// decision from its recorded inputs.
    Verify {
        /// The database to check (`sqlite:///…`, a path or `postgres://…`) instead of the
        /// configuration's.
        #[arg(long)]
        database: Option<String>,
        /// The file holding that database's password, if it needs one.
        #[arg(long, requires = "database")]
        password_file: Option<PathBuf>,
    },
    /// Print audit entries as JSON lines.
    Show {
        /// First entry to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
