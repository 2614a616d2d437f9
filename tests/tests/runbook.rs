//! `RUNBOOK.md` against `template.yaml` and `docs/deploy.md`: every alarm, and the rule that
//! reports a failed backup, names its runbook section as `Runbook: RUNBOOK.md#<anchor>` at the end
//! of its description, and that section exists (anchors as GitHub makes them from headings); the
//! deploy page's alarm table lists exactly the alarms the template has.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::collections::BTreeSet;

use llmlite_tests::template;
use serde_json::Value;

/// The one form every description ends with.
const LINK: &str = " Runbook: RUNBOOK.md#";

fn read(file: &str) -> String {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped except `-` and `_`,
/// spaces made `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown document's headings, fenced code left out.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            out.insert(anchor(&line[hashes..]));
        }
    }
    out
}

/// What must point at the runbook: every alarm, and the EventBridge rule for RDS events (the
/// backup-failure alarm, which has no CloudWatch metric), each with its description.
fn alerting(template: &Value) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (id, r) in template["Resources"].as_object().unwrap() {
        let key = match r["Type"].as_str().unwrap() {
            "AWS::CloudWatch::Alarm" => "AlarmDescription",
            "AWS::Events::Rule"
                if r["Properties"]["EventPattern"]["source"] == "aws.rds"
                    || r["Properties"]["EventPattern"]["source"][0] == "aws.rds" =>
            {
                "Description"
            }
            _ => continue,
        };
        let description = r["Properties"][key].as_str().map(str::to_owned);
        out.push((id.clone(), description));
    }
    out
}

/// Every way the template's alarms and the runbook disagree, one line each.
fn runbook_problems(template: &Value, runbook: &str) -> Vec<String> {
    let sections = anchors(runbook);
    let mut problems = Vec::new();
    for (id, description) in alerting(template) {
        let Some(description) = description else {
            problems.push(format!(
                "{id}: no description (a plain string naming its runbook section)"
            ));
            continue;
        };
        match description.rsplit_once(LINK) {
            None => problems.push(format!(
                "{id}: the description does not end with \"{}<section>\": {description}",
                LINK.trim_start()
            )),
            Some((_, section)) if !sections.contains(section) => {
                problems.push(format!("{id}: RUNBOOK.md has no section #{section}"))
            }
            Some(_) => {}
        }
    }
    problems
}

/// The first cells of the deploy page's alarm table (the table whose header starts `| Alarm |`),
/// without their backquotes.
fn alarm_table_rows(page: &str) -> Vec<String> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in page.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let first = line.trim_matches('|').split('|').next().unwrap().trim();
        if first == "Alarm" {
            in_table = true;
            continue;
        }
        if in_table && !first.starts_with("---") {
            rows.push(first.trim_matches('`').to_owned());
        }
    }
    rows
}

#[test]
fn every_alarm_names_a_runbook_section_that_exists() {
    let template = template();
    let alerting = alerting(&template);
    assert!(
        alerting.len() >= 30,
        "29 alarms and the backup-failure rule: {alerting:?}"
    );
    let problems = runbook_problems(&template, &read("RUNBOOK.md"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alarm_has_a_section_of_its_own() {
    let template = template();
    let mut seen = BTreeSet::new();
    for (id, description) in alerting(&template) {
        let (_, section) = description.as_deref().unwrap().rsplit_once(LINK).unwrap();
        assert!(
            seen.insert(section.to_owned()),
            "{id} shares #{section} with another alarm"
        );
    }
}

#[test]
fn a_description_naming_a_missing_section_is_caught() {
    let original = template();
    let (id, _) = alerting(&original).into_iter().next().unwrap();
    let with_description = |text: &str| {
        let mut changed = original.clone();
        let alarm = &mut changed["Resources"][&id]["Properties"];
        let key = if alarm.get("AlarmDescription").is_some() {
            "AlarmDescription"
        } else {
            "Description"
        };
        alarm[key] = Value::String(text.into());
        changed
    };
    let runbook = read("RUNBOOK.md");

    let problems = runbook_problems(
        &with_description("something broke. Runbook: RUNBOOK.md#no-such-section"),
        &runbook,
    );
    assert_eq!(
        problems,
        [format!("{id}: RUNBOOK.md has no section #no-such-section")]
    );

    let problems = runbook_problems(&with_description("something broke, see the wiki"), &runbook);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].starts_with(&format!("{id}: the description does not end with")));
}

#[test]
fn anchors_follow_githubs_rules() {
    assert_eq!(anchor(" ALB 5xx rate"), "alb-5xx-rate");
    assert_eq!(
        anchor("Chat-stream function errors"),
        "chat-stream-function-errors"
    );
    assert_eq!(
        anchor("Restore to a point in time (PITR)"),
        "restore-to-a-point-in-time-pitr"
    );
    assert_eq!(
        anchor("Rotate the master key: zero downtime"),
        "rotate-the-master-key-zero-downtime"
    );
    let doc = "# Top\n```sh\n# not a heading\n```\n### Database CPU\n#nospace\n";
    assert_eq!(
        anchors(doc),
        ["top", "database-cpu"].map(str::to_owned).into()
    );
}

#[test]
fn the_deploy_pages_alarm_table_lists_exactly_the_templates_alarms() {
    let template = template();
    let alarms: BTreeSet<String> = alerting(&template).into_iter().map(|(id, _)| id).collect();
    let rows = alarm_table_rows(&read("docs/deploy.md"));
    assert!(
        !rows.is_empty(),
        "docs/deploy.md has no table headed | Alarm |"
    );
    let listed: BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        rows.len(),
        "an alarm is listed twice: {rows:?}"
    );
    let unknown: Vec<&String> = listed.difference(&alarms).collect();
    assert!(
        unknown.is_empty(),
        "docs/deploy.md lists alarms the template lacks: {unknown:?}"
    );
    let missing: Vec<&String> = alarms.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "docs/deploy.md's alarm table lacks: {missing:?}"
    );
}
