//! Benchmark sources: where the scores a node submits come from.
//!
//! **Command.** The configured program runs with its arguments (no shell), standard input
//! closed, in a process group of its own, under a time limit. It must exit with status 0 and
//! print one JSON object on standard output, either the four scores
//!
//! ```json
//! {"overall": 0.91, "refusal": 0.88, "honesty": 0.93, "policy": 0.90}
//! ```
//!
//! or the scores with the suite version that produced them
//!
//! ```json
//! {"scores": {"overall": 0.91, "refusal": 0.88, "honesty": 0.93, "policy": 0.90},
//!  "suite_version": "harness-2.1"}
//! ```
//!
//! Each score is a JSON number in `[0, 1]` (JSON has no NaN). The suite version printed by the
//! harness wins over the configured one; one of the two must be there. At most
//! [`MAX_STDOUT`] bytes of standard output are read; the last [`MAX_STDERR`] bytes of standard
//! error are kept for the error message. A run that does not finish in time, or prints too
//! much, is killed with its whole process group, and reaped.
//!
//! **Simulated.** Each of the four scores is drawn independently from a normal distribution
//! `N(mean, stddev)` and clamped to `[0, 1]`, as the proof of concept's Gaussian emitter did
//! for its configurable per-node mean. The suite version defaults to `"simulated"`.
//!
//! Either source yields a [`Benchmark`] stamped with the given sequence number and time,
//! checked with [`Benchmark::validate`]; anything wrong is a [`SourceError`] and nothing is
//! submitted.

use std::process::Stdio;
use std::time::Duration;

use meshtun_proto::wire::{Benchmark, BenchmarkError, Scores};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::config::{BenchmarkSettings, BenchmarkSourceConfig};

/// The most standard output read from a harness.
pub const MAX_STDOUT: usize = 64 * 1024;

/// How much of the end of a harness's standard error is kept for the error message.
pub const MAX_STDERR: usize = 2 * 1024;

/// The suite version of simulated scores when none is configured.
pub const DEFAULT_SIMULATED_SUITE: &str = "simulated";

/// Why no benchmark was produced.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The command line is empty.
    #[error("the benchmark command is empty")]
    EmptyCommand,
    /// The program could not be started.
    #[error("cannot start the benchmark command `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading its output or waiting for it failed.
    #[error("running the benchmark command `{program}` failed")]
    Io {
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time; it was killed.
    #[error("the benchmark command `{program}` did not finish within {} s; it was killed", .timeout.as_secs_f64())]
    Timeout {
        /// The program.
        program: String,
        /// The time limit.
        timeout: Duration,
    },
    /// It printed more than [`MAX_STDOUT`] bytes; it was killed.
    #[error("the benchmark command `{program}` printed more than {MAX_STDOUT} bytes on stdout; it was killed")]
    OutputTooLarge {
        /// The program.
        program: String,
    },
    /// It exited unsuccessfully.
    #[error("the benchmark command `{program}` failed ({status}); stderr: {stderr}")]
    Exit {
        /// The program.
        program: String,
        /// How it ended (`exit status: 3`, `signal: 9 (SIGKILL)`).
        status: String,
        /// The end of its standard error, escaped, or `(empty)`.
        stderr: String,
    },
    /// Its standard output is not scores in the documented JSON format.
    #[error("the benchmark command `{program}` printed no valid scores: {reason}")]
    Output {
        /// The program.
        program: String,
        /// What is wrong.
        reason: String,
    },
    /// Neither the harness nor the configuration gave a suite version.
    #[error("the benchmark command `{program}` printed no suite_version and [benchmark] suite_version is not set")]
    NoSuiteVersion {
        /// The program.
        program: String,
    },
    /// The scores or the suite version are out of bounds.
    #[error("the benchmark from {origin} is invalid")]
    Invalid {
        /// `the benchmark command \`…\`` or `the simulator`.
        origin: String,
        /// What is wrong.
        #[source]
        source: BenchmarkError,
    },
    /// The simulator's parameters are out of range.
    #[error(
        "simulated scores need a mean and a standard deviation in [0, 1], not {mean} and {stddev}"
    )]
    Distribution {
        /// The mean.
        mean: f64,
        /// The standard deviation.
        stddev: f64,
    },
}

/// A source of benchmarks: a harness command, or simulated scores.
#[derive(Debug)]
pub enum BenchmarkSource {
    /// Runs a harness.
    Command(CommandSource),
    /// Draws scores from a normal distribution (boxed: it holds the generator's state).
    Simulated(Box<SimulatedSource>),
}

impl BenchmarkSource {
    /// The source the `[benchmark]` section describes.
    pub fn from_settings(settings: &BenchmarkSettings) -> Result<Self, SourceError> {
        let suite = settings.suite_version.clone();
        match &settings.source {
            BenchmarkSourceConfig::Command(argv) => Ok(Self::Command(CommandSource::new(
                argv.clone(),
                settings.timeout,
                suite,
            )?)),
            BenchmarkSourceConfig::Simulated { mean, stddev } => Ok(Self::Simulated(Box::new(
                SimulatedSource::new(*mean, *stddev, suite)?,
            ))),
        }
    }

