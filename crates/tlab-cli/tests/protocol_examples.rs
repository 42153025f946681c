//! The Node examples of docs/PROTOCOL.md run as written against `tlab serve`: each block between
//! `<!-- example: node-… -->` and `<!-- /example -->` is extracted, run with Node (the `ws` package from
//! `target/node`, installed by scripts/setup.sh), and its printed result is checked. The certificate is verified in
//! full against the PEM `tlab serve` wrote, as the examples say.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The code of example `name` in docs/PROTOCOL.md (the fenced block after its marker).
fn example(name: &str) -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/PROTOCOL.md")).expect("docs/PROTOCOL.md");
    let start = doc.find(&format!("<!-- example: {name} -->")).unwrap_or_else(|| panic!("no example {name}"));
    let block = &doc[start..];
    let end = block.find("<!-- /example -->").expect("example end marker");
    let block = &block[..end];
    let code = block.split_once("```js\n").expect("a js fence").1;
    code.rsplit_once("```").expect("the fence's end").0.to_string()
}

/// Starts `tlab serve --transport <transport>` on a free port, runs `code` with Node and returns its stdout.
fn run_against_serve(transport: &str, code: &str) -> String {
    let root = workspace_root();
    let node_modules = root.join("target/node/node_modules");
    assert!(node_modules.join("ws").is_dir(), "{} has no `ws` package: run scripts/setup.sh", node_modules.display());
    let dir = tempdir();
    let pem = dir.join("cert.pem");
    let mut server = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(["serve", "--transport", transport, "--listen", "127.0.0.1:0", "--token", "example-token"])
        .arg("--cert-out")
        .arg(&pem)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tlab serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("announcement");
    let announced: serde_json::Value = serde_json::from_str(&line).expect("announcement JSON");
    assert_eq!(announced["cert_pem"].as_str(), pem.to_str(), "the announcement names the PEM it wrote");
    let port = announced["listen"].as_str().expect("listen").rsplit(':').next().unwrap().to_string();
    let script = dir.join("example.js");
    std::fs::write(&script, code).expect("write the example");
    let mut node = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &node_modules)
        .env("NODE_EXTRA_CA_CERTS", &pem)
        .env("TLAB_PORT", &port)
        .env("TLAB_TOKEN", "example-token")
        .env("TLAB_PEM", &pem)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed (scripts/setup.sh)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.try_wait().expect("node status") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        let _ = node.kill();
    }
    let output = node.wait_with_output().expect("node output");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.is_some_and(|s| s.success()), "the example failed or hung ({status:?}): {stderr}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tlab-example-{}-{:x}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn last_json_line(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output: {stdout:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn node_websocket_echo_example_runs() {
    let result = last_json_line(&run_against_serve("ws", &example("node-ws-echo")));
    assert_eq!(result["echoed"], 10, "{result}");
    assert_eq!(result["close"], 1000, "a clean close after both fins: {result}");
    assert!(result["max_rtt_us"].as_f64().is_some_and(|rtt| rtt > 0.0), "{result}");
}

#[test]
fn node_sse_source_example_runs() {
    let result = last_json_line(&run_against_serve("sse-h1", &example("node-sse-source")));
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["seqs"], serde_json::json!((0..10).collect::<Vec<u64>>()), "{result}");
    assert_eq!(result["ended"], true, "the event stream ends with `event: end`: {result}");
}

#[test]
fn browser_examples_are_marked_for_the_chromium_test() {
    for name in ["browser-ws-echo", "browser-sse-source", "browser-wt-echo"] {
        assert!(example(name).contains("console.log(JSON.stringify("), "{name} reports one JSON line");
    }
}
