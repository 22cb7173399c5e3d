//! Network namespaces and veth links between them. The namespace guard is
//! [`meshtun_testbed::Netns`], the one `meshtun demo` uses; [`Netns`] here adds what tests
//! want of it: a unique name per test, and commands that fail the test when they fail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::run::{self, Output};

/// How long a quick command (`ip`, `wg`, `ping -c 3`) may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A network namespace created for one test and deleted when dropped (by the
/// [`meshtun_testbed::Netns`] it holds, which it derefs to).
///
/// Processes started with [`Netns::spawn`] are remembered; any still registered on drop are
/// killed (by pid) before the namespace is deleted.
#[derive(Debug)]
pub struct Netns(meshtun_testbed::Netns);

impl Deref for Netns {
    type Target = meshtun_testbed::Netns;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Netns {
    /// Creates `mt-<test>-<pid>-<n>` and brings its loopback up. Panics if `ip` fails.
    pub fn new(test: &str) -> Self {
        let short: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(32)
            .collect();
        let name = format!("mt-{short}-{}", crate::unique_suffix());
        Self(meshtun_testbed::Netns::create(name).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The namespace guard itself, for harness code shared with `meshtun demo` (which
    /// returns errors rather than failing the test); it still deletes the namespace on drop.
    pub fn into_inner(self) -> meshtun_testbed::Netns {
        self.0
    }

    /// The inode of the namespace (`net:[INODE]` in `ls -l /proc/PID/ns/net`).
    pub fn inode(&self) -> u64 {
        self.0.inode().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Where meshtun, given the state directory `base`, keeps the state and pid files of
    /// the interfaces of this namespace: `base/netns-INODE`.
    pub fn state_dir_under(&self, base: &Path) -> PathBuf {
        base.join(format!("netns-{}", self.inode()))
    }

    /// A command that runs `program args` inside the namespace (`ip netns exec`). `ip` execs
    /// the program, so the child's pid is the program's.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        self.0.command(program, args)
    }

    /// Runs `args[0] args[1..]` inside the namespace, waiting at most `COMMAND_TIMEOUT`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_timeout(args, COMMAND_TIMEOUT)
    }

    /// Like [`Netns::run`] with an explicit time limit.
    pub fn run_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        let (program, rest) = args.split_first().expect("no command given");
        run::run(&mut self.command(program, rest), timeout)
    }

    /// Runs a command inside the namespace and returns its stdout; panics if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).expect_success()
    }

    /// Runs `ip args` inside the namespace and returns its stdout; panics if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        self.ok(&full)
    }

    /// Whether a network interface called `name` exists in the namespace.
    pub fn has_link(&self, name: &str) -> bool {
        self.run(&["ip", "link", "show", "dev", name]).success()
    }

    /// Every IPv4 and IPv6 route in the namespace (all tables), as `ip route` prints them.
    pub fn routes(&self) -> String {
        let v4 = self.ip(&["-4", "route", "show", "table", "all"]);
        let v6 = self.ip(&["-6", "route", "show", "table", "all"]);
        v4 + &v6
    }

    /// Starts `cmd` (built with [`Netns::command`]) and remembers its pid for cleanup.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        self.0
            .spawn(cmd)
            .unwrap_or_else(|e| panic!("{e}; is it installed?"))
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result.
    ///
    /// Sockets created inside `f` belong to the namespace for their whole life and may be
    /// used from any thread afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.0.enter(f).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Runs `ip args` in the test's own namespace.
fn ip_cmd(args: &[&str]) -> Output {
    run::run(Command::new("ip").args(args), COMMAND_TIMEOUT)
}

/// Creates and deletes a throwaway namespace: can this process use network namespaces?
pub(crate) fn probe() -> Result<(), String> {
    let name = format!("mt-probe-{}", crate::unique_suffix());
    meshtun_testbed::Netns::create(name)
        .and_then(meshtun_testbed::Netns::delete)
        .map_err(|e| e.to_string())
}

/// The outer (transport) address family a test uses between namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 outer addresses.
    V4,
    /// IPv6 outer addresses.
    V6,
}

