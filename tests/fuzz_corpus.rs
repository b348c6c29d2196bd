//! Mutation tests of what a client controls, from the seed corpora in `tests/corpus/` (see its
//! README): WAVE parameters, filter expressions and whole request bodies, each seed and many
//! deterministic mutations of it sent to a real `golemw serve` over a real socket. Refusals are
//! fine; a 5xx, a broken connection or a dead server is not.

use std::path::{Path, PathBuf};

use golemw_tests::server::{try_request, Server};
use serde_json::{json, Value};

/// Mutations per seed unless `GOLEMW_FUZZ_MUTATIONS` says otherwise.
const MUTATIONS: usize = 40;

/// What a mutation inserts or puts in place of a byte: the syntax of WAVE, filters and JSON.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "(",
    ")",
    ",",
    ":",
    "\"",
    "'",
    "\\",
    "%",
    "_",
    "-",
    "+",
    ".",
    "e",
    "0",
    "9",
    " ",
    "\n",
    "\0",
    "some(",
    "ok(",
    "err(",
    "none",
    "true",
    "nan",
    "1e999",
    "\\u{",
    "\u{ffff}",
    "and",
    "or",
    "not",
    "==",
    "like",
    ">=",
    "env.",
    "18446744073709551616",
    "-0",
    "\u{1f600}",
];

/// xorshift64*: deterministic, so a failure can be run again with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed`: one to four edits.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(i..i + 1, token.iter().copied());
            }
            2 => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 => {
                // A range repeated: deep nesting and long lists.
                let end = (at + 1 + rng.below(16)).min(out.len());
                let range = out[at.min(end)..end].to_vec();
                for _ in 0..1 + rng.below(64) {
                    out.splice(at..at, range.iter().copied());
                }
            }
            4 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out
}

fn corpus(dir: &str) -> Vec<(PathBuf, String)> {
    let root = golemw_tests::repo_root().join("tests/corpus").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

fn settings() -> (u64, usize) {
    let seed = std::env::var("GOLEMW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mutations = std::env::var("GOLEMW_FUZZ_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MUTATIONS);
    (seed, mutations)
}

/// Sends a request; the answer must be a 2xx or 4xx with a JSON body (an error names its kind).
fn answered(server: &Server, method: &str, path: &str, body: &[u8], what: &str) -> (u16, Value) {
    let (seed, _) = settings();
    let headers = [("Content-Type", "application/json")];
    let (status, answer) = try_request(&server.address, method, path, &headers, body, None)
        .unwrap_or_else(|e| {
            panic!("{what}: the server did not answer ({e}); GOLEMW_FUZZ_SEED={seed}")
        });
    assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "{what}: answered {status} {answer}; GOLEMW_FUZZ_SEED={seed}"
    );
    if status >= 400 {
        assert!(
            answer["kind"].is_string() && answer["error"].is_string(),
            "{what}: a refusal without a kind: {answer}"
        );
    }
    (status, answer)
}

/// The server still does its job after a corpus.
fn still_serves(server: &Server) {
    let result = server.result("types/w", "echo-u64", &["18446744073709551615"]);
    assert_eq!(result, json!("18446744073709551615"));
}

fn start(dir: &Path) -> Server {
    let server = Server::start_with(env!("CARGO_BIN_EXE_golemw").as_ref(), dir, &[]);
    server.add_component("types", "types");
    still_serves(&server);
    server
}

#[test]
fn mutated_wave_parameters_are_answered_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (seed, mutations) = settings();
    let mut rng = Rng(seed);
    let path = "/v1/components/types/workers/w/invoke-and-await";
    for (file, text) in corpus("wave") {
        let function = file.file_stem().unwrap().to_str().unwrap().to_string();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let body = json!({ "function": function, "params": [line] }).to_string();
            let (status, answer) = answered(&server, "POST", path, body.as_bytes(), line);
            assert_eq!(status, 200, "the seed {line} of {function}: {answer}");
            for _ in 0..mutations {
                let mutated = mutate(line.as_bytes(), &mut rng);
                let text = String::from_utf8_lossy(&mutated);
                let body = json!({ "function": function, "params": [text] }).to_string();
                answered(&server, "POST", path, body.as_bytes(), &text);
            }
        }
        still_serves(&server);
    }
}

#[test]
fn mutated_filter_expressions_are_answered_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (seed, mutations) = settings();
    let mut rng = Rng(seed);
    let path = |expression: &[u8]| {
        let encoded: String = expression.iter().map(|b| format!("%{b:02X}")).collect();
        format!("/v1/components/types/workers?filter={encoded}")
    };
    for (_, text) in corpus("filter") {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (status, answer) = answered(&server, "GET", &path(line.as_bytes()), b"", line);
            assert_eq!(status, 200, "the seed {line}: {answer}");
            for _ in 0..mutations {
                let mutated = mutate(line.as_bytes(), &mut rng);
                let what = String::from_utf8_lossy(&mutated).into_owned();
                answered(&server, "GET", &path(&mutated), b"", &what);
            }
        }
    }
    still_serves(&server);
}

#[test]
fn mutated_request_bodies_are_answered_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (seed, mutations) = settings();
    let mut rng = Rng(seed);
    let path = "/v1/components/types/workers/w/invoke-and-await";
    for (file, text) in corpus("invoke-body") {
        let seed_body = text.trim().as_bytes();
        let what = file.display().to_string();
        let (status, answer) = answered(&server, "POST", path, seed_body, &what);
        assert_eq!(status, 200, "the seed {what}: {answer}");
        for _ in 0..mutations * 4 {
            let mutated = mutate(seed_body, &mut rng);
            answered(
                &server,
                "POST",
                path,
                &mutated,
                &String::from_utf8_lossy(&mutated),
            );
        }
        still_serves(&server);
    }
}
