//! The `nicompute` binary as a user runs it: wallets (ours and the SDK's, both ways) and
//! `query` against a real SDK axon; exit codes and `--json` documents.

use std::process::Output;

use bittensor::wallet::{NoPassword, Wallet};
use bittensor::{AccountId, Keypair, Signature};
use serde_json::Value;

use crate::harness::{self, text, ClosedPort};
use crate::peers::{mnemonic, py_wallet, python, root, PyAxon, VERSIONS};

const PASSWORD: &str = "interop-Passw0rd";

/// `nicompute <args>` in a home of its own, with the wallet password scripts would pass.
fn nicompute(args: &[&str]) -> Output {
    with_password(args, Some(PASSWORD))
}

fn with_password(args: &[&str], password: Option<&str>) -> Output {
    let home = tempfile::tempdir().expect("tmp");
    let mut c = harness::nicompute(home.path());
    if let Some(p) = password {
        c.env("NICOMPUTE_WALLET_PASSWORD", p);
    }
    c.args(args).output().expect("run nicompute")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn wallet_show_reads_the_real_btcli_wallet() {
    let path = root().join("tests/fixtures/wallet");
    let p = path.to_str().expect("utf8");
    let out = nicompute(&[
        "wallet",
        "show",
        "--wallet.path",
        p,
        "--wallet.name",
        "testwallet",
        "--wallet.hotkey",
        "testhotkey",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5FkP9gemohKBNthHBX42QXiJZumc9f6U9hrua33bcAPxEE62"), "{text}");
    assert!(text.contains("5HTCeeU8eyFfcrWZW96K2mzzrxZT9CBBmKSPFXtDLoTBCnVg"), "{text}");
    assert!(!text.contains("tray obvious"), "no mnemonic without --show-secrets");

    let out = nicompute(&[
        "wallet",
        "show",
        "--json",
        "--wallet-path",
        p,
        "--wallet-name",
        "testwallet",
        "--wallet-hotkey",
        "testhotkey",
    ]);
    let v = json_of(&out);
    assert_eq!(v["coldkey"]["ss58"], "5HTCeeU8eyFfcrWZW96K2mzzrxZT9CBBmKSPFXtDLoTBCnVg");
    assert_eq!(v["coldkey"]["encrypted"], true);
    assert_eq!(v["hotkeys"][0]["public_key"], "0xa2f78b5ef6ab5b5cd34a6323852d6c89745166ea70b4ddcc2b91d6d119309959");
    assert!(v["hotkeys"][0].get("mnemonic").is_none());

    let secrets = |password: &str| {
        let args = ["wallet", "show", "--show-secrets", "--json", "--wallet.path", p, "--wallet.name", "testwallet"];
        with_password(&[&args[..], &["--wallet.hotkey", "testhotkey"]].concat(), Some(password))
    };
    let out = secrets("Fixture-Passw0rd!");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v = json_of(&out);
    assert_eq!(
        v["hotkeys"][0]["mnemonic"],
        "tray obvious love transfer liberty push swallow light random vacant evoke pattern"
    );
    assert_eq!(
        v["coldkey"]["mnemonic"],
        "illegal gift dizzy donate blade shadow achieve suggest truth course harsh awful"
    );
    let out = secrets("wrong");
    assert_eq!(out.status.code(), Some(1));
    let msg = json_of(&out)["error"].to_string();
    assert!(msg.contains("wrong password") && msg.contains("coldkey"), "{msg}");
}

#[test]
fn missing_wallet_fails_with_a_clear_error_and_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().to_str().expect("utf8");
    let out = nicompute(&["wallet", "show", "--wallet.path", p, "--wallet.name", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wallet 'ghost' not found") && err.contains("nicompute wallet create"), "{err}");
    let out = nicompute(&["wallet", "show", "--json", "--wallet.path", p, "--wallet.name", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json_of(&out)["error"]["message"].as_str().is_some_and(|m| m.contains("ghost")));
}

/// Precedence through the binary, as a user meets it: a flag beats the environment, which beats
/// the config file, which beats the default; an empty variable counts as unset; the chain is one
/// setting. (The unit tests in `config/tests.rs` cover the file without the environment.)
#[tokio::test]
async fn settings_come_from_the_flag_then_the_environment_then_the_file() {
    let home = tempfile::tempdir().expect("tmp");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.toml");
    let (c1, c2, c3) = (ClosedPort::new(), ClosedPort::new(), ClosedPort::new());
    let url = |c: &ClosedPort| format!("ws://127.0.0.1:{}", c.port());
    std::fs::write(
        &config,
        format!(
            "[wallet]\npath = \"wallets\"\nname = \"from-file\"\n\n[subtensor]\nchain_endpoint = \"{}\"\n",
            url(&c1)
        ),
    )
    .expect("config");
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = harness::nicompute(home.path());
        c.env("NICOMPUTE_CONFIG", &config).envs(env.iter().copied()).args(args);
        let out = c.output().expect("run");
        assert_ne!(out.status.code(), Some(0), "{args:?} should fail");
        text(&out.stderr)
    };
    let wallet = |env: &[(&str, &str)], args: &[&str]| run(env, &[&["wallet", "show"][..], args].concat());
    let under = dir.path().join("wallets").display().to_string();
    let e = wallet(&[], &[]);
    assert!(e.contains("wallet 'from-file' not found") && e.contains(&under), "the file: {e}");
    let e = wallet(&[("BT_WALLET_NAME", "from-env")], &[]);
    assert!(e.contains("wallet 'from-env' not found") && e.contains(&under), "the environment: {e}");
    let e = wallet(&[("BT_WALLET_NAME", "from-env")], &["--wallet.name", "from-flag"]);
    assert!(e.contains("wallet 'from-flag' not found"), "the flag: {e}");
    let e = wallet(&[("BT_WALLET_NAME", "")], &[]);
    assert!(e.contains("wallet 'from-file' not found"), "an empty variable is unset: {e}");

    let e = run(&[], &["metagraph"]);
    assert!(e.contains(&url(&c1)), "the file's endpoint: {e}");
    let e = run(&[("BT_SUBTENSOR_CHAIN_ENDPOINT", &url(&c2))], &["metagraph"]);
    assert!(e.contains(&url(&c2)), "the environment's endpoint: {e}");
    let e = run(&[("BT_SUBTENSOR_CHAIN_ENDPOINT", &url(&c2))], &["metagraph", "--subtensor.network", &url(&c3)]);
    assert!(e.contains(&url(&c3)), "a network flag beats an endpoint variable: {e}");
}

#[test]
fn usage_errors_exit_2_before_any_network_call() {
    let out = nicompute(&["query", "--axon", "127.0.0.1:1", "--axon-hotkey", "5Notanaddress", "--synapse", "Specs"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--axon-hotkey"));
    let out = nicompute(&[
        "query",
        "--axon",
        "nowhere",
        "--axon-hotkey",
        "5GjRsEzPyDim3bA7UM7v8ax1Z6DkCUVKj4mbnvHK85gF4aDj",
        "--synapse",
        "Specs",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = nicompute(&[
        "query",
        "--json",
        "--axon",
        "127.0.0.1:9",
        "--axon-hotkey",
        "5GjRsEzPyDim3bA7UM7v8ax1Z6DkCUVKj4mbnvHK85gF4aDj",
        "--synapse",
        "Allocate",
        "--fields",
        r#"{"timeline": "soon"}"#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(json_of(&out)["error"]["message"].as_str().is_some_and(|m| m.contains("timeline")));
    let out = nicompute(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn wallet_create_without_password_source_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = with_password(&["wallet", "create", "--wallet.path", dir.path().to_str().expect("utf8")], None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NICOMPUTE_WALLET_PASSWORD"));
    assert!(!dir.path().join("default/coldkey").exists(), "nothing half-written");
}

#[test]
fn wallets_cross_between_nicompute_and_the_sdk() {
    for version in VERSIONS {
        let Some(py) = python(version) else { continue };
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().to_str().expect("utf8");

        // nicompute creates; the SDK loads, decrypts the coldkey and signs with the hotkey.
        let out = nicompute(&[
            "wallet",
            "create",
            "--json",
            "--wallet.path",
            p,
            "--wallet.name",
            "ours",
            "--wallet.hotkey",
            "hk",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let created = json_of(&out);
        let sdk = py_wallet(&py, &["load", "--path", p, "--name", "ours", "--hotkey", "hk"], PASSWORD);
        assert_eq!(sdk["coldkey_ss58"], created["coldkey"]["ss58"], "{version}: SDK decrypts our coldkey");
        assert_eq!(sdk["coldkeypub_ss58"], created["coldkey"]["ss58"]);
        assert_eq!(sdk["hotkey_ss58"], created["hotkey"]["ss58"]);
        let hot = AccountId::from_ss58(sdk["hotkey_ss58"].as_str().expect("ss58")).expect("id");
        let sig = Signature::from_hex(sdk["hotkey_signature_of_hello"].as_str().expect("sig")).expect("hex");
        assert!(hot.verify(b"hello", &sig), "{version}: SDK signature verifies here");
        let ours = Wallet::new(dir.path(), "ours", "hk").hotkey(&NoPassword).expect("our hotkey");
        let our_sig = ours.sign(b"hello").to_hex();
        let v = py_wallet(
            &py,
            &["verify", "--ss58", &ours.ss58(), "--message", "hello", "--signature", &our_sig],
            PASSWORD,
        );
        assert_eq!(v["valid"], true, "{version}: our signature verifies in the SDK");

        // The SDK creates; nicompute reads it and decrypts the coldkey.
        let made = py_wallet(&py, &["create", "--path", p, "--name", "theirs", "--hotkey", "hk"], PASSWORD);
        let out = nicompute(&[
            "wallet",
            "show",
            "--json",
            "--wallet.path",
            p,
            "--wallet.name",
            "theirs",
            "--wallet.hotkey",
            "hk",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let shown = json_of(&out);
        assert_eq!(shown["coldkey"]["ss58"], made["coldkey_ss58"], "{version}");
        assert_eq!(shown["hotkeys"][0]["ss58"], made["hotkey_ss58"], "{version}");
        let cold = Wallet::new(dir.path(), "theirs", "hk")
            .coldkey(&bittensor::wallet::FixedPassword(bittensor::wallet::SecretString::from(PASSWORD.to_owned())))
            .expect("decrypt the SDK's coldkey");
        assert_eq!(Value::String(cold.ss58()), made["coldkey_ss58"]);
    }
}

#[test]
fn query_a_real_sdk_axon() {
    for version in VERSIONS {
        let Some(py) = python(version) else { continue };
        let axon = PyAxon::start(&py, &[]);
        let dir = tempfile::tempdir().expect("tmp");
        let w = Wallet::new(dir.path(), "client", "default");
        w.write_hotkey(&Keypair::from_mnemonic(&mnemonic("dendrite_hotkey")).expect("kp")).expect("hotkey");
        let axon_ss58 = Keypair::from_mnemonic(&mnemonic("axon_hotkey")).expect("kp").ss58();
        let addr = format!("127.0.0.1:{}", axon.port);
        let p = dir.path().to_str().expect("utf8");
        let base =
            ["query", "--wallet.path", p, "--wallet.name", "client", "--axon", &addr, "--axon-hotkey", &axon_ss58];

        let out = nicompute(&[&base[..], &["--synapse", "Specs", "--json"]].concat());
        assert!(out.status.success(), "{version}: {}", String::from_utf8_lossy(&out.stderr));
        let v = json_of(&out);
        assert_eq!((v["status_code"].as_i64(), v["success"].as_bool()), (Some(200), Some(true)));
        let specs: Value = serde_json::from_str(v["synapse"]["specs_output"].as_str().expect("specs")).expect("json");
        assert_eq!(specs["bittensor"], version);

        let out = nicompute(&[&base[..], &["--synapse", "Allocate", "--fields", r#"{"timeline": 90}"#]].concat());
        assert!(out.status.success(), "{version}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("200 Success"), "{text}");
        assert!(text.contains("\"port\": 4444"), "{text}");

        let out = nicompute(&[&base[..], &["--synapse", "Nope", "--json"]].concat());
        assert_eq!(out.status.code(), Some(1));
        let v = json_of(&out);
        assert_eq!((v["status_code"].as_i64(), v["outcome"].as_str()), (Some(404), Some("not_found")), "{v}");
    }
}

mod chain {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    use bittensor::devnet::{self, ops, DevnetConfig};
    use bittensor::subtensor::{server, Subtensor};
    use bittensor::Keypair;
    use serde_json::Value;

    use super::{json_of, nicompute, root};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metagraph_reads_the_replayed_real_chain_and_the_devnet_with_one_code_path() {
        let path = root().join("tests/fixtures/metagraph/01_sn1_block6852690_spec343/rpc_transcript.json");
        let entries: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("transcript")).expect("json");
        let replay =
            server::spawn("127.0.0.1:0".parse().expect("addr"), server::replay(&entries)).await.expect("replay");
        let url = replay.ws_url();
        let out = tokio::task::spawn_blocking(move || {
            nicompute(&["metagraph", "--json", "--netuid", "1", "--subtensor.chain_endpoint", &url])
        })
        .await
        .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v = json_of(&out);
        assert_eq!(v["block"], 6_852_690);
        assert_eq!(v["neurons"].as_array().map(Vec::len), Some(1024));
        // S is an f32 (as in the SDK); JSON carries its shortest form.
        assert_eq!(v["neurons"][24]["stake_tao"].as_f64().map(|x| x as f32), Some(58036.81f32));

        let dir = tempfile::tempdir().expect("tmp");
        let owner = Keypair::generate(12).expect("k");
        let cfg = DevnetConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            ..DevnetConfig::new(dir.path(), owner.account_id())
        };
        let node = devnet::spawn(cfg).await.expect("devnet");
        let chain = Subtensor::new(&node.ws_url()).expect("client");
        let cold = Keypair::generate(12).expect("k");
        let (v, m) = (Keypair::generate(12).expect("k"), Keypair::generate(12).expect("k"));
        ops::fund(&chain, &owner, &[(cold.account_id(), 10_000_000_000_000)]).await.expect("fund");
        ops::register(&chain, &cold, &v.account_id(), 27).await.expect("register");
        ops::register(&chain, &cold, &m.account_id(), 27).await.expect("register");
        ops::stake_to(&chain, &cold, &v.account_id(), 27, 5_000_000_000_000).await.expect("stake");
        ops::serve_axon(&chain, &m, 27, "127.0.0.1".parse().expect("ip"), 8091, 9_000_000).await.expect("serve");
        for url in [node.ws_url(), node.http_url()] {
            let (u, ms) = (url.clone(), m.ss58());
            let out = tokio::task::spawn_blocking(move || nicompute(&["metagraph", "--subtensor.chain_endpoint", &u]))
                .await
                .expect("run");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(&ms) && text.contains("127.0.0.1:8091") && text.contains("5000.0000"), "{text}");
            assert!(text.contains("2 neurons, 1 with a validator permit, 1 serving"), "{text}");
        }
        let u = node.ws_url();
        let out = tokio::task::spawn_blocking(move || {
            nicompute(&["metagraph", "--netuid", "99", "--subtensor.chain_endpoint", &u])
        })
        .await
        .expect("run");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("netuid 99 does not exist"));
        node.shutdown().await;
    }

    #[tokio::test]
    async fn metagraph_errors_name_the_endpoint() {
        let closed = crate::harness::ClosedPort::new();
        let url = format!("ws://127.0.0.1:{}", closed.port());
        let out = nicompute(&["metagraph", "--subtensor.chain_endpoint", &url]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&url));
        let out = nicompute(&["metagraph", "--subtensor.network", "mainnet"]);
        assert_eq!(out.status.code(), Some(2), "unknown network name is a usage error");
    }

    #[test]
    fn devnet_chain_command_serves_and_stops_on_sigterm() {
        let dir = tempfile::tempdir().expect("tmp");
        let home = tempfile::tempdir().expect("tmp");
        let mut child = crate::harness::nicompute(home.path())
            .args(["devnet", "chain", "--port", "0", "--block-time", "1s", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        let url = line.split_whitespace().nth(3).expect("url in the ready line").to_owned();
        assert!(url.starts_with("ws://127.0.0.1:"), "{line}");
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let (best, genesis) = rt.block_on(async {
            let c = Subtensor::new(&url).expect("client");
            (c.best_block().await.expect("best block"), c.genesis_hash().await.expect("genesis"))
        });
        if best.number == 0 {
            assert_eq!(best.hash, format!("0x{}", hex::encode(genesis)), "block 0 is the genesis");
        }
        assert!(dir.path().join("chain.sqlite").exists());
        crate::harness::signal(child.id(), "-TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "exits cleanly on SIGTERM: {status}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
