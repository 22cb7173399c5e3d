//! `[relay]`: the TURN relays (coturn with `use-auth-secret`) whose time-limited
//! credentials the controller puts in each allowed node's bundle (see
//! [`meshtun_proto::relay`]).

use std::path::{Path, PathBuf};

use meshtun_proto::relay::{parse_turn_url, RelaySecret, MAX_RELAY_URLS};

/// `[relay]` as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRelay {
    #[serde(default)]
    urls: Vec<String>,
    secret_file: Option<PathBuf>,
}

/// The validated `[relay]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The relay servers, `turn:HOST:PORT`.
    pub urls: Vec<String>,
    /// The file holding the secret shared with the relays (`static-auth-secret`), 0600.
    pub secret_file: PathBuf,
}

impl RawRelay {
    /// `None` without `urls`; paths are relative to `base`; an error names the key.
    pub(crate) fn validate(
        self,
        base: &Path,
    ) -> Result<Option<RelayConfig>, (&'static str, String)> {
        if self.urls.is_empty() {
            return match self.secret_file {
                None => Ok(None),
                Some(_) => Err(("relay.urls", "name at least one turn:HOST:PORT".into())),
            };
        }
        if self.urls.len() > MAX_RELAY_URLS {
            return Err((
                "relay.urls",
                format!("{} relays; at most {MAX_RELAY_URLS}", self.urls.len()),
            ));
        }
        for url in &self.urls {
            parse_turn_url(url).map_err(|e| ("relay.urls", e.to_string()))?;
        }
        let Some(secret_file) = self.secret_file else {
            return Err((
                "relay.secret_file",
                "required with relay.urls: the file with coturn's static-auth-secret".into(),
            ));
        };
        Ok(Some(RelayConfig {
            urls: self.urls,
            secret_file: base.join(secret_file),
        }))
    }
}

/// What the engine mints relay credentials with.
#[derive(Debug, Clone)]
pub struct RelayIssuer {
    /// The relay servers.
    pub urls: Vec<String>,
    /// The shared secret.
    pub secret: RelaySecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(urls: &[&str], secret: Option<&str>) -> RawRelay {
        RawRelay {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            secret_file: secret.map(PathBuf::from),
        }
    }

    #[test]
    fn relay_section_is_validated() {
        let base = Path::new("/etc/meshtun");
        assert_eq!(raw(&[], None).validate(base), Ok(None));
        let ok = raw(&["turn:198.51.100.1:3478"], Some("relay.secret"))
            .validate(base)
            .unwrap()
            .unwrap();
        assert_eq!(ok.secret_file, Path::new("/etc/meshtun/relay.secret"));
        let err = |r: RawRelay| r.validate(base).unwrap_err().0;
        assert_eq!(
            err(raw(&["turn:198.51.100.1:3478"], None)),
            "relay.secret_file"
        );
        assert_eq!(err(raw(&[], Some("s"))), "relay.urls");
        assert_eq!(
            err(raw(&["turns:198.51.100.1:5349"], Some("s"))),
            "relay.urls"
        );
        assert_eq!(
            err(raw(&["turn:198.51.100.1:3478"; 5], Some("s"))),
            "relay.urls"
        );
    }
}
