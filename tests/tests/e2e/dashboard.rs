//! The controller's dashboard (`/ui`) in a real browser: headless Chromium, started in the
//! controller's namespace of a gated mesh of three (a, b, d) and driven over its DevTools
//! protocol (`meshtun_e2e::browser`).
//!
//! `the_dashboard_shows_a_denial_live_and_no_key_material`:
//! - on the API listener (`listen`), without the token, the page is refused (401) and shows
//!   no node;
//! - with the token, the page lists a, b and d as ALLOWED with their reasons, the epoch, and a
//!   mesh map of the three pairs;
//! - d's score fails: within 2 s of the controller's decision, the page shows d DENIED with
//!   the reason naming its score, without a reload; then the decisions log lists d's denial,
//!   the plot marks it, the map draws d apart with only a–b holding keys, the histogram
//!   has the decision-to-notice samples, and the log row names a and b with the
//!   decision-to-cut-off milliseconds their own `CUTOFF` log lines give (reported by the
//!   nodes), which the nodes' histogram counts;
//! - on the loopback status listener, the page lists the nodes without any token;
//! - no PSK (from `wg show` on every node), node private key, identity key, controller key or
//!   token appears in the DOM or in any response body the page fetched;
//! - a screenshot of the page is saved (`target/e2e-artifacts/dashboard.png`, and where
//!   `MESHTUN_UI_SCREENSHOT` says) and is not blank.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshtun_e2e::browser::{chromium_present, Browser};
use meshtun_e2e::gating::{now_ms, observe, Mesh, Timing, FAILING};
use meshtun_e2e::{require_host, require_root, wait_until, wg};
use serde_json::json;

/// How long after the controller's decision the page must show the denial.
const SHOW_LIMIT_MS: u64 = 2_000;

/// How long the parts read from the store (log, plot) may take to follow.
const HISTORY_WAIT: Duration = Duration::from_secs(15);

/// The rows of the nodes table: `[id, membership, reason]`.
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('#nodes tbody tr')]\
     .map(r => [r.dataset.node, r.dataset.membership, r.querySelector('.reason').textContent]))";

/// How long the nodes' path reports (every 5 s on change) may take to show.
const PATH_WAIT: Duration = Duration::from_secs(20);

/// The path cells of the nodes table: `[id, reported by the node, handed out]`.
const PATH_CELLS: &str = "JSON.stringify([...document.querySelectorAll('#nodes tbody tr')]\
     .map(r => [r.dataset.node, r.querySelector('.reported-path').textContent, \
     r.querySelector('.handed-out').textContent]))";

fn path_cells(browser: &mut Browser) -> Vec<(String, String, String)> {
    let text = browser.eval(PATH_CELLS);
    serde_json::from_str(text.as_str().unwrap_or("[]")).unwrap_or_default()
}

/// The whole DOM as HTML (empty while there is no document element yet).
const DOM: &str = "document.documentElement ? document.documentElement.outerHTML : ''";

fn rows(browser: &mut Browser) -> Vec<(String, String, String)> {
    let text = browser.eval(ROWS);
    serde_json::from_str(text.as_str().unwrap_or("[]")).unwrap_or_default()
}

fn membership(rows: &[(String, String, String)], id: &str) -> Option<String> {
    rows.iter().find(|r| r.0 == id).map(|r| r.1.clone())
}

fn truthy(browser: &mut Browser, expression: &str) -> bool {
    browser.eval(expression) == json!(true)
}

