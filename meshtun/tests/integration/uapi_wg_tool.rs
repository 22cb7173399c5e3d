//! The real `wg` tool against meshtun's UAPI server, with an in-memory device.
//!
//! `wg` only looks in /var/run/wireguard, so this needs root. Outside CI it prints a SKIP
//! line and passes when it cannot run; with `CI=true` it fails instead.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use meshtun::gate::{GateStatus, GatedPeerInfo, MembershipState};
use meshtun::uapi::{self, UapiError, UapiHandler};
use meshtun::wgcfg::{AllowedIpChange, DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate};
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};
use parking_lot::Mutex;
use tokio::process::Command;
use tokio::sync::oneshot;

const WG: &str = "wg";
/// Listen port the fake device reports as taken.
const TAKEN_PORT: u16 = 1;
/// Counters and handshake time the fake reports for every peer.
const RX: u64 = 1234;
const TX: u64 = 5678;
const HANDSHAKE_SECS: u64 = 1_700_000_000;

/// A device that keeps its configuration in memory and applies updates as wireguard-go does.
#[derive(Default)]
struct FakeDevice {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    private_key: Option<PrivateKey>,
    listen_port: u16,
    fwmark: u32,
    peers: Vec<PeerStatus>,
    /// Set to report the interface as gated, as a daemon with a controller does.
    gate: Option<GateStatus>,
}

impl UapiHandler for FakeDevice {
    async fn get(&self) -> DeviceStatus {
        let state = self.state.lock();
        let mut status = DeviceStatus {
            name: "fake".into(),
            private_key: state.private_key.clone(),
            listen_port: state.listen_port,
            fwmark: state.fwmark,
            peers: state.peers.clone(),
            gate: None,
        };
        if let Some(gate) = &state.gate {
            gate.attach_to(&mut status);
        }
        status
    }

    async fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
        if update.listen_port == Some(TAKEN_PORT) {
            return Err(UapiError::PortInUse {
                port: TAKEN_PORT,
                source: std::io::Error::from_raw_os_error(libc::EADDRINUSE),
            });
        }
        let mut state = self.state.lock();
        if let Some(key) = update.private_key {
            state.private_key = key;
        }
        state.listen_port = update.listen_port.unwrap_or(state.listen_port);
        state.fwmark = update.fwmark.unwrap_or(state.fwmark);
        if update.replace_peers {
            state.peers.clear();
        }
        for peer in update.peers {
            apply_peer(&mut state.peers, peer);
        }
        Ok(())
    }
}

fn apply_peer(peers: &mut Vec<PeerStatus>, update: PeerUpdate) {
    let index = peers.iter().position(|p| p.public_key == update.public_key);
    if update.remove {
        if let Some(index) = index {
            peers.remove(index);
        }
        return;
    }
    let index = match index {
        Some(index) => index,
        None if update.update_only => return,
        None => {
            peers.push(new_peer(update.public_key));
            peers.len() - 1
        }
    };
    let mut peer = peers.remove(index);
    if let Some(psk) = update.preshared_key {
        peer.preshared_key = psk;
    }
    peer.endpoint = update.endpoint.or(peer.endpoint);
    if let Some(seconds) = update.persistent_keepalive {
        peer.persistent_keepalive = (seconds != 0).then_some(seconds);
    }
    if update.replace_allowed_ips {
        peer.allowed_ips.clear();
    }
    for change in update.allowed_ips {
        match change {
            AllowedIpChange::Add(net) => {
                // A network belongs to one peer only.
                for other in peers.iter_mut() {
                    other.allowed_ips.retain(|n| *n != net);
                }
                peer.allowed_ips.retain(|n| *n != net);
                peer.allowed_ips.push(net);
            }
            AllowedIpChange::Remove(net) => peer.allowed_ips.retain(|n| *n != net),
        }
    }
    peers.insert(index, peer);
}

