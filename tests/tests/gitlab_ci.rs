//! The user's pipeline must be valid GitLab CI: parses as YAML, every job's stage is declared,
//! every `needs`/`extends` names an existing job or template, and the jobs the product
//! promises (test, image build, registry push, manual deploy and restore, scheduled backup
//! verification) exist.

use serde_json::Value;

const RESERVED: &[&str] = &[
    "stages",
    "variables",
    "default",
    "include",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];

fn pipeline() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.gitlab-ci.yml")).expect(".gitlab-ci.yml at the top");
    let value: Value = serde_saphyr::from_str(&text).expect(".gitlab-ci.yml is valid YAML");
    value.as_object().expect("a mapping at the top").clone()
}

#[test]
fn gitlab_ci_references_are_consistent() {
    let p = pipeline();
    let stages: Vec<&str> = p["stages"]
        .as_array()
        .expect("stages list")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let jobs: Vec<(&String, &Value)> = p
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()) && !k.starts_with('.'))
        .collect();
    assert!(!jobs.is_empty());
    for (name, job) in &jobs {
        let stage = job.get("stage").and_then(Value::as_str).unwrap_or("test");
        assert!(stages.contains(&stage), "job {name}: stage `{stage}` is not in stages");
        let has_script = job.get("script").is_some()
            || job
                .get("extends")
                .and_then(Value::as_str)
                .and_then(|t| p.get(t))
                .and_then(|t| t.get("script"))
                .is_some();
        assert!(has_script, "job {name} has no script");
        for needed in job.get("needs").and_then(Value::as_array).into_iter().flatten() {
            let needed = needed.as_str().or_else(|| needed.get("job").and_then(Value::as_str)).unwrap();
            assert!(p.contains_key(needed), "job {name} needs unknown job `{needed}`");
            let needed_stage = p[needed].get("stage").and_then(Value::as_str).unwrap_or("test");
            let pos = |s: &str| stages.iter().position(|x| *x == s);
            assert!(pos(needed_stage) <= pos(stage), "job {name} needs `{needed}` from a later stage");
        }
        if let Some(template) = job.get("extends").and_then(Value::as_str) {
            assert!(p.contains_key(template), "job {name} extends unknown `{template}`");
        }
    }
}

#[test]
fn gitlab_ci_has_the_promised_jobs() {
    let p = pipeline();
    let script = |job: &str| {
        p[job]["script"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(script("unit-tests").contains("cargo test"));
    assert!(script("build-image").contains("pgctl image build"));
    let push = script("push-image");
    assert!(push.contains("--registry") && push.contains("CI_REGISTRY_PASSWORD") && push.contains("CI_REGISTRY_USER"));
    for manual in ["deploy", "restore"] {
        assert_eq!(p[manual]["when"], "manual", "{manual} is a manual job");
        assert!(
            script(manual).contains("PGCTL_HOSTS_FILE"),
            "{manual} takes hosts.toml from a CI file variable"
        );
    }
    assert!(script("verify-backup").contains("pgctl verify-backup"));
    assert!(
        p["verify-backup"]["rules"].to_string().contains("schedule"),
        "verify-backup runs from pipeline schedules"
    );
    assert!(p["variables"]["IMAGE_TAG"].as_str().unwrap().contains("$CI_REGISTRY_IMAGE"));
}
