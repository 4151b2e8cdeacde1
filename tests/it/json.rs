//! `--format json` and `--config -`: real outputs of plan, apply, verify and validate
//! (and of errors) checked against the published schema (docs/json.schema.json), the
//! schema's own examples in docs/json.md, and the desired state read from stdin.

use std::path::Path;

use serde_json::Value;

use crate::harness::{CANARY, CANARY_FILE, DEBIAN_MAIN_CF, Host, Need, Run, closed_port};
use crate::relay::{FakeRelay, RelayConfig};
use crate::require;

fn docs(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&docs("json.schema.json")).unwrap();
    jsonschema::validator_for(&schema).expect("docs/json.schema.json is a valid schema")
}

/// Parses `text` as one JSON document and checks it against the schema.
fn conforming(validator: &jsonschema::Validator, text: &str, what: &str) -> Value {
    let doc: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{text}"));
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match docs/json.schema.json:\n{}\n{text}",
        errors.join("\n")
    );
    doc
}

/// A run's JSON report, checked against the schema; its exit code must be `code`.
fn report(validator: &jsonschema::Validator, run: &Run, code: i32, what: &str) -> Value {
    run.code(code);
    conforming(validator, &run.stdout, what)
}

#[test]
fn docs_examples_match_the_schema() {
    let validator = validator();
    let md = docs("json.md");
    let mut commands = Vec::new();
    let mut errors = 0;
    for block in md.split("```json\n").skip(1) {
        let text = block.split("```").next().unwrap();
        let doc = conforming(&validator, text, "an example in docs/json.md");
        if doc.get("error").is_some() {
            errors += 1;
        } else {
            commands.push(doc["command"].as_str().unwrap().to_string());
        }
    }
    commands.sort();
    commands.dedup();
    assert_eq!(commands, ["apply", "plan", "validate", "verify"]);
    assert!(errors >= 1, "docs/json.md shows no error document");

    // The schema is strict: a field too many, one missing, or a wrong value fails.
    let example: Value = serde_json::from_str(
        md.split("```json\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap(),
    )
    .unwrap();
    let mut extra = example.clone();
    extra["surprise"] = Value::Bool(true);
    let mut missing = example.clone();
    missing.as_object_mut().unwrap().remove("changed");
    let mut wrong = example.clone();
    wrong["reload"] = Value::String("maybe".into());
    for bad in [extra, missing, wrong] {
        assert!(!validator.is_valid(&bad), "the schema accepts {bad}");
    }
}

#[test]
fn json_reports_of_the_four_commands_match_the_schema() {
    require!(Need::Postfix);
    let validator = validator();
    let good = FakeRelay::start(RelayConfig::user("catchall", CANARY_FILE));
    let host = Host::new(DEBIAN_MAIN_CF);
    host.secret_file("relayhost.pw", format!("{CANARY_FILE}\n"));
    let desired = |down: &str| {
        format!(
            "[relayhost]\nrelay = \"{}\"\nusername = \"catchall\"\npassword_file = \"@TMP@/relayhost.pw\"\n\n[[sender]]\ndomain = \"example.com\"\nrelay = \"{down}\"\nusername = \"u@example.com\"\npassword = \"{CANARY}\"\ntls = \"may\"\n",
            good.relay()
        )
    };
    host.desired(&desired(&format!("[127.0.0.1]:{}", closed_port())));

    let json = |sub: &str| {
        let mut c = host.cmd(sub);
        c.args(&["--format", "json"]);
        c
    };

    let v = report(&validator, &json("validate").run(), 0, "validate");
    assert_eq!(v["summary"]["senders"], 1);
    assert_eq!(v["summary"]["relayhost"], true);
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("tls \"may\"")),
        "{v}"
    );
    let run = json("validate").run();
    assert!(
        !run.stderr.contains("warning"),
        "JSON mode puts warnings in the document, not on stderr:\n{}",
        run.stderr
    );

    let v = report(
        &validator,
        &json("verify").args(&["--timeout", "5"]).run(),
        1,
        "verify",
    );
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{v}");
    let by_sender = |s: &str| checks.iter().find(|c| c["sender"] == s).unwrap();
    assert_eq!(by_sender("relayhost")["result"], "ok");
    assert_eq!(by_sender("relayhost")["username"], "catchall");
    assert_eq!(by_sender("@example.com")["result"], "failed");
    assert!(
        by_sender("@example.com")["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{v}"
    );

    let plan = report(&validator, &json("plan").run(), 1, "plan");
    assert_eq!(plan["changed"], true);
    assert_eq!(plan["reload"], "owed");
    let sasl = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "sasl_passwd")
        .unwrap();
    assert_eq!(sasl["action"], "create");
    assert!(
        sasl["diff"]
            .as_str()
            .unwrap()
            .contains("+@example.com u@example.com:********"),
        "{sasl}"
    );

    let first = report(&validator, &json("apply").run(), 0, "apply");
    host.settle();
    assert_eq!(first["changed"], true);
    assert_eq!(first["reload"], "not_running");
    assert_eq!(first["files"].as_array().unwrap().len(), 4, "{first}");
    assert!(
        first["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("postmap -c ")),
        "{first}"
    );
    let before = host.files();
    let second = report(&validator, &json("apply").run(), 0, "second apply");
    assert_eq!(second["changed"], false);
    assert_eq!(second["files"], Value::Array(vec![]));
    assert_eq!(second["commands"], Value::Array(vec![]));
    assert_eq!(second["reload"], "not_needed");
    assert_eq!(host.files(), before, "the second apply changed files");
    let in_sync = report(&validator, &json("plan").run(), 0, "plan in sync");
    assert_eq!(in_sync["changed"], false);

    // A rotated password: an update whose diff shows the changed line, masked.
    host.desired(
        &desired(&format!("[127.0.0.1]:{}", closed_port())).replace(CANARY, "rotated-pw-7f3a"),
    );
    let rotated = report(&validator, &json("apply").run(), 0, "apply of a rotation");
    let sasl = &rotated["files"][0];
    assert_eq!(sasl["kind"], "sasl_passwd");
    assert_eq!(sasl["action"], "update");
    assert_eq!(sasl["entries_changed"][0]["change"], "password");
    assert!(!rotated.to_string().contains("rotated-pw-7f3a"));

    // Bad input: exit 2, one document with every problem and its line; nothing written.
    let before = host.files();
    host.desired(
        &desired("[bad relay]:587").replace("username = \"catchall\"", "username = \"a b\""),
    );
    let error = report(&validator, &json("apply").run(), 2, "apply of bad input");
    let problems = error["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{error}");
    assert!(problems.iter().all(|p| p["line"].as_u64().unwrap() > 0));
    assert_eq!(error["command"], "apply");
    assert_eq!(host.files(), before, "bad input touched files");
    for sub in ["plan", "verify", "validate"] {
        let e = report(&validator, &json(sub).run(), 2, sub);
        assert_eq!(e["problems"].as_array().unwrap().len(), 2, "{e}");
    }
}

