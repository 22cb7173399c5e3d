//! Each node's files in the demo's directory: its WireGuard key, its identity key and its
//! configuration (`[interface]`, `[controller]`, `[benchmark]` with simulated scores).

use std::path::{Path, PathBuf};

use meshtun_proto::{IdentityPublic, PrivateKey, PublicKey};

use super::plan::{
    controllers, NodeSpec, BENCHMARK_INTERVAL_SECS, LISTEN_PORT, PREFIX_LEN, STDDEV,
};
use super::DemoError;
use crate::config::load_or_create_identity;
use meshtun_proto::private_file::{write as write_private_file, Replace};

/// The public keys of a node whose files were written, for its enrollment.
#[derive(Debug, Clone)]
pub struct NodeKeys {
    /// Its WireGuard public key.
    pub wg_public_key: PublicKey,
    /// Its Ed25519 identity key, with which it signs its requests.
    pub identity_key: IdentityPublic,
}

/// The files of one node in the demo's directory.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// The configuration file.
    pub config: PathBuf,
    /// Where its daemon's log goes.
    pub log: PathBuf,
}

impl NodeFiles {
    /// The files of `node` in `dir`.
    pub fn new(dir: &Path, node: &NodeSpec) -> Self {
        Self {
            config: dir.join(format!("{}.toml", node.id)),
            log: dir.join(format!("{}.log", node.id)),
        }
    }
}

/// The controllers a node's configuration lists: with `--ha` both, in order (the node
/// moves to the next when it loses its current one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSettings<'a> {
    /// The controllers' key, which the node pins.
    pub controller_key: &'a IdentityPublic,
    /// Whether both controllers run.
    pub ha: bool,
}

/// The `url` value: one string, or a list with `ha`.
fn url_value(ha: bool) -> String {
    let urls: Vec<String> = controllers(ha)
        .iter()
        .map(|c| format!("\"{}\"", c.url()))
        .collect();
    match urls.as_slice() {
        [one] => one.clone(),
        all => format!("[{}]", all.join(", ")),
    }
}

/// The configuration of `node` with interface `ifname`, pinning the controller key, with
/// simulated scores of mean `mean`. Key, identity and cache files are named relative to the
/// configuration's directory.
pub fn config_text(node: &NodeSpec, ifname: &str, settings: NodeSettings<'_>, mean: f64) -> String {
    format!(
        "# {id} of `meshtun demo`\n\
         [interface]\n\
         name = \"{ifname}\"\n\
         private_key_file = \"{id}.key\"\n\
         address = [\"{tunnel}/{PREFIX_LEN}\"]\n\
         listen_port = {LISTEN_PORT}\n\
         \n\
         [controller]\n\
         url = {url}\n\
         public_key = \"{key}\"\n\
         node_id = \"{id}\"\n\
         identity_key_file = \"{id}.identity\"\n\
         cache_file = \"{id}.bundle\"\n\
         \n\
         [benchmark]\n\
         interval = {BENCHMARK_INTERVAL_SECS}\n\
         simulated = {{ mean = {mean:.2}, stddev = {STDDEV:.2} }}\n\
         suite_version = \"demo\"\n",
        id = node.id,
        tunnel = node.tunnel,
        url = url_value(settings.ha),
        key = settings.controller_key.to_base64(),
    )
}

/// Writes `node`'s keys (mode 0600) and configuration into `dir`, with scores of mean
/// `mean`; returns the public keys to enroll.
pub fn write_node(
    dir: &Path,
    node: &NodeSpec,
    ifname: &str,
    settings: NodeSettings<'_>,
    mean: f64,
) -> Result<NodeKeys, DemoError> {
    let wg = PrivateKey::generate();
    let key_file = dir.join(format!("{}.key", node.id));
    let mut text = zeroize::Zeroizing::new(wg.to_base64());
    text.push('\n');
    write_private_file(&key_file, text.as_bytes(), Replace::Never)
        .map_err(|source| DemoError::io(format!("cannot write {}", key_file.display()), source))?;
    let identity = load_or_create_identity(&dir.join(format!("{}.identity", node.id)))?;
    write_config(dir, node, ifname, settings, mean)?;
    Ok(NodeKeys {
        wg_public_key: wg.public_key(),
        identity_key: identity.key.public(),
    })
}

