//! `taskctl devices` and `taskctl conflicts`: operators' views of device health and of the
//! conflict history, as tables and as JSON.

use chrono::{Duration as Delta, Utc};
use clap::Parser;
use serde_json::json;
use taskctl::Cli;
use tasksync_tests::{
    TestStack,
    sync_client::{create, op_id, update},
};
use uuid::Uuid;

use super::{ctl, ctl_json};

#[tokio::test]
async fn conflicts_lists_the_lost_field_with_both_values_and_devices() {
    let stack = TestStack::start().await;
    let api = stack.client();
    let task = Uuid::new_v4();
    let at = Utc::now() - Delta::hours(1);
    let kept = update(
        task,
        json!({"title": "kept title"}),
        at + Delta::minutes(10),
    );
    let lost = update(task, json!({"title": "lost title"}), at + Delta::minutes(5));
    let first = api
        .push_to(
            "/sync",
            &[create(task, "t", at), kept.clone()],
            &[("Device-Id", "desk")],
        )
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    let second = api
        .push_to(
            "/sync",
            std::slice::from_ref(&lost),
            &[("Device-Id", "phone")],
        )
        .await;
    assert_eq!(second.status, 200, "{second:?}");
    stack.settle(&[op_id(&kept), op_id(&lost)]).await;

    let by_task = ctl_json(&stack, &["conflicts", "--task", &task.to_string()]).await;
    let records = by_task["conflicts"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{by_task}");
    let c = &records[0];
    assert_eq!(c["field"], "title");
    assert_eq!(
        (
            &c["kept"]["value"],
            &c["kept"]["device_id"],
            &c["kept"]["op_id"]
        ),
        (&json!("kept title"), &json!("desk"), &kept["id"])
    );
    assert_eq!(
        (
            &c["lost"]["value"],
            &c["lost"]["device_id"],
            &c["lost"]["op_id"]
        ),
        (&json!("lost title"), &json!("phone"), &lost["id"])
    );
    let by_user = ctl_json(&stack, &["conflicts", "--user", "default"]).await;
    assert_eq!(by_user, by_task);
    let nobody = ctl_json(&stack, &["conflicts", "--user", "nobody"]).await;
    assert_eq!(nobody["conflicts"], json!([]));

    let (result, table) = ctl(&stack, &["conflicts", "--task", &task.to_string()], "").await;
    result.unwrap();
    let mut lines = table.lines();
    assert!(
        lines.next().unwrap().starts_with("RECORDED (UTC)"),
        "{table}"
    );
    let row = lines.next().unwrap();
    for cell in ["title", "\"kept title\"", "desk", "\"lost title\"", "phone"] {
        assert!(row.contains(cell), "{cell} not in {row}");
    }
    // One of --task and --user, not both, not neither.
    assert!(Cli::try_parse_from(["taskctl", "conflicts"]).is_err());
    let both = [
        "taskctl",
        "conflicts",
        "--user",
        "u",
        "--task",
        &task.to_string(),
    ];
    assert!(Cli::try_parse_from(both).is_err());
}

#[tokio::test]
async fn devices_lists_every_device_and_flags_those_that_did_not_pull() {
    let stack = TestStack::start().await;
    let api = stack.client();
    let at = Utc::now() - Delta::minutes(1);
    let items = [
        create(Uuid::new_v4(), "a", at),
        create(Uuid::new_v4(), "b", at),
    ];
    let pushed = api
        .push_to("/sync", &items, &[("Device-Id", "pusher")])
        .await;
    assert_eq!(pushed.status, 200, "{pushed:?}");
    stack
        .settle(&items.iter().map(op_id).collect::<Vec<_>>())
        .await;
    let pulled = api.changes_from("puller", "").await;
    assert_eq!(pulled.status, 200, "{pulled:?}");
    stack
        .eventually("the worker counted the pushes", || async {
            let all = ctl_json(&stack, &["devices"]).await;
            all["devices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["device_id"] == "pusher" && d["ops_applied"] == 2)
        })
        .await;

    let all = ctl_json(&stack, &["devices", "--stale-after", "1h"]).await;
    assert_eq!(all["stale_after_seconds"], 3600);
    assert_eq!(all["stale_count"], 1, "{all}");
    let devices = all["devices"].as_array().unwrap();
    let find = |name: &str| devices.iter().find(|d| d["device_id"] == name).unwrap();
    let (pusher, puller) = (find("pusher"), find("puller"));
    assert_eq!(pusher["stale"], true, "never pulled: {pusher}");
    assert_eq!(
        (
            &pusher["ops_pushed"],
            &pusher["pending"],
            &pusher["user_id"]
        ),
        (&json!(2), &json!(0), &json!("default"))
    );
    assert_eq!(puller["stale"], false, "{puller}");
    assert_eq!(puller["last_pull_cursor"], pulled.body["next_cursor"]);
    let other = ctl_json(&stack, &["devices", "--user", "someone-else"]).await;
    assert_eq!(other["devices"], json!([]));

    let (result, table) = ctl(&stack, &["devices"], "").await;
    result.unwrap();
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {table}"))
            .to_string()
    };
    assert!(table.starts_with("USER"), "{table}");
    assert!(row("pusher").trim_end().ends_with("stale"), "{table}");
    assert!(!row("puller").contains("stale"), "{table}");
    assert!(Cli::try_parse_from(["taskctl", "devices", "--stale-after", "soon"]).is_err());
}
