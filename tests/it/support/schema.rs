//! JSON-schema checks of airlift's documents against `format-spec/`, by an independent
//! validator (python3 `jsonschema`, Draft 2020-12), so the spec and the code cannot drift.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Validates `instance` against `format-spec/SCHEMA` with python3-jsonschema (which also checks
/// that the schema itself is a valid Draft 2020-12 schema); panics with the validator's message.
pub fn validate_json_schema(schema: &str, instance: &Value) {
    let dir = tempfile::tempdir().expect("temp dir for the instance");
    let inst = dir.path().join("i.json");
    std::fs::write(
        &inst,
        serde_json::to_vec(instance).expect("serialize instance"),
    )
    .expect("write instance");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("format-spec")
        .join(schema);
    let script = "import json,sys,jsonschema\n\
                  s=json.load(open(sys.argv[1])); i=json.load(open(sys.argv[2]))\n\
                  jsonschema.Draft202012Validator.check_schema(s)\n\
                  jsonschema.Draft202012Validator(s).validate(i)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .arg(&inst)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}: {}",
        schema.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
