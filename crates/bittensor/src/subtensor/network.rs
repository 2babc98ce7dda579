//! Network names and endpoints, with bittensor's names and defaults.
//!
//! Precedence (the SDK's): an explicit chain endpoint wins, then the network (a name, or a URL
//! given as the network), then finney. Where the values come from (flags, the SDK's
//! `BT_SUBTENSOR_*` variables, a config file) is the caller's business: this module reads no
//! environment.

/// The public endpoints bittensor knows by name.
pub const FINNEY: &str = "wss://entrypoint-finney.opentensor.ai:443";
pub const TEST: &str = "wss://test.finney.opentensor.ai:443";
pub const ARCHIVE: &str = "wss://archive.chain.opentensor.ai:443";
pub const LOCAL: &str = "ws://127.0.0.1:9944";
pub const LATENT_LITE: &str = "wss://lite.sub.latent.to:443";

/// A network name or URL that is not one of them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown network '{0}': use finney, test, archive, local, latent-lite or a ws://, wss://, http://, https:// URL"
)]
pub struct UnknownNetwork(pub String);

/// The endpoint for a network name (or URL). `local` is [`LOCAL`] unless `local_endpoint` names
/// another (the SDK lets `BT_SUBTENSOR_CHAIN_ENDPOINT` say where the local chain is).
pub fn endpoint_for(network: &str, local_endpoint: Option<&str>) -> Result<String, UnknownNetwork> {
    let local = || local_endpoint.filter(|s| !s.is_empty()).unwrap_or(LOCAL).to_owned();
    match network {
        "finney" => Ok(FINNEY.into()),
        "test" => Ok(TEST.into()),
        "archive" => Ok(ARCHIVE.into()),
        "local" => Ok(local()),
        "latent-lite" => Ok(LATENT_LITE.into()),
        url if is_url(url) => Ok(url.to_owned()),
        other => Err(UnknownNetwork(other.to_owned())),
    }
}

fn is_url(s: &str) -> bool {
    ["ws://", "wss://", "http://", "https://"].iter().any(|p| s.starts_with(p))
}

/// One endpoint from an endpoint (wins) and a network name; finney when neither is given.
pub fn resolve(network: Option<&str>, chain_endpoint: Option<&str>) -> Result<String, UnknownNetwork> {
    if let Some(url) = chain_endpoint.filter(|s| !s.is_empty()) {
        return if is_url(url) { Ok(url.to_owned()) } else { Err(UnknownNetwork(url.to_owned())) };
    }
    match network.filter(|s| !s.is_empty()) {
        Some(n) => endpoint_for(n, None),
        None => Ok(FINNEY.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_precedence() {
        assert_eq!(resolve(Some("finney"), None).expect("ok"), FINNEY);
        assert_eq!(resolve(Some("test"), None).expect("ok"), TEST);
        assert_eq!(resolve(Some("finney"), Some("ws://10.0.0.1:9944")).expect("ok"), "ws://10.0.0.1:9944");
        assert_eq!(resolve(Some("wss://x.example:443"), None).expect("ok"), "wss://x.example:443");
        assert!(resolve(Some("mainnet"), None).is_err());
        assert!(resolve(None, Some("127.0.0.1:9944")).is_err());
        assert_eq!(resolve(None, None).expect("ok"), FINNEY);
        assert_eq!(endpoint_for("local", None).expect("ok"), LOCAL);
        assert_eq!(endpoint_for("local", Some("ws://10.0.0.2:9944")).expect("ok"), "ws://10.0.0.2:9944");
    }
}
