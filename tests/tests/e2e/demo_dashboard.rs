//! `meshtun demo --dashboard`: the controller's dashboard, served inside its namespace,
//! forwarded to this machine's loopback. While the `--evaluators` story runs, the page and
//! its data answer on the address the demo prints (the CSP header included, node-a, node-b
//! and node-c listed); the narrative tells what the page shows: node-c ALLOWED, then DENIED
//! with the evaluators' scores, then cut off by node-a and node-b with the times they
//! report; after the demo the address no longer answers. A non-loopback address is refused
//! before anything is set up (the page is forwarded without a token).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use meshtun_e2e::{meshtun_bin, require_root, wait_until};

/// The story, with the page forwarded to a port the system picks.
const ARGS: [&str; 8] = [
    "demo",
    "--evaluators",
    "--epoch",
    "5",
    "--duration",
    "24",
    "--dashboard",
    "127.0.0.1:0",
];

/// The most a run may take.
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn lines(out: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    out.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The index of the first line at or after `from` holding every one of `parts`.
fn find(lines: &[String], from: usize, parts: &[&str]) -> Option<usize> {
    (from..lines.len()).find(|&i| parts.iter().all(|p| lines[i].contains(p)))
}

#[test]
fn demo_dashboard_forwards_the_page_and_tells_what_it_shows() {
    if !require_root("demo_dashboard_forwards_the_page_and_tells_what_it_shows") {
        return;
    }
    let _alone = meshtun_e2e::exclusive();
    let mut child = Command::new(meshtun_bin())
        .args(ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start meshtun demo");
    let out: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let out = Arc::clone(&out);
        let pipe = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                out.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        })
    };
    let mut url = None;
    wait_until(Duration::from_secs(60), || {
        url = lines(&out).iter().find_map(|l| {
            let start = l.find("http://127.0.0.1:")?;
            Some(l[start..].split_whitespace().next()?.to_owned())
        });
        url.is_some()
    });
    let url =
        url.unwrap_or_else(|| panic!("no dashboard URL printed:\n{}", lines(&out).join("\n")));
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/ui")
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"));

    // The page and its data, through the forwarder, without a token.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let page = http.get(&url).send().expect("the page answers");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(page.text().unwrap_or_default().contains("app.js"));
    let listed = wait_until(Duration::from_secs(20), || {
        let Ok(data) = http.get(format!("{url}/data")).send() else {
            return false;
        };
        let data: serde_json::Value = data.json().unwrap_or_default();
        data["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });
    assert!(listed, "{url}/data does not list the three nodes");

    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo did not end within {RUN_LIMIT:?}:\n{}",
                lines(&out).join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let lines = lines(&out);
    let transcript = lines.join("\n");
    assert!(
        status.success(),
        "the demo failed ({status}):\n{transcript}"
    );
    let allowed =
        find(&lines, 0, &["dashboard: node-c ALLOWED: overall 0.8"]).unwrap_or_else(|| {
            panic!("the narrative never tells node-c ALLOWED on the page:\n{transcript}")
        });
    let denied = find(
        &lines,
        allowed,
        &["dashboard: node-c DENIED: overall 0.40 (median of 3 evaluators"],
    )
    .unwrap_or_else(|| {
        panic!("the narrative never tells node-c DENIED on the page:\n{transcript}")
    });
    find(
        &lines,
        denied,
        &[
            "dashboard: node-c cut off in epoch",
            "by node-a ",
            "node-b ",
            "ms after the decision",
        ],
    )
    .unwrap_or_else(|| {
        panic!("the narrative never tells node-a and node-b cutting node-c off:\n{transcript}")
    });
    assert!(
        find(&lines, 0, &["dashboard: node-a cut off"]).is_none(),
        "a denied node dropping its peers is told as news:\n{transcript}"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "{addr} still answers after the demo ended"
    );
}

#[test]
fn demo_refuses_to_forward_the_dashboard_off_loopback() {
    for open in ["0.0.0.0:8780", "192.0.2.1:8780"] {
        let out = Command::new(meshtun_bin())
            .args(["demo", "--dashboard", open])
            .output()
            .expect("cannot run meshtun demo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--dashboard {open} was accepted");
        assert!(
            stderr.contains("loopback") && stderr.contains(open),
            "--dashboard {open}: {stderr}"
        );
    }
}
