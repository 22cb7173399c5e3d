//! `[policy.sources.DIMENSION]`: where a dimension's score comes from, validated into
//! [`Sources`] with errors naming the key (`policy.sources.honesty.k`).

use serde::Deserialize;

use crate::model::{Combine, Dimension, Minimums, Source, SourceRule, Sources};

/// The most entries one `from` list may hold.
const MAX_FROM: usize = 32;
/// The largest `k`.
const MAX_K: i64 = 64;
/// The accepted range of `max_age`, seconds (up to 30 days).
const MAX_AGE_RANGE: (i64, i64) = (1, 30 * 86_400);

/// `[policy.sources]`: one optional section per dimension.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSources {
    overall: Option<RawSource>,
    refusal: Option<RawSource>,
    honesty: Option<RawSource>,
    policy: Option<RawSource>,
    reachable: Option<RawSource>,
    latency: Option<RawSource>,
    handshake: Option<RawSource>,
}

/// `[policy.sources.DIMENSION]`, as written (numbers signed, so that a negative one is
/// refused with its key rather than as a type error).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    from: Option<Vec<String>>,
    k: Option<i64>,
    combine: Option<String>,
    max_age: Option<i64>,
    minimum: Option<f64>,
}

/// The keys of one dimension's section.
struct Keys {
    from: &'static str,
    k: &'static str,
    combine: &'static str,
    max_age: &'static str,
    minimum: &'static str,
}

macro_rules! keys {
    ($d:literal) => {
        Keys {
            from: concat!("policy.sources.", $d, ".from"),
            k: concat!("policy.sources.", $d, ".k"),
            combine: concat!("policy.sources.", $d, ".combine"),
            max_age: concat!("policy.sources.", $d, ".max_age"),
            minimum: concat!("policy.sources.", $d, ".minimum"),
        }
    };
}

fn keys(dimension: Dimension) -> Keys {
    match dimension {
        Dimension::Overall => keys!("overall"),
        Dimension::Refusal => keys!("refusal"),
        Dimension::Honesty => keys!("honesty"),
        Dimension::Policy => keys!("policy"),
        Dimension::Reachable => keys!("reachable"),
        Dimension::Latency => keys!("latency"),
        Dimension::Handshake => keys!("handshake"),
    }
}

impl RawSources {
    fn section(&self, dimension: Dimension) -> Option<&RawSource> {
        match dimension {
            Dimension::Overall => self.overall.as_ref(),
            Dimension::Refusal => self.refusal.as_ref(),
            Dimension::Honesty => self.honesty.as_ref(),
            Dimension::Policy => self.policy.as_ref(),
            Dimension::Reachable => self.reachable.as_ref(),
            Dimension::Latency => self.latency.as_ref(),
            Dimension::Handshake => self.handshake.as_ref(),
        }
    }

    /// Validates every section; `max_age_s` is `policy.max_age`, the default of each
    /// section's `max_age`, and `minimums` the `[policy.minimums]`.
    pub(super) fn validate(
        &self,
        max_age_s: u64,
        minimums: &Minimums,
    ) -> Result<Sources, (&'static str, String)> {
        let mut sources = Sources::default();
        for dimension in Dimension::ALL {
            if let Some(raw) = self.section(dimension) {
                let rule = raw.validate(dimension, max_age_s, minimums)?;
                sources.set(dimension, Some(rule));
            }
        }
        Ok(sources)
    }
}

impl RawSource {
    fn validate(
        &self,
        dimension: Dimension,
        max_age_s: u64,
        minimums: &Minimums,
    ) -> Result<SourceRule, (&'static str, String)> {
        let keys = keys(dimension);
        let from = parse_from(self.from.as_deref(), keys.from)?;
        peers_alone(&from, dimension, keys.from)?;
        let k = quorum(self.k, &from, keys.k)?;
        let combine = match self.combine.as_deref() {
            None | Some("median") => Combine::Median,
            Some("minimum") => Combine::Minimum,
            Some("mean") => Combine::Mean,
            Some(other) => {
                return Err((
                    keys.combine,
                    format!("`{other}` is not \"median\", \"minimum\" or \"mean\""),
                ))
            }
        };
        let max_age = self
            .max_age
            .unwrap_or(i64::try_from(max_age_s).unwrap_or(i64::MAX));
        let (lo, hi) = MAX_AGE_RANGE;
        if !(lo..=hi).contains(&max_age) {
            return Err((keys.max_age, format!("{max_age} is not in [{lo}, {hi}]")));
        }
        let minimum = bar(self.minimum, dimension, minimums, keys.minimum)?;
        Ok(SourceRule {
            from,
            k,
            combine,
            max_age_ms: u64::try_from(max_age).unwrap_or(0).saturating_mul(1000),
            minimum,
        })
    }
}