#[test]
fn the_dashboard_shows_a_denial_live_and_no_key_material() {
    let test = "the_dashboard_shows_a_denial_live_and_no_key_material";
    if !require_root(test) || !require_host(test, "chromium", chromium_present()) {
        return;
    }
    let mesh = Mesh::new("dashboard", Timing::default(), &["a", "b", "d"]);
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);
    let home = mesh.home();
    let token = std::fs::read_to_string(home.admin_token_file()).expect("the admin token");
    let token = token.trim().to_owned();
    let url = format!("{}/ui", mesh.instance(0).url());

    let mut browser = Browser::launch(mesh.controller_ns());
    eprintln!("chromium runs as pid {}", browser.pid());

    // --- Without the token: refused ---
    let failed = browser.navigate(&url);
    eprintln!("without the token: {failed:?}");
    let refused = wait_until(Duration::from_secs(10), || {
        browser
            .responses()
            .iter()
            .any(|r| r.url == url && r.status == 401)
    });
    assert!(refused, "no 401 for {url}: {:?}", browser.responses());
    let dom = browser.eval(DOM);
    assert!(
        !dom.as_str().unwrap_or_default().contains("ALLOWED"),
        "the refused page shows nodes: {dom}"
    );

    // --- With the token: every node allowed, with its reason ---
    browser.set_headers(json!({ "Authorization": format!("Bearer {token}") }));
    if let Err(error) = browser.navigate(&url) {
        panic!("loading {url} with the token: {error}");
    }
    let all_allowed = wait_until(Duration::from_secs(10), || {
        let r = rows(&mut browser);
        r.len() == 3 && r.iter().all(|r| r.1 == "ALLOWED" && !r.2.is_empty())
    });
    assert!(
        all_allowed,
        "the page does not list a, b and d as ALLOWED with reasons: {:?}",
        rows(&mut browser)
    );
    let page = browser
        .responses()
        .into_iter()
        .rev()
        .find(|r| r.url == url && r.status == 200)
        .expect("the page's answer");
    let csp = page.headers.get("content-security-policy").cloned();
    assert!(
        csp.as_deref()
            .is_some_and(|c| c.starts_with("default-src 'self'")),
        "{csp:?}"
    );
    assert!(truthy(
        &mut browser,
        "document.getElementById('epoch-current').textContent.startsWith('epoch ')"
    ));
    assert!(truthy(
        &mut browser,
        "document.querySelectorAll('#map line').length === 3"
    ));
    // Each node's own report of its paths: on one switch, both peers direct (admit_all
    // pinged every pair), with the controller's part as a second line.
    let paths_shown = wait_until(PATH_WAIT, || {
        let cells = path_cells(&mut browser);
        cells.len() == 3
            && cells.iter().all(|(_, reported, handed)| {
                reported.starts_with("2 direct · reported ") && handed.starts_with("handed out: ")
            })
    });
    assert!(
        paths_shown,
        "the path cells do not say 2 direct for a, b and d: {:?}",
        path_cells(&mut browser)
    );
    // The PSKs of all three pairs, before d loses its.
    let mut secrets = key_material(&mesh, &token);
    // Set in the page: a reload would lose it.
    browser.eval("window.meshtunMarker = 17; true");

    // --- The denial, live ---
    let failed_at = now_ms();
    mesh.set_score("d", FAILING);
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown_at = loop {
        let r = rows(&mut browser);
        if membership(&r, "d").as_deref() == Some("DENIED") {
            break now_ms();
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed d DENIED: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let denial = ctl
        .denial("d", failed_at)
        .unwrap_or_else(|| panic!("no epoch denying d: {:?}", ctl.rotations()));
    eprintln!(
        "the page showed d DENIED {} ms after the decision (epoch {}, cause {:?})",
        shown_at as i64 - denial.created_ms as i64,
        denial.epoch,
        denial.cause
    );
    assert!(
        shown_at <= denial.created_ms + SHOW_LIMIT_MS,
        "the page showed the denial {} ms after the decision (limit {SHOW_LIMIT_MS})",
        shown_at - denial.created_ms
    );
    assert_eq!(
        browser.eval("window.meshtunMarker"),
        json!(17),
        "the page was reloaded"
    );
    let r = rows(&mut browser);
    let reason = &r.iter().find(|r| r.0 == "d").expect("d's row").2;
    assert!(
        reason.contains("0.10"),
        "d's reason does not name its score: {reason:?}"
    );
    for id in ["a", "b"] {
        assert_eq!(membership(&r, id).as_deref(), Some("ALLOWED"), "{r:?}");
    }

    // --- The log, the plot, the map and the histogram follow ---
    let in_log = format!(
        "[...document.querySelectorAll('#log tbody tr[data-node=\"d\"]')]\
         .some(r => r.textContent.includes('{}') && r.textContent.includes('deny: d') \
         && r.textContent.includes('0.10'))",
        denial.epoch
    );
    let marked = format!(
        "[...document.querySelectorAll('#plot .denied-mark title')]\
         .some(t => t.textContent === 'd denied in epoch {}')",
        denial.epoch
    );
    let followed = wait_until(HISTORY_WAIT, || {
        truthy(&mut browser, &in_log)
            && truthy(&mut browser, &marked)
            && truthy(
                &mut browser,
                "document.querySelectorAll('#plot polyline').length === 3",
            )
    });
    assert!(
        followed,
        "the decisions log or the plot does not show d's denial in epoch {}",
        denial.epoch
    );
    assert!(
        truthy(
            &mut browser,
            "document.querySelector('#nodes tr[data-node=\"d\"] [data-dimension=\"overall\"]')\
             .getAttribute('class') === 'fail'"
        ),
        "d's failing overall score is not marked against the threshold"
    );
    assert!(
        truthy(
            &mut browser,
            "document.querySelectorAll('#map line').length === 1 && \
             document.querySelector('#map g[data-node=\"d\"] circle').getAttribute('class') \
             === 'node-denied'"
        ),
        "the map does not draw d apart with only a-b holding keys"
    );
    assert!(
        wait_until(Duration::from_secs(5), || truthy(
            &mut browser,
            "document.getElementById('histogram').textContent.includes('samples')"
        )),
        "the histogram has no decision-to-notice sample"
    );
    // The nodes' own cut-off times, reported with their paths: the log row of d's denial
    // names a and b with the very milliseconds their `CUTOFF peer=d` lines logged.
    let logged: Vec<(&str, u64)> = [("a", &daemons[0]), ("b", &daemons[1])]
        .into_iter()
        .map(|(id, daemon)| {
            wait_until(Duration::from_secs(10), || {
                observe::cutoffs(&daemon.log(), "d")
                    .iter()
                    .any(Option::is_some)
            });
            let ms = observe::cutoffs(&daemon.log(), "d")
                .into_iter()
                .flatten()
                .last()
                .unwrap_or_else(|| panic!("{id} logged no CUTOFF of d with its time"));
            (id, ms)
        })
        .collect();
    let cut_cell = format!(
        "[...document.querySelectorAll('#log tbody tr[data-node=\"d\"]')]\
         .filter(r => r.children[1].textContent === '{}')\
         .map(r => r.querySelector('.cutoffs').textContent).join('|')",
        denial.epoch
    );
    let wanted: Vec<String> = logged
        .iter()
        .map(|(id, ms)| format!("{id} {ms} ms"))
        .collect();
    let reported = wait_until(PATH_WAIT, || {
        let cell = browser.eval(&cut_cell);
        let cell = cell.as_str().unwrap_or_default();
        wanted.iter().all(|w| cell.contains(w.as_str()))
    });
    assert!(
        reported,
        "the log row of d's denial does not show {wanted:?}: {:?}",
        browser.eval(&cut_cell)
    );
    eprintln!("the nodes' cut-offs of d, as the page shows them: {wanted:?}");
    assert!(
        truthy(
            &mut browser,
            "document.getElementById('node-histogram').textContent.includes('samples')"
        ),
        "the histogram of the nodes' cut-offs has no sample"
    );
    assert!(
        truthy(
            &mut browser,
            "document.querySelector('#nodes tr[data-node=\"a\"]').textContent.includes('served keys of epoch')"
        ),
        "a's PSK epoch is not shown"
    );

    // The browser drops a page's bodies when it leaves it: read them first.
    let mut bodies = browser.bodies();
    let mut doms = vec![browser.eval(DOM).as_str().unwrap_or_default().to_owned()];

    // --- The loopback status listener: served without any token ---
    browser.set_headers(json!({}));
    let local = format!("http://{}/ui", status_listen(&mesh));
    if let Err(error) = browser.navigate(&local) {
        panic!("loading {local} without a token: {error}");
    }
    let listed = wait_until(Duration::from_secs(10), || {
        let r = rows(&mut browser);
        r.len() == 3 && membership(&r, "d").as_deref() == Some("DENIED")
    });
    assert!(
        listed,
        "{local} without a token does not list the nodes: {:?}",
        rows(&mut browser)
    );

    // --- No key material anywhere ---
    secrets.extend(key_material(&mesh, &token));
    secrets.sort();
    secrets.dedup();
    doms.push(browser.eval(DOM).as_str().unwrap_or_default().to_owned());
    bodies.extend(browser.bodies());
    bodies.sort();
    bodies.dedup();
    let data_bodies = bodies
        .iter()
        .filter(|(u, _)| u.ends_with("/ui/data"))
        .count();
    eprintln!(
        "{} responses, {} bodies read ({data_bodies} of /ui/data)",
        browser.responses().len(),
        bodies.len()
    );
    let fetched: HashSet<String> = bodies.iter().map(|(u, _)| u.clone()).collect();
    let bases = [
        mesh.instance(0).url(),
        format!("http://{}", status_listen(&mesh)),
    ];
    for base in &bases {
        for want in ["/ui", "/ui/app.js", "/ui/app.css", "/ui/data"] {
            let full = format!("{base}{want}");
            assert!(
                fetched.contains(&full),
                "no body of {full} read: {fetched:?}"
            );
        }
    }
    eprintln!(
        "checked {} secrets against both pages' DOMs and {} response bodies",
        secrets.len(),
        bodies.len()
    );
    for (what, secret) in &secrets {
        for dom in &doms {
            assert!(!dom.contains(secret.as_str()), "the DOM holds {what}");
        }
        for (url, body) in &bodies {
            assert!(!body.contains(secret.as_str()), "{url} holds {what}");
        }
    }

    // --- Screenshot ---
    let png = browser.screenshot();
    let (colours, busy) = picture_stats(&png);
    let saved = save_screenshot(&png);
    eprintln!("screenshot: {saved:?}: {colours} colours, {busy:.3} of pixels not background");
    assert!(colours >= 16, "the screenshot has {colours} colours");
    assert!(
        busy > 0.05,
        "the screenshot is mostly background ({busy:.3})"
    );
    drop(browser);
}

/// The controller's `status_listen`, from its configuration file.
fn status_listen(mesh: &Mesh) -> String {
    let path = mesh.home().config_file();
    let text = std::fs::read_to_string(path).expect("the controller's configuration");
    let config: toml::Value = toml::from_str(&text).expect("a TOML configuration");
    config["status_listen"]
        .as_str()
        .unwrap_or_else(|| panic!("no status_listen in {}", path.display()))
        .to_owned()
}

/// Every secret the page must not show: the PSKs each node holds (`wg show`), the nodes'
/// WireGuard and identity keys, the controller's key file, and the admin token.
fn key_material(mesh: &Mesh, token: &str) -> Vec<(String, String)> {
    let mut secrets = vec![("the admin token".to_owned(), token.to_owned())];
    for id in ["a", "b", "d"] {
        let node = mesh.node(id);
        secrets.push((format!("{id}'s private key"), node.keys.wg.to_base64()));
        secrets.push((
            format!("{id}'s identity key"),
            node.keys.identity.to_base64(),
        ));
        for peer in wg::dump(&node.ns, &node.iface).peers {
            if let Some(psk) = peer.preshared_key {
                secrets.push((format!("a PSK {id} holds"), psk));
            }
        }
    }
    let key = std::fs::read_to_string(mesh.home().key_file()).expect("the controller key");
    for word in key.split_whitespace().filter(|w| w.len() >= 16) {
        secrets.push(("the controller key".to_owned(), word.to_owned()));
    }
    assert!(
        secrets.iter().any(|(w, _)| w.starts_with("a PSK")),
        "no node holds a PSK: the test would prove nothing"
    );
    secrets
}

/// Distinct colours, and the share of pixels that are neither white nor the page's
/// background.
fn picture_stats(png: &[u8]) -> (usize, f64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("the screenshot is not a PNG");
    let size = reader.output_buffer_size().expect("a screenshot size");
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .expect("an unreadable screenshot");
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let colours: HashSet<&[u8]> = pixels.iter().copied().collect();
    let background = |p: &[u8]| matches!(p[..3], [255, 255, 255] | [247, 248, 250]);
    let busy = pixels.iter().filter(|p| !background(p)).count();
    (colours.len(), busy as f64 / pixels.len().max(1) as f64)
}

/// Saves `png` under `target/e2e-artifacts/`, and where `MESHTUN_UI_SCREENSHOT` names (a
/// path relative to the workspace); the artifact's path.
fn save_screenshot(png: &[u8]) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = workspace.join("target/e2e-artifacts");
    std::fs::create_dir_all(&dir).expect("cannot create target/e2e-artifacts");
    let path = dir.join("dashboard.png");
    std::fs::write(&path, png).expect("cannot save the screenshot");
    if let Some(wanted) = std::env::var_os("MESHTUN_UI_SCREENSHOT") {
        let wanted = workspace.join(wanted);
        std::fs::write(&wanted, png).expect("cannot write MESHTUN_UI_SCREENSHOT");
        eprintln!("screenshot also saved to {}", wanted.display());
    }
    path
}
