//! `apps.*.canary` and `apps.*.bluegreen` (SPEC §3): defaults, the values
//! the spec shows, and every way to get them wrong.

use std::time::Duration;

use super::*;

#[test]
fn defaults_are_the_spec_example() {
    let config = parse_ok(MINIMAL);
    let web = &config.apps["web"];
    assert_eq!(web.canary, CanaryConfig::default());
    let steps: Vec<(u8, StepPause)> = web.canary.steps.iter().map(|s| (s.weight, s.pause)).collect();
    assert_eq!(
        steps,
        [
            (5, StepPause::For(Duration::from_secs(30))),
            (25, StepPause::For(Duration::from_secs(60))),
            (50, StepPause::Manual)
        ]
    );
    assert!(web.canary.sticky);
    assert_eq!(web.canary.analysis.max_error_rate(), 0.01);
    assert_eq!(web.canary.analysis.max_latency_ratio(), 1.5);
    assert_eq!(web.canary.analysis.min_requests, 50);
    assert_eq!(web.bluegreen.keep_previous, Duration::from_secs(300));
}

#[test]
fn the_spec_block_is_read_as_written() {
    let config = parse_ok(&web_with(
        "deploy_strategy: canary\n\
         canary:\n\
         \x20 steps:\n\
         \x20   - { weight: 10, pause: 2m }\n\
         \x20   - { weight: 10, pause: 0s }\n\
         \x20   - { weight: 100, pause: manual }\n\
         \x20 sticky: false\n\
         \x20 analysis: { max_error_rate: 0.5%, max_latency_ratio: 2, min_requests: 0 }\n\
         bluegreen: { keep_previous: 0s }",
    ));
    let web = &config.apps["web"];
    assert_eq!(web.deploy_strategy, Strategy::Canary);
    assert_eq!(web.canary.steps.len(), 3);
    assert_eq!(web.canary.steps[0].pause, StepPause::For(Duration::from_secs(120)));
    assert_eq!(
        web.canary.steps[2],
        CanaryStep {
            weight: 100,
            pause: StepPause::Manual
        }
    );
    assert!(!web.canary.sticky);
    assert_eq!(web.canary.analysis.max_error_rate_bp, 50);
    assert_eq!(web.canary.analysis.max_latency_ratio_milli, 2000);
    assert_eq!(web.canary.analysis.min_requests, 0);
    assert_eq!(web.bluegreen.keep_previous, Duration::ZERO);
    let only_analysis = parse_ok(&web_with("canary: { analysis: { min_requests: 7 } }"));
    let canary = &only_analysis.apps["web"].canary;
    assert_eq!(canary.steps, CanaryConfig::default().steps, "steps keep their default");
    assert_eq!(canary.analysis.max_error_rate_bp, 100);
    assert_eq!(
        parse_ok(&web_with("deploy_strategy: bluegreen")).apps["web"].deploy_strategy,
        Strategy::Bluegreen
    );
}

#[test]
fn weights_must_be_percentages_that_never_decrease() {
    assert_single(
        &web_with("canary: { steps: [{ weight: 0, pause: 1s }] }"),
        "apps.web.canary.steps[0].weight",
        "weight must be between 1 and 100 (percent), got 0",
    );
    assert_single(
        &web_with("canary: { steps: [{ weight: 101, pause: 1s }] }"),
        "apps.web.canary.steps[0].weight",
        "weight must be between 1 and 100 (percent), got 101",
    );
    assert_single(
        &web_with("canary: { steps: [{ weight: 50, pause: 1s }, { weight: 20, pause: 1s }] }"),
        "apps.web.canary.steps[1].weight",
        "weight 20 is below the previous step's 50; weights may only grow (the new version only ever gains traffic)",
    );
    assert_single(
        &web_with("canary: { steps: [{ pause: 1s }] }"),
        "apps.web.canary.steps[0].weight",
        "missing key \"weight\": the percent of new requests the new version gets, e.g. 10",
    );
}

#[test]
fn steps_may_not_be_empty_nor_too_many() {
    assert_single(
        &web_with("canary: { steps: [] }"),
        "apps.web.canary.steps",
        "no steps; give at least one, e.g. [{ weight: 10, pause: 1m }], or leave steps out for the default",
    );
    let many = vec!["{ weight: 1, pause: 1s }"; 21].join(", ");
    assert_single(
        &web_with(&format!("canary: {{ steps: [{many}] }}")),
        "apps.web.canary.steps",
        "at most 20 steps, got 21",
    );
}

#[test]
fn a_pause_is_a_bounded_duration_or_manual() {
    assert_single(
        &web_with("canary: { steps: [{ weight: 5, pause: soon }] }"),
        "apps.web.canary.steps[0].pause",
        "invalid duration \"soon\": expected a number with a unit such as 500ms, 30s, 1h; or manual to wait for cutover promote",
    );
    assert_single(
        &web_with("canary: { steps: [{ weight: 5, pause: 2d }] }"),
        "apps.web.canary.steps[0].pause",
        "must be at most 24h, got 2d; or manual to wait for cutover promote",
    );
    assert_single(
        &web_with("canary: { steps: [{ weight: 5 }] }"),
        "apps.web.canary.steps[0].pause",
        "missing key \"pause\": a duration such as 30s, or manual to wait for cutover promote",
    );
}

#[test]
fn analysis_limits_are_checked() {
    assert_single(
        &web_with("canary: { analysis: { max_error_rate: 0.01 } }"),
        "apps.web.canary.analysis.max_error_rate",
        "max_error_rate must be a percentage such as 1% or 0.5%, got 0.01",
    );
    assert_single(
        &web_with("canary: { analysis: { max_error_rate: 150% } }"),
        "apps.web.canary.analysis.max_error_rate",
        "max_error_rate must be at most 100%, got 150%",
    );
    assert_single(
        &web_with("canary: { analysis: { max_latency_ratio: 0.5 } }"),
        "apps.web.canary.analysis.max_latency_ratio",
        "max_latency_ratio must be between 1 and 100 (new p99 over stable p99), got 0.5",
    );
    assert_single(
        &web_with("canary: { analysis: { min_requests: -1 } }"),
        "apps.web.canary.analysis.min_requests",
        "min_requests must be between 0 and 1000000, got -1",
    );
}

#[test]
fn unknown_keys_in_the_new_blocks_are_errors() {
    let found = problems(&web_with("canary: { stepz: [] }"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key_path.as_deref(), Some("apps.web.canary.stepz"));
    let found = problems(&web_with("bluegreen: { keep: 1m }"));
    assert_eq!(found[0].key_path.as_deref(), Some("apps.web.bluegreen.keep"));
}

#[test]
fn keep_previous_is_bounded() {
    assert_single(
        &web_with("bluegreen: { keep_previous: 2d }"),
        "apps.web.bluegreen.keep_previous",
        "must be at most 24h, got 2d",
    );
}
