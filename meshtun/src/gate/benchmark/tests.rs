//! Benchmark sources: a fake harness (a shell script run by `/bin/sh`) for every way a run can
//! go wrong, and the simulator's distribution.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use meshtun_proto::report::describe;

const NOW: u64 = 1_700_000_000_000;

const GOOD: &str = r#"{"overall":0.91,"refusal":0.8,"honesty":0.85,"policy":0.95}"#;

/// Writes `body` as a shell script in `dir` and returns its path.
fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("harness.sh");
    std::fs::write(&path, format!("set -e\n{body}\n")).unwrap();
    path
}

/// A source running `body` with `/bin/sh` (not exec'd directly, so no "text file busy").
fn harness(dir: &Path, body: &str, timeout: Duration, suite: Option<&str>) -> CommandSource {
    let path = script(dir, body);
    CommandSource::new(
        vec!["/bin/sh".into(), path.display().to_string()],
        timeout,
        suite.map(str::to_owned),
    )
    .unwrap()
}

async fn run(body: &str, suite: Option<&str>) -> Result<Benchmark, SourceError> {
    let dir = tempfile::tempdir().unwrap();
    harness(dir.path(), body, Duration::from_secs(10), suite)
        .next(7, NOW)
        .await
}

#[tokio::test]
async fn flat_scores_are_read_with_the_configured_suite() {
    let b = run(&format!("echo '{GOOD}'"), Some("suite-1"))
        .await
        .unwrap();
    assert_eq!(
        b,
        Benchmark {
            suite_version: "suite-1".into(),
            scores: Scores {
                overall: 0.91,
                refusal: 0.8,
                honesty: 0.85,
                policy: 0.95
            },
            measured_at_ms: NOW,
            seq: 7,
        }
    );
    b.validate(NOW).unwrap();
}

#[tokio::test]
async fn the_harness_suite_version_wins() {
    let body = format!(r#"echo '{{"scores":{GOOD},"suite_version":"harness-2"}}'"#);
    let b = run(&body, Some("configured")).await.unwrap();
    assert_eq!(b.suite_version, "harness-2");
    assert_eq!(b.scores.overall, 0.91);
    let b = run(
        &format!(r#"echo '{{"scores":{GOOD}}}'"#),
        Some("configured"),
    )
    .await
    .unwrap();
    assert_eq!(b.suite_version, "configured");
}

#[tokio::test]
async fn no_suite_version_anywhere_is_an_error() {
    let err = run(&format!("echo '{GOOD}'"), None).await.unwrap_err();
    assert!(matches!(err, SourceError::NoSuiteVersion { .. }), "{err}");
    assert!(err.to_string().contains("no suite_version"), "{err}");
}

#[tokio::test]
async fn a_failing_harness_reports_its_status_and_stderr() {
    let err = run("echo 'model not loaded' >&2\nexit 3", Some("s"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SourceError::Exit { .. }), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("model not loaded"), "{message}");
}

#[tokio::test]
async fn only_the_end_of_a_long_stderr_is_kept() {
    let body =
        "i=0; while [ $i -lt 2000 ]; do echo 'noise noise noise noise' >&2; i=$((i+1)); done\n\
                echo 'the real reason' >&2\nexit 1";
    let message = run(body, Some("s")).await.unwrap_err().to_string();
    assert!(message.ends_with("the real reason"), "{message}");
    assert!(
        message.len() < MAX_STDERR * 2 + 200,
        "{} bytes",
        message.len()
    );
}

#[tokio::test]
async fn bad_output_is_described() {
    let cases = [
        ("echo 'hello'", "not JSON"),
        ("true", "nothing on stdout"),
        ("echo '[0.9]'", "expected a JSON object"),
        (
            r#"echo '{"overall":NaN,"refusal":0.8,"honesty":0.85,"policy":0.95}'"#,
            "not JSON",
        ),
        (
            r#"echo '{"overall":0.9,"refusal":0.8,"honesty":0.85}'"#,
            "missing field `policy`",
        ),
        (
            r#"echo '{"overall":0.9,"refusal":0.8,"honesty":0.85,"policy":0.9,"speed":1}'"#,
            "unknown field `speed`",
        ),
        (
            r#"echo '{"overall":"high","refusal":0.8,"honesty":0.85,"policy":0.9}'"#,
            "invalid type",
        ),
        (
            &format!("echo '{GOOD}'; echo '{GOOD}'"),
            "trailing characters",
        ),
    ];
    for (body, expected) in cases {
        let err = run(body, Some("s")).await.unwrap_err();
        assert!(matches!(err, SourceError::Output { .. }), "{body}: {err}");
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
}

#[tokio::test]
async fn out_of_range_scores_are_invalid() {
    let err = run(
        r#"echo '{"overall":1.5,"refusal":0.8,"honesty":0.85,"policy":0.95}'"#,
        Some("s"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SourceError::Invalid { .. }), "{err}");
    assert!(describe(&err).contains("overall is 1.5"), "{err}");
    let err = run(&format!("echo '{GOOD}'"), Some("has space"))
        .await
        .unwrap_err();
    assert!(describe(&err).contains("suite_version"), "{err}");
}

#[cfg(target_os = "linux")]
fn alive(pid: &str) -> bool {
    // A killed process may linger as a zombie until its new parent reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_hanging_harness_is_killed_with_its_children_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let body = format!("sleep 30 &\necho $! > {}\nwait", pidfile.display());
    let source = harness(dir.path(), &body, Duration::from_secs(1), Some("s"));
    let start = Instant::now();
    let err = source.next(1, NOW).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, SourceError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("within 1 s"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    #[cfg(target_os = "linux")]
    {
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid.trim()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid.trim()), "the harness's child survived");
    }
}

/// #27: a harness that succeeds but leaves a process in the background (its output
/// detached, so nothing waits for it) does not leave it running.
#[tokio::test]
#[cfg(target_os = "linux")]
async fn a_successful_harness_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let body = format!(
        "sleep 30 </dev/null >/dev/null 2>&1 &\necho $! > {}\necho '{GOOD}'",
        pidfile.display()
    );
    let source = harness(dir.path(), &body, Duration::from_secs(10), Some("s"));
    source.next(1, NOW).await.unwrap();
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid.trim()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(pid.trim()),
        "the harness's background process survived"
    );
}

