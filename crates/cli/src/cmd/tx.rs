//! The flow every chain-writing command shares (not a command itself): show what it will cost,
//! ask (unless `-y`), decrypt the key only then, sign, submit, wait, and report — success with the
//! block and events, or the runtime's refusal by name with a hint, exit 1, as a result document
//! under `--json`. Nothing is signed before the user agreed, and a wrong password or a refused
//! confirmation leaves the chain untouched.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use bittensor::subtensor::calls::format_tao;
use bittensor::subtensor::tx::{Included, Prepared, RefusalStage, TxError, TxOptions, Wait};
use bittensor::subtensor::Subtensor;
use bittensor::Keypair;
use clap::Args;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported, UsageError};

/// Options of every command that writes to the chain.
#[derive(Debug, Clone, Args)]
pub struct TxArgs {
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Wait until the including block is finalized (default: until it is included).
    #[arg(long = "wait-for-finalization")]
    pub finalization: bool,
    /// How long to wait for inclusion (or finalization).
    #[arg(long = "tx-timeout", value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub timeout: Duration,
}

impl TxArgs {
    pub fn options(&self) -> TxOptions {
        TxOptions {
            wait: if self.finalization { Wait::Finalization } else { Wait::Inclusion },
            timeout: self.timeout,
            ..TxOptions::default()
        }
    }
}

/// A client for writing: the configured endpoint with a timeout long enough for a block, and
/// the runtime metadata kept between commands in the data directory.
pub fn chain(g: &GlobalOpts) -> anyhow::Result<Subtensor> {
    let endpoint = g.subtensor.endpoint()?;
    let chain = Subtensor::with_timeout(&endpoint, Duration::from_secs(30)).map_err(|e| UsageError(e.to_string()))?;
    Ok(chain.with_metadata_dir(metadata_dir(g)))
}

/// Where runtime metadata is cached (`<data dir>/metadata`, one file per chain and runtime).
pub fn metadata_dir(g: &GlobalOpts) -> std::path::PathBuf {
    g.dirs.data_dir_or_here().join("metadata")
}

/// `1.5 τ (1500000000 rao)`.
pub fn tao(rao: u128) -> String {
    format!("{} τ", format_tao(rao))
}

/// Shows `lines` (what will happen, what it costs) and asks to go on. `-y` skips the question;
/// without a terminal and without `-y` it is a usage error, so nothing waits for input.
pub fn confirm(out: &mut Output, args: &TxArgs, lines: &[String]) -> anyhow::Result<()> {
    if args.yes {
        for l in lines {
            out.note(l);
        }
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            UsageError("this signs a transaction: confirm with -y (--yes) when there is no terminal".into()).into()
        );
    }
    let mut err = std::io::stderr();
    for l in lines {
        writeln!(err, "{l}")?;
    }
    write!(err, "Sign and submit? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Reported("not confirmed; nothing was signed".into()).into())
    }
}

/// The wallet's coldkey, decrypted now (after confirmation): a wrong password fails with exit 1
/// and no password source with exit 2, before anything is signed.
pub fn coldkey(g: &GlobalOpts) -> anyhow::Result<Keypair> {
    let w = g.wallet.wallet();
    match w.coldkey(&g.wallet.passwords(false)) {
        Ok(k) => Ok(k),
        Err(e @ bittensor::wallet::WalletError::NoPassword { .. }) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e).with_context(|| format!("decrypting the coldkey of wallet '{}'; nothing was signed", w.name)),
    }
}

/// Signs and submits. Under `-y` no fee was quoted (nothing was asked): the fee reported is the
/// one the chain charged (`TransactionFeePaid`), and the quote — a runtime execution on the node
/// — stays off the way to the block.
pub async fn submit(
    chain: &Subtensor,
    prepared: &Prepared,
    key: &Keypair,
    args: &TxArgs,
    quoted: Option<u128>,
) -> (Result<Included, TxError>, Option<u128>) {
    let done = chain.submit(prepared, key, &args.options()).await;
    let fee = quoted.or_else(|| done.as_ref().ok().and_then(|i| i.fee_paid));
    (done, fee)
}

