//! `meshtun join` into a mesh whose operator holds a membership key (the ticket names its
//! public half). The operator signs each node's keys offline, and the node's keys are made
//! here, so the join takes two runs:
//! 1. without `--membership-sig`: the WireGuard key is made and kept in a pending key file
//!    beside the configuration (mode 0600; the identity key file is kept as always), and the
//!    join stops before anything is sent, printing the command the operator runs on the
//!    machine with the membership key ([`JoinError::SignatureNeeded`]);
//! 2. with `--membership-sig SIG`: the same keys are read back, the signature is checked
//!    against the ticket's membership key (a wrong one stops the join before anything is
//!    sent), the node enrolls with it, and the configuration is written with
//!    `[controller] membership_key`; the pending key file is then removed.
//!
//! A controller with the key refuses an enrollment without a valid signature, so leaving
//! step 1 out gains nothing.

use std::io;
use std::path::{Path, PathBuf};

use meshtun_proto::membership::MembershipSig;
use meshtun_proto::private_file::{self, Replace};
use meshtun_proto::wire::Ticket;
use meshtun_proto::{IdentityPublic, PrivateKey};

use super::JoinError;

/// The largest pending key file read (a key is 44 characters).
const MAX_KEY_FILE: usize = 1024;

/// The pending WireGuard key file of the configuration at `config`: `CONFIG.pending-key`.
pub(super) fn pending_key_path(config: &Path) -> PathBuf {
    let mut name = config.as_os_str().to_owned();
    name.push(".pending-key");
    PathBuf::from(name)
}

/// The WireGuard key of a join into a mesh with a membership key: the one an earlier run
/// left at `path`, or a new one written there (0600). `None` if the ticket names no
/// membership key (the join then makes its key in memory, as always).
pub(super) fn pending_key(ticket: &Ticket, path: &Path) -> Result<Option<PrivateKey>, JoinError> {
    if ticket.membership_key.is_none() {
        return Ok(None);
    }
    let failed = |reason: String| JoinError::PendingKey {
        file: path.to_path_buf(),
        reason,
    };
    match private_file::read_limited(path, MAX_KEY_FILE) {
        Ok(Some(bytes)) => {
            let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
            return PrivateKey::from_base64(text.trim())
                .map(Some)
                .map_err(|e| failed(e.to_string()));
        }
        Ok(None) => return Err(failed(format!("larger than {MAX_KEY_FILE} bytes"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e.to_string())),
    }
    let key = PrivateKey::generate();
    let text = zeroize::Zeroizing::new(format!("{}\n", key.to_base64()));
    private_file::write(path, text.as_bytes(), Replace::Never)
        .map_err(|e| failed(e.to_string()))?;
    Ok(Some(key))
}

/// The signature to enroll with: checked against the ticket's membership key when it names
/// one (required then), passed on as given otherwise.
pub(super) fn check(
    ticket: &Ticket,
    sig: Option<MembershipSig>,
    (wg, identity): (&PrivateKey, &IdentityPublic),
    pending: &Path,
) -> Result<Option<MembershipSig>, JoinError> {
    let Some(key) = &ticket.membership_key else {
        return Ok(sig);
    };
    let wg_key = wg.public_key();
    let Some(sig) = sig else {
        return Err(JoinError::SignatureNeeded {
            node: ticket.node_id.clone(),
            wg_key,
            identity: *identity,
            pending: pending.to_path_buf(),
        });
    };
    key.verify(&ticket.node_id, &wg_key, identity, &sig)
        .map_err(|e| JoinError::MembershipSig {
            node: ticket.node_id.clone(),
            reason: e.to_string(),
        })?;
    Ok(Some(sig))
}
