//! Who may log in, and which instance a login reaches.

use lattice_bbs::{SharedStore, StoreError};
use lattice_models::ssh::SshTarget;
use lattice_models::ActualLrpState;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The password a login must give: the API's `USER:PASSWORD`, kept as a
/// digest compared in constant time, so that neither the time nor the
/// length of a guess tells how close it was.
#[derive(Clone)]
pub(crate) struct Password(Option<[u8; 32]>);

impl Password {
    /// `None`: the API has no credentials, and neither has the proxy (it
    /// then listens on loopback only).
    pub(crate) fn new(credentials: Option<&lattice_client::Credentials>) -> Password {
        Password(credentials.map(|c| digest(&format!("{}:{}", c.username, c.password))))
    }

    pub(crate) fn required(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn accepts(&self, password: &str) -> bool {
        match &self.0 {
            Some(expected) => digest(password).ct_eq(expected).into(),
            None => true,
        }
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// An instance a session can reach: where its rep is, and which run of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    pub process_guid: String,
    pub index: i64,
    pub instance_guid: String,
    pub rep_address: String,
}

/// Finds the running instance `target` names and its cell.
///
/// # Errors
/// A message for the user saying why there is no session: no such app, ssh
/// turned off for it, no such index, not running, cell gone.
pub(crate) async fn resolve(store: &SharedStore, target: &SshTarget) -> Result<Instance, String> {
    let SshTarget {
        process_guid,
        index,
    } = target;
    let lookup_failed = |err: StoreError| {
        tracing::warn!(%process_guid, index, error = %err, "cannot look up an instance for ssh");
        "cannot look the instance up in the cluster's store; try again".to_string()
    };
    let desired = match store.get_desired_lrp(process_guid).await {
        Ok(desired) => desired,
        Err(StoreError::NotFound { .. }) => {
            return Err(format!(
                "no app {process_guid:?} (see `ltc list`); a task has no ssh"
            ))
        }
        Err(err) => return Err(lookup_failed(err)),
    };
    if desired.disable_ssh {
        return Err(format!(
            "ssh is turned off for {process_guid} (it was created with --no-ssh)"
        ));
    }
    if *index >= desired.instances {
        return Err(format!(
            "{process_guid} has no instance {index}: it has {} (indexes 0 to {})",
            desired.instances,
            desired.instances - 1
        ));
    }
    let actual = match store.get_actual_lrp(process_guid, *index).await {
        Ok(actual) => actual,
        Err(StoreError::NotFound { .. }) => {
            return Err(format!(
                "instance {index} of {process_guid} is not running yet; see `ltc status {process_guid}`"
            ))
        }
        Err(err) => return Err(lookup_failed(err)),
    };
    if actual.state != ActualLrpState::Running {
        return Err(format!(
            "instance {index} of {process_guid} is {}, not RUNNING; see `ltc status {process_guid}`",
            actual.state.as_str()
        ));
    }
    let cells = store.list_cells().await.map_err(lookup_failed)?;
    let Some(cell) = cells.iter().find(|cell| cell.cell_id == actual.cell_id) else {
        return Err(format!(
            "the cell of instance {index} of {process_guid} ({}) is gone; it will be placed again",
            actual.cell_id
        ));
    };
    Ok(Instance {
        process_guid: process_guid.clone(),
        index: *index,
        instance_guid: actual.instance_guid,
        rep_address: cell.rep_address.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use lattice_bbs::suite;

    use super::*;

    fn target(process_guid: &str, index: i64) -> SshTarget {
        SshTarget {
            process_guid: process_guid.to_string(),
            index,
        }
    }

    #[tokio::test]
    async fn a_running_instance_resolves_to_its_cell_and_others_say_why_not() {
        let store: SharedStore = Arc::new(
            lattice_bbs::SqliteStore::open_in_memory()
                .await
                .expect("a store"),
        );
        store
            .create_desired_lrp(suite::desired_lrp("web", "apps", 2))
            .await
            .expect("created");
        let mut closed = suite::desired_lrp("closed", "apps", 1);
        closed.disable_ssh = true;
        store.create_desired_lrp(closed).await.expect("created");
        let mut running = suite::actual_lrp("web", "apps", 0);
        running.state = ActualLrpState::Running;
        running.cell_id = "cell-1".into();
        running.instance_guid = "i-1".into();
        store.create_actual_lrp(running).await.expect("created");
        store
            .create_actual_lrp(suite::actual_lrp("web", "apps", 1))
            .await
            .expect("created");
        store
            .upsert_cell(suite::cell("cell-1"), Duration::from_secs(30))
            .await
            .expect("registered");

        let instance = resolve(&store, &target("web", 0)).await.expect("found");
        assert_eq!(instance.instance_guid, "i-1");
        assert_eq!(instance.rep_address, "http://cell-1.local:1800");
        for (target, why) in [
            (target("nope", 0), "no app \"nope\""),
            (target("web", 2), "web has no instance 2"),
            (target("web", 1), "is UNCLAIMED, not RUNNING"),
            (target("closed", 0), "--no-ssh"),
        ] {
            let message = resolve(&store, &target).await.unwrap_err();
            assert!(message.contains(why), "{message}");
        }
    }

    #[test]
    fn the_password_is_user_colon_password() {
        let password = Password::new(Some(&lattice_client::Credentials::new("admin", "s3cret")));
        assert!(password.required());
        assert!(password.accepts("admin:s3cret"));
        for wrong in ["", "admin", "s3cret", "admin:s3cre", "admin:s3cret "] {
            assert!(!password.accepts(wrong), "{wrong:?}");
        }
        let open = Password::new(None);
        assert!(!open.required());
        assert!(open.accepts("anything"));
    }
}