/// The fee now when a question will be asked, later (during submission) under `-y`.
pub async fn quote_if_asking(chain: &Subtensor, prepared: &Prepared, args: &TxArgs) -> anyhow::Result<Option<u128>> {
    if args.yes {
        return Ok(None);
    }
    Ok(Some(chain.quote(prepared).await.with_context(|| format!("asking the chain the fee of {}", prepared.label))?))
}

/// More than any fee a call of these commands costs (fees are about 0.0001 τ).
const FEE_MARGIN: u128 = 100_000_000;

/// The fee to check a balance against. Under `-y` nothing was quoted, and none is needed unless
/// the balance is within a fee of `needed` (then the runtime is asked): so a call that would fail
/// for want of funds is refused before signing and never costs a fee.
pub async fn fee_for_check(
    chain: &Subtensor,
    prepared: &Prepared,
    quoted: Option<u128>,
    free: u128,
    needed: u128,
) -> anyhow::Result<Option<u128>> {
    if quoted.is_some() || free >= needed.saturating_add(FEE_MARGIN) {
        return Ok(quoted);
    }
    Ok(Some(chain.quote(prepared).await.with_context(|| format!("asking the chain the fee of {}", prepared.label))?))
}

/// A write's result document: the command's own fields, the costs, and the inclusion.
#[derive(Debug, Serialize)]
pub struct Written {
    pub ok: bool,
    pub call: String,
    pub signer: String,
    pub endpoint: String,
    pub fee_rao: Option<u128>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub included: Option<Included>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Value>,
}

/// What a command reports about its write besides the inclusion.
#[derive(Debug)]
pub struct Report<'a> {
    pub chain: &'a Subtensor,
    pub prepared: &'a Prepared,
    pub fee: Option<u128>,
    /// The command's own result fields.
    pub fields: Map<String, Value>,
}

/// Reports the outcome: prints the document and maps a refusal to exit 1 with the runtime's name
/// for it and `hint` (what to do about that name).
pub fn finish(
    out: &mut Output,
    report: Report<'_>,
    result: Result<Included, TxError>,
    human: impl FnOnce(&Included) -> String,
    hint: impl FnOnce(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let Report { chain, prepared, fee, fields } = report;
    let mut doc = Written {
        ok: false,
        call: prepared.label.clone(),
        signer: prepared.signer.to_ss58(),
        endpoint: chain.endpoint().to_owned(),
        fee_rao: fee,
        fields,
        included: None,
        refused: None,
    };
    match result {
        Ok(included) => {
            doc.ok = true;
            let text = human(&included);
            doc.included = Some(included);
            out.result(&doc, |o| writeln!(o, "{text}"));
            Ok(())
        }
        Err(TxError::Refused { call, stage, failure, block, fee_paid }) => {
            let hint = hint(&failure.name);
            let nothing = match (stage, fee_paid) {
                (RefusalStage::Pool, _) => "nothing was included and nothing was paid".to_owned(),
                (RefusalStage::Dispatch, Some(f)) if f > 0 => {
                    format!("the call changed nothing; its fee ({}) was charged", tao(f))
                }
                (RefusalStage::Dispatch, _) => "the call changed nothing and cost nothing".to_owned(),
            };
            doc.refused = Some(json!({
                "name": failure.name, "pallet": failure.pallet, "docs": failure.docs,
                "stage": stage, "block": block, "fee_paid_rao": fee_paid, "hint": hint,
            }));
            let msg = format!("{call} was refused by the chain: {failure}; {nothing}");
            let text = match &hint {
                Some(h) => format!("{msg}\n  {h}"),
                None => msg.clone(),
            };
            out.result(&doc, |_| Ok(()));
            Err(Reported(text).into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("submitting {}", prepared.label))),
    }
}

/// `fee 0.000135 τ`, or under `-y` (nothing asked, nothing quoted) the fee charged, reported after.
pub fn fee_line(fee: Option<u128>) -> String {
    match fee {
        Some(f) => format!("  transaction fee  {}", tao(f)),
        None => "  transaction fee  (reported as charged)".to_owned(),
    }
}
