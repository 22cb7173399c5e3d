//! One line for an error and its causes, as the command-line tools print it.

use std::error::Error;

/// `error`, then each of its causes after `: `, leaving out a cause whose text the line
/// already holds (most of meshtun's errors name their cause in their own message).
pub fn describe(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::describe;
    use std::fmt;

    #[derive(Debug)]
    struct Outer {
        says_cause: bool,
        inner: std::io::Error,
    }

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.says_cause {
                write!(f, "cannot read wg0.key: {}", self.inner)
            } else {
                write!(f, "cannot read wg0.key")
            }
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.inner)
        }
    }

    fn missing() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn a_cause_is_said_once() {
        let said = Outer {
            says_cause: true,
            inner: missing(),
        };
        assert_eq!(describe(&said), "cannot read wg0.key: no such file");
        let unsaid = Outer {
            says_cause: false,
            inner: missing(),
        };
        assert_eq!(describe(&unsaid), "cannot read wg0.key: no such file");
    }
}
