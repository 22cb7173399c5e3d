//! macOS utun through tun-rs. No offload and no multi-queue: packets are read one system
//! call each, but as many as are ready go into one batch.
//!
//! This file is compiled only on macOS.

use std::io;

use tun_rs::{AsyncDevice, DeviceBuilder};

use super::TunOptions;
use crate::device::transport::{PacketBatch, TunIo};

/// An open utun device.
pub struct Tun {
    dev: AsyncDevice,
    name: String,
}

impl Tun {
    /// Opens a utun device. The name `utun` lets the kernel pick the unit; `utunN` asks for
    /// that unit.
    pub fn open(opts: &TunOptions) -> io::Result<Self> {
        let mut builder = DeviceBuilder::new().mtu(opts.mtu);
        if opts.name != "utun" {
            builder = builder.name(&opts.name);
        }
        let dev = builder.build_async()?;
        let name = dev.name()?;
        Ok(Self { dev, name })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Always false: utun has no segmentation offload.
    pub fn offload(&self) -> bool {
        false
    }

    /// Always false: utun has no segmentation offload.
    pub fn udp_offload(&self) -> bool {
        false
    }
}

impl TunIo for Tun {
    async fn recv(&self, _lane: usize, batch: &mut PacketBatch) -> io::Result<()> {
        let slot = batch
            .next_slot()
            .ok_or_else(|| io::Error::other("empty tun batch"))?;
        let n = self.dev.recv(slot).await?;
        batch.commit(n);
        while let Some(slot) = batch.next_slot() {
            match self.dev.try_recv(slot) {
                Ok(n) => batch.commit(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn send(&self, _lane: usize, batch: &mut PacketBatch) -> io::Result<()> {
        for i in 0..batch.len() {
            self.dev.send(batch.packet(i)).await?;
        }
        Ok(())
    }
}
