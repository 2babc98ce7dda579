//! The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against `nicompute serve` on a devnet with real miners
//! (local runtime). The script does what a renter does on the page and asks this test to do what
//! a renter does outside it: run the SSH command the page shows (with the built-in SSH client,
//! `compute::sshexec`, and the password the page revealed) and kill a miner. Its report is
//! checked here, and the database afterwards.
//!
//! Needs node, `tests/browser/node_modules` (scripts/browser-up.sh) and chromium: without them
//! the test says `skipped: …`, and fails under `NICOMPUTE_REQUIRE_BROWSER=1` (CI). Screenshots
//! of the main views land in `target/tmp/browser/` (git-ignored).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use compute::sshexec::{self, HostKeyCheck, Login};
use serde_json::{json, Value};

use crate::api_world::{config, serve, token, World};
use crate::common::{on_path, root, skip};

/// The browser's tools, or `None` after saying which is missing.
pub struct Browser {
    pub script_dir: PathBuf,
    pub chromium: PathBuf,
}

impl Browser {
    pub fn find() -> Option<Browser> {
        let script_dir = root().join("tests/browser");
        let chromium =
            std::env::var_os("NICOMPUTE_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        let missing = if !on_path("node") {
            Some("node is not installed (apt-get install nodejs npm)".to_owned())
        } else if !script_dir.join("node_modules/playwright-core/package.json").is_file() {
            Some("playwright-core is not installed (scripts/browser-up.sh)".to_owned())
        } else if !chromium.is_file() {
            Some(format!("{} is missing (scripts/browser-up.sh installs Debian's chromium)", chromium.display()))
        } else {
            None
        };
        match missing {
            Some(why) => {
                skip("NICOMPUTE_REQUIRE_BROWSER", &format!("no browser: {why}"));
                None
            }
            None => Some(Browser { script_dir, chromium }),
        }
    }
}

