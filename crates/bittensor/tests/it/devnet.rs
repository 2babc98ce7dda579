//! The embedded devnet chain as a Substrate node: finney's spec-343 metadata served, funding by
//! the owner's sudo extrinsic, registrations, stake and axons by real signed extrinsics through
//! the client's one write path, the metagraph read back over WebSocket and HTTP, blocks and
//! events consistent, state kept across a restart — and forged extrinsics (bad signature, wrong
//! genesis, wrong spec version, stale or future nonce), unfunded registrations, serves from
//! unregistered hotkeys, funding by anyone but the owner, refused with the runtime's own words.

use std::time::Duration;

use bittensor::devnet::{self, ops, DevnetConfig, DevnetHandle, Rules};
use bittensor::extrinsic::signed;
use bittensor::keys::Keypair;
use bittensor::subtensor::calls::{self, RAO_PER_TAO};
use bittensor::subtensor::tx::{RefusalStage, TxError, TxOptions};
use bittensor::subtensor::Subtensor;
use serde_json::{json, Value};

use crate::util::fixtures;

fn fresh() -> Keypair {
    Keypair::generate(12).expect("key")
}

async fn devnet(dir: &std::path::Path, owner: &Keypair, rules: Rules) -> DevnetHandle {
    let cfg = DevnetConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        block_time: Duration::from_secs(30),
        rules,
        ..DevnetConfig::new(dir, owner.account_id())
    };
    devnet::spawn(cfg).await.expect("devnet")
}