    /// Produces the next benchmark, numbered `seq` and measured at `now_ms`. It passes
    /// [`Benchmark::validate`] at `now_ms`.
    pub async fn next(&mut self, seq: u64, now_ms: u64) -> Result<Benchmark, SourceError> {
        match self {
            Self::Command(source) => source.next(seq, now_ms).await,
            Self::Simulated(source) => source.next(seq, now_ms),
        }
    }
}

/// Runs a harness and reads its scores.
#[derive(Debug, Clone)]
pub struct CommandSource {
    argv: Vec<String>,
    timeout: Duration,
    suite_version: Option<String>,
    env: Vec<(String, String)>,
}

/// What one run of a harness printed: its scores, the suite version if it printed one, and
/// its standard output byte for byte (the evidence an evaluator's statement digests).
#[derive(Debug, Clone)]
pub struct HarnessOutput {
    /// The scores, each checked to be a number in `[0, 1]`.
    pub scores: Scores,
    /// The suite version it printed, if any.
    pub suite_version: Option<String>,
    /// Its standard output, at most [`MAX_STDOUT`] bytes.
    pub stdout: Vec<u8>,
}

/// The harness's output with the suite version.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    scores: Scores,
    suite_version: Option<String>,
}

/// Why a run stopped early.
enum Stop {
    TooLarge,
    Io(std::io::Error),
}

impl CommandSource {
    /// A source running `argv` (program first) for at most `timeout`; `suite_version` is used
    /// when the harness prints none.
    pub fn new(
        argv: Vec<String>,
        timeout: Duration,
        suite_version: Option<String>,
    ) -> Result<Self, SourceError> {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(SourceError::EmptyCommand);
        }
        Ok(Self {
            argv,
            timeout,
            suite_version,
            env: Vec::new(),
        })
    }

    /// The same source, running the harness with `name=value` added to its environment.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs the harness once and parses its output, as [`CommandSource::next`] does, but
    /// keeps what it printed. The scores are checked to be numbers in `[0, 1]`.
    pub async fn run_once(&self) -> Result<HarnessOutput, SourceError> {
        let stdout = self.run().await?;
        let program = self.program();
        let (scores, suite_version) =
            parse_report(&stdout).map_err(|reason| SourceError::Output {
                program: program.clone(),
                reason,
            })?;
        if let Some((name, score)) = scores
            .named()
            .into_iter()
            .find(|(_, s)| !s.is_finite() || !(0.0..=1.0).contains(s))
        {
            return Err(SourceError::Output {
                program,
                reason: format!("score {name} = {score} is not a number in [0, 1]"),
            });
        }
        Ok(HarnessOutput {
            scores,
            suite_version,
            stdout,
        })
    }

    fn program(&self) -> String {
        self.argv.first().cloned().unwrap_or_default()
    }

    /// Runs the harness once and turns its output into benchmark `seq`, measured at `now_ms`.
    pub async fn next(&self, seq: u64, now_ms: u64) -> Result<Benchmark, SourceError> {
        let stdout = self.run().await?;
        let program = self.program();
        let (scores, printed) = parse_report(&stdout).map_err(|reason| SourceError::Output {
            program: program.clone(),
            reason,
        })?;
        let suite_version = printed
            .or_else(|| self.suite_version.clone())
            .ok_or_else(|| SourceError::NoSuiteVersion {
                program: program.clone(),
            })?;
        let benchmark = Benchmark {
            suite_version,
            scores,
            measured_at_ms: now_ms,
            seq,
        };
        benchmark
            .validate(now_ms)
            .map_err(|source| SourceError::Invalid {
                origin: format!("the benchmark command `{program}`"),
                source,
            })?;
        Ok(benchmark)
    }

    /// Runs the harness; its standard output if it exits with status 0 in time.
    async fn run(&self) -> Result<Vec<u8>, SourceError> {
        let program = self.program();
        let mut command = Command::new(&program);
        command
            .args(self.argv.iter().skip(1))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn().map_err(|source| SourceError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child.id();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            kill(&mut child, pid).await;
            let source = std::io::Error::other("no pipe to the harness");
            return Err(SourceError::Io { program, source });
        };
        let finished = tokio::time::timeout(self.timeout, async {
            tokio::try_join!(
                read_bounded(stdout, MAX_STDOUT),
                async { read_tail(stderr, MAX_STDERR).await.map_err(Stop::Io) },
                async { child.wait().await.map_err(Stop::Io) },
            )
        })
        .await;
        let (out, err, status) = match finished {
            Ok(Ok(done)) => done,
            Ok(Err(stop)) => {
                kill(&mut child, pid).await;
                return Err(match stop {
                    Stop::TooLarge => SourceError::OutputTooLarge { program },
                    Stop::Io(source) => SourceError::Io { program, source },
                });
            }
            Err(_) => {
                kill(&mut child, pid).await;
                return Err(SourceError::Timeout {
                    program,
                    timeout: self.timeout,
                });
            }
        };
        // Whatever the harness left running in the background goes too: a run leaves
        // nothing behind, however it ended.
        kill_group(pid);
        if !status.success() {
            return Err(SourceError::Exit {
                program,
                status: status.to_string(),
                stderr: printable(&err),
            });
        }
        Ok(out)
    }
}