/// `ssh USER@HOST -p PORT` (the API's `ssh_command`, as SN27 prints it) as a login that records
/// the host key it meets in `known_hosts` (checked against the page's pinned fingerprint after).
fn login_of(command: &str, password: &str, known_hosts: &Path) -> Login {
    let words: Vec<&str> = command.split_whitespace().collect();
    let (user, host) = words
        .iter()
        .find_map(|w| w.split_once('@'))
        .unwrap_or_else(|| panic!("no user@host in the page's SSH command {command:?}"));
    let port = words
        .iter()
        .position(|w| *w == "-p")
        .and_then(|i| words.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no -p PORT in the page's SSH command {command:?}"));
    assert_eq!(words.first(), Some(&"ssh"), "the page shows an ssh command line: {command:?}");
    Login {
        host: host.to_owned(),
        port,
        user: user.to_owned(),
        identity: None,
        password: Some(secrecy::SecretString::from(password.to_owned())),
        connect_timeout: Duration::from_secs(20),
        host_key: HostKeyCheck::FirstUse { file: known_hosts.to_owned(), alias: "dashboard".into() },
        command_timeout: Duration::from_secs(30),
        max_output: 1 << 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renter_allocates_logs_in_restarts_and_releases_from_the_browser() {
    let Some(browser) = Browser::find() else { return };
    let mut net = World::new().await;
    // An H100, a 4090, and a miner whose GPU name is markup: the page must show it as text.
    let gpus = [
        "NVIDIA H100 80GB HBM3:81559:1",
        "NVIDIA GeForce RTX 4090:24564:2",
        "<img src=x onerror=window.__pwned=1> Evil GPU:16384:1",
    ];
    let mut slots = Vec::new();
    let mut miners = Vec::new();
    for g in gpus {
        let m = net.add_miner().await;
        let p = net.spawn_miner(&m, "local", g).await;
        net.wait_ready(&m, &p).await;
        slots.push(m);
        miners.push(Some(p));
    }
    assert!(net.cli(&["sync"]).await.status.success());
    let mut cfg = config(&[]);
    // Quick checks, and never released for being offline: the page must show "Offline".
    cfg.check_interval = Duration::from_millis(500);
    cfg.check_timeout = Duration::from_millis(800);
    cfg.offline_limit = 100_000;
    let server = serve(&net, cfg).await;
    let secret = token(&net.db(), "renter", "allocate");
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");

    let mut child = Command::new("node")
        .arg(browser.script_dir.join("dashboard.mjs"))
        .current_dir(&browser.script_dir)
        .env("NICOMPUTE_URL", format!("http://{}/", server.addr()))
        .env("NICOMPUTE_TOKEN", &secret)
        .env("NICOMPUTE_ARTIFACTS", &artifacts)
        .env("NICOMPUTE_CHROMIUM", &browser.chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut stdin = child.stdin.take().expect("stdin");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut ssh_output = None;
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let known_hosts = keys_dir.path().join("known_hosts");
    let report = loop {
        let line = tokio::time::timeout(Duration::from_secs(300), rx.recv())
            .await
            .expect("the browser script went quiet for 5 minutes")
            .unwrap_or_else(|| panic!("the browser script ended without a report ({:?})", child.wait()));
        let msg: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON from the script ({e}): {line}"));
        let answer = match msg["ask"].as_str() {
            Some("ssh") => {
                let login = login_of(
                    msg["command"].as_str().expect("command"),
                    msg["password"].as_str().expect("pw"),
                    &known_hosts,
                );
                let out =
                    sshexec::exec(&login, "echo dashboard-login-ok; whoami").await.expect("ssh with the page's login");
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                ssh_output = Some((out.exit_status, stdout.clone()));
                json!({"ok": true, "stdout": stdout})
            }
            Some("kill") => {
                let hk = msg["hotkey"].as_str().expect("hotkey");
                let i = slots.iter().position(|s| s.key.ss58() == hk).expect("a miner of this test");
                miners[i].take().expect("alive").kill();
                json!({"ok": true})
            }
            Some(other) => panic!("unknown question from the script: {other}"),
            None => break msg,
        };
        writeln!(stdin, "{answer}").expect("answer the script");
    };
    let status = child.wait().expect("node");
    assert_eq!(report["done"], true, "the browser script failed: {report:#}");
    assert!(status.success(), "{status}");
    let r = &report["report"];
    eprintln!("browser report: {r:#}");

    // A wrong token: refused, with the API's words.
    assert!(r["wrong_token_error"].as_str().is_some_and(|t| t.contains("unknown or revoked token")), "{r}");
    // Logged in: every machine listed, one bar per GPU model, the token in this tab only.
    assert_eq!(r["machines"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(r["chart_bars"], 3, "{r}");
    assert_eq!(r["storage"], json!({"session": true, "local": 0, "cookies": ""}));
    // The miner's markup is text: shown literally, never an element, never run.
    assert!(
        r["machines"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|m| m.as_str() == Some(gpus[2].split(':').next().expect("name"))),
        "{r}"
    );
    assert_eq!((r["hostile_name_elements"].as_u64(), r["pwned"].as_bool()), (Some(0), Some(false)), "{r}");
    // The filter narrowed the list to the H100.
    assert_eq!(r["filtered"], json!(["NVIDIA H100 80GB HBM3"]), "{r}");
    assert_eq!(r["filtered_summary"], "Showing 1–1 of 1 machine.");
    // The server's progress was shown while the miners were asked.
    let progress: Vec<&str> = r["progress"].as_array().expect("progress").iter().filter_map(Value::as_str).collect();
    assert!(progress.iter().any(|p| p.starts_with("checking 1 matching miner")), "{progress:?}");
    assert!(progress.iter().any(|p| p.starts_with(&format!("asking miner {}", slots[0].key.ss58()))), "{progress:?}");
    // The login the page showed works with the built-in client.
    assert_eq!(r["password_hidden_first"], true, "the password is revealed on click");
    let (exit, out) = ssh_output.expect("the script asked to run the SSH command");
    assert_eq!(exit, Some(0));
    assert!(out.contains("dashboard-login-ok"), "{out}");
    // The page shows the host key the miner signed, and it is the one the machine presented.
    let met = compute::known_hosts::keys_for(&known_hosts, "dashboard").expect("known_hosts");
    assert_eq!(met.len(), 1, "{met:?}");
    assert_eq!(r["host_key_fingerprint"].as_str(), Some(sshexec::fingerprint(&met[0]).as_str()), "{r}");
    assert!(r["howto"].as_array().is_some_and(|s| s.len() >= 4), "log-in steps for a newcomer: {r}");
    assert_eq!(r["h100_card_command"], r["ssh_command"]);
    assert_ne!(r["countdown"][0], r["countdown"][1], "the expiry counts down: {r}");
    // Restart: the miner's real result.
    assert!(r["restart"].as_str().is_some_and(|t| t.starts_with("Restarted")), "{r}");
    // Pause and unpause: confirmed by the miner and observed (no SSH greeting, then one again).
    assert!(r["pause"].as_str().is_some_and(|t| t.starts_with("Paused")), "{r}");
    assert!(r["unpause"].as_str().is_some_and(|t| t.starts_with("Running again")), "{r}");
    // "Allocate this machine" from a row chose the 4090.
    assert!(r["chosen"].as_str().is_some_and(|t| t.contains("4090")), "{r}");
    // The killed miner turned "Offline" live, without a reload.
    assert!(r["offline_text"].as_str().is_some_and(|t| t.starts_with("Offline")), "{r}");
    assert_eq!(r["reloaded_for_offline"], false);
    // Released: gone from the list, kept under "show ended".
    assert!(r["release_notice"].as_str().is_some_and(|t| t.contains("Released")), "{r}");
    assert!(
        r["cards_left"].as_array().is_some_and(|c| c.iter().all(|t| !t.as_str().unwrap_or("").contains("H100"))),
        "{r}"
    );
    assert_eq!(r["narrow_overflow"], 0, "nothing wider than a phone's screen: {r}");
    // A token kept in the tab (a reload): the machines at once; a refused one (its early
    // requests refused too) asks to log in again, shows no machine and throws nothing.
    assert_eq!(r["stored_ok"], json!({"rows": 3, "errors": []}), "{r}");
    let refused = &r["stored_refused"];
    assert!(refused["alert"].as_str().is_some_and(|t| t.contains("unknown or revoked token")), "{r}");
    assert_eq!((&refused["login"], &refused["rows"], &refused["errors"]), (&json!(true), &json!(0), &json!([])), "{r}");
    assert_eq!(r["console_errors"], json!([]), "{r}");
    assert_eq!(r["page_loads"], 1, "the whole job in one page, never reloaded: {r}");

    // The database agrees with the page.
    let db = compute::db::ComputeDb::open(net.db()).expect("db");
    assert!(db.allocation(&slots[0].key.ss58()).expect("read").is_none(), "the H100 is released");
    let rtx = db.health(&slots[1].key.ss58()).expect("read").expect("health");
    assert!(!rtx.online, "the killed miner's allocation is offline");
    server.shutdown().await;
    for m in miners.into_iter().flatten() {
        m.stop();
    }
    net.chain.shutdown().await;
}
