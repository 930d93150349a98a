//! A Diego-style request using every action kind parses, validates, and is
//! written back unchanged.

use lattice_models::parse::from_json_value;
use lattice_models::{DesiredLrpCreateRequest, TaskCreateRequest};
use serde_json::json;

fn every_action_kind() -> serde_json::Value {
    json!({"serial": {"actions": [
        {"download": {"from": "http://file-server/v1/static/lifecycle.tgz", "to": "/tmp/lifecycle",
                      "cache_key": "lifecycle", "artifact": "lifecycle", "user": "root"}},
        {"emit_progress": {
            "action": {"timeout": {"timeout": 30_000_000_000_i64, "action": {"run": {
                "path": "/tmp/lifecycle/builder",
                "args": ["-outputDroplet", "/tmp/droplet"],
                "dir": "/tmp",
                "env": [{"name": "LANG", "value": "en_US.UTF-8"}],
                "user": "vcap",
                "resource_limits": {"nofile": 1024, "nproc": 256},
                "log_source": "STG",
                "suppress_log_output": true
            }}}},
            "start_message": "Staging...",
            "success_message": "Staging complete",
            "failure_message_prefix": "Staging failed",
            "log_source": "STG"
        }},
        {"parallel": {"actions": [
            {"upload": {"from": "/tmp/droplet", "to": "http://file-server/v1/droplets/app", "artifact": "droplet", "user": "vcap"}},
            {"try": {"action": {"run": {"path": "/bin/true"}}}}
        ]}},
        {"codependent": {"actions": [
            {"run": {"path": "/bin/sh", "args": ["-c", "sleep 1"]}},
            {"run": {"path": "/bin/sh", "args": ["-c", "sleep 2"]}}
        ], "log_source": "APP"}}
    ]}})
}

#[test]
fn task_request_round_trips_unchanged() {
    let input = json!({
        "task_guid": "task-1",
        "domain": "lattice",
        "rootfs": "docker:///cloudfoundry/cflinuxfs4#latest",
        "action": every_action_kind(),
        "env": [{"name": "FOO", "value": "bar"}],
        "cpu_weight": 50,
        "disk_mb": 1024,
        "memory_mb": 256,
        "privileged": true,
        "log_guid": "app-1",
        "log_source": "STG",
        "result_file": "/tmp/result.json",
        "completion_callback_url": "http://127.0.0.1:9000/done",
        "annotation": "{\"staging\": true}"
    });
    let request: TaskCreateRequest = from_json_value(input.clone()).expect("parses");
    request.validate().expect("valid");
    assert_eq!(serde_json::to_value(&request).unwrap(), input);
}

#[test]
fn desired_lrp_request_round_trips_unchanged() {
    let input = json!({
        "process_guid": "web-1",
        "domain": "lattice",
        "rootfs": "docker:///lattice/app",
        "instances": 3,
        "setup": every_action_kind(),
        "action": {"run": {"path": "/lattice/launcher", "args": ["app", "start"]}},
        "monitor": {"timeout": {"timeout": 1_000_000_000, "action": {"run": {"path": "/lattice/healthcheck", "args": ["-port=8080"]}}}},
        "start_timeout": 60,
        "env": [{"name": "PORT", "value": "8080"}],
        "cpu_weight": 100,
        "disk_mb": 128,
        "memory_mb": 128,
        "privileged": false,
        "ports": [8080, 9090],
        "routes": {
            "cf-router": [{"hostnames": ["web-1.localhost", "www.example.com"], "port": 8080}],
            "tcp-router": [{"external_port": 61000, "container_port": 9090}]
        },
        "log_guid": "web-1",
        "log_source": "APP",
        "annotation": "hello"
    });
    let request: DesiredLrpCreateRequest = from_json_value(input.clone()).expect("parses");
    request.validate().expect("valid");
    assert_eq!(serde_json::to_value(&request).unwrap(), input);
}
