//! The user's pipeline must be valid GitLab CI: parses as YAML, every job's stage is declared,
//! every `needs`/`extends` names an existing job or template, and the jobs the product
//! promises (test, image build, registry push, manual deploy and restore, scheduled backup
//! verification) exist; the deploy job deploys exactly the image the pipeline built and pushed.

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
    assert!(!stages.is_empty(), "no stages");
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
    let script = |job: &str| script_lines(&p, job).join("\n");
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

/// A job's script lines; the job must exist and have some.
fn script_lines(p: &serde_json::Map<String, Value>, job: &str) -> Vec<String> {
    let lines: Vec<String> = p.get(job).unwrap_or_else(|| panic!("no job `{job}`"))["script"]
        .as_array()
        .unwrap_or_else(|| panic!("job {job}: no script list"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(!lines.is_empty(), "job {job}: empty script");
    lines
}

/// A script line split into words as the shell would (quotes removed, variables left as
/// written), enough for the pipeline's one-command lines.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The values of `flag` on the job's lines that run `pgctl SUBCOMMAND...`; panics unless there
/// is at least one such line.
fn flag_values(p: &serde_json::Map<String, Value>, job: &str, command: &[&str], flag: &str) -> Vec<Option<String>> {
    let lines: Vec<Vec<String>> = script_lines(p, job)
        .iter()
        .map(|l| words(l))
        .filter(|w| {
            w.first().map(String::as_str) == Some("pgctl") && w[1..].starts_with(&command.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        })
        .collect();
    assert!(!lines.is_empty(), "job {job}: no `pgctl {}` line", command.join(" "));
    lines
        .iter()
        .map(|w| w.iter().position(|x| x == flag).and_then(|i| w.get(i + 1).cloned()))
        .collect()
}

#[test]
fn deploy_uses_the_image_the_pipeline_built_and_pushed() {
    assert_eq!(
        words(r#"pgctl up --hosts "$F" --image '$X y'"#),
        ["pgctl", "up", "--hosts", "$F", "--image", "$X y"]
    );
    let p = pipeline();
    // One reference for the whole pipeline, unique to the commit (never a moving tag such as
    // `latest`), and no job redefines it.
    let tag = p["variables"]["IMAGE_TAG"].as_str().expect("variables.IMAGE_TAG");
    assert!(
        tag.contains("$CI_COMMIT_SHORT_SHA") || tag.contains("$CI_COMMIT_SHA"),
        "IMAGE_TAG names the commit: {tag}"
    );
    for (name, job) in &p {
        assert!(
            job.get("variables").and_then(|v| v.get("IMAGE_TAG")).is_none(),
            "job {name} redefines IMAGE_TAG"
        );
    }
    let image = Some("$IMAGE_TAG".to_string());
    let built = flag_values(&p, "build-image", &["image", "build"], "--tag");
    assert!(built.iter().all(|t| *t == image), "build-image tags $IMAGE_TAG: {built:?}");
    let pushed = flag_values(&p, "push-image", &["image", "push"], "--image");
    assert!(pushed.iter().all(|t| *t == image), "push-image pushes $IMAGE_TAG: {pushed:?}");
    let registry = flag_values(&p, "push-image", &["image", "push"], "--registry");
    assert!(
        registry.iter().all(|t| *t == image),
        "push-image pushes to $IMAGE_TAG: {registry:?}"
    );
    let delivered = flag_values(&p, "deploy", &["image", "push"], "--image");
    assert!(delivered.iter().all(|t| *t == image), "deploy delivers $IMAGE_TAG: {delivered:?}");
    let deployed = flag_values(&p, "deploy", &["up"], "--image");
    assert!(
        deployed.iter().all(|t| *t == image),
        "deploy runs `pgctl up --image \"$IMAGE_TAG\"`: {deployed:?}"
    );
    // And it runs after the push of that image, in the same pipeline.
    let needs = p["deploy"]["needs"].as_array().expect("deploy needs");
    assert!(needs.iter().any(|n| n == "push-image"), "deploy needs push-image: {needs:?}");
    let needs = p["push-image"]["needs"].as_array().expect("push-image needs");
    assert!(needs.iter().any(|n| n == "build-image"), "push-image needs build-image: {needs:?}");
}
