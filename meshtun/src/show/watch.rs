//! `meshtun show --watch`: the report drawn again every second until Ctrl-C (or until
//! stdout closes). On a terminal (or with `--color always`) each frame first clears the
//! screen; elsewhere frames follow one another, each after its header line.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use meshtun_proto::report::Chain;
use tokio::time::MissedTickBehavior;

use super::{interfaces, render_styled, reports, ShowError};

/// How often the report is drawn again.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Moves the cursor to the top left corner and clears the screen.
pub const CLEAR: &str = "\u{1b}[H\u{1b}[2J";

/// The first line of every frame.
pub const HEADER: &str = "meshtun show --watch: every 1s, Ctrl-C stops";

/// What to watch and how to draw it.
#[derive(Debug, Clone)]
pub struct Watch<'a> {
    /// The UAPI socket directory.
    pub dir: &'a Path,
    /// Only this interface; every interface with a socket in `dir` otherwise.
    pub name: Option<&'a str>,
    /// Probe the peers, waiting this long for their replies.
    pub probe: Option<Duration>,
    /// Paint the states ([`render_styled`]).
    pub colour: bool,
    /// Clear the screen before each frame.
    pub clear: bool,
}

impl Watch<'_> {
    /// Draws a frame every [`PERIOD`] on `out` until Ctrl-C, or until `out` is closed (a
    /// closed pipe ends the watch without an error). A frame that cannot be read (a daemon
    /// restarting) shows the error, and the next one tries again.
    pub async fn run(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut ticks = tokio::time::interval(PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            let text = tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                text = async {
                    ticks.tick().await;
                    self.frame().await
                } => text,
            };
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                other => other?,
            }
        }
    }

    /// One frame: the clear sequence (if asked), the header and the report or the error.
    pub async fn frame(&self) -> String {
        let body = match self.body().await {
            Ok(body) => body,
            Err(error) => format!("error: {}\n", Chain(&error)),
        };
        let start = if self.clear { CLEAR } else { "\n" };
        format!("{start}{HEADER}\n\n{body}")
    }

    async fn body(&self) -> Result<String, ShowError> {
        let names = match self.name {
            Some(name) => vec![name.to_owned()],
            None => interfaces(self.dir)?,
        };
        if names.is_empty() {
            return Ok(format!(
                "no interface has a socket in {}\n",
                self.dir.display()
            ));
        }
        let reports = reports(self.dir, &names, self.probe).await?;
        let now = SystemTime::now();
        let texts: Vec<String> = reports
            .iter()
            .map(|r| render_styled(r, now, self.colour))
            .collect();
        Ok(texts.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_clears_the_screen_only_when_asked_and_shows_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = Watch {
            dir: dir.path(),
            name: None,
            probe: None,
            colour: false,
            clear: true,
        };
        let frame = watch.frame().await;
        assert!(
            frame.starts_with(&format!("{CLEAR}{HEADER}\n\n")),
            "{frame:?}"
        );
        assert!(frame.contains("no interface has a socket in"), "{frame}");
        watch.clear = false;
        watch.name = Some("wg7");
        let frame = watch.frame().await;
        assert!(!frame.contains('\u{1b}'), "{frame:?}");
        assert!(
            frame.starts_with(&format!("\n{HEADER}\n\n"))
                && frame.contains("error: no meshtun or WireGuard daemon serves interface wg7"),
            "{frame}"
        );
    }

    /// Fails every write with `kind`.
    struct Failing(std::io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_closed_pipe_ends_the_watch_and_another_error_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch {
            dir: dir.path(),
            name: None,
            probe: None,
            colour: false,
            clear: false,
        };
        let mut pipe = Failing(std::io::ErrorKind::BrokenPipe);
        let closed = tokio::time::timeout(Duration::from_secs(5), watch.run(&mut pipe));
        assert!(closed.await.expect("it stops at once").is_ok());
        let full = watch
            .run(&mut Failing(std::io::ErrorKind::StorageFull))
            .await;
        assert_eq!(full.unwrap_err().kind(), std::io::ErrorKind::StorageFull);
    }
}
