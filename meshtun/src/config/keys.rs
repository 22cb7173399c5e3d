//! Key names, in meshtun's TOML spelling and in `wg-quick`'s, for error messages.

use std::path::Path;

use super::ConfigError;

/// Every key of the `[interface]` and `[[peer]]` sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Name,
    PrivateKey,
    PrivateKeyFile,
    Address,
    ListenPort,
    Mtu,
    Fwmark,
    Dns,
    Table,
    Scheduling,
    PreUp,
    PostUp,
    PreDown,
    PostDown,
    PublicKey,
    PresharedKey,
    PresharedKeyFile,
    AllowedIps,
    Endpoint,
    PersistentKeepalive,
}

/// `wg-quick` keys of `[Interface]`. SaveConfig is handled by the importer itself, and there
/// is no `Name`: `wg-quick` names the interface after the file.
const WG_QUICK_INTERFACE: [Field; 11] = [
    Field::PrivateKey,
    Field::Address,
    Field::ListenPort,
    Field::Mtu,
    Field::Fwmark,
    Field::Dns,
    Field::Table,
    Field::PreUp,
    Field::PostUp,
    Field::PreDown,
    Field::PostDown,
];

/// `wg-quick` keys of `[Peer]`.
const WG_QUICK_PEER: [Field; 5] = [
    Field::PublicKey,
    Field::PresharedKey,
    Field::AllowedIps,
    Field::Endpoint,
    Field::PersistentKeepalive,
];

impl Field {
    /// The key in a meshtun TOML file.
    pub(super) fn toml_name(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::PrivateKey => "private_key",
            Field::PrivateKeyFile => "private_key_file",
            Field::Address => "address",
            Field::ListenPort => "listen_port",
            Field::Mtu => "mtu",
            Field::Fwmark => "fwmark",
            Field::Dns => "dns",
            Field::Table => "table",
            Field::Scheduling => "scheduling",
            Field::PreUp => "pre_up",
            Field::PostUp => "post_up",
            Field::PreDown => "pre_down",
            Field::PostDown => "post_down",
            Field::PublicKey => "public_key",
            Field::PresharedKey => "preshared_key",
            Field::PresharedKeyFile => "preshared_key_file",
            Field::AllowedIps => "allowed_ips",
            Field::Endpoint => "endpoint",
            Field::PersistentKeepalive => "persistent_keepalive",
        }
    }

    /// The key in a `wg-quick` file (meshtun-only keys keep their TOML name).
    pub(super) fn wg_quick_name(self) -> &'static str {
        match self {
            Field::PrivateKey => "PrivateKey",
            Field::Address => "Address",
            Field::ListenPort => "ListenPort",
            Field::Mtu => "MTU",
            Field::Fwmark => "FwMark",
            Field::Dns => "DNS",
            Field::Table => "Table",
            Field::PreUp => "PreUp",
            Field::PostUp => "PostUp",
            Field::PreDown => "PreDown",
            Field::PostDown => "PostDown",
            Field::PublicKey => "PublicKey",
            Field::PresharedKey => "PresharedKey",
            Field::AllowedIps => "AllowedIPs",
            Field::Endpoint => "Endpoint",
            Field::PersistentKeepalive => "PersistentKeepalive",
            other => other.toml_name(),
        }
    }

    /// Looks up a `wg-quick` key, case-insensitively, among the keys of `section`.
    pub(super) fn from_wg_quick(key: &str, section: Section) -> Option<Field> {
        let candidates: &[Field] = match section {
            Section::Interface => &WG_QUICK_INTERFACE,
            Section::Peer(_) => &WG_QUICK_PEER,
        };
        candidates
            .iter()
            .copied()
            .find(|field| field.wg_quick_name().eq_ignore_ascii_case(key))
    }

    /// True for keys that may appear several times in a `wg-quick` file.
    pub(super) fn repeatable_in_wg_quick(self) -> bool {
        matches!(
            self,
            Field::Address
                | Field::Dns
                | Field::AllowedIps
                | Field::PreUp
                | Field::PostUp
                | Field::PreDown
                | Field::PostDown
        )
    }
}

/// The section a key belongs to; peers are numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Interface,
    Peer(usize),
}

/// Which file format an error is about, for spelling the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Toml,
    WgQuick,
}

/// Where errors point: the file and the spelling of its keys.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) dialect: Dialect,
}

impl Ctx<'_> {
    /// The key's full name: `interface.mtu`, `peer#2.endpoint`, `Peer#2.Endpoint`.
    pub(super) fn key(&self, section: Section, field: Field) -> String {
        let (interface, peer, name) = match self.dialect {
            Dialect::Toml => ("interface", "peer", field.toml_name()),
            Dialect::WgQuick => ("Interface", "Peer", field.wg_quick_name()),
        };
        match section {
            Section::Interface => format!("{interface}.{name}"),
            Section::Peer(index) => format!("{peer}#{}.{name}", index + 1),
        }
    }

    /// An error about one key's value.
    pub(super) fn invalid(
        &self,
        line: usize,
        section: Section,
        field: Field,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key: self.key(section, field),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_per_dialect() {
        let toml = Ctx {
            path: Path::new("wg0.toml"),
            dialect: Dialect::Toml,
        };
        let ini = Ctx {
            path: Path::new("wg0.conf"),
            dialect: Dialect::WgQuick,
        };
        assert_eq!(toml.key(Section::Interface, Field::Mtu), "interface.mtu");
        assert_eq!(
            toml.key(Section::Peer(1), Field::AllowedIps),
            "peer#2.allowed_ips"
        );
        assert_eq!(
            ini.key(Section::Peer(0), Field::AllowedIps),
            "Peer#1.AllowedIPs"
        );
    }

    #[test]
    fn wg_quick_keys_are_case_insensitive_and_per_section() {
        assert_eq!(
            Field::from_wg_quick("allowedips", Section::Peer(0)),
            Some(Field::AllowedIps)
        );
        assert_eq!(
            Field::from_wg_quick("MTU", Section::Interface),
            Some(Field::Mtu)
        );
        assert_eq!(Field::from_wg_quick("mtu", Section::Peer(0)), None);
        assert_eq!(Field::from_wg_quick("Name", Section::Interface), None);
        assert_eq!(Field::from_wg_quick("PublicKey", Section::Interface), None);
    }
}
