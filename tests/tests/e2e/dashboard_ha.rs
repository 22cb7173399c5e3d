//! The dashboard with two controller instances on one PostgreSQL, in headless Chromium:
//! the page a follower serves names the leader, its term and lease, and itself; when the
//! leader is killed, the same page (no reload) shows the follower leading on a newer term
//! within 2 s of it taking the lease; the nodes' paths, "not reported" on the follower while
//! the nodes use the leader, show on it once they move to it (they report at once to an
//! instance they move to).

use std::time::{Duration, Instant};

use meshtun_e2e::browser::{chromium_present, Browser};
use meshtun_e2e::gating::ha::{takeover_bound, HA_TIMING, LEASE, TWO_INSTANCES};
use meshtun_e2e::gating::{now_ms, Mesh};
use meshtun_e2e::{require_host, require_root, wait_until};
use serde_json::json;

/// How long after the new leader took the lease the page must say so.
const SHOW_LIMIT_MS: u64 = 2_000;

/// How long the nodes may take to report their paths to the new leader (they check every
/// 5 s, and report at once to an instance they moved to).
const PATH_WAIT: Duration = Duration::from_secs(15);

fn text(browser: &mut Browser, id: &str) -> String {
    let expr = format!("(document.getElementById('{id}') || {{}}).textContent || ''");
    browser.eval(&expr).as_str().unwrap_or_default().to_owned()
}

/// The term in the leader line, "ctl-0, term 3, lease 2 s left".
fn term(line: &str) -> Option<u64> {
    line.split(", term ")
        .nth(1)?
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// The reported-path cells of the nodes table.
fn reported_paths(browser: &mut Browser) -> Vec<String> {
    let expr = "JSON.stringify([...document.querySelectorAll('#nodes tbody tr')]\
                .map(r => r.querySelector('.reported-path').textContent))";
    let cells = browser.eval(expr);
    serde_json::from_str(cells.as_str().unwrap_or("[]")).unwrap_or_default()
}

#[test]
fn the_dashboard_follows_the_leader_through_a_failover() {
    let test = "the_dashboard_follows_the_leader_through_a_failover";
    if !require_root(test) || !require_host(test, "chromium", chromium_present()) {
        return;
    }
    let mesh = Mesh::with_backend("dash_ha", HA_TIMING, &["a", "b"], TWO_INSTANCES);
    let mut ctls = mesh.start_cluster();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctls[0], &daemons);
    let token = std::fs::read_to_string(mesh.home().admin_token_file()).expect("the admin token");
    let url = format!("{}/ui", mesh.instance(1).url());

    let mut browser = Browser::launch(mesh.controller_ns());
    browser.set_headers(json!({ "Authorization": format!("Bearer {}", token.trim()) }));
    if let Err(error) = browser.navigate(&url) {
        panic!("loading {url}: {error}");
    }
    // --- The follower's page: ctl-0 leads, ctl-1 serves it ---
    let follower_view = wait_until(Duration::from_secs(15), || {
        let instances = text(&mut browser, "instances");
        text(&mut browser, "leader").starts_with("ctl-0, term ")
            && instances.contains("ctl-0 leads")
            && instances.contains("ctl-1 (this page),")
    });
    let leader_line = text(&mut browser, "leader");
    assert!(
        follower_view,
        "ctl-1's page does not name ctl-0 as the leader and itself as the page's server: \
         {leader_line:?} / {:?}",
        text(&mut browser, "instances")
    );
    let first_term = term(&leader_line).expect("a term in the leader line");
    eprintln!(
        "ctl-1's page: leader {leader_line:?}, instances {:?}",
        text(&mut browser, "instances")
    );
    let listed = wait_until(Duration::from_secs(10), || {
        browser.eval(
            "[...document.querySelectorAll('#nodes tbody tr')].filter(r => r.dataset.membership === 'ALLOWED').length",
        ) == json!(2)
    });
    assert!(
        listed,
        "the follower's page does not list a and b as ALLOWED"
    );
    // Path reports are kept by the instance a node reports to: ctl-0, so far.
    let cells = reported_paths(&mut browser);
    assert!(
        cells.len() == 2 && cells.iter().all(|c| c.starts_with("not reported")),
        "ctl-1 shows paths the nodes reported to ctl-0: {cells:?}"
    );
    browser.eval("window.meshtunMarker = 23; true");

    // --- The leader dies: the same page shows ctl-1 leading ---
    ctls[0].kill();
    let took_over = mesh
        .wait_lease_holder("ctl-1", takeover_bound(LEASE) * 2)
        .unwrap_or_else(|| panic!("ctl-1 did not take over: {:?}", mesh.database().lease()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown_at = loop {
        let line = text(&mut browser, "leader");
        if line.starts_with("ctl-1, term ") && term(&line).is_some_and(|t| t > first_term) {
            break now_ms();
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed ctl-1 leading on a newer term: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "the page showed ctl-1 leading {} ms after it took the lease: {:?}; instances {:?}",
        shown_at as i64 - took_over as i64,
        text(&mut browser, "leader"),
        text(&mut browser, "instances")
    );
    assert!(
        shown_at <= took_over + SHOW_LIMIT_MS,
        "the page showed the new leader {} ms after it took the lease (limit {SHOW_LIMIT_MS})",
        shown_at - took_over
    );
    let instances = text(&mut browser, "instances");
    assert!(
        instances.contains("ctl-1 (this page) leads") && !instances.contains("ctl-0 leads"),
        "{instances:?}"
    );
    assert_eq!(
        browser.eval("window.meshtunMarker"),
        json!(23),
        "the page was reloaded"
    );

    // --- The nodes moved to ctl-1 and report their paths there ---
    let moved_at = Instant::now();
    let reported = wait_until(PATH_WAIT, || {
        let cells = reported_paths(&mut browser);
        cells.len() == 2 && cells.iter().all(|c| c.starts_with("1 direct · reported "))
    });
    assert!(
        reported,
        "the new leader's page does not show the nodes' paths: {:?}",
        reported_paths(&mut browser)
    );
    eprintln!(
        "the nodes' paths shown by ctl-1 {:.1} s after the takeover was seen",
        moved_at.elapsed().as_secs_f64()
    );
    drop(browser);
}
