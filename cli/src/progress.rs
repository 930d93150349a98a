//! The spinner every long wait of ltc shows on stderr.
//!
//! It draws only when stderr is a terminal: in a pipe or a CI log a spinner
//! is noise, and the command's result (on stdout, or its error) says it all.
//! Lines printed while it turns (the app's logs) go above it, or straight
//! to stderr when it does not draw.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Stderr;

/// How often the spinner turns while nothing else changes.
const TICK: Duration = Duration::from_millis(120);

/// A spinner with a message and the time spent so far; cleared when dropped,
/// so that an early return (an error) leaves no half-drawn line behind.
pub struct Spinner {
    bar: ProgressBar,
    stderr: Stderr,
}

impl Spinner {
    pub fn new(stderr: &Stderr, message: impl Into<String>) -> Spinner {
        // Only a terminal stderr is the process's own (tests pass a buffer,
        // never a terminal), so that is where indicatif draws.
        let target = if stderr.terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(style());
        bar.set_message(message.into());
        bar.enable_steady_tick(TICK);
        Spinner {
            bar,
            stderr: stderr.clone(),
        }
    }

    /// Prints `line` on stderr above the spinner.
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            // indicatif prints nothing for a hidden bar.
            self.stderr.line(line);
        } else {
            self.bar.println(line);
        }
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

    use crate::testing::SharedBuffer;

    #[test]
    fn the_template_parses_and_a_hidden_spinner_prints_lines_to_stderr() {
        let _ = style();
        let buffer = SharedBuffer::default();
        let stderr = Stderr::new(buffer.clone(), false, false);
        let spinner = Spinner::new(&stderr, "waiting");
        spinner.set_message("still waiting");
        spinner.println("a log line");
        drop(spinner);
        assert_eq!(buffer.contents(), "a log line\n");
    }
}
