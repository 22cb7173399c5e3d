//! `[ha]` of `controller.toml`: this instance's name and the lease length, when several
//! instances share one PostgreSQL database.

use std::time::Duration;

use serde::Deserialize;

use crate::config::in_bounds;

/// `[ha]`: this instance among several on one PostgreSQL database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHa {
    lease: u64,
    instance: Option<String>,
}

impl Default for RawHa {
    fn default() -> Self {
        Self {
            lease: 6,
            instance: None,
        }
    }
}

impl RawHa {
    /// Checks the values; the error names the key.
    pub(crate) fn validate(self) -> Result<HaConfig, (&'static str, String)> {
        in_bounds("ha.lease", self.lease)?;
        let instance = match self.instance {
            Some(name) => {
                check_instance(&name).map_err(|reason| ("ha.instance", reason))?;
                name
            }
            None => default_instance(),
        };
        Ok(HaConfig {
            lease: Duration::from_secs(self.lease),
            instance,
        })
    }
}

/// Longest instance name.
const MAX_INSTANCE_LEN: usize = 64;

fn check_instance(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_INSTANCE_LEN || !name.chars().all(ok) {
        return Err(format!(
            "{name:?} must be 1 to {MAX_INSTANCE_LEN} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// `<hostname>-<pid>`: unique among running instances, new at every start.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_INSTANCE_LEN - 11)
        .collect();
    let host = if host.is_empty() {
        "controller".into()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// `[ha]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// The leader lease's length (see [`crate::ha::lease`] for the timing it implies).
    pub lease: Duration,
    /// This instance's name, unique among the instances (default: hostname and pid).
    pub instance: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[ha]` as the configuration's `validate` sees it: the key and reason of a refusal.
    fn parse(text: &str) -> Result<HaConfig, String> {
        let raw: RawHa = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate()
            .map_err(|(key, reason)| format!("`{key}`: {reason}"))
    }

    fn section(text: &str) -> String {
        text.strip_prefix("[ha]\n").unwrap_or(text).to_owned()
    }

    #[test]
    fn the_ha_section_is_bounded_and_names_the_instance() {
        let c = parse_section("").unwrap();
        assert_eq!(c.lease, Duration::from_secs(6));
        assert!(c.instance.ends_with(&format!("-{}", std::process::id())));
        check_instance(&c.instance).unwrap();
        let c = parse_section("[ha]\nlease = 4\ninstance = \"ctl-1\"\n").unwrap();
        assert_eq!(c.lease, Duration::from_secs(4));
        assert_eq!(c.instance, "ctl-1");
        let err = |t: &str| parse_section(t).unwrap_err();
        assert!(err("[ha]\nlease = 0\n").contains("`ha.lease`"));
        assert!(err("[ha]\nlease = 100000\n").contains("`ha.lease`"));
        assert!(err("[ha]\ninstance = \"\"\n").contains("`ha.instance`"));
        assert!(err("[ha]\ninstance = \"a b\"\n").contains("`ha.instance`"));
        assert!(
            err(&format!("[ha]\ninstance = \"{}\"\n", "x".repeat(65))).contains("`ha.instance`")
        );
        assert!(err("[ha]\nbogus = 1\n").contains("bogus"));
    }

    fn parse_section(text: &str) -> Result<HaConfig, String> {
        parse(&section(text))
    }
}
