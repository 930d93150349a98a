//! The environment Cloud Foundry gives an app and its staging, which many
//! real buildpacks (Java, Node.js, PHP) read: `VCAP_APPLICATION`,
//! `VCAP_SERVICES`, `MEMORY_LIMIT` and `CF_STACK`. ltc plays Cloud
//! Controller's part and puts them in the staging task's and the app's
//! environment; the cell adds the per-instance ones (`PORT`,
//! `INSTANCE_INDEX`, `CF_INSTANCE_*`), and the droplet launcher adds the
//! instance's fields to `VCAP_APPLICATION`.
//!
//! A variable the user sets with `-e` wins over the one made here.

use lattice_models::EnvironmentVariable;
use serde_json::json;

/// File descriptors an instance may open, as `VCAP_APPLICATION.limits.fds`
/// says (Cloud Foundry's default).
pub const FDS_LIMIT: u64 = 16384;

/// What the variables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEnv<'a> {
    /// The app's (or the droplet's, when staging) name.
    pub name: &'a str,
    /// Where it is routed (none while staging).
    pub uris: Vec<String>,
    /// 0: no limit.
    pub memory_mb: i64,
    /// 0: no limit.
    pub disk_mb: i64,
    /// The stack's rootfs URL.
    pub stack: &'a str,
}

/// The stack's name as `CF_STACK` gives it: the image's last path
/// component without its tag (`docker:///cloudfoundry/cflinuxfs4` is
/// `cflinuxfs4`).
pub fn stack_name(rootfs: &str) -> String {
    let path = rootfs.rsplit("://").next().unwrap_or(rootfs);
    let path = path.split('#').next().unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// `user` after the Cloud Foundry variables of `app` that it does not set
/// itself.
pub fn with_cf_env(app: &AppEnv<'_>, user: &[EnvironmentVariable]) -> Vec<EnvironmentVariable> {
    let vcap = json!({
        "application_id": app.name,
        "application_name": app.name,
        "name": app.name,
        "application_uris": app.uris,
        "uris": app.uris,
        "space_id": "lattice",
        "space_name": "lattice",
        "limits": {"mem": app.memory_mb, "disk": app.disk_mb, "fds": FDS_LIMIT},
    });
    let mut made = vec![
        EnvironmentVariable::new("VCAP_APPLICATION", vcap.to_string()),
        EnvironmentVariable::new("VCAP_SERVICES", "{}"),
        EnvironmentVariable::new("CF_STACK", stack_name(app.stack)),
    ];
    if app.memory_mb > 0 {
        made.push(EnvironmentVariable::new(
            "MEMORY_LIMIT",
            format!("{}m", app.memory_mb),
        ));
    }
    made.retain(|var| !user.iter().any(|u| u.name == var.name));
    made.extend(user.iter().cloned());
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names() {
        assert_eq!(
            stack_name("docker:///cloudfoundry/cflinuxfs4"),
            "cflinuxfs4"
        );
        assert_eq!(stack_name("docker:///lattice-test/stack#v1"), "stack");
        assert_eq!(stack_name("docker://host:5000/me/fs#2"), "fs");
    }

    #[test]
    fn cloud_foundry_variables_and_the_user_wins() {
        let app = AppEnv {
            name: "web",
            uris: vec!["web.example.com".into()],
            memory_mb: 128,
            disk_mb: 0,
            stack: "docker:///cloudfoundry/cflinuxfs4",
        };
        let env = with_cf_env(
            &app,
            &[EnvironmentVariable::new("VCAP_SERVICES", "{\"db\":[]}")],
        );
        let get = |name: &str| {
            env.iter()
                .find(|v| v.name == name)
                .map(|v| v.value.clone())
                .unwrap_or_default()
        };
        let vcap: serde_json::Value = serde_json::from_str(&get("VCAP_APPLICATION")).unwrap();
        assert_eq!(vcap["application_name"], "web");
        assert_eq!(vcap["application_uris"], json!(["web.example.com"]));
        assert_eq!(vcap["limits"]["mem"], 128);
        assert_eq!(get("MEMORY_LIMIT"), "128m");
        assert_eq!(get("CF_STACK"), "cflinuxfs4");
        assert_eq!(get("VCAP_SERVICES"), "{\"db\":[]}", "the user's value");
        assert_eq!(env.iter().filter(|v| v.name == "VCAP_SERVICES").count(), 1);

        let unlimited = AppEnv {
            memory_mb: 0,
            ..app
        };
        assert!(!with_cf_env(&unlimited, &[])
            .iter()
            .any(|v| v.name == "MEMORY_LIMIT"));
    }
}
