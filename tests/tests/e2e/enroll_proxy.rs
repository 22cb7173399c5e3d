//! #10 with the real binaries: `meshtun-controller invite` prints a ticket, `meshtun join`
//! enrolls with it over plain http through a TCP relay on loopback that sees every byte and,
//! in the second test, changes one byte of the controller's answer. Loopback only: no
//! namespace, no root.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use meshtun_e2e::controller::ControllerHome;
use meshtun_e2e::meshtun;

/// The most bytes relayed per connection, and the longest a connection may stay idle.
const RELAY_LIMIT: usize = 1 << 20;
const RELAY_IDLE: Duration = Duration::from_secs(10);

/// A TCP relay to `upstream` that records what clients send and, if `tamper`, changes one
/// base64 character of the answer's signed payload.
struct Relay {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Vec<u8>>>>, tamper: bool) {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0;
    let mut tampered = false;
    while total < RELAY_LIMIT {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n;
        let chunk = &mut buf[..n];
        if let Some(record) = &record {
            record.lock().unwrap().extend_from_slice(chunk);
        }
        if tamper && !tampered {
            let marker = b"\"payload\":\"";
            if let Some(at) = chunk.windows(marker.len()).position(|w| w == marker) {
                let i = at + marker.len() + 20;
                if i < chunk.len() {
                    chunk[i] = if chunk[i] == b'A' { b'B' } else { b'A' };
                    tampered = true;
                }
            }
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    fn start(upstream: SocketAddr, tamper: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        // Serves connections until the test process ends (each bounded in size and idle time).
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for s in [&client, &server] {
                    let _ = s.set_read_timeout(Some(RELAY_IDLE));
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let record = record.clone();
                thread::spawn(move || pump(client, server, Some(record), false));
                thread::spawn(move || pump(s2, c2, None, tamper));
            }
        });
        Self { addr, sent }
    }
}

/// A controller whose tickets name the relay, serving on its own port; the relay; and the
/// running controller (stopped when dropped).
fn setup(tamper: bool) -> (ControllerHome, Relay, meshtun_e2e::controller::Controller) {
    let home =
        ControllerHome::new("[network]\nipv4 = \"100.64.0.0/24\"\nipv6 = \"fd00:64::/64\"\n");
    let listen: SocketAddr = home.url().trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(listen, tamper);
    let text = std::fs::read_to_string(home.config_file()).unwrap();
    let text = text.replace(
        &format!("url = \"http://{listen}\""),
        &format!("url = \"http://{}\"", relay.addr),
    );
    std::fs::write(home.config_file(), text).unwrap();
    home.init();
    let mut controller = home.serve("info", &home.root().join("controller.log"));
    controller.wait_ready();
    (home, relay, controller)
}

#[test]
fn attack_10_a_ticket_from_invite_joins_through_an_observer_that_never_sees_the_token() {
    let (home, relay, _controller) = setup(false);
    let ticket = home.run_ok(&["invite", "node-j"]).trim().to_owned();
    assert!(ticket.starts_with("meshtun-ticket-v2:"), "{ticket}");
    let config = home.root().join("node/wg0.toml");
    let out = meshtun(
        &["join", "-", "--config", config.to_str().unwrap()],
        &ticket,
    );
    let printed = out.expect_success();

    // The controller chose the addresses, and the node pinned the overlay.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"100.64.0.1/24\""), "{printed}\n{text}");
    assert!(text.contains("\"fd00:64::1/64\""), "{text}");
    assert!(
        text.contains("allowed_prefixes = [\"100.64.0.0/24\", \"fd00:64::/64\"]"),
        "{text}"
    );
    // Nothing the relay saw holds the token, in any encoding the ticket could give it.
    let body = &ticket["meshtun-ticket-v2:".len()..];
    let json = base64_decode(body);
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let token = value["token"].as_str().unwrap().to_owned();
    let sent = String::from_utf8_lossy(&relay.sent.lock().unwrap()).into_owned();
    assert!(sent.contains("POST /v1/enroll"), "{sent}");
    assert!(
        !sent.contains(&token),
        "the token crossed the wire:\n{sent}"
    );
    assert!(!sent.contains(body), "the ticket crossed the wire:\n{sent}");
    assert_eq!(home.run_ok(&["node", "list"]).matches("node-j").count(), 1);
}

#[test]
fn attack_10_one_changed_byte_in_the_answer_and_join_writes_nothing() {
    let (home, _relay, _controller) = setup(true);
    let ticket = home.run_ok(&["invite", "node-k"]).trim().to_owned();
    let config = home.root().join("node/wg0.toml");
    let out = meshtun(
        &["join", "-", "--config", config.to_str().unwrap()],
        &ticket,
    );
    assert!(
        !out.success(),
        "join accepted a changed answer:\n{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("not signed by the controller key the ticket pins"),
        "{}",
        out.stderr
    );
    assert!(!config.exists(), "a configuration was written");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}
