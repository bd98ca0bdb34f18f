//! Progress display: a one-line status on a terminal, nothing in scripts.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A progress line refreshed by a callback, shown only when stderr is a terminal and
/// the user did not ask for quiet output.
pub struct Status {
    bar: Option<ProgressBar>,
}

impl Status {
    /// Start a status line; `render` is polled a few times a second.
    pub fn start(quiet: bool, render: impl Fn() -> String + Send + 'static) -> Status {
        if quiet || !std::io::stderr().is_terminal() {
            return Status { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let ticker = bar.clone();
        std::thread::spawn(move || {
            while !ticker.is_finished() {
                ticker.set_message(render());
                ticker.tick();
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Status { bar: Some(bar) }
    }

    /// Remove the status line.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