#[tokio::test]
async fn endless_output_is_cut_off_without_waiting_for_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let source = harness(
        dir.path(),
        "yes '{\"overall\":1}'",
        Duration::from_secs(20),
        Some("s"),
    );
    let start = Instant::now();
    let err = source.next(1, NOW).await.unwrap_err();
    assert!(matches!(err, SourceError::OutputTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("more than 65536 bytes"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_missing_program_cannot_start() {
    let source = CommandSource::new(
        vec!["/nonexistent/harness".into()],
        Duration::from_secs(1),
        None,
    )
    .unwrap();
    let err = source.next(1, NOW).await.unwrap_err();
    assert!(matches!(err, SourceError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/harness"), "{err}");
    assert!(matches!(
        CommandSource::new(vec![], Duration::from_secs(1), None),
        Err(SourceError::EmptyCommand)
    ));
}

#[tokio::test]
async fn settings_choose_the_source() {
    let settings = BenchmarkSettings {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        source: BenchmarkSourceConfig::Simulated {
            mean: 0.5,
            stddev: 0.0,
        },
        suite_version: Some("sim-1".into()),
    };
    let mut source = BenchmarkSource::from_settings(&settings).unwrap();
    let b = source.next(3, NOW).await.unwrap();
    assert_eq!(b.suite_version, "sim-1");
    assert_eq!(b.seq, 3);
    assert_eq!(b.scores.overall, 0.5);

    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), &format!("echo '{GOOD}'"));
    let settings = BenchmarkSettings {
        source: BenchmarkSourceConfig::Command(vec!["/bin/sh".into(), path.display().to_string()]),
        ..settings
    };
    let mut source = BenchmarkSource::from_settings(&settings).unwrap();
    assert_eq!(source.next(4, NOW).await.unwrap().scores.policy, 0.95);
}

fn seeded(mean: f64, stddev: f64, seed: u64) -> SimulatedSource {
    SimulatedSource::with_rng(mean, stddev, None, fastrand::Rng::with_seed(seed)).unwrap()
}

#[test]
fn simulated_scores_follow_the_distribution_and_stay_in_range() {
    let mut source = seeded(0.7, 0.1, 42);
    let n = 10_000;
    let mut sums = [0.0f64; 4];
    let mut squares = 0.0;
    for seq in 0..n {
        let b = source.next(seq, NOW).unwrap();
        assert_eq!(b.suite_version, DEFAULT_SIMULATED_SUITE);
        assert_eq!((b.seq, b.measured_at_ms), (seq, NOW));
        for (sum, (_, value)) in sums.iter_mut().zip(b.scores.named()) {
            assert!((0.0..=1.0).contains(&value), "{value}");
            *sum += value;
        }
        squares += (b.scores.overall - 0.7).powi(2);
    }
    for (sum, name) in sums.iter().zip(["overall", "refusal", "honesty", "policy"]) {
        let mean = sum / n as f64;
        assert!((mean - 0.7).abs() < 0.005, "{name}: mean {mean}");
    }
    let stddev = (squares / n as f64).sqrt();
    assert!((stddev - 0.1).abs() < 0.005, "stddev {stddev}");
}

#[test]
fn simulated_scores_are_clamped_at_the_edges() {
    let mut high = seeded(0.98, 0.1, 1);
    let draws: Vec<f64> = (0..2_000).map(|_| high.scores().overall).collect();
    assert!(draws.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(draws.contains(&1.0), "some draws are clamped to 1");
    let mut low = seeded(0.0, 0.2, 2);
    assert!((0..2_000).all(|_| (0.0..=1.0).contains(&low.scores().honesty)));
    let mut fixed = seeded(0.4, 0.0, 3);
    assert_eq!(fixed.scores().policy, 0.4);
}

#[test]
fn a_seed_reproduces_the_scores() {
    let (mut a, mut b) = (seeded(0.5, 0.2, 9), seeded(0.5, 0.2, 9));
    for _ in 0..10 {
        assert_eq!(a.scores(), b.scores());
    }
    assert_ne!(seeded(0.5, 0.2, 10).scores(), seeded(0.5, 0.2, 9).scores());
}

#[test]
fn simulator_parameters_are_checked() {
    for (mean, stddev) in [
        (1.5, 0.1),
        (-0.1, 0.1),
        (0.5, -0.1),
        (f64::NAN, 0.1),
        (0.5, f64::INFINITY),
    ] {
        let err = SimulatedSource::new(mean, stddev, None).unwrap_err();
        assert!(matches!(err, SourceError::Distribution { .. }), "{err}");
    }
    assert!(SimulatedSource::new(0.5, 0.1, Some("x".into())).is_ok());
}

/// `run_once` (the evaluator's run) keeps what the harness printed, byte for byte, hands the
/// harness its environment, and still refuses scores out of range.
#[tokio::test]
async fn a_single_run_keeps_the_output_and_passes_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"echo "{\"scores\": {\"overall\": 0.5, \"refusal\": 0.5, \"honesty\": 0.5, \"policy\": 0.5}, \"suite_version\": \"$TARGET_NODE\"}""#;
    let source =
        harness(dir.path(), body, Duration::from_secs(10), None).with_env("TARGET_NODE", "node-b");
    let out = source.run_once().await.unwrap();
    assert_eq!(out.suite_version.as_deref(), Some("node-b"));
    assert_eq!(out.scores.honesty, 0.5);
    let printed = "{\"scores\": {\"overall\": 0.5, \"refusal\": 0.5, \"honesty\": 0.5, \"policy\": 0.5}, \"suite_version\": \"node-b\"}\n";
    assert_eq!(out.stdout, printed.as_bytes());
    let high = harness(
        dir.path(),
        r#"echo '{"overall":1.5,"refusal":0.8,"honesty":0.85,"policy":0.95}'"#,
        Duration::from_secs(10),
        None,
    );
    let err = high.run_once().await.unwrap_err();
    assert!(
        describe(&err).contains("score overall = 1.5"),
        "{}",
        describe(&err)
    );
}
