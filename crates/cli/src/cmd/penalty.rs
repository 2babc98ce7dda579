//! `p_hotkey`, `dp_hotkey`, `list_p`: the renter's blacklist of miners (SN27's `blacklist` table).
//! Penalized miners are never allocation candidates. Each hotkey is judged on its own: a
//! malformed address or a miner the database has never seen is reported, the valid ones applied.

use bittensor::AccountId;
use clap::Args;
use serde::Serialize;

use crate::cmd::open_db;
use crate::opts::GlobalOpts;
use crate::output::{table, Output, Reported, UsageError};

/// The hotkeys of `p_hotkey` (and of `dp_hotkey`, which takes the same).
#[derive(Debug, Args)]
pub struct PenalizeArgs {
    /// One or more hotkeys (SS58), comma-separated.
    #[arg(value_name = "HOTKEY[,HOTKEY...]", value_delimiter = ',', required = true)]
    pub hotkeys: Vec<String>,
}

/// `dp_hotkey` takes the same hotkeys.
pub type DepenalizeArgs = PenalizeArgs;

#[derive(Debug, Serialize)]
struct Outcome {
    hotkey: String,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn judge(hotkeys: &[String], known: &[String]) -> (Vec<String>, Vec<Outcome>) {
    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    for hk in hotkeys.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        if let Err(e) = AccountId::from_ss58(hk) {
            rejected.push(Outcome { hotkey: hk.to_owned(), result: "invalid", reason: Some(e.to_string()) });
        } else if !known.iter().any(|k| k == hk) {
            rejected.push(Outcome {
                hotkey: hk.to_owned(),
                result: "unknown",
                reason: Some("no miner with this hotkey in the database (run `nicompute sync`)".into()),
            });
        } else if !valid.iter().any(|v: &String| v == hk) {
            valid.push(hk.to_owned());
        }
    }
    (valid, rejected)
}

fn report(out: &mut Output, mut outcomes: Vec<Outcome>, verb: &str) -> anyhow::Result<()> {
    outcomes.sort_by(|a, b| a.hotkey.cmp(&b.hotkey));
    let failed = outcomes.iter().filter(|o| matches!(o.result, "invalid" | "unknown")).count();
    out.result(&outcomes, |o| {
        for x in &outcomes {
            match &x.reason {
                Some(r) => writeln!(o, "{}: {} ({r})", x.hotkey, x.result)?,
                None => writeln!(o, "{}: {}", x.hotkey, x.result)?,
            }
        }
        Ok(())
    });
    if failed > 0 {
        return Err(Reported(format!("{failed} hotkey(s) could not be {verb}")).into());
    }
    Ok(())
}

impl PenalizeArgs {
    pub async fn penalize(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        self.apply(g, out, true).await
    }

    pub async fn depenalize(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        self.apply(g, out, false).await
    }

    async fn apply(&self, g: &GlobalOpts, out: &mut Output, penalize: bool) -> anyhow::Result<()> {
        if self.hotkeys.iter().all(|h| h.trim().is_empty()) {
            return Err(UsageError("give at least one hotkey".into()).into());
        }
        let db = open_db(g)?;
        let known: Vec<String> =
            if penalize { db.miner_details()?.into_iter().map(|m| m.hotkey).collect() } else { db.penalized()? };
        let (valid, mut outcomes) = judge(&self.hotkeys, &known);
        if !penalize {
            // For depenalize, "unknown" means "not penalized".
            for o in outcomes.iter_mut().filter(|o| o.result == "unknown") {
                o.result = "not penalized";
                o.reason = None;
            }
        }
        let changed = if penalize { db.penalize(&valid)? } else { db.depenalize(&valid)? };
        let any_change = !changed.is_empty();
        for hk in valid {
            let did = changed.contains(&hk);
            let result = match (penalize, did) {
                (true, true) => "penalized",
                (true, false) => "already penalized",
                (false, true) => "depenalized",
                (false, false) => "not penalized",
            };
            outcomes.push(Outcome { hotkey: hk, result, reason: None });
        }
        let r = report(out, outcomes, if penalize { "penalized" } else { "depenalized" });
        if any_change {
            crate::shared::publish(g, &db, &[crate::shared::List::Penalized], out).await;
        }
        r
    }
}

/// `list_p`: the local blacklist, and with wandb on, the validators' union beside it.
pub async fn list(g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let db = open_db(g)?;
    let list = db.penalized()?;
    let network = crate::shared::network_state(g, ::wandb::Lists::Penalized, out).await;
    #[derive(Serialize)]
    struct Row {
        hotkey: String,
        /// `local`, `wandb` or `local+wandb`.
        source: &'static str,
    }
    let mut rows: Vec<Row> = list
        .iter()
        .map(|h| Row {
            hotkey: h.clone(),
            source: if network.as_ref().is_some_and(|n| n.penalized.contains(h)) { "local+wandb" } else { "local" },
        })
        .collect();
    if let Some(n) = &network {
        rows.extend(
            n.penalized.iter().filter(|h| !list.contains(h)).map(|h| Row { hotkey: h.clone(), source: "wandb" }),
        );
    }
    #[derive(Serialize)]
    struct Doc<'a> {
        penalized: Vec<&'a str>,
        count: usize,
        rows: &'a [Row],
        /// Validator runs on wandb that counted (absent: wandb off or unreachable).
        #[serde(skip_serializing_if = "Option::is_none")]
        wandb_runs: Option<usize>,
    }
    let doc = Doc {
        penalized: rows.iter().map(|r| r.hotkey.as_str()).collect(),
        count: rows.len(),
        rows: &rows,
        wandb_runs: network.as_ref().map(|n| n.runs_counted),
    };
    out.result(&doc, |o| {
        let t = rows
            .iter()
            .enumerate()
            .map(|(i, r)| vec![(i + 1).to_string(), r.hotkey.clone(), r.source.to_owned()])
            .collect();
        writeln!(o, "{}", table(&["#", "Penalized hotkey", "Source"], t))?;
        match doc.wandb_runs {
            Some(n) => writeln!(o, "{} penalized (this database and {n} validator runs on wandb)", rows.len()),
            None => writeln!(o, "{} penalized", rows.len()),
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hotkey_is_judged_on_its_own() {
        let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".to_owned();
        let bob = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty".to_owned();
        let (valid, rejected) =
            judge(&[alice.clone(), "nonsense".into(), bob.clone(), alice.clone()], std::slice::from_ref(&alice));
        assert_eq!(valid, vec![alice]);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].result, "invalid");
        assert_eq!((rejected[1].hotkey.as_str(), rejected[1].result), (bob.as_str(), "unknown"));
    }
}
