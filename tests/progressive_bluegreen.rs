//! Blue-green deployments and `cutover rollback` end to end (issue 12;
//! SPEC §2 `rollback`, §3 `bluegreen`, §4 bluegreen and rollback, §5
//! `POST /rollback`): one swap to a ready new set under load; a rollback
//! within `keep_previous` is one swap back to the same warm processes;
//! after `keep_previous` the previous set is stopped and a rollback deploys
//! it anew; a rollback after a rolling deploy brings the previous version
//! back, recorded as a `rollback`.

mod support;

#[path = "support/progressive.rs"]
mod progressive;

use std::collections::BTreeSet;
use std::time::Duration;

use progressive::{
    bluegreen_app, new_version, newest_record, only_version_answers, push_and_follow, running_pids, wait_outcome,
    wait_pids_gone, APP, DEPLOY_TIMEOUT,
};
use support::load::{Load, LoadSpec};
use support::{process_alive, App, Cutover};

fn light_load(cutover: &Cutover) -> Load {
    let load = Load::start(
        cutover.proxy,
        LoadSpec {
            keepalive_clients: 4,
            fresh_clients: 2,
            ..LoadSpec::default()
        },
    );
    load.wait_for_more(30, Duration::from_secs(20));
    load
}

#[test]
fn bluegreen_switches_in_one_swap_and_rolls_back_to_the_warm_set_within_keep_previous() {
    let cutover = Cutover::builder()
        .app(bluegreen_app("v1", "60s").instances(2))
        .route("*", "/", APP)
        .start();
    let blue = running_pids(&cutover);
    let blue_names: BTreeSet<String> = cutover.running_instances().into_iter().map(|(_, n)| n).collect();
    assert_eq!(blue.len(), 2);

    let load = light_load(&cutover);
    let (code, out) = push_and_follow(&cutover, &new_version(&cutover, "v1", "v2", &[]));
    assert_eq!(code, 0, "{out}\nlog:\n{}", cutover.log());
    // Once the deploy returns, every answer comes from the new set.
    only_version_answers(&cutover, "v2");
    let record = newest_record(&cutover);
    assert_eq!(record["strategy"], "bluegreen", "{record}");
    assert_eq!(record["operation"], "deploy", "{record}");
    assert_eq!(record["outcome"], "succeeded", "{record}");
    load.wait_for_more(30, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);
    assert!(
        report.versions_only_move_forward(&["v1", "v2"]),
        "one swap: no client went back to v1: {:?}",
        report.versions
    );
    // The previous set stays warm: same processes, no traffic.
    assert!(blue.iter().all(|p| process_alive(*p)), "the previous set still runs");
    let green: Vec<u32> = running_pids(&cutover)
        .into_iter()
        .filter(|p| !blue.contains(p))
        .collect();
    assert_eq!(green.len(), 2, "a full new set: {green:?}");

    // Rollback inside keep_previous: one swap back to those processes.
    let load = light_load(&cutover);
    let (code, out, err) = cutover.cli(&["rollback", APP]);
    assert_eq!(code, 0, "{out}\n{err}\nlog:\n{}", cutover.log());
    for _ in 0..20 {
        let resp = cutover.get("t", "/");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-app-version"), Some("v1"), "{resp:?}");
        let instance = resp.header("x-instance").unwrap_or_default().to_string();
        assert!(blue_names.contains(&instance), "{instance} is one of {blue_names:?}");
    }
    let record = newest_record(&cutover);
    assert_eq!(record["operation"], "rollback", "{record}");
    assert_eq!(record["outcome"], "succeeded", "{record}");
    assert!(
        blue.iter().all(|p| process_alive(*p)),
        "no new process: the warm set serves"
    );
    wait_pids_gone(&cutover, &green, "the newer set to drain and stop");
    assert_eq!(running_pids(&cutover), blue);
    load.wait_for_more(30, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);
    assert!(
        report.versions_only_move_forward(&["v2", "v1"]),
        "{:?}",
        report.versions
    );
}

