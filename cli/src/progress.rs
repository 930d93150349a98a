//! The spinner every long wait of ltc shows on stderr.
//!
//! It draws only when stderr is a terminal: in a pipe or a CI log a spinner
//! is noise, and the command's result (on stdout, or its error) says it all.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the spinner turns while nothing else changes.
const TICK: Duration = Duration::from_millis(120);

/// A spinner with a message and the time spent so far; cleared when dropped,
/// so that an early return (an error) leaves no half-drawn line behind.
pub struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    pub fn new(message: impl Into<String>) -> Spinner {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(style());
        bar.set_message(message.into());
        bar.enable_steady_tick(TICK);
        Spinner { bar }
    }

    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg} ({elapsed})")
        // A constant template; the unit test below parses it.
        .expect("the spinner template is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_a_hidden_spinner_works() {
        let _ = style();
        // Under `cargo test` stderr may or may not be a terminal; both paths
        // must accept messages and drop cleanly.
        let spinner = Spinner::new("waiting");
        spinner.set_message("still waiting");
        drop(spinner);
    }
}
