//! `nicompute query`: send one synapse to one axon with the wallet's hotkey and print the
//! merged response — status code and message as the SDK reports them, and the synapse.
//!
//! Known synapses (`Allocate`, `Specs`) start from their SDK defaults, so `--fields` only names
//! what differs; any other name is sent as given (with `--hash-fields` if it has any).

use std::time::Duration;

use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::{AccountId, RawSynapse, Synapse};
use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::opts::GlobalOpts;
use crate::output::{Output, Reported, UsageError};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The axon's address, IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    pub axon: String,
    /// The axon's hotkey (SS58); the request is signed for it.
    #[arg(long = "axon-hotkey", value_name = "SS58")]
    pub axon_hotkey: String,
    /// The synapse name (route), e.g. Specs or Allocate.
    #[arg(long, value_name = "NAME")]
    pub synapse: String,
    /// Fields to send, as a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub fields: String,
    /// For synapses other than Allocate/Specs: their required_hash_fields, comma-separated.
    #[arg(long = "hash-fields", value_name = "F1,F2", value_delimiter = ',')]
    pub hash_fields: Vec<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 12.0)]
    pub timeout: f64,
}

#[derive(Debug, Serialize)]
pub struct QueryResult {
    pub status_code: Option<i64>,
    pub status_message: Option<String>,
    pub success: bool,
    pub outcome: bittensor::dendrite::StatusKind,
    pub elapsed_ms: f64,
    pub synapse: Value,
}

impl QueryArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let (ip, port) = parse_axon(&self.axon)?;
        let hotkey = AccountId::from_ss58(&self.axon_hotkey).map_err(|e| UsageError(format!("--axon-hotkey: {e}")))?;
        let user: Map<String, Value> = match serde_json::from_str(&self.fields) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(UsageError("--fields must be a JSON object".into()).into()),
            Err(e) => return Err(UsageError(format!("--fields is not valid JSON: {e}")).into()),
        };
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(UsageError("--timeout must be a positive number of seconds".into()).into());
        }
        let mut raw = match self.synapse.as_str() {
            "Allocate" => RawSynapse::from_typed(&compute::protocol::Allocate::default()),
            "Specs" => RawSynapse::from_typed(&compute::protocol::Specs::default()),
            other => RawSynapse { name: other.to_owned(), fields: Map::new(), hash_fields: self.hash_fields.clone() },
        };
        for (k, v) in user {
            raw.fields.insert(k, v);
        }
        if let Err(e) = check_types(&raw) {
            return Err(UsageError(format!("--fields do not fit {}: {e}", raw.name)).into());
        }
        let keypair = g.wallet.hotkey()?;
        let dendrite = Dendrite::new(keypair);
        let target = AxonTarget::new(ip, port, &hotkey);
        let resp = dendrite.call_raw(&target, raw, Duration::from_secs_f64(self.timeout)).await;
        let body = resp.header.join_body(&resp.synapse.fields);
        let result = QueryResult {
            status_code: resp.status_code(),
            status_message: resp.status_message().map(str::to_owned),
            success: resp.is_success(),
            outcome: resp.kind,
            elapsed_ms: resp.elapsed.as_secs_f64() * 1e3,
            synapse: Value::Object(body),
        };
        out.result(&result, |o| {
            writeln!(
                o,
                "{} {} ({:?}) in {:.1} ms",
                result.status_code.map_or("-".into(), |c| c.to_string()),
                result.status_message.as_deref().unwrap_or(""),
                result.outcome,
                result.elapsed_ms
            )?;
            let fields: Map<String, Value> = resp.synapse.fields.clone();
            writeln!(o, "{}", serde_json::to_string_pretty(&Value::Object(fields)).unwrap_or_default())
        });
        if result.success {
            Ok(())
        } else {
            Err(Reported(format!(
                "the axon did not answer with success: {} {}",
                result.status_code.map_or("-".into(), |c| c.to_string()),
                result.status_message.unwrap_or_default()
            ))
            .into())
        }
    }
}

/// Type-checks each field of a known synapse on its own, so the error names the field.
fn check_types(raw: &RawSynapse) -> Result<(), String> {
    fn each<S: Synapse>(fields: &Map<String, Value>) -> Result<(), String> {
        for (k, v) in fields {
            let one: Map<String, Value> = std::iter::once((k.clone(), v.clone())).collect();
            S::from_fields(one).map_err(|e| format!("field '{k}': {e}"))?;
        }
        Ok(())
    }
    match raw.name.as_str() {
        "Allocate" => each::<compute::protocol::Allocate>(&raw.fields),
        "Specs" => each::<compute::protocol::Specs>(&raw.fields),
        _ => Ok(()),
    }
}

fn parse_axon(s: &str) -> Result<(String, u16), UsageError> {
    let err = || UsageError(format!("--axon '{s}' is not IP:PORT (e.g. 127.0.0.1:8091)"));
    let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| err())?;
    if host.is_empty() || port == 0 {
        return Err(err());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axon_addresses() {
        assert_eq!(parse_axon("127.0.0.1:8091").expect("ok"), ("127.0.0.1".into(), 8091));
        assert_eq!(parse_axon("[::1]:8091").expect("ok"), ("::1".into(), 8091));
        assert!(parse_axon("127.0.0.1").is_err());
        assert!(parse_axon("127.0.0.1:0").is_err());
        assert!(parse_axon(":80").is_err());
    }
}
