//! The device as the UAPI server sees it.

use std::io;
use std::sync::Arc;

use crate::device::{Device, DeviceError, TunIo, UdpFactory};
use crate::uapi::{UapiError, UapiHandler};
use crate::wgcfg::{DeviceStatus, DeviceUpdate};

/// Answers `wg` requests from a running device.
pub struct Handler<T: TunIo, F: UdpFactory> {
    device: Arc<Device<T, F>>,
}

impl<T: TunIo, F: UdpFactory> Handler<T, F> {
    /// A handler for `device`.
    pub fn new(device: Arc<Device<T, F>>) -> Self {
        Self { device }
    }
}

/// The UAPI error for a device error: a taken port is `EADDRINUSE`, the rest `EIO`.
fn to_uapi(error: DeviceError) -> UapiError {
    match error {
        DeviceError::Bind { port, source } if source.kind() == io::ErrorKind::AddrInUse => {
            UapiError::PortInUse { port, source }
        }
        other => UapiError::Apply(other.to_string()),
    }
}

impl<T: TunIo, F: UdpFactory> UapiHandler for Handler<T, F> {
    async fn get(&self) -> DeviceStatus {
        self.device.status()
    }

    async fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
        let peers = update.peers.len();
        self.device.update(update).await.map_err(to_uapi)?;
        tracing::info!(peers, "configuration changed over the UAPI");
        Ok(())
    }
}