fn new_peer(public_key: PublicKey) -> PeerStatus {
    PeerStatus {
        endpoint_since: None,
        public_key,
        preshared_key: None,
        endpoint: None,
        last_handshake: Some(UNIX_EPOCH + Duration::from_secs(HANDSHAKE_SECS)),
        rx_bytes: RX,
        tx_bytes: TX,
        persistent_keepalive: None,
        allowed_ips: Vec::new(),
        gate: None,
    }
}

/// Why this test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some(format!(
            "needs root to create sockets in {}",
            uapi::SOCKET_DIR
        ));
    }
    match std::process::Command::new(WG).arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`wg --version` failed: {}", out.status)),
        Err(err) => Some(format!("cannot run `wg`: {err}")),
    }
}

/// Runs `wg args...`, returning stdout; panics with stderr on failure.
async fn wg(args: &[&str]) -> String {
    let out = wg_output(args).await;
    assert!(
        out.status.success(),
        "wg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("wg prints UTF-8")
}

async fn wg_output(args: &[&str]) -> std::process::Output {
    Command::new(WG).args(args).output().await.expect("wg runs")
}

fn write_key(dir: &Path, name: &str, base64: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{base64}\n")).expect("write key file");
    path.to_str().expect("UTF-8 temp path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wg_tool_shows_and_configures_meshtun() {
    if let Some(reason) = missing_prerequisite() {
        if meshtun_testbed::in_ci() {
            panic!("uapi_wg_tool cannot run under CI=true: {reason}");
        }
        eprintln!("SKIP uapi_wg_tool: {reason}");
        return;
    }
    let ifname = format!("mtuapi{}", std::process::id());
    let socket = uapi::bind(&ifname).expect("bind the UAPI socket");
    let path = socket.path().to_owned();
    let device = Arc::new(FakeDevice::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(uapi::serve(socket, Arc::clone(&device), async move {
        let _ = stopped.await;
    }));

    run_scenario(&ifname, &device).await;
    gated_interface_reads_the_same(&ifname, &device).await;

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    assert!(!path.exists(), "the socket is removed on shutdown");
    let out = wg_output(&["show", &ifname]).await;
    assert!(
        !out.status.success(),
        "wg still finds {ifname} after shutdown"
    );
}

async fn run_scenario(ifname: &str, device: &FakeDevice) {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = PrivateKey::generate();
    let peer = PrivateKey::generate().public_key();
    let psk = PresharedKey::generate();
    let private_file = write_key(dir.path(), "private", &private.to_base64());
    let psk_file = write_key(dir.path(), "psk", &psk.to_base64());
    let peer_b64 = peer.to_base64();

    // wg set: every device and peer option.
    wg(&[
        "set",
        ifname,
        "private-key",
        &private_file,
        "listen-port",
        "51820",
        "fwmark",
        "0x10",
        "peer",
        &peer_b64,
        "preshared-key",
        &psk_file,
        "endpoint",
        "[2001:db8::1]:51820",
        "persistent-keepalive",
        "25",
        "allowed-ips",
        "10.0.0.0/24,fd00::/64",
    ])
    .await;
    {
        let state = device.state.lock();
        assert_eq!(state.private_key.as_ref(), Some(&private));
        assert_eq!((state.listen_port, state.fwmark), (51820, 0x10));
        assert_eq!(state.peers.len(), 1);
        assert_eq!(state.peers[0].preshared_key.as_ref(), Some(&psk));
    }

    // wg show and wg showconf read it back.
    let interfaces = wg(&["show", "interfaces"]).await;
    assert!(
        interfaces.split_whitespace().any(|i| i == ifname),
        "{interfaces}"
    );
    let show = wg(&["show", ifname]).await;
    for expected in [
        format!("interface: {ifname}"),
        format!("public key: {}", private.public_key()),
        "listening port: 51820".into(),
        "fwmark: 0x10".into(),
        format!("peer: {peer_b64}"),
        "preshared key: (hidden)".into(),
        "endpoint: [2001:db8::1]:51820".into(),
        "allowed ips: 10.0.0.0/24, fd00::/64".into(),
        "transfer: 1.21 KiB received, 5.54 KiB sent".into(),
        "persistent keepalive: every 25 seconds".into(),
    ] {
        assert!(show.contains(&expected), "missing {expected:?} in:\n{show}");
    }
    let showconf = wg(&["showconf", ifname]).await;
    let expected = format!(
        "[Interface]\nListenPort = 51820\nFwMark = 0x10\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {peer_b64}\nPresharedKey = {}\nAllowedIPs = 10.0.0.0/24, fd00::/64\n\
         Endpoint = [2001:db8::1]:51820\nPersistentKeepalive = 25\n",
        private.to_base64(),
        psk.to_base64()
    );
    assert_eq!(showconf, expected);
    let dump = wg(&["show", ifname, "dump"]).await;
    let peer_line = dump.lines().nth(1).expect("a peer line in the dump");
    assert_eq!(
        peer_line,
        format!(
            "{peer_b64}\t{}\t[2001:db8::1]:51820\t10.0.0.0/24,fd00::/64\t{HANDSHAKE_SECS}\t{RX}\t{TX}\t25",
            psk.to_base64()
        )
    );

    // Replacing allowed IPs, clearing the preshared key, and the error path.
    wg(&[
        "set",
        ifname,
        "peer",
        &peer_b64,
        "allowed-ips",
        "10.1.0.0/16",
        "preshared-key",
        "/dev/null",
    ])
    .await;
    {
        let state = device.state.lock();
        assert_eq!(state.peers[0].allowed_ips, ["10.1.0.0/16".parse().unwrap()]);
        assert!(state.peers[0].preshared_key.is_none());
    }
    let out = wg_output(&["set", ifname, "listen-port", &TAKEN_PORT.to_string()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Address already in use"), "{stderr}");

    sync_and_set_conf(ifname, device, dir.path(), &peer_b64).await;

    wg(&["set", ifname, "peer", &peer_b64, "remove"]).await;
    assert!(!device
        .state
        .lock()
        .peers
        .iter()
        .any(|p| p.public_key == peer));
}

/// wg setconf replaces everything; wg syncconf removes the peers the file no longer names.
async fn sync_and_set_conf(ifname: &str, device: &FakeDevice, dir: &Path, kept: &str) {
    let private = PrivateKey::generate();
    let dropped = PrivateKey::generate().public_key().to_base64();
    let conf = |peers: &[(&str, &str)]| {
        let mut text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 40000\n",
            private.to_base64()
        );
        for (key, ips) in peers {
            text.push_str(&format!(
                "\n[Peer]\nPublicKey = {key}\nAllowedIPs = {ips}\n"
            ));
        }
        text
    };
    let conf_path = dir.join("wg.conf");
    let conf_file = conf_path.to_str().expect("UTF-8 temp path");

    std::fs::write(
        &conf_path,
        conf(&[(kept, "10.2.0.0/16"), (&dropped, "10.3.0.0/16")]),
    )
    .unwrap();
    wg(&["setconf", ifname, conf_file]).await;
    {
        let state = device.state.lock();
        assert_eq!(state.private_key.as_ref(), Some(&private));
        assert_eq!((state.listen_port, state.fwmark), (40000, 0));
        let keys: Vec<String> = state
            .peers
            .iter()
            .map(|p| p.public_key.to_base64())
            .collect();
        assert_eq!(keys, [kept, dropped.as_str()]);
    }

    std::fs::write(&conf_path, conf(&[(kept, "10.4.0.0/16")])).unwrap();
    wg(&["syncconf", ifname, conf_file]).await;
    let state = device.state.lock();
    assert_eq!(state.peers.len(), 1);
    assert_eq!(state.peers[0].public_key.to_base64(), kept);
    assert_eq!(state.peers[0].allowed_ips, ["10.4.0.0/16".parse().unwrap()]);
}

/// A gated interface adds meshtun's keys to the answer to `get`, at device level and in a
/// peer section: `wg show`, `wg show dump` and `wg showconf` print exactly what they print
/// without them, `wg syncconf` (which reads the device first) still works, and meshtun
/// reads the keys back.
async fn gated_interface_reads_the_same(ifname: &str, device: &FakeDevice) {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = PrivateKey::generate();
    let (gated, fixed) = (PrivateKey::generate(), PrivateKey::generate());
    let conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 40001\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.5.0.0/16\nEndpoint = 192.0.2.9:51820\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.6.0.0/16\n",
        private.to_base64(),
        fixed.public_key().to_base64(),
        gated.public_key().to_base64(),
    );
    let conf_path = dir.path().join("gated.conf");
    std::fs::write(&conf_path, &conf).unwrap();
    let conf_file = conf_path.to_str().expect("UTF-8 temp path");
    wg(&["setconf", ifname, conf_file]).await;

    let outputs = || async {
        let show = wg(&["show", ifname]).await;
        // The handshake age may tick between two runs; every other line must be equal.
        let show: String = show
            .lines()
            .filter(|l| !l.contains("latest handshake"))
            .map(|l| format!("{l}\n"))
            .collect();
        let dump = wg(&["show", ifname, "dump"]).await;
        (show, dump, wg(&["showconf", ifname]).await)
    };
    let plain = outputs().await;
    device.state.lock().gate = Some(GateStatus {
        node_id: "node-a".into(),
        controller_url: "http://192.0.2.1:8080/?a=b".into(),
        loss_policy: "fail_closed",
        membership: MembershipState::Denied {
            reason: "overall 0.40 below 0.70\nsecond line = more".into(),
        },
        epoch: Some(42),
        not_after_ms: Some(1_700_000_060_000),
        next_epoch: Some(43),
        last_contact_ms: Some(1_700_000_000_000),
        last_error: Some("timed out".into()),
        peers: vec![GatedPeerInfo {
            forwards_to: Vec::new(),
            node_id: "node-b".into(),
            public_key: gated.public_key(),
            psk_since_ms: 1_699_999_990_000,
            psk_epoch: Some(41),
        }],
        ..GateStatus::default()
    });
    let raw = uapi::request_get(&uapi::socket_path(ifname))
        .await
        .expect("get");
    assert!(raw.contains("\nmeshtun_membership=DENIED\n"), "{}", *raw);
    assert!(
        raw.contains("\nmeshtun_psk_since_ms=1699999990000\nmeshtun_psk_epoch=41\n"),
        "{}",
        *raw
    );
    assert_eq!(
        outputs().await,
        plain,
        "wg prints the same with gating keys"
    );

    let status = uapi::parse_get_reply(ifname, &raw).expect("meshtun reads it");
    let gate = status.gate.expect("the gating state");
    assert_eq!(
        gate.membership.reason(),
        Some("overall 0.40 below 0.70\nsecond line = more")
    );
    assert_eq!(gate.controller_url, "http://192.0.2.1:8080/?a=b");
    let nodes: Vec<Option<String>> = status
        .peers
        .iter()
        .map(|p| p.gate.as_ref().map(|g| g.node_id.clone()))
        .collect();
    assert_eq!(nodes, [None, Some("node-b".to_owned())]);
    let epochs: Vec<Option<u64>> = status
        .peers
        .iter()
        .map(|p| p.gate.as_ref().and_then(|g| g.psk_epoch))
        .collect();
    assert_eq!(epochs, [None, Some(41)]);

    std::fs::write(&conf_path, conf.replace("10.6.0.0/16", "10.7.0.0/16")).unwrap();
    wg(&["syncconf", ifname, conf_file]).await;
    let state = device.state.lock();
    assert_eq!(state.peers[1].allowed_ips, ["10.7.0.0/16".parse().unwrap()]);
}
