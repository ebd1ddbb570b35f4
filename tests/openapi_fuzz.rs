//! The API against its own OpenAPI document: schemathesis (PyPI, installed by
//! `scripts/test` from tests/python/requirements.txt) reads `/openapi.json`
//! from a dedicated `rain-node` on a private `redis-server` and throws a
//! bounded number of generated requests, valid and invalid, at every operation
//! with an `admin` token. It fails on any 5xx and on any answer the document
//! does not describe (status, content type, body schema), among its other
//! checks (`--checks all`).
//!
//! `BACKEND_URLS=http://127.0.0.1:9/` (the discard port on loopback) keeps
//! whatever a generated run-time deploy names from reaching beyond this
//! machine. Nothing leaves it: the document is read from the node, the
//! examples database is off and no report is written or sent. Set
//! `RAIN_SCHEMATHESIS_SEED` to replay another seed; `RAIN_SCHEMATHESIS_EXAMPLES`
//! for more examples per operation.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use support::cluster::{RedisServer, spawn_binary_node};
use support::{TEST_API_SECRET, crate_dir, one_at_a_time, run_to_success};

const BIN: &str = env!("CARGO_BIN_EXE_rain-node");

/// The seed of a run that is the same on every machine (a failure replays).
const SEED: &str = "20261130";

/// Per operation; the whole run stays well under two minutes on 2 cores.
const EXAMPLES: &str = "60";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_answer_outside_the_document() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let node = spawn_binary_node(
        BIN,
        &redis.url(),
        "fuzz",
        &[("BACKEND_URLS", "http://127.0.0.1:9/")],
    );
    node.wait_ready().await;
    let api = node.api_url().to_string();

    // The document the fuzzer reads, with the token in RAIN's `user` header
    // and a trailing slash, which answer the same.
    let response = http()
        .get(format!("{api}/openapi.json/"))
        .header("user", TEST_API_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );
    let unauthenticated = http().get(format!("{api}/openapi.json")).send().await;
    assert_eq!(unauthenticated.unwrap().status(), 401);
    for path in ["/healthz", "/readyz/"] {
        let response = http().get(format!("{api}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }

    let seed = std::env::var("RAIN_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.into());
    let examples = std::env::var("RAIN_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES.into());
    let schema = format!("{api}/openapi.json");
    let auth = format!("Authorization: Bearer {TEST_API_SECRET}");
    let args: Vec<String> = [
        "-m",
        "schemathesis.cli",
        "run",
        &schema,
        "--header",
        &auth,
        "--checks",
        "all",
        "--max-examples",
        &examples,
        "--seed",
        &seed,
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
    ]
    .map(String::from)
    .to_vec();
    // its working directory: anything it might leave stays under target/
    let dir = crate_dir().join("target").join("schemathesis");
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new("python3");
    command.args(&args).current_dir(&dir);
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_success(
            command,
            "python3",
            &args,
            Duration::from_secs(110),
            "the node's",
        )
    })
    .await;
    if output.is_err() {
        eprintln!("----- node stderr -----\n{}", node.stderr_tail(100));
    }
    let output = output.expect("schemathesis run");
    // Exit 0 (checked above) and every generated case passed its checks;
    // warnings (operations it could only get 404 from) are not failures.
    let counts = output.stdout.lines().find_map(|line| {
        let (generated, rest) = line.trim().split_once(" generated, ")?;
        let passed = rest.split_once(" passed")?.0;
        Some((generated.parse::<u64>().ok()?, passed.parse::<u64>().ok()?))
    });
    assert!(
        matches!(counts, Some((generated, passed)) if generated > 0 && generated == passed),
        "schemathesis said: {}",
        output.stdout
    );
}
