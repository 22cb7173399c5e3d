//! Where a dimension's score comes from (`[policy.sources.*]`), and the signed statements
//! about a node that such a source reads.

use std::fmt;
use std::str::FromStr;

use meshtun_proto::wire::{valid_node_id, Scores};
use serde::{Deserialize, Serialize};

/// One dimension of [`Scores`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The overall score.
    Overall,
    /// Refusing what should be refused.
    Refusal,
    /// Honesty.
    Honesty,
    /// Following policy.
    Policy,
    /// Answering its peers through the tunnel (peer observations only).
    Reachable,
    /// How fast it answers them, `1 − RTT / 1 s` (peer observations only).
    Latency,
    /// Completing handshakes with them (peer observations only).
    Handshake,
}

impl Dimension {
    /// Every dimension, in the order the rules check them.
    pub const ALL: [Self; 7] = [
        Self::Overall,
        Self::Refusal,
        Self::Honesty,
        Self::Policy,
        Self::Reachable,
        Self::Latency,
        Self::Handshake,
    ];

    /// The dimensions a node's benchmark scores (and evaluators may too).
    pub const SELF_REPORTED: [Self; 4] =
        [Self::Overall, Self::Refusal, Self::Honesty, Self::Policy];

    /// Whether only peer observations
    /// ([`meshtun_proto::observation::PEER_DIMENSIONS`]) score this dimension.
    pub fn is_peer(self) -> bool {
        matches!(self, Self::Reachable | Self::Latency | Self::Handshake)
    }

    /// Its name, as in [`Scores::named`] and the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Overall => "overall",
            Self::Refusal => "refusal",
            Self::Honesty => "honesty",
            Self::Policy => "policy",
            Self::Reachable => meshtun_proto::observation::REACHABLE,
            Self::Latency => meshtun_proto::observation::LATENCY,
            Self::Handshake => meshtun_proto::observation::HANDSHAKE,
        }
    }

    /// The dimension called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// This dimension's score in `scores`; NaN (no score) for a peer dimension, which no
    /// benchmark scores.
    pub fn score(self, scores: &Scores) -> f64 {
        match self {
            Self::Overall => scores.overall,
            Self::Refusal => scores.refusal,
            Self::Honesty => scores.honesty,
            Self::Policy => scores.policy,
            Self::Reachable | Self::Latency | Self::Handshake => f64::NAN,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who signed a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Issuer {
    /// A registered evaluator, by name, with its group if it has one.
    Evaluator {
        /// Its name in the registry.
        name: String,
        /// Its group, if any.
        group: Option<String>,
    },
    /// A node, by id: a peer observation, counted by [`Source::Peers`] only, and never
    /// about the node itself.
    Node {
        /// The node's id.
        id: String,
    },
}

/// A signed statement about a node's score in one dimension, as the policy reads it. The
/// engine passes only statements whose issuer is currently registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The statement's id in the store; decisions record it.
    pub id: u64,
    /// Who signed it.
    pub issuer: Issuer,
    /// The node it is about (a statement about another node never counts).
    pub subject: String,
    /// The dimension scored.
    pub dimension: Dimension,
    /// The score, in `[0, 1]` (any other value does not count).
    pub score: f64,
    /// When the issuer evaluated, Unix milliseconds (issuer clock).
    pub evaluated_at_ms: u64,
}

/// Something a [`SourceRule`] counts: written `self`, `evaluator:NAME`, `group:NAME` or
/// `peers` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The node's own newest benchmark.
    #[serde(rename = "self")]
    SelfReported,
    /// The evaluator of this name.
    Evaluator(String),
    /// Every evaluator of this group.
    Group(String),
    /// The node's peers: the observations of every node allowed in the current epoch that
    /// peers with it (or would, were it allowed). Only for the peer dimensions, and alone.
    Peers,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SelfReported => f.write_str("self"),
            Self::Evaluator(name) => write!(f, "evaluator:{name}"),
            Self::Group(name) => write!(f, "group:{name}"),
            Self::Peers => f.write_str("peers"),
        }
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "self" => return Ok(Self::SelfReported),
            "peers" => return Ok(Self::Peers),
            _ => {}
        }
        let named = |name: &str, make: fn(String) -> Self| {
            if valid_node_id(name) {
                Ok(make(name.to_owned()))
            } else {
                Err(format!(
                    "`{text}`: a name is 1 to 64 lowercase letters, digits, '-', '_' or '.', \
                     starting with a letter or digit"
                ))
            }
        };
        match text.split_once(':') {
            Some(("evaluator", name)) => named(name, Self::Evaluator),
            Some(("group", name)) => named(name, Self::Group),
            _ => Err(format!(
                "`{text}` is not a source: write \"self\", \"evaluator:NAME\", \"group:NAME\" \
                 or \"peers\""
            )),
        }
    }
}

