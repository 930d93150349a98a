//! Test support: a real receptor in process, on port 0, over a SQLite store
//! in a temporary directory, and a [`Context`] that targets it.

use std::collections::HashMap;
use std::sync::Arc;

use lattice_bbs::{SharedStore, SqliteStore};
use lattice_receptor::ReceptorConfig;
use tokio_util::sync::CancellationToken;

use crate::config::{ENV_CONFIG_DIR, ENV_TARGET};
use crate::Context;

pub(crate) struct TestReceptor {
    pub url: String,
    pub store: SharedStore,
    /// Holds the store's file and the config dir of [`TestReceptor::context`].
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl TestReceptor {
    pub async fn start() -> TestReceptor {
        TestReceptor::start_with(ReceptorConfig::default()).await
    }

    pub async fn start_with(config: ReceptorConfig) -> TestReceptor {
        let dir = tempfile::tempdir().expect("a temp dir can be created");
        let store: SharedStore = Arc::new(
            SqliteStore::open(&dir.path().join("bbs.sqlite3"))
                .await
                .expect("a fresh store opens"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port 0 on loopback can be bound");
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .expect("a bound listener has an address")
        );
        let shutdown = CancellationToken::new();
        let app = lattice_receptor::app(store.clone(), config, shutdown.clone());
        tokio::spawn(lattice_receptor::serve(listener, app, shutdown.clone()));
        TestReceptor {
            url,
            store,
            dir,
            shutdown,
        }
    }

    /// What ltc would load with `LTC_TARGET` set to this receptor and its
    /// config dir in the temp dir, plus `extra` variables.
    pub fn context(&self, extra: &[(&str, &str)]) -> Context {
        let mut env: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.entry(ENV_TARGET.to_string())
            .or_insert_with(|| self.url.clone());
        env.insert(
            ENV_CONFIG_DIR.to_string(),
            self.dir.path().join("ltc").display().to_string(),
        );
        Context::load(&move |name| env.get(name).cloned()).expect("the test config loads")
    }
}

impl Drop for TestReceptor {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a command wrote to its output buffer.
pub(crate) fn output(buffer: Vec<u8>) -> String {
    String::from_utf8(buffer).expect("ltc prints UTF-8")
}

/// A valid task request for `guid`, as a user would write it.
pub(crate) fn task_json(guid: &str) -> String {
    format!(
        r#"{{
  "task_guid": "{guid}",
  "domain": "tests",
  "rootfs": "docker:///busybox",
  "action": {{"run": {{"path": "/bin/true"}}}},
  "memory_mb": 64
}}"#
    )
}
