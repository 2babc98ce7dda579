//! Writing to the chain: prepare an extrinsic (runtime, metadata, nonce, era, fee quote), then sign,
//! submit with `author_submitAndWatchExtrinsic`, wait for inclusion or finalization, and read the
//! block's events to report success or the runtime's refusal by name.
//!
//! Preparing needs no secret, so a command shows the fee and asks before any key is decrypted;
//! the keypair is needed only by [`Subtensor::submit`]. The metadata is fetched once per runtime
//! spec version and kept for the life of the client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parity_scale_codec::{Compact, Decode, Encode};
use serde::Serialize;
use serde_json::{json, Value};

mod pool;

use pool::pool_failure;

use super::client::{ChainError, Subtensor};
use super::rpc::{RpcError, Transport, WsTransport};
use crate::extrinsic::{self, events, signed, Call, DispatchFailure, Era, ExtensionParams, ExtrinsicError, Metadata};
use crate::keys::{AccountId, Keypair};

/// How long a read of the runtime version serves later calls: one command's burst of reads shares
/// it, and a runtime upgrade (once per many blocks) is seen by the next command.
const RUNTIME_FRESH: Duration = Duration::from_secs(2);

/// How long to wait and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until a block includes it (the SDK's `wait_for_inclusion`).
    Inclusion,
    /// Until that block is finalized.
    Finalization,
}

/// Options of one transaction.
#[derive(Debug, Clone, Copy)]
pub struct TxOptions {
    pub wait: Wait,
    /// From submission to the awaited event.
    pub timeout: Duration,
    /// Blocks the transaction stays valid for (a power of two is used, as Substrate does).
    pub mortality: u64,
    /// Tip in rao.
    pub tip: u128,
}

impl Default for TxOptions {
    fn default() -> Self {
        Self { wait: Wait::Inclusion, timeout: Duration::from_secs(60), mortality: 64, tip: 0 }
    }
}

/// Where the runtime refused the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalStage {
    /// The transaction pool would not accept it (bad signature, stale nonce, cannot pay the fee,
    /// a signed extension's check); nothing was included and nothing was paid.
    Pool,
    /// It was included, and its call failed (`System.ExtrinsicFailed`).
    Dispatch,
}

/// A write that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// Reading the chain failed: the node is unreachable, or answered outside the protocol, or
    /// its runtime's metadata does not fit.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The call or its extensions do not encode against the runtime's metadata.
    #[error(transparent)]
    Encoding(#[from] ExtrinsicError),
    /// The runtime refused it; `failure` names why in the runtime's own words.
    #[error("{call} was refused by the chain: {failure}")]
    Refused {
        call: String,
        stage: RefusalStage,
        failure: DispatchFailure,
        /// The block that included it (dispatch failures only).
        block: Option<String>,
        /// The fee charged anyway (dispatch failures of calls that pay one), in rao.
        fee_paid: Option<u128>,
    },
    /// The pool dropped, replaced or invalidated it after accepting it.
    #[error("{call}: the transaction pool reported it {status} (block {block:?}); nothing is known to have happened on chain. Check the account's nonce and try again")]
    Lost { call: String, status: String, block: Option<String> },
    /// No inclusion (or finalization) within the timeout; it may still be included later.
    #[error("{call}: not {what} within {seconds:.0} s; it may still be included (check before retrying)")]
    Timeout { call: String, what: &'static str, seconds: f64 },
}

impl TxError {
    /// The runtime's name for the refusal, if it is one (`InvalidIpAddress`).
    pub fn refusal_name(&self) -> Option<&str> {
        match self {
            TxError::Refused { failure, .. } => Some(&failure.name),
            _ => None,
        }
    }
}

/// A runtime version with its metadata and the chain's genesis hash.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    pub spec_version: u32,
    pub transaction_version: u32,
    pub genesis_hash: [u8; 32],
    pub metadata: Arc<Metadata>,
}

/// An extrinsic ready to be signed; no secret was used.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub label: String,
    pub call: Vec<u8>,
    pub signer: AccountId,
    pub params: ExtensionParams,
    pub runtime: RuntimeInfo,
    prepared_at: Instant,
}

