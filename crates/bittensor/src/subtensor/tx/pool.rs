//! A transaction pool's refusal named as the runtime's `TransactionValidityError` variant, the
//! same whether a node words it or chopsticks sends it as JSON.

use serde_json::Value;

use crate::extrinsic::DispatchFailure;

/// The pool's refusal, named as the runtime's `TransactionValidityError` variant. A node says it
/// in words ("Invalid Transaction: Inability to pay some fees (e.g. account balance too low)"),
/// chopsticks as JSON (`{"invalid":{"payment":null}}`); both give `InvalidTransaction::Payment`
/// with the runtime's words for it.
pub(super) fn pool_failure(message: &str) -> DispatchFailure {
    const KINDS: [(&str, &str, &str); 11] = [
        ("payment", "Inability to pay some fees", "Inability to pay some fees (e.g. account balance too low)"),
        ("badProof", "bad signature", "Transaction has a bad signature"),
        ("stale", "outdated", "Transaction is outdated (its nonce was already used)"),
        ("future", "in the future", "Transaction will be valid in the future (its nonce is ahead)"),
        ("ancientBirthBlock", "ancient birth block", "Transaction has an ancient birth block"),
        ("exhaustsResources", "exhaust the block limits", "Transaction would exhaust the block limits"),
        ("call", "call is not expected", "Transaction call is not expected"),
        ("badMandatory", "dispatch outcome of a mandatory", "A mandatory dispatch failed"),
        ("mandatoryValidation", "mandatory dispatch", "Transaction dispatch is mandatory"),
        ("badSigner", "bad signer", "Invalid signing address"),
        ("cannotLookup", "lookup", "Could not lookup information required to validate the transaction"),
    ];
    let upper = |k: &str| {
        let mut c = k.chars();
        c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
    };
    // chopsticks: a JSON TransactionValidityError somewhere in the message.
    if let Some(json) = message.find('{').and_then(|at| serde_json::from_str::<Value>(&message[at..]).ok()) {
        for (outer, label) in [("invalid", "InvalidTransaction"), ("unknown", "UnknownTransaction")] {
            if let Some(inner) = json.get(outer) {
                let (kind, custom) = match inner {
                    Value::Object(o) => o.iter().next().map(|(k, v)| (k.clone(), v.as_u64())).unwrap_or_default(),
                    Value::String(k) => (k.clone(), None),
                    _ => Default::default(),
                };
                if kind == "custom" {
                    let n = custom.unwrap_or(0);
                    return DispatchFailure {
                        name: format!("{label}::Custom({n})"),
                        pallet: None,
                        docs: format!("a runtime check refused it with custom code {n}"),
                    };
                }
                let docs = KINDS.iter().find(|(k, _, _)| *k == kind).map(|(_, _, d)| d.to_string()).unwrap_or_default();
                return DispatchFailure { name: format!("{label}::{}", upper(&kind)), pallet: None, docs };
            }
        }
    }
    // A node: "Invalid Transaction: <Display of the error>" (the data field).
    let detail = message.split_once(": ").map(|(_, d)| d).unwrap_or(message).trim();
    if let Some(n) = detail.strip_prefix("Custom error: ") {
        return DispatchFailure {
            name: format!("InvalidTransaction::Custom({})", n.trim()),
            pallet: None,
            docs: format!("a runtime check refused it with custom code {}", n.trim()),
        };
    }
    match KINDS.iter().find(|(_, needle, _)| detail.contains(needle)) {
        Some((kind, _, _)) => DispatchFailure {
            name: format!("InvalidTransaction::{}", upper(kind)),
            pallet: None,
            docs: detail.to_owned(),
        },
        None => DispatchFailure { name: "InvalidTransaction".into(), pallet: None, docs: detail.to_owned() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_refusals_are_named_the_same_from_a_node_and_from_chopsticks() {
        let node = pool_failure("Invalid Transaction: Inability to pay some fees (e.g. account balance too low)");
        let sticks = pool_failure(r#"Invalid: {"invalid":{"payment":null}}"#);
        assert_eq!(node.name, "InvalidTransaction::Payment");
        assert_eq!(sticks.name, node.name);
        assert_eq!(sticks.docs, node.docs);
        assert_eq!(pool_failure("Invalid Transaction: Transaction is outdated").name, "InvalidTransaction::Stale");
        assert_eq!(pool_failure(r#"{"invalid":{"custom":6}}"#).name, "InvalidTransaction::Custom(6)");
        assert_eq!(pool_failure("Invalid Transaction: Custom error: 6").name, "InvalidTransaction::Custom(6)");
        assert_eq!(pool_failure(r#"{"unknown":{"cannotLookup":null}}"#).name, "UnknownTransaction::CannotLookup");
        assert_eq!(pool_failure("something else").name, "InvalidTransaction");
    }
}
