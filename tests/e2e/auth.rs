//! Admin routes need the bearer token when one is configured; data routes
//! do not.

use serde_json::json;

use crate::start;

const TOKEN: &str = "e2e-admin-token";

#[test]
fn admin_routes_require_the_token() {
    let mut s = start(&["--admin-token", TOKEN]);
    let create = json!({"name": "t", "partitions": 1});
    let r = s.post_json("/topics", &create);
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    assert!(r.header("www-authenticate").is_some());
    s.set_token(Some("wrong-token-123"));
    assert_eq!(s.post_json("/topics", &create).status, 401);
    assert_eq!(s.get("/plugins").status, 401);
    assert_eq!(
        s.get("/topics").json["topics"],
        json!([]),
        "an unauthorized request changed state"
    );

    s.set_token(Some(TOKEN));
    assert_eq!(s.post_json("/topics", &create).status, 201);
    assert_eq!(s.get("/plugins").status, 200);

    s.set_token(None);
    assert_eq!(
        s.post_json("/topics/t/records", &json!({"value": 1}))
            .status,
        200
    );
    assert_eq!(s.get("/topics/t/partitions/0/records").status, 200);
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.delete("/topics/t").status, 401);
    s.set_token(Some(TOKEN));
    assert_eq!(s.delete("/topics/t").status, 200);
}

#[test]
fn an_empty_token_refuses_to_start_and_a_token_file_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("WEIR_ADMIN_TOKEN", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with an empty token");
    assert!(stderr.contains("admin token is empty"), "{stderr}");

    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut s = start(&["--admin-token-file", file.to_str().unwrap()]);
    let create = json!({"name": "t", "partitions": 1});
    assert_eq!(s.post_json("/topics", &create).status, 401);
    s.set_token(Some(TOKEN));
    assert_eq!(s.post_json("/topics", &create).status, 201);
}