/// How the counted sources' scores make one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The median; of an even count, the lower of the two middle scores (the conservative
    /// choice: one high score cannot lift it).
    Median,
    /// The lowest score.
    Minimum,
    /// The mean: of 0/1 scores such as `reachable`, the fraction of sources that say 1.
    Mean,
}

impl Combine {
    /// Its name, as in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Median => "median",
            Self::Minimum => "minimum",
            Self::Mean => "mean",
        }
    }
}

/// Where one dimension's score comes from and how much of it is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRule {
    /// The sources that count; distinct evaluators count once each, whichever entries name
    /// them.
    pub from: Vec<Source>,
    /// How many distinct sources must have a fresh statement.
    pub k: u32,
    /// How the fresh statements' scores combine.
    pub combine: Combine,
    /// Oldest statement (or benchmark, for `self`) that counts, by its evaluation time, in
    /// milliseconds; exactly this old still counts, one dated in the future is 0 ms old.
    pub max_age_ms: u64,
    /// The lowest passing value. `None`: the policy's own bar for the dimension applies
    /// ([`Policy::threshold`](super::Policy::threshold) for overall, else the dimension's
    /// entry in [`Minimums`](super::Minimums)), or none (any value passes once `k` sources
    /// are fresh).
    pub minimum: Option<f64>,
}

/// The source rule of each dimension that has one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sources {
    /// For the overall score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overall: Option<SourceRule>,
    /// For the refusal score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<SourceRule>,
    /// For the honesty score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub honesty: Option<SourceRule>,
    /// For the policy score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<SourceRule>,
    /// For reachability, from peer observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable: Option<SourceRule>,
    /// For latency, from peer observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<SourceRule>,
    /// For handshakes, from peer observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<SourceRule>,
}

impl Sources {
    /// Whether no dimension has a rule (every score is self-reported).
    pub fn is_empty(&self) -> bool {
        self.rules().next().is_none()
    }

    /// The rule of `dimension`, if any.
    pub fn rule(&self, dimension: Dimension) -> Option<&SourceRule> {
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

    /// Sets the rule of `dimension`.
    pub fn set(&mut self, dimension: Dimension, rule: Option<SourceRule>) {
        let slot = match dimension {
            Dimension::Overall => &mut self.overall,
            Dimension::Refusal => &mut self.refusal,
            Dimension::Honesty => &mut self.honesty,
            Dimension::Policy => &mut self.policy,
            Dimension::Reachable => &mut self.reachable,
            Dimension::Latency => &mut self.latency,
            Dimension::Handshake => &mut self.handshake,
        };
        *slot = rule;
    }

    /// Whether some rule counts peer observations.
    pub fn reads_peers(&self) -> bool {
        self.rules()
            .any(|(_, rule)| rule.from.contains(&Source::Peers))
    }

    /// The dimensions that have a rule, in [`Dimension::ALL`] order, with their rule.
    pub fn rules(&self) -> impl Iterator<Item = (Dimension, &SourceRule)> {
        Dimension::ALL
            .into_iter()
            .filter_map(|d| self.rule(d).map(|rule| (d, rule)))
    }
}

/// What a sourced dimension's value rests on, recorded in a decision's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcedEvidence {
    /// The dimension.
    pub dimension: Dimension,
    /// The combined value; `None` when fewer than `k` sources were fresh.
    pub value: Option<f64>,
    /// How it was combined.
    pub combine: Combine,
    /// How many distinct sources were needed.
    pub k: u32,
    /// The lowest passing value applied, if any.
    pub minimum: Option<f64>,
    /// The statements counted (one per source, fresh, a score in `[0, 1]`), self first,
    /// then by evaluator name.
    pub used: Vec<UsedStatement>,
}

/// One statement a sourced value counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsedStatement {
    /// The statement's id; `None` for the node's own benchmark (its sequence number is
    /// [`Evidence::seq`](super::Evidence::seq)).
    pub id: Option<u64>,
    /// `self`, or the evaluator's name.
    pub issuer: String,
    /// The score it gave.
    pub score: f64,
    /// Its age at the decision, milliseconds.
    pub age_ms: u64,
}
