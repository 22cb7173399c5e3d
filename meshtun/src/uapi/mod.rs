//! The cross-platform WireGuard configuration protocol (UAPI).
