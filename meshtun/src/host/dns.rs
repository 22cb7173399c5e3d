//! DNS for the interface, handed to the system's resolver manager: systemd-resolved through
//! `resolvectl`, or `resolvconf` exactly as `wg-quick` calls it.

// Only the Linux implementation configures DNS.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::command::{find_program, run};
use super::{Dns, HostError};

/// systemd-resolved's varlink socket: present while the service runs.
const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";

/// resolvconf's interface order file, whose first `NAME*` pattern gives the name prefix.
const RESOLVCONF_ORDER: &str = "/etc/resolvconf/interface-order";

/// What was handed to the resolver manager, and how to take it back. It names the tool,
/// never its path: the record is read back from the state file, which must not be able to
/// choose a program for root to run. The tool is looked up again when it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum DnsRecord {
    /// Per-link settings in systemd-resolved; undone with `resolvectl revert IFNAME`.
    Resolvectl {},
    /// A resolvconf record; undone with `resolvconf -d NAME -f`.
    Resolvconf {
        /// The record name (`[prefix.]IFNAME`).
        name: String,
    },
}

impl DnsRecord {
    /// The tool's name.
    fn tool(&self) -> &'static str {
        match self {
            DnsRecord::Resolvectl {} => "resolvectl",
            DnsRecord::Resolvconf { .. } => "resolvconf",
        }
    }

    /// The tool's executable, looked up now.
    fn program(&self, ifname: &str) -> Result<PathBuf, HostError> {
        find_program(self.tool()).ok_or_else(|| HostError::DnsUnavailable {
            ifname: ifname.to_owned(),
        })
    }

    /// True when this record could have been written for `ifname`: a resolvconf record
    /// name is the interface name, perhaps after a `prefix.` of letters, digits and `-`.
    pub fn belongs_to(&self, ifname: &str) -> bool {
        match self {
            DnsRecord::Resolvectl {} => true,
            DnsRecord::Resolvconf { name } => match name.strip_suffix(ifname) {
                Some("") => true,
                Some(prefix) => prefix.strip_suffix('.').is_some_and(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }),
                None => false,
            },
        }
    }
}

/// Picks the resolver manager: `resolvectl` when systemd-resolved runs, else `resolvconf`,
/// else `resolvectl` if installed at all (its error then says why it cannot work).
pub fn detect(ifname: &str) -> Result<DnsRecord, HostError> {
    let resolvectl = find_program("resolvectl");
    let resolvconf = find_program("resolvconf");
    let resolved_running = Path::new(RESOLVED_SOCKET).exists();
    match (resolvectl, resolvconf) {
        (Some(_), _) if resolved_running => Ok(DnsRecord::Resolvectl {}),
        (_, Some(_)) => {
            let order = std::fs::read_to_string(RESOLVCONF_ORDER).unwrap_or_default();
            Ok(DnsRecord::Resolvconf {
                name: resolvconf_name(&order, ifname),
            })
        }
        (Some(_), None) => Ok(DnsRecord::Resolvectl {}),
        (None, None) => Err(HostError::DnsUnavailable {
            ifname: ifname.to_owned(),
        }),
    }
}

/// The resolvconf record name: the interface name, prefixed as `wg-quick` does with the
/// first `NAME*` pattern of `/etc/resolvconf/interface-order` (Debian's resolvconf).
pub fn resolvconf_name(interface_order: &str, ifname: &str) -> String {
    let prefix = interface_order.lines().find_map(|line| {
        let name = line.trim().strip_suffix('*')?;
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        valid.then(|| format!("{name}."))
    });
    format!("{}{ifname}", prefix.unwrap_or_default())
}

