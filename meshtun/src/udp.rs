//! The device's real UDP sockets: quinn-udp for batched receives with GRO and segmented sends
//! with GSO, falling back to one datagram per system call where the platform has neither.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use quinn_udp::{RecvMeta as QuinnMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

use crate::device::transport::{RecvBatch, RecvMeta, UdpFactory, UdpIo, UdpSockets};

/// Datagrams per receive system call.
pub const RECV_BATCH: usize = 32;

/// Socket buffer size asked for (wireguard-go uses 7 MiB); needs CAP_NET_ADMIN to exceed the
/// system's maximum, otherwise the maximum applies.
const SOCKET_BUFFER: usize = 7 << 20;

/// One UDP socket of the device.
pub struct UdpSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

/// Binds the device's sockets on the host's network stack.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostUdp;

impl UdpSocket {
    fn bind(addr: SocketAddr, fwmark: Option<u32>) -> io::Result<Self> {
        let domain = Domain::for_address(addr);
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        #[cfg(target_os = "linux")]
        if let Some(mark) = fwmark.filter(|m| *m != 0) {
            socket.set_mark(mark)?;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = fwmark;
        socket.bind(&addr.into())?;
        let std_socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new((&std_socket).into())?;
        allow_fragmentation(&std_socket, addr.is_ipv6());
        grow_buffers(&std_socket, &state);
        let io = tokio::net::UdpSocket::from_std(std_socket)?;
        Ok(Self { io, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

/// quinn-udp sets "don't fragment"; WireGuard lets the outer packet fragment instead of
/// silently dropping it on a path with a smaller MTU, as the kernel implementation does.
fn allow_fragmentation(socket: &std::net::UdpSocket, v6: bool) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let set = |level, name, value: libc::c_int| {
            // SAFETY: a valid socket fd and a pointer to a c_int that outlives the call.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if v6 {
            set(
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DONT,
            );
        } else {
            set(
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DONT,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, v6);
}

fn grow_buffers(socket: &std::net::UdpSocket, state: &UdpSocketState) {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        let forced = setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_ok()
            && setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_ok();
        if forced {
            return;
        }
    }
    let _ = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER);
    let _ = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER);
}

/// An IPv4-mapped IPv6 source is reported as the IPv4 address it is.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl UdpIo for UdpSocket {
    async fn recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        let mut metas = [QuinnMeta::default(); RECV_BATCH];
        loop {
            self.io.readable().await?;
            let slots = batch.bufs.len().min(RECV_BATCH);
            let result = self.io.try_io(Interest::READABLE, || {
                let mut bufs = batch.bufs.iter_mut();
                let mut iovs: [IoSliceMut<'_>; RECV_BATCH] = std::array::from_fn(|_| {
                    IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..]))
                });
                self.state
                    .recv((&self.io).into(), &mut iovs[..slots], &mut metas[..slots])
            });
            match result {
                Ok(n) => {
                    for (dst, src) in batch.meta.iter_mut().zip(&metas[..n]) {
                        *dst = RecvMeta {
                            src: unmap(src.addr),
                            len: src.len,
                            stride: src.stride,
                        };
                    }
                    batch.count = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(&self, dest: SocketAddr, data: &[u8], segment_size: usize) -> io::Result<()> {
        let transmit = Transmit {
            destination: dest,
            ecn: None,
            contents: data,
            segment_size: (data.len() > segment_size).then_some(segment_size),
            src_ip: None,
        };
        loop {
            self.io.writable().await?;
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.io).into(), &transmit)
            }) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            nix::sys::socket::setsockopt(&self.io, nix::sys::socket::sockopt::Mark, &mark)
                .map_err(io::Error::from)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = mark;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "fwmark is a Linux feature",
            ))
        }
    }
}

impl UdpFactory for HostUdp {
    type Socket = UdpSocket;

    fn bind(&self, port: u16, fwmark: Option<u32>) -> io::Result<UdpSockets<UdpSocket>> {
        // With port 0 the kernel picks the IPv4 port; IPv6 must get the same one, which can
        // be taken: retry a few times with a new pick.
        let mut last_error = None;
        for _ in 0..8 {
            let v4 = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), fwmark)?;
            let chosen = v4.local_addr()?.port();
            match UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, chosen)), fwmark) {
                Ok(v6) => {
                    return Ok(UdpSockets {
                        v4: Some(Arc::new(v4)),
                        v6: Some(Arc::new(v6)),
                        port: chosen,
                    })
                }
                // No IPv6 on this host: run on IPv4 alone.
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    return Ok(UdpSockets {
                        v4: Some(Arc::new(v4)),
                        v6: None,
                        port: chosen,
                    })
                }
                Err(e) if port == 0 && e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::transport::DatagramBatch;

    #[test]
    fn mapped_addresses_are_unmapped() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:51820".parse().unwrap();
        assert_eq!(
            unmap(mapped),
            "192.0.2.7:51820".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert_eq!(unmap(v6), v6);
    }

    #[tokio::test]
    async fn loopback_round_trip_with_segments() {
        let sockets = HostUdp.bind(0, None).unwrap();
        let v4 = sockets.v4.unwrap();
        let dest = SocketAddr::from((Ipv4Addr::LOCALHOST, sockets.port));
        let mut out = DatagramBatch::new(8, 200);
        for i in 0..5u8 {
            out.push(dest, &[i; 100]);
        }
        out.push(dest, &[9; 30]);
        for (d, bytes, seg) in out.runs(v4.max_segments()) {
            v4.send(d, bytes, seg).await.unwrap();
        }
        let mut batch = RecvBatch::new(RECV_BATCH, 65_536);
        let mut got = Vec::new();
        while got.len() < 6 {
            v4.recv(&mut batch).await.unwrap();
            got.extend(batch.datagrams().map(|(src, d)| (src.port(), d.to_vec())));
        }
        assert_eq!(got.len(), 6);
        assert!(got.iter().all(|(port, _)| *port == sockets.port));
        assert_eq!(got[2].1, vec![2; 100]);
        assert_eq!(got[5].1, vec![9; 30]);
    }
}
