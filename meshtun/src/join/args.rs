//! Reading `meshtun join`'s options that need more than a type: the benchmark source and the
//! endpoint.

use std::path::Path;
use std::time::Duration;

use crate::config::{
    default_timeout, BenchmarkSettings, BenchmarkSourceConfig, Endpoint, DEFAULT_INTERVAL_SECS,
};

use super::JoinError;

/// The benchmark source from `--benchmark-command COMMAND` or `--simulated MEAN[,STDDEV]`
/// (at most one of them); `None` without either.
pub fn benchmark_source(
    command: Option<&str>,
    simulated: Option<&str>,
) -> Result<Option<BenchmarkSourceConfig>, JoinError> {
    match (command, simulated) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(JoinError::BenchmarkChoice),
        (Some(command), None) => benchmark_command(command)
            .map(BenchmarkSourceConfig::Command)
            .map(Some),
        (None, Some(text)) => simulated_scores(text)
            .map(|(mean, stddev)| Some(BenchmarkSourceConfig::Simulated { mean, stddev })),
    }
}

/// Splits `--benchmark-command` into a program and its arguments as a POSIX shell would
/// (quotes and backslashes), without running a shell. A program given as a relative path
/// (`./harness`) is made absolute from the current directory, since the configuration file
/// would otherwise resolve it from its own directory.
pub fn benchmark_command(text: &str) -> Result<Vec<String>, JoinError> {
    let bad = |reason: &str| JoinError::BenchmarkCommand {
        command: text.escape_debug().to_string(),
        reason: reason.to_owned(),
    };
    let mut argv = shlex::split(text)
        .ok_or_else(|| bad("it has an unclosed quote or ends with a backslash"))?;
    let Some(program) = argv.first_mut() else {
        return Err(bad(
            "it is empty; give the harness program and its arguments",
        ));
    };
    if program.trim().is_empty() {
        return Err(bad("the program name is empty"));
    }
    if program.contains('/') && Path::new(program.as_str()).is_relative() {
        let absolute = std::path::absolute(program.as_str())
            .map_err(|e| bad(&format!("cannot make the program path absolute: {e}")))?;
        *program = absolute
            .to_str()
            .ok_or_else(|| bad("the program's absolute path is not UTF-8"))?
            .to_owned();
    }
    Ok(argv)
}

/// Reads `--simulated MEAN[,STDDEV]`: both in `[0, 1]`, the standard deviation 0 if left out.
pub fn simulated_scores(text: &str) -> Result<(f64, f64), JoinError> {
    let bad = |reason: String| JoinError::Simulated {
        text: text.escape_debug().to_string(),
        reason,
    };
    let (mean, stddev) = match text.split_once(',') {
        Some((mean, stddev)) => (mean, Some(stddev)),
        None => (text, None),
    };
    let number = |what: &str, value: &str| -> Result<f64, JoinError> {
        match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
            _ => Err(bad(format!(
                "the {what} `{}` is not a number in [0, 1]",
                value.trim().escape_debug()
            ))),
        }
    };
    let mean = number("mean", mean)?;
    let stddev = stddev.map_or(Ok(0.0), |s| number("standard deviation", s))?;
    Ok((mean, stddev))
}

/// The `[benchmark]` settings for `source`: the default interval and timeout.
pub(super) fn benchmark_settings(source: BenchmarkSourceConfig) -> BenchmarkSettings {
    let interval = Duration::from_secs(DEFAULT_INTERVAL_SECS);
    BenchmarkSettings {
        interval,
        timeout: default_timeout(interval),
        source,
        suite_version: None,
    }
}

/// Checks `--endpoint HOST:PORT`; returns it in its canonical spelling.
pub(super) fn endpoint(text: &str) -> Result<String, JoinError> {
    text.parse::<Endpoint>()
        .map(|endpoint| endpoint.to_string())
        .map_err(|reason| JoinError::Endpoint { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell_and_relative_programs_become_absolute() {
        let argv = benchmark_command(r#"/opt/h/harness --suite "a b" 'c d' e\ f"#).unwrap();
        assert_eq!(argv, ["/opt/h/harness", "--suite", "a b", "c d", "e f"]);
        assert_eq!(benchmark_command("harness --json").unwrap()[0], "harness");
        let relative = benchmark_command("./bin/harness").unwrap();
        let expected = std::env::current_dir().unwrap().join("bin/harness");
        assert_eq!(Path::new(&relative[0]), expected);
    }

    #[test]
    fn bad_commands_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("harness 'open", "unclosed quote"),
            ("'' --json", "program name is empty"),
        ] {
            let err = benchmark_command(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
            assert!(err.starts_with("--benchmark-command"), "{err}");
        }
    }

    #[test]
    fn simulated_scores_take_a_mean_and_an_optional_deviation() {
        assert_eq!(simulated_scores("0.9").unwrap(), (0.9, 0.0));
        assert_eq!(simulated_scores("0.9,0.03").unwrap(), (0.9, 0.03));
        assert_eq!(simulated_scores(" 1 , 0 ").unwrap(), (1.0, 0.0));
        for (text, reason) in [
            ("1.5", "the mean `1.5` is not a number in [0, 1]"),
            ("nan", "the mean `nan`"),
            ("0.9,", "the standard deviation ``"),
            ("0.9,-1", "the standard deviation `-1`"),
            ("high", "the mean `high`"),
        ] {
            let err = simulated_scores(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn one_source_at_most() {
        assert_eq!(benchmark_source(None, None).unwrap(), None);
        assert_eq!(
            benchmark_source(None, Some("0.8,0.1")).unwrap(),
            Some(BenchmarkSourceConfig::Simulated {
                mean: 0.8,
                stddev: 0.1
            })
        );
        assert!(matches!(
            benchmark_source(Some("h"), Some("0.8")),
            Err(JoinError::BenchmarkChoice)
        ));
    }

    #[test]
    fn endpoints_are_checked_and_spelled_canonically() {
        assert_eq!(endpoint("192.0.2.4:51820").unwrap(), "192.0.2.4:51820");
        assert_eq!(
            endpoint("[2001:db8::4]:51820").unwrap(),
            "[2001:db8::4]:51820"
        );
        let err = endpoint("192.0.2.4").unwrap_err().to_string();
        assert!(err.starts_with("--endpoint"), "{err}");
    }
}