/// Writes (or atomically replaces) `node`'s configuration with scores of mean `mean`.
pub fn write_config(
    dir: &Path,
    node: &NodeSpec,
    ifname: &str,
    settings: NodeSettings<'_>,
    mean: f64,
) -> Result<(), DemoError> {
    let path = NodeFiles::new(dir, node).config;
    let text = config_text(node, ifname, settings, mean);
    write_private_file(&path, text.as_bytes(), Replace::Atomically)
        .map_err(|source| DemoError::io(format!("cannot write {}", path.display()), source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BenchmarkSourceConfig, Config};
    use crate::demo::plan::{NODES, RECOVERED_MEAN};
    use meshtun_proto::IdentityKey;
    use std::time::Duration;

    #[test]
    fn the_written_configuration_is_what_meshtun_up_reads() {
        let dir = tempfile::tempdir().unwrap();
        let controller = IdentityKey::generate().public();
        let node = &NODES[1];
        let settings = NodeSettings {
            controller_key: &controller,
            ha: false,
        };
        let keys = write_node(dir.path(), node, "mtdemo42b", settings, node.mean).unwrap();

        let config = Config::load(&NodeFiles::new(dir.path(), node).config).unwrap();
        assert_eq!(config.interface.name, "mtdemo42b");
        assert_eq!(
            config.interface.private_key.public_key(),
            keys.wg_public_key
        );
        assert_eq!(
            config.interface.addresses,
            ["100.64.0.2/24".parse().unwrap()]
        );
        assert_eq!(config.interface.listen_port, Some(51820));
        assert!(
            config.peers.is_empty(),
            "every peer comes from the controller"
        );
        assert!(config.permission_warnings().is_empty());

        let ctl = config.controller.unwrap();
        assert_eq!(ctl.urls, ["http://192.0.2.10:8700"]);
        assert_eq!(ctl.public_keys.keys(), [controller]);
        assert_eq!(ctl.node_id, "node-b");
        assert_eq!(ctl.identity_key_file, dir.path().join("node-b.identity"));
        assert_eq!(ctl.cache_file, dir.path().join("node-b.bundle"));
        let identity = load_or_create_identity(&ctl.identity_key_file).unwrap();
        assert!(!identity.created);
        assert_eq!(identity.key.public(), keys.identity_key);

        let bench = config.benchmark.unwrap();
        assert_eq!(bench.interval, Duration::from_secs(2));
        assert_eq!(
            bench.source,
            BenchmarkSourceConfig::Simulated {
                mean: 0.85,
                stddev: 0.02
            }
        );
    }

    #[test]
    fn rewriting_changes_only_the_mean() {
        let dir = tempfile::tempdir().unwrap();
        let controller = IdentityKey::generate().public();
        let node = &NODES[2];
        let settings = NodeSettings {
            controller_key: &controller,
            ha: true,
        };
        write_node(dir.path(), node, "mtdemo42c", settings, node.mean).unwrap();
        let path = NodeFiles::new(dir.path(), node).config;
        let before = Config::load(&path).unwrap();
        assert_eq!(
            before.controller.as_ref().unwrap().urls,
            ["http://192.0.2.10:8700", "http://192.0.2.11:8700"],
            "with --ha a node lists both controllers"
        );
        write_config(dir.path(), node, "mtdemo42c", settings, RECOVERED_MEAN).unwrap();
        let after = Config::load(&path).unwrap();
        assert_eq!(
            after.benchmark.as_ref().unwrap().source,
            BenchmarkSourceConfig::Simulated {
                mean: 0.90,
                stddev: 0.02
            }
        );
        assert_eq!(after.interface, before.interface);
        assert_eq!(after.controller, before.controller);
        assert!(after.permission_warnings().is_empty());
    }

    #[test]
    fn keys_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let controller = IdentityKey::generate().public();
        let settings = NodeSettings {
            controller_key: &controller,
            ha: false,
        };
        write_node(dir.path(), &NODES[0], "mtdemo42a", settings, 0.9).unwrap();
        let err = write_node(dir.path(), &NODES[0], "mtdemo42a", settings, 0.9).unwrap_err();
        assert!(err.to_string().contains("node-a.key"), "{err}");
    }
}
