//! The write path against the real Subtensor runtime (spec 218 under chopsticks): fees quoted,
//! extrinsics signed with every signed extension the runtime lists, submitted and watched, and
//! the block's events read back — success, and the runtime's own refusals by name.

use std::time::Duration;

use bittensor::chopsticks;
use bittensor::subtensor::calls::{self, RAO_PER_TAO};
use bittensor::subtensor::tx::{RefusalStage, TxError, TxOptions};
use bittensor::subtensor::Subtensor;
use bittensor::Keypair;

use crate::util::runtime;

fn fresh() -> Keypair {
    Keypair::generate(12).expect("key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_register_serve_and_refusals() {
    let Some(node) = runtime() else { return };
    let chain = Subtensor::with_timeout(&node.ws_url(), Duration::from_secs(60)).expect("client");
    let (cold, hot, other) = (fresh(), fresh(), fresh());
    chopsticks::fund(&chain, &[(cold.account_id(), 1_000 * RAO_PER_TAO)]).await.expect("fund");
    assert_eq!(chain.free_balance(&cold.account_id()).await.expect("balance"), 1_000 * RAO_PER_TAO);
    let rt = chain.runtime().await.expect("runtime");
    assert_eq!(rt.spec_version, 218);
    let opts = TxOptions::default();

    // A transfer: the fee is quoted before signing and the one paid matches it.
    let call = calls::transfer_keep_alive(&other.account_id(), 10 * RAO_PER_TAO);
    let prepared = chain.prepare(&call, &cold.account_id(), &opts).await.expect("prepare");
    let fee = chain.quote(&prepared).await.expect("quote");
    assert!(fee > 0, "a transfer pays a fee");
    let done = chain.submit(&prepared, &cold, &opts).await.expect("transfer");
    assert!(done.events.contains(&"Balances.Transfer".to_owned()), "{:?}", done.events);
    assert_eq!(done.fee_paid, Some(fee));
    assert_eq!(chain.free_balance(&other.account_id()).await.expect("balance"), 10 * RAO_PER_TAO);
    assert_eq!(chain.free_balance(&cold.account_id()).await.expect("balance"), 990 * RAO_PER_TAO - fee);

    // The next nonce counts our transactions waiting in the pool, as system_accountNextIndex does.
    chain.request("dev_setBlockBuildMode", serde_json::json!(["Manual"])).await.expect("manual blocks");
    let prepared = chain
        .prepare(&calls::transfer_keep_alive(&other.account_id(), 1), &cold.account_id(), &opts)
        .await
        .expect("prepare");
    let xt = bittensor::extrinsic::signed::sign(&rt.metadata, &cold, &prepared.call, &prepared.params).expect("sign");
    chain.request("author_submitExtrinsic", serde_json::json!([xt.hex()])).await.expect("into the pool");
    let node_says = chain.account_next_index(&cold.account_id()).await.expect("accountNextIndex");
    assert_eq!(node_says, prepared.params.nonce + 1);
    assert_eq!(chain.next_nonce(&rt.metadata, &cold.account_id()).await.expect("next nonce"), node_says);
    chain.request("dev_newBlock", serde_json::json!([])).await.expect("block");
    chain.request("dev_setBlockBuildMode", serde_json::json!(["Instant"])).await.expect("instant blocks");

    // Over an HTTP endpoint, the watch goes over a WebSocket to the same node.
    let http = Subtensor::new(&format!("http://127.0.0.1:{}", node.port())).expect("http client");
    let prepared = http
        .prepare(&calls::transfer_keep_alive(&other.account_id(), 1), &cold.account_id(), &opts)
        .await
        .expect("prepare");
    http.submit(&prepared, &cold, &opts).await.expect("submitted through an HTTP endpoint");

    // Waiting for finalization works the same way (chopsticks finalizes each block it builds).
    let fin = TxOptions { wait: bittensor::subtensor::tx::Wait::Finalization, ..opts };
    let prepared = chain
        .prepare(&calls::transfer_keep_alive(&other.account_id(), 1), &cold.account_id(), &fin)
        .await
        .expect("prepare");
    let done = chain.submit(&prepared, &cold, &fin).await.expect("finalized");
    assert_eq!(chain.finalized_hash().await.expect("finalized head"), done.block_hash);

    // Burned registration on netuid 1, then the hotkey serves its axon.
    let before = chain.free_balance(&cold.account_id()).await.expect("balance");
    let burn = chain.burn(1).await.expect("burn");
    let prepared =
        chain.prepare(&calls::burned_register(1, &hot.account_id()), &cold.account_id(), &opts).await.expect("prepare");
    let done = chain.submit(&prepared, &cold, &opts).await.expect("register");
    assert!(done.events.iter().any(|e| e == "SubtensorModule.NeuronRegistered"), "{:?}", done.events);
    let uid = chain.uid_of(1, &hot.account_id()).await.expect("uid").expect("registered");
    let after = chain.free_balance(&cold.account_id()).await.expect("balance");
    assert_eq!(before - after, burn + done.fee_paid.unwrap_or(0), "the burn and the fee, nothing else");

    // 127.0.0.1 is refused by the runtime, by name and with its docs; nothing changes.
    let serve = |ip: &str| calls::serve_axon(1, 9_000_000, ip.parse().expect("ip"), 8091);
    let prepared = chain.prepare(&serve("127.0.0.1"), &hot.account_id(), &opts).await.expect("prepare");
    let err = chain.submit(&prepared, &hot, &opts).await.expect_err("refused");
    assert!(matches!(&err, TxError::Refused { stage: RefusalStage::Dispatch, .. }), "{err}");
    assert_eq!(err.refusal_name(), Some("InvalidIpAddress"));
    assert!(
        err.to_string().contains("InvalidIpAddress: An invalid IP address is passed to the serve function"),
        "{err}"
    );
    let n = chain.neuron_of(1, &hot.account_id()).await.expect("neuron").expect("neuron");
    assert_eq!((n.uid, n.axon.serving), (uid, false));

    // 127.0.0.2 is accepted and reads back.
    let prepared = chain.prepare(&serve("127.0.0.2"), &hot.account_id(), &opts).await.expect("prepare");
    let done = chain.submit(&prepared, &hot, &opts).await.expect("serve");
    assert!(done.events.iter().any(|e| e == "SubtensorModule.AxonServed"), "{:?}", done.events);
    let n = chain.neuron_of(1, &hot.account_id()).await.expect("neuron").expect("neuron");
    assert_eq!(n.axon.addr().as_deref(), Some("127.0.0.2:8091"));
    assert_eq!(n.axon.version, 9_000_000);

    // An account that cannot pay the fee is refused by the pool: nothing is included.
    let broke = fresh();
    let call = calls::transfer_keep_alive(&other.account_id(), RAO_PER_TAO);
    let prepared = chain.prepare(&call, &broke.account_id(), &opts).await.expect("prepare");
    let err = chain.submit(&prepared, &broke, &opts).await.expect_err("cannot pay");
    assert!(matches!(&err, TxError::Refused { stage: RefusalStage::Pool, block: None, .. }), "{err}");
    assert_eq!(err.refusal_name(), Some("InvalidTransaction::Payment"), "{err}");
    assert!(err.to_string().contains("Inability to pay some fees"), "{err}");

    // A second serve right away is inside the rate limit.
    let prepared = chain.prepare(&serve("127.0.0.3"), &hot.account_id(), &opts).await.expect("prepare");
    let err = chain.submit(&prepared, &hot, &opts).await.expect_err("rate limited");
    assert_eq!(err.refusal_name(), Some("ServingRateLimitExceeded"), "{err}");
}