/// The pool's refusal of `xt`, by the runtime's name.
async fn pool_refusal(chain: &Subtensor, md: &bittensor::extrinsic::Metadata, xt: &signed::SignedExtrinsic) -> String {
    match chain.submit_signed("test", md, xt, &TxOptions::default()).await {
        Err(TxError::Refused { stage: RefusalStage::Pool, failure, .. }) => failure.name,
        other => panic!("expected a pool refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_serves_finneys_metadata_and_sets_up_a_network_by_extrinsics() {
    let dir = tempfile::tempdir().expect("tmp");
    let owner = fresh();
    let node = devnet(dir.path(), &owner, Rules::default()).await;
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    assert!(ops::is_devnet(&chain).await.expect("system_chain"));

    // The recorded spec-343 metadata, V14 and V15, and that runtime's versions.
    let v14 = std::fs::read_to_string(fixtures().join("chain/metadata_v14_spec343.hex")).expect("v14");
    assert_eq!(chain.request("state_getMetadata", json!([])).await.expect("metadata"), json!(v14.trim()));
    let v15 = std::fs::read_to_string(fixtures().join("chain/metadata_at_version15_spec343.hex")).expect("v15");
    let at15 = chain.state_call("Metadata_metadata_at_version", &15u32.to_le_bytes(), None).await.expect("v15");
    assert_eq!(format!("0x{}", hex::encode(at15)), v15.trim());
    let rt = chain.runtime().await.expect("runtime");
    assert_eq!((rt.spec_version, rt.transaction_version, rt.metadata.version), (343, 1, 14));

    // Funding: the owner's sudo call; 16 coldkeys register 16 hotkeys at once.
    let colds: Vec<Keypair> = (0..16).map(|_| fresh()).collect();
    let hots: Vec<Keypair> = (0..16).map(|_| fresh()).collect();
    let funds: Vec<_> = colds.iter().map(|c| (c.account_id(), 3_000 * RAO_PER_TAO)).collect();
    ops::fund(&chain, &owner, &funds).await.expect("fund");
    assert_eq!(chain.free_balance(&colds[0].account_id()).await.expect("balance"), 3_000 * RAO_PER_TAO);
    let mut set = tokio::task::JoinSet::new();
    for (c, h) in colds.iter().zip(&hots) {
        let (chain, c, h) = (chain.clone(), c.clone(), h.account_id());
        set.spawn(async move { ops::register(&chain, &c, &h, 27).await.expect("register") });
    }
    let mut uids = Vec::new();
    while let Some(u) = set.join_next().await {
        uids.push(u.expect("task"));
    }
    uids.sort_unstable();
    assert_eq!(uids, (0..16).collect::<Vec<u16>>(), "distinct uids, no lost write");
    let uid3 = chain.uid_of(27, &hots[3].account_id()).await.expect("uid").expect("registered");
    let again = ops::register(&chain, &colds[3], &hots[3].account_id(), 27).await.expect("again");
    assert_eq!(again, uid3, "registering again sends nothing and gives the same uid");

    // The burn and the fee came out of the balance; the fee is the one quoted.
    let burn = chain.burn(27).await.expect("burn");
    assert_eq!(burn, RAO_PER_TAO);
    let (cold, hot) = (fresh(), fresh());
    ops::fund(&chain, &owner, &[(cold.account_id(), 10 * RAO_PER_TAO)]).await.expect("fund");
    let opts = TxOptions::default();
    let prepared = chain
        .prepare(&calls::burned_register(27, &hot.account_id()), &cold.account_id(), &opts)
        .await
        .expect("prepare");
    let fee = chain.quote(&prepared).await.expect("quote");
    let done = chain.submit(&prepared, &cold, &opts).await.expect("register");
    assert_eq!(done.fee_paid, Some(fee));
    assert_eq!(chain.free_balance(&cold.account_id()).await.expect("balance"), 10 * RAO_PER_TAO - burn - fee);
    for e in [
        "Balances.Withdraw",
        "SubtensorModule.NeuronRegistered",
        "TransactionPayment.TransactionFeePaid",
        "System.ExtrinsicSuccess",
    ] {
        assert!(done.events.iter().any(|x| x == e), "{e} in {:?}", done.events);
    }
    assert_eq!(done.extrinsic_index, 1, "the timestamp inherent is extrinsic 0");

    // Blocks: the hash chain and the header agree; the block holds the extrinsic.
    let header = chain.request("chain_getHeader", json!([done.block_hash])).await.expect("header");
    let n = u64::from_str_radix(header["number"].as_str().expect("number").trim_start_matches("0x"), 16).expect("hex");
    assert_eq!(n, done.block_number);
    assert_eq!(chain.request("chain_getBlockHash", json!([n])).await.expect("hash"), json!(done.block_hash));
    let parent = chain.request("chain_getBlockHash", json!([n - 1])).await.expect("parent");
    assert_eq!(header["parentHash"], parent);
    let block = chain.request("chain_getBlock", json!([done.block_hash])).await.expect("block");
    assert_eq!(block["block"]["extrinsics"].as_array().map(Vec::len), Some(2));

    // The validator stakes; the end of the block gives it a permit. Miners serve.
    ops::stake_to(&chain, &colds[0], &hots[0].account_id(), 27, 2_000 * RAO_PER_TAO as u64).await.expect("stake");
    ops::stake_to(&chain, &colds[0], &hots[0].account_id(), 27, 2_000 * RAO_PER_TAO as u64)
        .await
        .expect("nothing to add");
    for (i, h) in hots.iter().enumerate().skip(1) {
        ops::serve_axon(&chain, h, 27, "127.0.0.1".parse().expect("ip"), 9000 + i as u16, 9_000_000)
            .await
            .expect("serve");
    }
    for url in [node.ws_url(), node.http_url()] {
        let mg = Subtensor::new(&url).expect("client").metagraph(27).await.expect("metagraph");
        assert_eq!(mg.neurons.len(), 17);
        let v = mg.by_hotkey(&hots[0].ss58()).expect("validator");
        assert!(v.validator_permit);
        assert_eq!(v.stake_tao, 2000.0);
        assert!(!v.axon.serving);
        let m = mg.by_hotkey(&hots[5].ss58()).expect("miner");
        assert!(!m.validator_permit);
        assert_eq!(m.axon.addr().as_deref(), Some("127.0.0.1:9005"));
        assert_eq!(m.coldkey, colds[5].ss58());
    }
    assert_eq!(
        chain.stake(&colds[0].account_id(), &hots[0].account_id(), 27).await.expect("stake"),
        2_000 * RAO_PER_TAO as u64
    );
    let before = chain.metagraph(27).await.expect("metagraph");
    node.shutdown().await;

    // A restart keeps everything, and blocks continue from the stored chain.
    let node = devnet(dir.path(), &owner, Rules::default()).await;
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    let after = chain.metagraph(27).await.expect("metagraph");
    assert_eq!(after.neurons, before.neurons, "state survives a restart");
    assert!(after.block >= before.block);
    let genesis = chain.request("chain_getBlockHash", json!([0])).await.expect("genesis");
    assert_eq!(genesis, json!(format!("0x{}", hex::encode(rt.genesis_hash))), "the same chain");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_refuses_forgeries_and_follows_the_runtimes_rules() {
    let dir = tempfile::tempdir().expect("tmp");
    let owner = fresh();
    let rules = Rules { serving_rate_limit: 50, allow_localhost_axon: false, ..Rules::default() };
    let node = devnet(dir.path(), &owner, rules).await;
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    let (cold, hot, stranger) = (fresh(), fresh(), fresh());
    ops::fund(&chain, &owner, &[(cold.account_id(), 100 * RAO_PER_TAO)]).await.expect("fund");
    let opts = TxOptions::default();
    let rt = chain.runtime().await.expect("runtime");
    let md = rt.metadata.clone();

    // Forged extrinsics never reach a block: the pool names why.
    let call = calls::burned_register(27, &hot.account_id());
    let prepared = chain.prepare(&call, &cold.account_id(), &opts).await.expect("prepare");
    let good = signed::sign(&md, &cold, &prepared.call, &prepared.params).expect("sign");
    let mut tampered = good.clone();
    let at = tampered.bytes.len() - 10;
    tampered.bytes[at] ^= 1; // a byte of the call data, under the signature
    assert_eq!(pool_refusal(&chain, &md, &tampered).await, "InvalidTransaction::BadProof");
    let wrong = |edit: &dyn Fn(&mut bittensor::extrinsic::ExtensionParams)| {
        let mut p = prepared.params.clone();
        edit(&mut p);
        signed::sign(&md, &cold, &prepared.call, &p).expect("sign")
    };
    let other_chain = wrong(&|p| p.genesis_hash = [7; 32]);
    assert_eq!(pool_refusal(&chain, &md, &other_chain).await, "InvalidTransaction::BadProof", "wrong genesis");
    let old_runtime = wrong(&|p| p.spec_version = 342);
    assert_eq!(pool_refusal(&chain, &md, &old_runtime).await, "InvalidTransaction::BadProof", "wrong spec version");
    let ahead = wrong(&|p| p.nonce += 5);
    assert_eq!(pool_refusal(&chain, &md, &ahead).await, "InvalidTransaction::Future");
    // The genuine one lands; sent again it is stale.
    chain.submit_signed("burned_register", &md, &good, &opts).await.expect("genuine");
    assert_eq!(pool_refusal(&chain, &md, &good).await, "InvalidTransaction::Stale", "a replay");
    assert_eq!(chain.metagraph(27).await.expect("metagraph").neurons.len(), 1, "only the genuine one landed");

    // Rules at dispatch, by the runtime's names; the fee is paid, nothing else changes.
    let refused = |r: Result<_, TxError>| match r {
        Err(TxError::Refused { stage: RefusalStage::Dispatch, failure, .. }) => failure.name,
        other => panic!("expected a dispatch refusal, got {other:?}"),
    };
    let send = |call: bittensor::extrinsic::Call, key: Keypair| {
        let chain = chain.clone();
        async move {
            let p = chain.prepare(&call, &key.account_id(), &TxOptions::default()).await?;
            chain.submit(&p, &key, &TxOptions::default()).await
        }
    };
    // A coldkey that can pay the fee but not the burn.
    let poor = fresh();
    ops::fund(&chain, &owner, &[(poor.account_id(), RAO_PER_TAO / 2)]).await.expect("fund");
    let r = send(calls::burned_register(27, &fresh().account_id()), poor.clone()).await;
    assert_eq!(refused(r), "NotEnoughBalanceToStake");
    // One with nothing cannot even pay the fee.
    let r = send(calls::burned_register(27, &fresh().account_id()), fresh()).await;
    assert!(
        matches!(r, Err(TxError::Refused { stage: RefusalStage::Pool, ref failure, .. }) if failure.name == "InvalidTransaction::Payment"),
        "{r:?}"
    );
    // Serving: unregistered hotkeys, 127.0.0.1 (refused by these rules, as by the runtime),
    // then a good address, then too soon again.
    let serve = |ip: &str| calls::serve_axon(27, 1, ip.parse().expect("ip"), 8091);
    assert_eq!(refused(send(serve("127.0.0.2"), stranger.clone()).await), "HotKeyNotRegisteredInNetwork");
    assert_eq!(refused(send(serve("127.0.0.1"), hot.clone()).await), "InvalidIpAddress");
    send(serve("127.0.0.2"), hot.clone()).await.expect("served");
    assert_eq!(refused(send(serve("127.0.0.3"), hot.clone()).await), "ServingRateLimitExceeded");
    let axon = chain.endpoints_of(27, &hot.account_id()).await.expect("read").expect("registered").axon;
    assert_eq!(axon.ip, u128::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2))));
    // Funding is the owner's alone; another key's sudo call is refused.
    let r = send(ops::force_set_balance(&stranger.account_id(), 1_000_000 * RAO_PER_TAO), stranger.clone()).await;
    assert_eq!(refused(r), "RequireSudo");
    assert_eq!(chain.free_balance(&stranger.account_id()).await.expect("balance"), 0);
    // A call the devnet does not implement is refused by name at the pool.
    let weights = bittensor::extrinsic::Call::new("System", "remark").arg("remark", scale_value_bytes(b"hi"));
    let p = chain.prepare(&weights, &cold.account_id(), &opts).await.expect("prepare");
    let r = chain.submit(&p, &cold, &opts).await;
    assert!(
        matches!(&r, Err(TxError::Refused { stage: RefusalStage::Pool, failure, .. }) if failure.docs.contains("System.remark")),
        "{r:?}"
    );
    // Malformed input: errors, never a block.
    let e = chain.request("author_submitExtrinsic", json!(["0x00"])).await.unwrap_err();
    assert!(e.to_string().contains("invalid format"), "{e}");
    let e =
        chain.request("state_call", json!(["NeuronInfoRuntimeApi_get_neurons_lite", "0x01", null])).await.unwrap_err();
    assert!(e.to_string().contains("cannot decode the arguments"), "{e}");
    let e = chain.request("state_getStorage", json!(["zz"])).await.unwrap_err();
    assert!(e.to_string().contains("not hex"), "{e}");
    let v: Value = chain.request("system_accountNextIndex", json!([cold.ss58()])).await.expect("nonce");
    assert_eq!(v, json!(1), "only the genuine registration used a nonce");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_transfers_and_serves_prometheus_by_extrinsics_with_the_runtimes_accounting() {
    // Transfers move exactly the amount and charge the fee they report; keep_alive and an
    // overdraft are refused by the runtime's names with nothing moved; serve_prometheus writes
    // `SubtensorModule.Prometheus` and, as in Subtensor (`Pays::No`), costs an unfunded hotkey
    // nothing.
    let dir = tempfile::tempdir().expect("tmp");
    let owner = fresh();
    let node = devnet(dir.path(), &owner, Rules::default()).await;
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    let (cold, hot, dest) = (fresh(), fresh(), fresh());
    ops::fund(&chain, &owner, &[(cold.account_id(), 100 * RAO_PER_TAO)]).await.expect("fund");
    let opts = TxOptions::default();
    let send = |call: bittensor::extrinsic::Call| {
        let (chain, cold) = (chain.clone(), cold.clone());
        async move {
            let p = chain.prepare(&call, &cold.account_id(), &TxOptions::default()).await?;
            chain.submit(&p, &cold, &TxOptions::default()).await
        }
    };

    // A transfer: the receiver gets exactly the amount, the sender pays it and the fee charged.
    let sent = send(calls::transfer_keep_alive(&dest.account_id(), 7 * RAO_PER_TAO)).await.expect("transfer");
    assert!(sent.events.iter().any(|e| e == "Balances.Transfer"), "{:?}", sent.events);
    let fee = sent.fee_paid.expect("the fee is reported");
    assert!(fee > 0);
    assert_eq!(chain.free_balance(&dest.account_id()).await.expect("balance"), 7 * RAO_PER_TAO);
    assert_eq!(chain.free_balance(&cold.account_id()).await.expect("balance"), 93 * RAO_PER_TAO - fee);
    // keep_alive refuses to empty the sender; more than it has is refused too; nothing moves.
    let before = chain.free_balance(&dest.account_id()).await.expect("balance");
    let all = chain.free_balance(&cold.account_id()).await.expect("balance");
    let r = send(calls::transfer_keep_alive(&dest.account_id(), all - fee)).await;
    assert!(matches!(&r, Err(TxError::Refused { failure, .. }) if failure.name == "Token::NotExpendable"), "{r:?}");
    let r = send(calls::transfer_keep_alive(&dest.account_id(), 1_000 * RAO_PER_TAO)).await;
    assert!(matches!(&r, Err(TxError::Refused { failure, .. }) if failure.name == "Token::FundsUnavailable"), "{r:?}");
    assert_eq!(chain.free_balance(&dest.account_id()).await.expect("balance"), before, "a refusal moves nothing");

    // serve_prometheus by a registered hotkey lands in SubtensorModule.Prometheus, as on finney.
    ops::register(&chain, &cold, &hot.account_id(), 27).await.expect("register");
    let p = chain
        .prepare(&calls::serve_prometheus(27, 221, "127.0.0.5".parse().expect("ip"), 7091), &hot.account_id(), &opts)
        .await
        .expect("prepare");
    // Serving is `Pays::No` in Subtensor: an unfunded hotkey serves, and pays nothing.
    let served = chain.submit(&p, &hot, &opts).await.expect("served");
    assert_eq!(served.events, ["SubtensorModule.PrometheusServed", "System.ExtrinsicSuccess"]);
    assert_eq!(served.fee_paid, None, "no fee for serving");
    assert_eq!(chain.free_balance(&hot.account_id()).await.expect("balance"), 0);
    let e = chain.endpoints_of(27, &hot.account_id()).await.expect("read").expect("registered");
    assert_eq!(
        (e.prometheus.ip, e.prometheus.port, e.prometheus.version),
        (u128::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 5))), 7091, 221)
    );
    assert_eq!(e.axon.ip, 0, "the axon is untouched");
    node.shutdown().await;
}

fn scale_value_bytes(b: &[u8]) -> scale_value::Value {
    scale_value::Value::from_bytes(b)
}

#[tokio::test]
async fn websocket_client_reconnects_after_the_server_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let owner = fresh();
    let node = devnet(dir.path(), &owner, Rules::default()).await;
    let addr = node.local_addr();
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    assert!(ops::is_devnet(&chain).await.expect("system_chain"));
    node.shutdown().await;
    assert!(chain.best_block().await.is_err(), "the chain is down");
    let cfg = DevnetConfig { bind: addr, ..DevnetConfig::new(dir.path(), owner.account_id()) };
    let node = devnet::spawn(cfg).await.expect("devnet again");
    assert!(chain.best_block().await.is_ok(), "the same client reconnects");
    node.shutdown().await;
}