/// An extrinsic the chain included and executed successfully.
#[derive(Debug, Clone, Serialize)]
pub struct Included {
    pub call: String,
    /// `0x`-hex blake2-256 of the extrinsic.
    pub tx_hash: String,
    pub block_hash: String,
    pub block_number: u64,
    pub extrinsic_index: u32,
    /// `Pallet.Event` names it emitted, in order.
    pub events: Vec<String>,
    /// The fee actually charged (`TransactionPayment.TransactionFeePaid`), when reported.
    pub fee_paid: Option<u128>,
    /// Submission to the awaited status, in seconds.
    pub seconds: f64,
    #[serde(skip)]
    pub event_records: Vec<extrinsic::Event>,
}

fn hash32(s: &str, what: &str) -> Result<[u8; 32], ExtrinsicError> {
    let bytes = hex::decode(s.trim_start_matches("0x"))
        .map_err(|_| ExtrinsicError::Malformed(format!("{what} '{s}' is not hex")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| ExtrinsicError::Malformed(format!("{what} is not 32 bytes")))
}

impl Subtensor {
    /// The current runtime: its versions (one `state_getRuntimeVersion`, shared by the calls of
    /// the next two seconds), the genesis hash and the metadata (fetched once per spec version;
    /// later calls reuse it).
    pub async fn runtime(&self) -> Result<RuntimeInfo, ChainError> {
        if let Some(r) = self.cache().runtime(RUNTIME_FRESH) {
            return Ok(r);
        }
        let _one_at_a_time = self.cache().loading.lock().await;
        if let Some(r) = self.cache().runtime(RUNTIME_FRESH) {
            return Ok(r);
        }
        let (version, genesis) = tokio::try_join!(self.runtime_version(None), self.genesis_hash())?;
        let spec_version = version.get("specVersion").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
        let transaction_version =
            version.get("transactionVersion").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
        let (Some(spec_version), Some(transaction_version)) = (spec_version, transaction_version) else {
            return Err(ChainError::BadResponse {
                endpoint: self.endpoint().to_owned(),
                call: "state_getRuntimeVersion".into(),
                reason: "no specVersion/transactionVersion".into(),
            });
        };
        let metadata = self.metadata_for(&genesis, spec_version).await?;
        let info = RuntimeInfo { spec_version, transaction_version, genesis_hash: genesis, metadata };
        self.cache().put_runtime(info.clone());
        Ok(info)
    }

    /// The metadata of runtime `spec_version`: this client's copy, the metadata directory's file,
    /// or `state_getMetadata` (then kept in both).
    pub async fn metadata_for(&self, genesis: &[u8; 32], spec_version: u32) -> Result<Arc<Metadata>, ChainError> {
        if let Some(md) = self.cache().metadata(spec_version) {
            return Ok(md);
        }
        let file = self.cache().file(genesis, spec_version);
        if let Some(md) = file.as_ref().and_then(|f| std::fs::read(f).ok()).and_then(|b| Metadata::from_bytes(&b).ok())
        {
            let md = Arc::new(md);
            self.cache().put_metadata(spec_version, md.clone());
            return Ok(md);
        }
        let v = self.request("state_getMetadata", json!([])).await?;
        let text = v.as_str().ok_or_else(|| ChainError::BadResponse {
            endpoint: self.endpoint().to_owned(),
            call: "state_getMetadata".into(),
            reason: "result is not a hex string".into(),
        })?;
        let bytes = hex::decode(text.trim_start_matches("0x"))
            .map_err(|_| ExtrinsicError::Malformed("state_getMetadata result: not hex".into()))?;
        let md = Arc::new(Metadata::from_bytes(&bytes)?);
        if let Some(f) = file {
            // Best effort, written whole then renamed: a failure only costs a fetch next time.
            let tmp = f.with_extension(format!("tmp{}", std::process::id()));
            let saved = f.parent().map(std::fs::create_dir_all).transpose().and_then(|_| std::fs::write(&tmp, &bytes));
            if saved.and_then(|()| std::fs::rename(&tmp, &f)).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        self.cache().put_metadata(spec_version, md.clone());
        Ok(md)
    }

    /// The genesis hash (`chain_getBlockHash [0]`), cached.
    pub async fn genesis_hash(&self) -> Result<[u8; 32], ChainError> {
        if let Some(g) = self.cache().genesis() {
            return Ok(g);
        }
        let hash = self.block_hash(0).await?.ok_or_else(|| ChainError::BadResponse {
            endpoint: self.endpoint().to_owned(),
            call: "chain_getBlockHash".into(),
            reason: "the node does not know block 0".into(),
        })?;
        let g = hash32(&hash, "genesis hash").map_err(|e| ChainError::BadResponse {
            endpoint: self.endpoint().to_owned(),
            call: "chain_getBlockHash".into(),
            reason: e.to_string(),
        })?;
        self.cache().put_genesis(g);
        Ok(g)
    }

    /// The next nonce of `account`, counting transactions already in the pool.
    pub async fn account_next_index(&self, account: &AccountId) -> Result<u64, ChainError> {
        let v = self.request("system_accountNextIndex", json!([account.to_ss58()])).await?;
        v.as_u64().ok_or_else(|| ChainError::BadResponse {
            endpoint: self.endpoint().to_owned(),
            call: "system_accountNextIndex".into(),
            reason: format!("{v} is not a nonce"),
        })
    }

    /// The nonce of `account`'s next transaction: its `System.Account` nonce, moved past the
    /// transactions of it that wait in the pool (`author_pendingExtrinsics`) with consecutive
    /// nonces — what `system_accountNextIndex` answers, without the runtime call that costs a
    /// node like chopsticks 150 ms. Where the pool cannot be listed, `system_accountNextIndex`.
    pub async fn next_nonce(&self, md: &Metadata, account: &AccountId) -> Result<u64, ChainError> {
        let key = extrinsic::storage::key(md, "System", "Account", &[extrinsic::call::account(account)])?;
        let (raw, pending) =
            tokio::join!(self.storage_at(&key, None), self.request("author_pendingExtrinsics", json!([])));
        let (Ok(raw), Ok(Value::Array(pending))) = (raw, pending) else {
            return self.account_next_index(account).await;
        };
        let info = extrinsic::storage::decode_value(md, "System", "Account", raw.as_deref())?;
        let Some(mut next) =
            info.as_ref().and_then(|i| extrinsic::call::field(i, "nonce")).and_then(extrinsic::call::value_u128)
        else {
            return self.account_next_index(account).await;
        };
        let mine: std::collections::HashSet<u128> = pending
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|x| hex::decode(x.trim_start_matches("0x")).ok())
            .filter_map(|b| signed::decode(md, &b).ok())
            .filter(|d| d.signer == *account)
            .filter_map(|d| d.values.nonce.map(u128::from))
            .collect();
        while mine.contains(&next) {
            next += 1;
        }
        u64::try_from(next).map_err(|_| ExtrinsicError::Malformed("a nonce beyond u64".into()).into())
    }

    /// Encodes `call` for `signer` and picks nonce and era; no secret and no fee yet.
    pub async fn prepare(&self, call: &Call, signer: &AccountId, opts: &TxOptions) -> Result<Prepared, TxError> {
        let (runtime, finalized) = tokio::try_join!(self.runtime(), async {
            let hash = self.finalized_hash().await?;
            let number = self.block_number(&hash).await?;
            Ok::<_, ChainError>((hash, number))
        })?;
        let md = runtime.metadata.clone();
        let nonce = self.next_nonce(&md, signer).await?;
        let call_bytes = call.encode(&md)?;
        // Mortal from the finalized block, which every node knows and no reorganisation undoes.
        let era = Era::mortal(opts.mortality, finalized.1);
        let birth_hash = if era.birth(finalized.1) == finalized.1 {
            hash32(&finalized.0, "block hash")?
        } else {
            let h = self.block_hash(era.birth(finalized.1)).await?.unwrap_or_default();
            hash32(&h, "block hash")?
        };
        let params = ExtensionParams {
            spec_version: runtime.spec_version,
            transaction_version: runtime.transaction_version,
            genesis_hash: runtime.genesis_hash,
            era,
            era_birth_hash: birth_hash,
            nonce,
            tip: opts.tip,
        };
        Ok(Prepared {
            label: call.label(),
            call: call_bytes,
            signer: *signer,
            params,
            runtime,
            prepared_at: Instant::now(),
        })
    }

    /// The runtime's fee for a prepared extrinsic, in rao: the same extrinsic with a zero
    /// signature has the real one's length and weight, so nothing needs to be signed to ask.
    pub async fn quote(&self, prepared: &Prepared) -> Result<u128, TxError> {
        let md = &prepared.runtime.metadata;
        let unsigned = signed::unsigned_for_fee(md, &prepared.signer, &prepared.call, &prepared.params)?;
        Ok(self.query_fee(&unsigned.bytes).await?)
    }

    /// The runtime's fee quote for an encoded extrinsic (`TransactionPaymentApi_query_info`, as
    /// the SDK asks it; chopsticks' `payment_queryInfo` passes the runtime a wrong length).
    pub async fn query_fee(&self, extrinsic: &[u8]) -> Result<u128, ChainError> {
        let mut args = extrinsic.to_vec();
        (extrinsic.len() as u32).encode_to(&mut args);
        let out = self.state_call("TransactionPaymentApi_query_info", &args, None).await?;
        // RuntimeDispatchInfo { weight: { ref_time: Compact, proof_size: Compact }, class: u8, partial_fee: u64 }.
        let mut input = out.as_slice();
        let fee = (|| {
            Compact::<u64>::decode(&mut input).ok()?;
            Compact::<u64>::decode(&mut input).ok()?;
            u8::decode(&mut input).ok()?;
            let fee = u64::decode(&mut input).ok()?;
            input.is_empty().then_some(u128::from(fee))
        })();
        fee.ok_or_else(|| ChainError::BadResponse {
            endpoint: self.endpoint().to_owned(),
            call: "TransactionPaymentApi_query_info".into(),
            reason: "the result is not a RuntimeDispatchInfo".into(),
        })
    }

    /// Signs a prepared extrinsic with `keypair` (which must be its signer), submits it and waits.
    /// A nonce older than a few seconds (the user was asked) is fetched again first.
    pub async fn submit(&self, prepared: &Prepared, keypair: &Keypair, opts: &TxOptions) -> Result<Included, TxError> {
        if keypair.account_id() != prepared.signer {
            return Err(ExtrinsicError::Arg(format!(
                "{} was prepared for {} but the key given is {}",
                prepared.label,
                prepared.signer,
                keypair.ss58()
            ))
            .into());
        }
        let mut params = prepared.params.clone();
        if prepared.prepared_at.elapsed() > Duration::from_secs(5) {
            params.nonce = self.next_nonce(&prepared.runtime.metadata, &prepared.signer).await?;
        }
        let md = prepared.runtime.metadata.clone();
        let xt = signed::sign(&md, keypair, &prepared.call, &params)?;
        self.submit_signed(&prepared.label, &md, &xt, opts).await
    }

    /// Submits a signed extrinsic and waits as `opts` says; reads the including block's events.
    pub async fn submit_signed(
        &self,
        label: &str,
        md: &Metadata,
        xt: &signed::SignedExtrinsic,
        opts: &TxOptions,
    ) -> Result<Included, TxError> {
        let started = Instant::now();
        let ws = self.watch_transport();
        let mut sub =
            match ws.subscribe("author_submitAndWatchExtrinsic", json!([xt.hex()]), "author_unwatchExtrinsic").await {
                Ok(s) => s,
                Err(RpcError::Rpc { message, .. }) => {
                    return Err(TxError::Refused {
                        call: label.to_owned(),
                        stage: RefusalStage::Pool,
                        failure: pool_failure(&message),
                        block: None,
                        fee_paid: None,
                    })
                }
                Err(e) => return Err(ChainError::from(e).into()),
            };
        let what = match opts.wait {
            Wait::Inclusion => "included",
            Wait::Finalization => "finalized",
        };
        let deadline = started + opts.timeout;
        let timeout = || TxError::Timeout { call: label.to_owned(), what, seconds: opts.timeout.as_secs_f64() };
        let block = loop {
            let status = match tokio::time::timeout_at(deadline.into(), sub.next()).await {
                Err(_) => return Err(timeout()),
                Ok(None) => {
                    return Err(ChainError::Rpc(RpcError::Closed {
                        endpoint: ws.endpoint().to_owned(),
                        method: "author_submitAndWatchExtrinsic".into(),
                    })
                    .into())
                }
                Ok(Some(s)) => s,
            };
            let lost = |status: &str, block: Option<&Value>| TxError::Lost {
                call: label.to_owned(),
                status: status.to_owned(),
                block: block.and_then(Value::as_str).map(str::to_owned),
            };
            match &status {
                Value::String(s) if matches!(s.as_str(), "dropped" | "invalid") => return Err(lost(s, None)),
                Value::Object(o) => {
                    if let Some(h) = o.get("inBlock").and_then(Value::as_str) {
                        if opts.wait == Wait::Inclusion {
                            break h.to_owned();
                        }
                    } else if let Some(h) = o.get("finalized").and_then(Value::as_str) {
                        break h.to_owned();
                    } else if let Some(b) = o.get("usurped") {
                        return Err(lost("usurped (replaced by another transaction with the same nonce)", Some(b)));
                    } else if let Some(b) = o.get("finalityTimeout") {
                        return Err(lost("finalityTimeout", Some(b)));
                    }
                }
                _ => {} // future, ready, broadcast, retracted: keep waiting
            }
        };
        drop(sub);
        let seconds = started.elapsed().as_secs_f64();
        self.outcome(label, md, xt, &block, seconds).await
    }

    /// Reads the block's extrinsics and events and reports what happened to `xt`.
    async fn outcome(
        &self,
        label: &str,
        md: &Metadata,
        xt: &signed::SignedExtrinsic,
        block_hash: &str,
        seconds: f64,
    ) -> Result<Included, TxError> {
        let events_key = extrinsic::storage::key(md, "System", "Events", &[])?;
        let (block, raw_events) = tokio::try_join!(
            self.request("chain_getBlock", json!([block_hash])),
            self.storage_at(&events_key, Some(block_hash))
        )?;
        let bad = |reason: String| ChainError::BadResponse {
            endpoint: self.endpoint().to_owned(),
            call: "chain_getBlock".into(),
            reason,
        };
        let number = block
            .pointer("/block/header/number")
            .and_then(Value::as_str)
            .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| bad("no block number".into()))?;
        let ours = xt.hex();
        let index = block
            .pointer("/block/extrinsics")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().position(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(&ours))))
            .ok_or_else(|| bad(format!("block {block_hash} does not contain the extrinsic")))?;
        let index = index as u32;
        let records = events::decode_events(md, raw_events.as_deref().unwrap_or(&[0]))?;
        let tx_hash = format!("0x{}", hex::encode(xt.hash));
        let mine: Vec<extrinsic::Event> = records.iter().filter(|e| e.extrinsic == Some(index)).cloned().collect();
        let fee_paid = mine
            .iter()
            .find(|e| e.pallet == "TransactionPayment" && e.name == "TransactionFeePaid")
            .and_then(|e| e.field("actual_fee"))
            .and_then(extrinsic::call::value_u128);
        match events::outcome(md, &records, index) {
            Some(events::Outcome::Success) => {}
            Some(events::Outcome::Failed(failure)) => {
                return Err(TxError::Refused {
                    call: label.to_owned(),
                    stage: RefusalStage::Dispatch,
                    failure,
                    block: Some(block_hash.to_owned()),
                    fee_paid: Some(fee_paid.unwrap_or(0)),
                })
            }
            None => return Err(bad(format!("no ExtrinsicSuccess or ExtrinsicFailed for extrinsic {index}")).into()),
        }
        Ok(Included {
            call: label.to_owned(),
            tx_hash,
            block_hash: block_hash.to_owned(),
            block_number: number,
            extrinsic_index: index,
            events: mine.iter().map(extrinsic::Event::label).collect(),
            fee_paid,
            seconds,
            event_records: mine,
        })
    }

    /// Raw storage at `key` (`state_getStorage`), `None` when absent.
    pub async fn storage_at(&self, key: &[u8], at: Option<&str>) -> Result<Option<Vec<u8>>, ChainError> {
        let v = self.request("state_getStorage", json!([format!("0x{}", hex::encode(key)), at])).await?;
        match v {
            Value::Null => Ok(None),
            Value::String(s) => {
                hex::decode(s.trim_start_matches("0x")).map(Some).map_err(|_| ChainError::BadResponse {
                    endpoint: self.endpoint().to_owned(),
                    call: "state_getStorage".into(),
                    reason: "result is not hex".into(),
                })
            }
            other => Err(ChainError::BadResponse {
                endpoint: self.endpoint().to_owned(),
                call: "state_getStorage".into(),
                reason: format!("unexpected result {other}"),
            }),
        }
    }

    /// A transport that carries subscriptions: this one over WebSocket, else a WebSocket to the
    /// same node (a polkadot-sdk node serves HTTP and WebSocket on one port).
    fn watch_transport(&self) -> Arc<dyn Transport> {
        let endpoint = self.endpoint();
        let ws = if let Some(rest) = endpoint.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = endpoint.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            return self.transport();
        };
        Arc::new(WsTransport::new(&ws, self.timeout()))
    }
}
