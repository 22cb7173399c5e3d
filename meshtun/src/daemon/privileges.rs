//! `meshtun up --user USER`: started as root, the daemon opens its UAPI socket, tun device
//! and UDP sockets, then becomes USER keeping CAP_NET_ADMIN alone, for the addresses, routes
//! and firewall rules it changes while running and on the way out. The UAPI socket's
//! directory stays root's.
//!
//! Capabilities belong to each thread, so the switch must run on the thread that runs every
//! task: `up` runs on a current-thread runtime when a user is given. Threads started before
//! the switch (the blocking pool's) lose every capability with the user change; threads
//! started after it inherit the switched thread's state.

use std::ffi::CString;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::prctl;
use nix::unistd::{self, Gid, Uid, User};

/// Why switching to the configured user failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user does not exist or cannot be looked up.
    #[error("--user {user}: {reason}")]
    Lookup {
        /// The user name.
        user: String,
        /// Why.
        reason: String,
    },
    /// One step of the switch failed.
    #[error("--user {user}: cannot {step}: {reason}")]
    Step {
        /// The user name.
        user: String,
        /// What was being done.
        step: String,
        /// Why.
        reason: String,
    },
}

/// The user to become.
#[derive(Debug, Clone)]
pub struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
}

impl RunAs {
    /// Looks `name` up in the user database (not through the login name, which systemd
    /// services do not have).
    pub fn lookup(name: &str) -> Result<Self, PrivilegeError> {
        let lookup = |reason: String| PrivilegeError::Lookup {
            user: name.to_owned(),
            reason,
        };
        let user = User::from_name(name)
            .map_err(|e| lookup(format!("cannot read the user database: {e}")))?
            .ok_or_else(|| lookup("no such user".to_owned()))?;
        if user.uid.is_root() {
            return Err(lookup("is root; name an unprivileged user".to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid,
            gid: user.gid,
        })
    }

    fn step(&self, step: &str, reason: impl std::fmt::Display) -> PrivilegeError {
        PrivilegeError::Step {
            user: self.name.clone(),
            step: step.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Creates `dir` if needed and gives it to the user, so that files the daemon writes
    /// there after the switch (state and pid files) stay possible. Never the UAPI socket
    /// directory, where root's `wg` trusts every socket.
    pub fn own_dir(&self, dir: &Path) -> Result<(), PrivilegeError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| self.step(&format!("create {}", dir.display()), e))?;
        unistd::chown(dir, Some(self.uid), Some(self.gid))
            .map_err(|e| self.step(&format!("give {} to the user", dir.display()), e))
    }

    /// Becomes the user on this thread (and, for the ids, the whole process), keeping
    /// CAP_NET_ADMIN as the only capability, also across `exec` (hooks, `nft`).
    pub fn switch(&self) -> Result<(), PrivilegeError> {
        let kept: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
        for cap in caps::all().difference(&kept) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(|e| self.step("limit the capability bounding set", e))?;
        }
        let name =
            CString::new(self.name.as_str()).map_err(|e| self.step("look up the groups", e))?;
        let groups = unistd::getgrouplist(&name, self.gid)
            .map_err(|e| self.step("look up the groups", e))?;
        prctl::set_keepcaps(true).map_err(|e| self.step("keep capabilities", e))?;
        unistd::setgroups(&groups).map_err(|e| self.step("setgroups", e))?;
        unistd::setgid(self.gid).map_err(|e| self.step("setgid", e))?;
        unistd::setuid(self.uid).map_err(|e| self.step("setuid", e))?;
        prctl::set_keepcaps(false).map_err(|e| self.step("reset keep-capabilities", e))?;
        for set in [CapSet::Permitted, CapSet::Effective, CapSet::Inheritable] {
            caps::set(None, set, &kept).map_err(|e| self.step("keep CAP_NET_ADMIN", e))?;
        }
        caps::raise(None, CapSet::Ambient, Capability::CAP_NET_ADMIN)
            .map_err(|e| self.step("pass CAP_NET_ADMIN to hooks", e))?;
        prctl::set_no_new_privs().map_err(|e| self.step("set no_new_privs", e))?;
        if unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(self.step("drop root", "root could be regained"));
        }
        tracing::info!(user = %self.name, uid = %self.uid, "running as an unprivileged user with CAP_NET_ADMIN");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_and_root_are_refused_with_the_name() {
        let err = RunAs::lookup("no-such-user-meshtun")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no-such-user-meshtun") && err.contains("no such user"),
            "{err}"
        );
        let err = RunAs::lookup("root").unwrap_err().to_string();
        assert!(err.contains("is root"), "{err}");
    }
}