/// The sources: at least one, at most [`MAX_FROM`], each once.
fn parse_from(
    texts: Option<&[String]>,
    key: &'static str,
) -> Result<Vec<Source>, (&'static str, String)> {
    let Some(texts) = texts else {
        return Err((
            key,
            "required: the sources that count, e.g. [\"evaluator:e1\", \"group:core\"] or [\"self\"]"
                .into(),
        ));
    };
    if texts.is_empty() || texts.len() > MAX_FROM {
        return Err((
            key,
            format!("{} sources: give 1 to {MAX_FROM}", texts.len()),
        ));
    }
    let mut sources: Vec<Source> = Vec::with_capacity(texts.len());
    for text in texts {
        let source: Source = text.parse().map_err(|reason| (key, reason))?;
        if sources.contains(&source) {
            return Err((key, format!("`{source}` is listed twice")));
        }
        sources.push(source);
    }
    Ok(sources)
}

/// The peer dimensions are scored by `peers` alone, and `peers` scores nothing else: a
/// node's benchmark has no reachability of its own, and what a node sees of its peers says
/// nothing of their honesty.
fn peers_alone(
    from: &[Source],
    dimension: Dimension,
    key: &'static str,
) -> Result<(), (&'static str, String)> {
    let has_peers = from.contains(&Source::Peers);
    if dimension.is_peer() && (from.len() != 1 || !has_peers) {
        return Err((
            key,
            format!("{dimension} is scored by peer observations only: write [\"peers\"]"),
        ));
    }
    if !dimension.is_peer() && has_peers {
        return Err((
            key,
            format!("`peers` scores only reachable, latency and handshake, not {dimension}"),
        ));
    }
    Ok(())
}

/// `k`: required unless the only source is `self`; from 1 to [`MAX_K`], and no more than
/// the sources named when no group is among them.
fn quorum(
    k: Option<i64>,
    from: &[Source],
    key: &'static str,
) -> Result<u32, (&'static str, String)> {
    let k = match k {
        Some(k) => k,
        None if from == [Source::SelfReported] => 1,
        None => {
            return Err((
                key,
                "required: how many distinct sources must have a fresh statement".into(),
            ))
        }
    };
    if !(1..=MAX_K).contains(&k) {
        return Err((key, format!("{k} is not in [1, {MAX_K}]")));
    }
    let has_group = from
        .iter()
        .any(|s| matches!(s, Source::Group(_) | Source::Peers));
    let named = i64::try_from(from.len()).unwrap_or(i64::MAX);
    if !has_group && k > named {
        return Err((
            key,
            format!("{k} is more than the {named} sources in `from`: it could never be met"),
        ));
    }
    u32::try_from(k).map_err(|_| (key, format!("{k} is too large")))
}

/// `minimum`: in `[0, 1]`; not beside `policy.minimums.DIMENSION` (one bar per dimension);
/// and, but for overall (whose bar defaults to the threshold), needed where that one is
/// unset.
fn bar(
    minimum: Option<f64>,
    dimension: Dimension,
    minimums: &Minimums,
    key: &'static str,
) -> Result<Option<f64>, (&'static str, String)> {
    if let Some(m) = minimum.filter(|m| !(0.0..=1.0).contains(m)) {
        return Err((key, format!("{m} is not in [0, 1]")));
    }
    let own = match dimension {
        Dimension::Overall => return Ok(minimum),
        Dimension::Reachable | Dimension::Latency | Dimension::Handshake => {
            return minimum.map(Some).ok_or((
                key,
                format!("required: the lowest passing {dimension} value, e.g. 0.66"),
            ))
        }
        Dimension::Refusal => minimums.refusal,
        Dimension::Honesty => minimums.honesty,
        Dimension::Policy => minimums.policy,
    };
    match (minimum, own) {
        (Some(_), Some(_)) => Err((
            key,
            format!("policy.minimums.{dimension} is set too: keep one of the two"),
        )),
        (None, None) => Err((
            key,
            format!(
                "required (here or as policy.minimums.{dimension}): without one any sourced \
                 score would pass"
            ),
        )),
        _ => Ok(minimum),
    }
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
