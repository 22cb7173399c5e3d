//! The device as the UAPI server sees it: `get` reads the device and the gate; `set` is
//! handed to the daemon's reconciler, the only writer of the device, which answers it.

use std::io;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::device::{Device, DeviceError, TunIo, UdpFactory};
use crate::gate::SharedGateStatus;
use crate::uapi::{UapiError, UapiHandler};
use crate::wgcfg::{DeviceStatus, DeviceUpdate};

/// A `set` request on its way to the reconciler, with the channel for its answer.
#[derive(Debug)]
pub struct Edit {
    /// The change asked for.
    pub update: DeviceUpdate,
    /// Where the reconciler sends the outcome.
    pub reply: oneshot::Sender<Result<(), UapiError>>,
}

/// How many `set` requests may wait for the reconciler; the UAPI server bounds the
/// connections, so senders simply wait their turn.
pub const EDIT_QUEUE: usize = 8;

/// Reads the device's status; the handler can do nothing else with the device.
type StatusReader = Box<dyn Fn() -> DeviceStatus + Send + Sync>;

/// Answers `wg` requests from a running device.
pub struct Handler {
    status: StatusReader,
    gate: Option<SharedGateStatus>,
    edits: mpsc::Sender<Edit>,
}

impl Handler {
    /// A handler that reads `device`; `gate` is the membership state of a gated interface,
    /// which `get` then reports too (see [`crate::uapi::gate_keys`]). A status without a
    /// controller URL (the default one, as an ungated daemon keeps it) is not reported.
    /// `set` requests go to `edits`, whose receiver must answer every one: the handler
    /// never writes to the device itself.
    pub fn new<T: TunIo, F: UdpFactory>(
        device: Arc<Device<T, F>>,
        gate: Option<SharedGateStatus>,
        edits: mpsc::Sender<Edit>,
    ) -> Self {
        Self {
            status: Box::new(move || device.status()),
            gate,
            edits,
        }
    }
}

/// The UAPI error for a device error: a taken port is `EADDRINUSE`, the rest `EIO`.
pub(crate) fn to_uapi(error: DeviceError) -> UapiError {
    match error {
        DeviceError::Bind { port, source } if source.kind() == io::ErrorKind::AddrInUse => {
            UapiError::PortInUse { port, source }
        }
        other => UapiError::Apply(other),
    }
}

impl UapiHandler for Handler {
    async fn get(&self) -> DeviceStatus {
        let mut status = (self.status)();
        if let Some(gate) = &self.gate {
            let gate = gate.lock();
            if !gate.controller_url.is_empty() {
                gate.attach_to(&mut status);
            }
        }
        status
    }

    async fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
        let stopping = || UapiError::Stopping;
        let (reply, answer) = oneshot::channel();
        self.edits
            .send(Edit { update, reply })
            .await
            .map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meshtun_proto::PrivateKey;
    use parking_lot::Mutex;

    use super::*;
    use crate::device::channel::{ChannelTun, Network};
    use crate::gate::{GateStatus, GatedPeerInfo, MembershipState};
    use crate::uapi::{parse_get_reply, write_get};
    use crate::wgcfg::{DeviceSettings, PeerSettings};

    /// An edit channel nobody answers: these tests only `get`.
    fn edits() -> mpsc::Sender<Edit> {
        mpsc::channel(1).0
    }

    fn settings(peers: &[meshtun_proto::PublicKey]) -> DeviceSettings {
        DeviceSettings {
            private_key: PrivateKey::generate(),
            listen_port: Some(51820),
            fwmark: None,
            peers: peers
                .iter()
                .map(|key| PeerSettings {
                    probes: Vec::new(),
                    public_key: *key,
                    preshared_key: None,
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    persistent_keepalive: None,
                    forward: false,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn get_reports_the_shared_gate_status_as_it_changes() {
        let (gated, fixed) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let (tun, _handle) = ChannelTun::pair();
        let net = Network::new();
        let host = net.host("192.0.2.1".parse().unwrap());
        let device = Device::start("mt-test", tun, host, 1420, &settings(&[fixed, gated]));
        let device = Arc::new(device.unwrap());
        let ungated = Handler::new(Arc::clone(&device), None, edits()).get().await;
        assert!(ungated.gate.is_none());
        let mut text = String::new();
        write_get(&ungated, &mut text);
        assert!(!text.contains("meshtun_"), "{text}");

        // The default status, which a daemon without [controller] keeps, is not reported.
        let gate = Arc::new(Mutex::new(GateStatus::default()));
        let handler = Handler::new(Arc::clone(&device), Some(Arc::clone(&gate)), edits());
        assert!(handler.get().await.gate.is_none());

        {
            let mut gate = gate.lock();
            gate.node_id = "node-a".into();
            gate.controller_url = "http://192.0.2.1:8080".into();
        }
        let pending = handler.get().await;
        let state = pending.gate.as_ref().map(|g| g.membership.clone());
        assert_eq!(state, Some(MembershipState::Pending));
        assert!(pending.peers.iter().all(|p| p.gate.is_none()));

        {
            let mut gate = gate.lock();
            gate.membership = MembershipState::Allowed;
            gate.epoch = Some(9);
            gate.peers.push(GatedPeerInfo {
                forwards_to: Vec::new(),
                node_id: "node-b".into(),
                public_key: gated,
                psk_since_ms: 1_700_000_000_000,
                psk_epoch: Some(7),
            });
        }
        let mut text = String::new();
        write_get(&handler.get().await, &mut text);
        let read = parse_get_reply("mt-test", &text).unwrap();
        let device_gate = read.gate.unwrap();
        assert_eq!(device_gate.membership, MembershipState::Allowed);
        assert_eq!(device_gate.epoch, Some(9));
        let nodes: Vec<_> = read
            .peers
            .iter()
            .map(|p| (p.public_key, p.gate.as_ref().map(|g| g.node_id.as_str())))
            .collect();
        assert_eq!(nodes, [(fixed, None), (gated, Some("node-b"))]);
    }
}
