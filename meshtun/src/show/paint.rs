//! Colour for `meshtun show`: each state (a peer's handshake, the membership, a gated peer's
//! path, a probe's answer) in one of four tones, as ANSI escape codes; nothing when off.

use std::time::Duration;

use anstyle::{AnsiColor, Style};

use crate::gate::MembershipState;

/// Past this age a handshake is stale: WireGuard drops a session 180 s after the handshake
/// that made it (`REJECT_AFTER_TIME`), so traffic then needs a new one.
pub const FRESH_HANDSHAKE: Duration = Duration::from_secs(180);

/// What a state means for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Working as it should: green.
    Good,
    /// Working, in a second-best way (a relayed path): cyan.
    Fallback,
    /// Not yet, or no longer, working (a stale handshake, a path being tried): yellow.
    Warn,
    /// Not working (no handshake, denied, lost, unreachable): red.
    Bad,
}

/// Paints text in a tone when colour is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Painter {
    colour: bool,
}

impl Painter {
    /// A painter writing escape codes if `colour`, plain text otherwise.
    pub fn new(colour: bool) -> Self {
        Self { colour }
    }

    /// `text` in `tone`.
    pub fn paint(self, tone: Tone, text: &str) -> String {
        if !self.colour {
            return text.to_owned();
        }
        let style: Style = match tone {
            Tone::Good => AnsiColor::Green.on_default(),
            Tone::Fallback => AnsiColor::Cyan.on_default(),
            Tone::Warn => AnsiColor::Yellow.on_default(),
            Tone::Bad => AnsiColor::Red.on_default().bold(),
        };
        format!("{style}{text}{style:#}")
    }
}

/// The tone of a peer whose last handshake was `age` ago (`None`: never).
pub fn handshake_tone(age: Option<Duration>) -> Tone {
    match age {
        Some(age) if age < FRESH_HANDSHAKE => Tone::Good,
        Some(_) => Tone::Warn,
        None => Tone::Bad,
    }
}

/// The tone of a membership state.
pub fn membership_tone(state: &MembershipState) -> Tone {
    match state {
        MembershipState::Allowed => Tone::Good,
        MembershipState::Pending => Tone::Warn,
        MembershipState::Denied { .. } | MembershipState::Lost => Tone::Bad,
    }
}

/// The tone of a gated peer's path (`direct`, `relayed`, `trying`, `none`).
pub fn path_tone(path: &str) -> Tone {
    match path {
        "direct" => Tone::Good,
        "relayed" => Tone::Fallback,
        "trying" => Tone::Warn,
        _ => Tone::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_plain_and_on_wraps_in_escape_codes() {
        assert_eq!(Painter::new(false).paint(Tone::Bad, "DENIED"), "DENIED");
        let on = Painter::new(true).paint(Tone::Good, "direct");
        assert_eq!(on, "\u{1b}[32mdirect\u{1b}[0m");
        let bad = Painter::new(true).paint(Tone::Bad, "none");
        assert!(bad.starts_with("\u{1b}[") && bad.contains("31") && bad.ends_with("\u{1b}[0m"));
    }

    #[test]
    fn states_get_their_tones() {
        assert_eq!(handshake_tone(Some(Duration::from_secs(179))), Tone::Good);
        assert_eq!(handshake_tone(Some(FRESH_HANDSHAKE)), Tone::Warn);
        assert_eq!(handshake_tone(None), Tone::Bad);
        assert_eq!(membership_tone(&MembershipState::Allowed), Tone::Good);
        assert_eq!(membership_tone(&MembershipState::Pending), Tone::Warn);
        assert_eq!(membership_tone(&MembershipState::Lost), Tone::Bad);
        let denied = MembershipState::Denied {
            reason: "score".into(),
        };
        assert_eq!(membership_tone(&denied), Tone::Bad);
        assert_eq!(path_tone("direct"), Tone::Good);
        assert_eq!(path_tone("relayed"), Tone::Fallback);
        assert_eq!(path_tone("trying"), Tone::Warn);
        assert_eq!(path_tone("none"), Tone::Bad);
    }
}
