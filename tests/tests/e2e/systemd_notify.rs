//! `meshtun up` under systemd (`Type=notify`): it reports READY=1 once the interface is up
//! and the UAPI socket answers, and STOPPING=1 when told to stop. systemd is stood in for by
//! a datagram socket named in `NOTIFY_SOCKET`, as systemd itself passes it.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use meshtun_e2e::config::Node;
use meshtun_e2e::{meshtun_bin, require_root, uapi_answers, uapi_socket, Netns};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    let n = socket
        .recv(&mut buf)
        .expect("no notification from meshtun within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn up_notifies_systemd_when_ready_and_when_stopping() {
    if !require_root("up_notifies_systemd_when_ready_and_when_stopping") {
        return;
    }
    let ns = Netns::new("sdnotify");
    let node = Node::new("n", 1);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = node.config().write_toml(dir.path());
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");

    let bin = meshtun_bin();
    let mut cmd = ns.command(
        bin.to_str().expect("UTF-8 path"),
        &["up", config.to_str().expect("UTF-8 path")],
    );
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .stderr(std::process::Stdio::null());
    let mut child = ns.spawn(&mut cmd);

    let ready = next_message(&notify);
    assert!(ready.lines().any(|l| l == "READY=1"), "got {ready:?}");
    // Ready means serving: the interface exists and `wg` can reach the daemon.
    assert!(
        uapi_answers(&uapi_socket(&node.name)),
        "UAPI not answering at READY"
    );
    assert!(ns.has_link(&node.name), "interface missing at READY");

    let pid = i32::try_from(child.id()).expect("pid fits");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("signal the daemon");
    let stopping = next_message(&notify);
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "got {stopping:?}"
    );
    let status = child.wait().expect("wait for the daemon");
    ns.forget(child.id());
    assert!(status.success(), "meshtun exited with {status}");
    assert!(!ns.has_link(&node.name), "interface left behind");
}