/// A veth pair joining two namespaces, with outer IPv4 and IPv6 addresses on both ends.
#[derive(Debug, Clone)]
pub struct Veth {
    /// Device name in namespace A.
    pub a_dev: String,
    /// Device name in namespace B.
    pub b_dev: String,
    /// A's IPv4 address (`.1` of the subnet, /24).
    pub a_v4: Ipv4Addr,
    /// B's IPv4 address (`.2`, /24).
    pub b_v4: Ipv4Addr,
    /// A's IPv6 address (`2001:db8:<subnet>::1`, /64).
    pub a_v6: Ipv6Addr,
    /// B's IPv6 address (`2001:db8:<subnet>::2`, /64).
    pub b_v6: Ipv6Addr,
}

/// The IPv4 documentation ranges (RFC 5737), one per veth subnet index.
const V4_SUBNETS: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];

impl Veth {
    /// Connects `a` and `b` with a veth pair on documentation subnet `subnet` (0–2: 192.0.2.0/24,
    /// 198.51.100.0/24, 203.0.113.0/24; IPv6 `2001:db8:<subnet>::/64`). IPv6 addresses are added
    /// `nodad`, so both families are usable at once.
    pub fn connect(a: &Netns, b: &Netns, subnet: usize) -> Self {
        let [x, y, z] = *V4_SUBNETS
            .get(subnet)
            .unwrap_or_else(|| panic!("veth subnet index {subnet} is not 0, 1 or 2"));
        let v6 = |host: u16| Ipv6Addr::new(0x2001, 0xdb8, subnet as u16, 0, 0, 0, 0, host);
        let veth = Self {
            a_dev: format!("va{}", crate::unique_suffix()),
            b_dev: format!("vb{}", crate::unique_suffix()),
            a_v4: Ipv4Addr::new(x, y, z, 1),
            b_v4: Ipv4Addr::new(x, y, z, 2),
            a_v6: v6(1),
            b_v6: v6(2),
        };
        ip_cmd(&[
            "link",
            "add",
            &veth.a_dev,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &veth.b_dev,
            "netns",
            b.name(),
        ])
        .expect_success();
        configure_end(a, &veth.a_dev, veth.a_v4.into(), veth.a_v6.into());
        configure_end(b, &veth.b_dev, veth.b_v4.into(), veth.b_v6.into());
        veth
    }

    /// Sets the MTU of both ends (`a` and `b` are the namespaces given to
    /// [`connect`](Self::connect)).
    pub fn set_mtu(&self, a: &Netns, b: &Netns, mtu: u16) {
        let mtu = mtu.to_string();
        a.ip(&["link", "set", &self.a_dev, "mtu", &mtu]);
        b.ip(&["link", "set", &self.b_dev, "mtu", &mtu]);
    }

    /// A's outer address in `family`.
    pub fn a_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.a_v4.into(),
            Family::V6 => self.a_v6.into(),
        }
    }

    /// B's outer address in `family`.
    pub fn b_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.b_v4.into(),
            Family::V6 => self.b_v6.into(),
        }
    }
}

/// Adds `addr` with its subnet's prefix length (/24 or /64) to `dev` in `ns`; IPv6 `nodad`.
pub fn add_outer_addr(ns: &Netns, dev: &str, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => ns.ip(&["addr", "add", &format!("{a}/24"), "dev", dev]),
        IpAddr::V6(a) => ns.ip(&["addr", "add", &format!("{a}/64"), "dev", dev, "nodad"]),
    };
}

/// Removes `addr` (added by [`add_outer_addr`]) from `dev` in `ns`.
pub fn del_outer_addr(ns: &Netns, dev: &str, addr: IpAddr) {
    let cidr = match addr {
        IpAddr::V4(a) => format!("{a}/24"),
        IpAddr::V6(a) => format!("{a}/64"),
    };
    ns.ip(&["addr", "del", &cidr, "dev", dev]);
}

fn configure_end(ns: &Netns, dev: &str, v4: IpAddr, v6: IpAddr) {
    add_outer_addr(ns, dev, v4);
    add_outer_addr(ns, dev, v6);
    ns.ip(&["link", "set", dev, "up"]);
}
