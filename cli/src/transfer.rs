//! Moving bytes between ltc and the cluster's file server: the client of
//! the target in force, the URLs a cell fetches from it, and the progress
//! bar of every upload and download.
//!
//! The file server is merged into the receptor, so it is reached at the
//! target's address with the target's credentials. A cell fetching from it
//! (a staging task's or an app's download, a staging task's upload) has no
//! credentials of its own: they are embedded in the URL (`user:pass@`).

use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lattice_client::FileServerClient;
use reqwest::Url;

use crate::output::Stderr;
use crate::Context;

/// How often the bar redraws while bytes flow.
const TICK: Duration = Duration::from_millis(120);

/// The file server of the target in force.
pub fn file_server(ctx: &Context) -> FileServerClient {
    FileServerClient::new(ctx.target.url.clone(), ctx.target.credentials.clone())
}

/// The URL a cell uses for `path` (`/v1/...`) on the target, with the
/// target's credentials in it and `query` appended (encoded).
///
/// # Errors
/// A target that is not a base URL (`ltc target` only saves valid ones).
pub fn cell_url(ctx: &Context, path: &str, query: &[(&str, &str)]) -> anyhow::Result<String> {
    let base = ctx.target.url.trim_end_matches('/');
    let mut url = Url::parse(&format!("{base}{path}"))
        .with_context(|| format!("the target {base:?} is not a URL"))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    if let Some(credentials) = &ctx.target.credentials {
        // Only a URL that cannot hold credentials refuses them (`data:`);
        // the target is http(s).
        url.set_username(&credentials.username)
            .and_then(|()| url.set_password(Some(&credentials.password)))
            .map_err(|()| anyhow::anyhow!("the target {base:?} cannot carry credentials"))?;
    }
    Ok(url.into())
}

/// A progress bar of bytes on stderr: drawn only when stderr is a terminal
/// (as the spinner), cleared when dropped.
pub struct ByteBar {
    bar: ProgressBar,
}

impl ByteBar {
    /// A bar saying `message`, towards `total` bytes when known.
    pub fn new(stderr: &Stderr, message: impl Into<String>, total: Option<u64>) -> ByteBar {
        let target = if stderr.terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total, target);
        bar.set_style(style(total.is_some()));
        bar.set_message(message.into());
        bar.enable_steady_tick(TICK);
        ByteBar { bar }
    }

    /// What the file server client calls with the bytes moved so far.
    pub fn progress(&self) -> impl Fn(u64) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |bytes| bar.set_position(bytes)
    }
}

impl Drop for ByteBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
    } else {
        "{spinner:.cyan} {msg} {bytes} ({bytes_per_sec})"
    };
    ProgressStyle::with_template(template)
        // Constant templates; the unit test below parses both.
        .expect("the byte bar templates are valid")
        .progress_chars("=> ")
}

/// `1.50 MiB`: sizes as people read them, in the units the progress bars
/// show (indicatif's `{bytes}`), so one output never mixes MB and MiB.
pub fn human_size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// A context targeting `url` that reads and writes no config file, with
/// its stderr discarded: for tests that need no receptor, or one of their
/// own.
#[cfg(test)]
pub(crate) fn test_context(url: &str, credentials: Option<lattice_client::Credentials>) -> Context {
    use crate::config::{ConfigFile, Source, Target};
    Context {
        config_file: ConfigFile::in_dir(std::path::Path::new("/nonexistent")),
        saved: Default::default(),
        target: Target {
            url: url.to_string(),
            credentials,
            source: Source::Env,
        },
        color: false,
        stderr: Stderr::new(std::io::sink(), false, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SharedBuffer;
    use lattice_client::Credentials;

    #[test]
    fn templates_parse_and_a_hidden_bar_prints_nothing() {
        let _ = style(true);
        let _ = style(false);
        let buffer = SharedBuffer::default();
        let stderr = Stderr::new(buffer.clone(), false, false);
        let bar = ByteBar::new(&stderr, "Uploading", Some(10));
        (bar.progress())(5);
        drop(bar);
        assert_eq!(buffer.contents(), "");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.50 KiB");
        assert_eq!(human_size(5 * 1_048_576), "5.00 MiB");
        assert_eq!(human_size(3 * 1_073_741_824), "3.00 GiB");
    }

    #[test]
    fn cell_urls_carry_the_credentials_and_an_encoded_query() {
        let plain = test_context("http://10.0.0.1:8888", None);
        assert_eq!(
            cell_url(&plain, "/v1/blobs/ab", &[]).unwrap(),
            "http://10.0.0.1:8888/v1/blobs/ab"
        );
        let secured = test_context(
            "http://10.0.0.1:8888/",
            Some(Credentials::new("ops", "p@ss:w/rd")),
        );
        assert_eq!(
            cell_url(
                &secured,
                "/v1/droplets/web/upload",
                &[("stack", "docker:///lattice-test/stack#v1")]
            )
            .unwrap(),
            "http://ops:p%40ss%3Aw%2Frd@10.0.0.1:8888/v1/droplets/web/upload\
             ?stack=docker%3A%2F%2F%2Flattice-test%2Fstack%23v1"
        );
    }
}