/// The resolv.conf fragment piped into `resolvconf -a`.
pub fn resolvconf_input(dns: &Dns) -> String {
    let mut text = String::new();
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.search.is_empty() {
        text.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    text
}

/// The `resolvectl domain` arguments: `~.` routes every query to the interface's servers
/// (as `resolvconf -x` does under systemd-resolved), then the search domains.
pub fn resolvectl_domains(dns: &Dns) -> Vec<String> {
    let route_all = (!dns.servers.is_empty()).then(|| "~.".to_owned());
    route_all
        .into_iter()
        .chain(dns.search.iter().cloned())
        .collect()
}

/// Hands `dns` to the resolver manager named by `record`.
pub async fn apply(ifname: &str, dns: &Dns, record: &DnsRecord) -> Result<(), HostError> {
    apply_using(&record.program(ifname)?, ifname, dns, record).await
}

/// [`apply`] with the tool at `program`.
async fn apply_using(
    program: &Path,
    ifname: &str,
    dns: &Dns,
    record: &DnsRecord,
) -> Result<(), HostError> {
    match record {
        DnsRecord::Resolvectl {} => {
            if !dns.servers.is_empty() {
                let servers: Vec<String> = dns.servers.iter().map(ToString::to_string).collect();
                let mut args = vec!["dns", ifname];
                args.extend(servers.iter().map(String::as_str));
                run(ifname, program, &args, None).await?;
            }
            let domains = resolvectl_domains(dns);
            let mut args = vec!["domain", ifname];
            args.extend(domains.iter().map(String::as_str));
            run(ifname, program, &args, None).await?;
        }
        DnsRecord::Resolvconf { name } => {
            let input = resolvconf_input(dns);
            let args = ["-a", name.as_str(), "-m", "0", "-x"];
            run(ifname, program, &args, Some(input.as_bytes())).await?;
        }
    }
    Ok(())
}

/// Takes the DNS settings back.
pub async fn revert(ifname: &str, record: &DnsRecord) -> Result<(), HostError> {
    revert_using(&record.program(ifname)?, ifname, record).await
}

/// [`revert`] with the tool at `program`.
async fn revert_using(program: &Path, ifname: &str, record: &DnsRecord) -> Result<(), HostError> {
    match record {
        DnsRecord::Resolvectl {} => {
            run(ifname, program, &["revert", ifname], None).await?;
        }
        DnsRecord::Resolvconf { name } => {
            run(ifname, program, &["-d", name, "-f"], None).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn dns() -> Dns {
        Dns {
            servers: vec!["192.0.2.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            search: vec!["corp.example".into(), "example.org".into()],
        }
    }

    #[test]
    fn resolvconf_input_lists_servers_then_search() {
        assert_eq!(
            resolvconf_input(&dns()),
            "nameserver 192.0.2.53\nnameserver fd00::53\nsearch corp.example example.org\n"
        );
        let only_servers = Dns {
            servers: vec!["192.0.2.53".parse().unwrap()],
            search: vec![],
        };
        assert_eq!(resolvconf_input(&only_servers), "nameserver 192.0.2.53\n");
    }

    #[test]
    fn resolvconf_name_uses_the_first_wildcard_pattern() {
        let order = "# interface order\nlo.inet6\nlo.inet\ntun*\ntap*\nhso*\n";
        assert_eq!(resolvconf_name(order, "mt0"), "tun.mt0");
        assert_eq!(resolvconf_name("lo.inet\n", "mt0"), "mt0");
        assert_eq!(resolvconf_name("", "mt0"), "mt0");
        assert_eq!(resolvconf_name("*\nwg*\n", "mt0"), "wg.mt0");
    }

    #[test]
    fn resolvectl_routes_all_queries_when_servers_are_set() {
        assert_eq!(
            resolvectl_domains(&dns()),
            vec!["~.", "corp.example", "example.org"]
        );
        let only_search = Dns {
            servers: vec![],
            search: vec!["corp.example".into()],
        };
        assert_eq!(resolvectl_domains(&only_search), vec!["corp.example"]);
    }

    /// A stand-in resolver tool that appends its arguments and input to a log.
    fn fake_tool(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let log = dir.join("log");
        let script = format!(
            "#!/bin/sh\necho \"$0 $*\" | sed 's|.*/||' >> {0}\nif [ \"$1\" = -a ]; then cat >> {0}; fi\n",
            log.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn resolvconf_is_called_as_wg_quick_calls_it() {
        let dir = tempfile::tempdir().unwrap();
        let program = fake_tool(dir.path(), "resolvconf");
        let record = DnsRecord::Resolvconf {
            name: "tun.mt0".into(),
        };
        apply_using(&program, "mt0", &dns(), &record).await.unwrap();
        revert_using(&program, "mt0", &record).await.unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(
            log,
            "resolvconf -a tun.mt0 -m 0 -x\nnameserver 192.0.2.53\nnameserver fd00::53\n\
             search corp.example example.org\nresolvconf -d tun.mt0 -f\n"
        );
    }

    #[tokio::test]
    async fn resolvectl_sets_servers_and_domains_then_reverts() {
        let dir = tempfile::tempdir().unwrap();
        let program = fake_tool(dir.path(), "resolvectl");
        let record = DnsRecord::Resolvectl {};
        apply_using(&program, "mt0", &dns(), &record).await.unwrap();
        revert_using(&program, "mt0", &record).await.unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(
            log,
            "resolvectl dns mt0 192.0.2.53 fd00::53\n\
             resolvectl domain mt0 ~. corp.example example.org\nresolvectl revert mt0\n"
        );
    }

    #[tokio::test]
    async fn a_failing_tool_is_reported_with_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("resolvconf");
        std::fs::write(&program, "#!/bin/sh\necho 'no resolv.conf' >&2\nexit 2\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let record = DnsRecord::Resolvconf { name: "mt0".into() };
        let err = apply_using(&program, "mt0", &dns(), &record)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("interface mt0: `resolvconf -a mt0 -m 0 -x` failed: exit status: 2"),
            "{err}"
        );
        assert!(err.ends_with("no resolv.conf"), "{err}");
    }

    #[test]
    fn a_record_belongs_only_to_its_own_interface() {
        let named = |name: &str| DnsRecord::Resolvconf { name: name.into() };
        assert!(named("mt0").belongs_to("mt0"));
        assert!(named("tun.mt0").belongs_to("mt0"));
        assert!(DnsRecord::Resolvectl {}.belongs_to("mt0"));
        for other in [
            "eth0",
            "tun.eth0",
            "mt",
            ".mt0",
            "a b.mt0",
            "x;y.mt0",
            "eth0.inet",
        ] {
            assert!(!named(other).belongs_to("mt0"), "{other}");
        }
    }

    #[test]
    fn a_recorded_program_path_is_ignored() {
        // Old state files named the tool's path; it must not be what is run.
        let old = r#"{"tool":"resolvconf","program":"/tmp/evil","name":"mt0"}"#;
        let record: DnsRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record, DnsRecord::Resolvconf { name: "mt0".into() });
    }
}