/// Kills the harness's process group (and so anything it started), then reaps it.
async fn kill(child: &mut Child, pid: Option<u32>) {
    kill_group(pid);
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Sends SIGKILL to the process group the harness leads (its id is the harness's pid, and
/// stays reserved while any member lives, even once the harness itself was reaped).
fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        use nix::sys::signal::{killpg, Signal};
        let _ = killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    #[cfg(not(unix))]
    let _ = pid;
}

/// Reads all of `reader`, failing as soon as it holds more than `limit` bytes.
async fn read_bounded(reader: impl AsyncRead + Unpin, limit: usize) -> Result<Vec<u8>, Stop> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut buf)
        .await
        .map_err(Stop::Io)?;
    if buf.len() > limit {
        return Err(Stop::TooLarge);
    }
    Ok(buf)
}

/// Reads all of `reader`, keeping only its last `keep` bytes.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> std::io::Result<Vec<u8>> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if tail.len() > 2 * keep {
            tail.drain(..tail.len() - keep);
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    Ok(tail)
}

/// Harness output as one escaped line for a message.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text.escape_debug().to_string()
    }
}

/// Parses the harness's output: the scores, and the suite version if it printed one.
fn parse_report(stdout: &[u8]) -> Result<(Scores, Option<String>), String> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err("nothing on stdout; expected a JSON object with the scores".into());
    }
    let value: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(map) = &value else {
        return Err(format!("expected a JSON object, found {value}"));
    };
    if map.contains_key("scores") {
        let report: Report = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Ok((report.scores, report.suite_version))
    } else {
        let scores: Scores = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Ok((scores, None))
    }
}

/// Scores drawn from a normal distribution, clamped to `[0, 1]`. Simulated scores are no
/// secret: a fast non-cryptographic generator is enough.
#[derive(Debug)]
pub struct SimulatedSource {
    mean: f64,
    stddev: f64,
    rng: fastrand::Rng,
    suite_version: String,
}

impl SimulatedSource {
    /// A simulator with a generator seeded afresh.
    pub fn new(mean: f64, stddev: f64, suite_version: Option<String>) -> Result<Self, SourceError> {
        Self::with_rng(mean, stddev, suite_version, fastrand::Rng::new())
    }

    /// A simulator drawing from `rng` (seed it for reproducible scores).
    pub fn with_rng(
        mean: f64,
        stddev: f64,
        suite_version: Option<String>,
        rng: fastrand::Rng,
    ) -> Result<Self, SourceError> {
        let in_range = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !in_range(mean) || !in_range(stddev) {
            return Err(SourceError::Distribution { mean, stddev });
        }
        Ok(Self {
            mean,
            stddev,
            rng,
            suite_version: suite_version.unwrap_or_else(|| DEFAULT_SIMULATED_SUITE.to_owned()),
        })
    }

    fn draw(&mut self) -> f64 {
        (self.mean + self.stddev * standard_normal(&mut self.rng)).clamp(0.0, 1.0)
    }

    /// Four independent draws.
    pub fn scores(&mut self) -> Scores {
        Scores {
            overall: self.draw(),
            refusal: self.draw(),
            honesty: self.draw(),
            policy: self.draw(),
        }
    }

    /// The next simulated benchmark, numbered `seq` and measured at `now_ms`.
    pub fn next(&mut self, seq: u64, now_ms: u64) -> Result<Benchmark, SourceError> {
        let benchmark = Benchmark {
            suite_version: self.suite_version.clone(),
            scores: self.scores(),
            measured_at_ms: now_ms,
            seq,
        };
        benchmark
            .validate(now_ms)
            .map_err(|source| SourceError::Invalid {
                origin: "the simulator".into(),
                source,
            })?;
        Ok(benchmark)
    }
}

/// One draw of the standard normal distribution: the Box–Muller transform of two uniform
/// draws (its second, sine, output is not used).
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    // 1 - [0, 1) is (0, 1]: the logarithm stays finite.
    let radius = (-2.0 * (1.0 - rng.f64()).ln()).sqrt();
    radius * (std::f64::consts::TAU * rng.f64()).cos()
}

#[cfg(test)]
mod tests;
