//! The server holds to its own OpenAPI document: schemathesis (installed by
//! `./test.sh` through `guest-sdk/install-toolchains.sh`) generates requests
//! from `/openapi.json` and runs every check (its default): valid requests
//! must be accepted, invalid ones refused, no answer may be a 5xx or off
//! the document. Settings (bounded examples, a fixed seed) are in
//! `tests/schemathesis.toml`.

use std::process::Command;

use crate::start;

const TOKEN: &str = "schemathesis-admin-token";

#[test]
fn the_server_holds_to_its_openapi_document() {
    let s = start(&["--admin-token", TOKEN]);
    let config = weir_testkit::languages::repo_root().join("tests/schemathesis.toml");
    let run = Command::new("schemathesis")
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .args(["run", &format!("{}/openapi.json", s.url)])
        .args(["--workers", "1"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) => {
            panic!(
                "cannot run schemathesis ({e}): ./test.sh installs it (guest-sdk/install-toolchains.sh schemathesis)"
            )
        }
    };
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the server off its OpenAPI document:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Tested:"), "{report}");
}