#[test]
fn after_keep_previous_the_previous_set_is_stopped_and_rollback_deploys_it_anew() {
    let cutover = Cutover::builder()
        .app(bluegreen_app("v1", "2s"))
        .route("*", "/", APP)
        .start();
    let blue = running_pids(&cutover);
    let (code, out) = push_and_follow(&cutover, &new_version(&cutover, "v1", "v2", &[]));
    assert_eq!(code, 0, "{out}");
    only_version_answers(&cutover, "v2");
    wait_pids_gone(&cutover, &blue, "the previous set to stop after keep_previous");
    let green = running_pids(&cutover);
    assert_eq!(green.len(), 1, "{green:?}");

    // Without APP: every app that has a previous version (here the one).
    let (code, out, err) = cutover.cli(&["rollback"]);
    assert_eq!(code, 0, "{out}\n{err}\nlog:\n{}", cutover.log());
    only_version_answers(&cutover, "v1");
    let record = newest_record(&cutover);
    assert_eq!(record["operation"], "rollback", "{record}");
    assert_eq!(record["strategy"], "bluegreen", "{record}");
    assert_eq!(record["outcome"], "succeeded", "{record}");
    // v1 runs in new processes; the v2 set goes once its own window ends.
    wait_pids_gone(&cutover, &green, "the v2 set to stop after keep_previous");
    let now = running_pids(&cutover);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(!blue.contains(&now[0]) && !green.contains(&now[0]), "{now:?}");
    only_version_answers(&cutover, "v1");
}

#[test]
fn rollback_after_a_rolling_deploy_brings_the_previous_version_back() {
    let cutover = Cutover::builder()
        .app(
            App::demo(APP, "v1")
                .yaml("deploy_strategy: rolling")
                .yaml("drain_timeout: 5s"),
        )
        .route("*", "/", APP)
        .start();
    // Nothing before the first version: nothing to roll back to.
    let (code, _, err) = cutover.cli(&["rollback", APP]);
    assert_ne!(code, 0, "{err}");
    let resp = cutover.admin_post_json("/rollback", br#"{"app": "web"}"#);
    // 404 or 409 from the verb itself, not the router's "no such endpoint".
    assert!(
        matches!(resp.status, 404 | 409) && !resp.text().contains("no such endpoint"),
        "{} {}",
        resp.status,
        resp.text()
    );

    let (code, out) = push_and_follow(&cutover, &new_version(&cutover, "v1", "v2", &[]));
    assert_eq!(code, 0, "{out}");
    only_version_answers(&cutover, "v2");
    let deploy = newest_record(&cutover);

    // Through the API here (the CLI's rollback is the bluegreen tests').
    let load = light_load(&cutover);
    let resp = cutover.admin_post_json("/rollback", br#"{"app": "web"}"#);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let id = serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap()["id"]
        .as_str()
        .expect("the rollback's id")
        .to_string();
    let record = wait_outcome(&cutover, &id, DEPLOY_TIMEOUT);
    only_version_answers(&cutover, "v1");
    assert_eq!(record["operation"], "rollback", "{record}");
    assert_eq!(record["strategy"], "rolling", "the app's strategy: {record}");
    assert_eq!(record["outcome"], "succeeded", "{record}");
    assert_eq!(
        record["to_version"], deploy["from_version"],
        "back to the previous version"
    );
    load.wait_for_more(30, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);
    assert!(
        report.versions_only_move_forward(&["v2", "v1"]),
        "{:?}",
        report.versions
    );
    cutover.wait_until(DEPLOY_TIMEOUT, "no clone left", |c| c.running_instances().len() == 1);
    let (code, history, _) = cutover.cli(&["history", APP]);
    assert_eq!(code, 0);
    assert!(history.contains("rollback"), "{history}");
}
