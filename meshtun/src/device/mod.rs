//! The WireGuard device.