#[test]
fn show_secrets_unmasks_the_json_diff_too() {
    require!(Need::Postfix);
    let validator = validator();
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(
        "[relayhost]\nrelay = \"[relay.example]:587\"\nusername = \"u\"\npassword = \"visible-pw\"\n",
    );
    let diff = |extra: &[&str]| {
        let run = host
            .cmd("plan")
            .args(&["--format", "json"])
            .args(extra)
            .run();
        let doc = report(&validator, &run, 1, "plan");
        let sasl = doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "sasl_passwd")
            .unwrap()
            .clone();
        let diff = sasl["diff"].as_str().unwrap();
        assert_eq!(
            run.stdout.matches("visible-pw").count(),
            diff.matches("visible-pw").count(),
            "a password outside the diff:\n{}",
            run.stdout
        );
        sasl["diff"].as_str().unwrap().to_string()
    };
    assert!(diff(&[]).contains("+[relay.example]:587 u:********"));
    assert!(diff(&["--show-secrets"]).contains("+[relay.example]:587 u:visible-pw"));
}

#[test]
fn failed_apply_verify_reports_its_checks_in_the_error() {
    require!(Need::Postfix);
    let validator = validator();
    let host = Host::new(DEBIAN_MAIN_CF);
    host.desired(&format!(
        "[relayhost]\nrelay = \"[127.0.0.1]:{}\"\nusername = \"u\"\npassword = \"{CANARY}\"\n",
        closed_port()
    ));
    let before = host.files();
    let run = host
        .cmd("apply")
        .args(&["--verify", "--format", "json"])
        .run();
    let doc = report(&validator, &run, 2, "apply --verify");
    assert_eq!(
        doc["error"],
        "credential verification failed; nothing changed"
    );
    assert_eq!(doc["checks"][0]["result"], "failed");
    assert_eq!(host.files(), before);
}

#[test]
fn desired_state_from_stdin() {
    require!(Need::Postfix);
    let host = Host::new(DEBIAN_MAIN_CF);
    let pw = host.secret_file("pw", format!("{CANARY_FILE}\n"));
    let text = format!(
        "[relayhost]\nrelay = \"[relay.example]:587\"\nusername = \"u\"\npassword_file = \"{}\"\n\n[[sender]]\ndomain = \"example.com\"\nrelay = \"[other.example]:587\"\nusername = \"c\"\npassword = \"{CANARY}\"\n",
        pw.display()
    );
    let stdin = |sub: &str, input: &str| {
        let mut c = crate::harness::Cmd::new(&[sub, "--config", "-"]);
        c.args(&["--postfix-dir", &host.etc.display().to_string()]);
        c.run_with_input(input.as_bytes())
    };
    // Inline passwords need no file mode when they come through a pipe.
    stdin("plan", &text)
        .code(1)
        .stdout_has("+@example.com c:********");
    let first = stdin("apply", &text);
    first.success().stdout_has("postrelay: applied");
    host.settle();
    let before = host.files();
    stdin("apply", &text)
        .success()
        .stdout_has("postrelay: no changes");
    assert_eq!(host.files(), before, "the second apply changed files");
    assert_eq!(
        host.postmap_q("hash", "sasl_passwd", "[relay.example]:587"),
        Some(format!("u:{CANARY_FILE}"))
    );

    // Problems are named after <stdin>, with their line.
    let relative = text.replace(&pw.display().to_string(), "pw");
    stdin("validate", &relative).code(2).stderr_has(
        "postrelay: error: <stdin>, line 4: relayhost: password_file \"pw\" is relative",
    );
    // The trust rules still hold for the password files stdin names.
    crate::harness::host::write_with_mode(&pw, format!("{CANARY_FILE}\n"), 0o644);
    stdin("plan", &text)
        .code(2)
        .stderr_has("readable by group or others (mode 0644)");
    assert_eq!(host.files(), before);
}
