//! Network names and endpoints, with bittensor's names and defaults.
//!
//! Precedence (the SDK's): an explicit `--subtensor.chain_endpoint` wins, then
//! `--subtensor.network` (a name, or a URL given as the network), then the
//! `BT_SUBTENSOR_CHAIN_ENDPOINT` / `BT_SUBTENSOR_NETWORK` variables, then finney.

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

/// The endpoint for a network name (or URL).
pub fn endpoint_for(network: &str) -> Result<String, UnknownNetwork> {
    let local =
        || std::env::var("BT_SUBTENSOR_CHAIN_ENDPOINT").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| LOCAL.into());
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

/// Resolves flags and environment into one endpoint.
pub fn resolve(network: Option<&str>, chain_endpoint: Option<&str>) -> Result<String, UnknownNetwork> {
    if let Some(url) = chain_endpoint.filter(|s| !s.is_empty()) {
        return if is_url(url) { Ok(url.to_owned()) } else { Err(UnknownNetwork(url.to_owned())) };
    }
    if let Some(n) = network.filter(|s| !s.is_empty()) {
        return endpoint_for(n);
    }
    if let Ok(url) = std::env::var("BT_SUBTENSOR_CHAIN_ENDPOINT") {
        if is_url(&url) {
            return Ok(url);
        }
    }
    if let Ok(n) = std::env::var("BT_SUBTENSOR_NETWORK") {
        if !n.is_empty() {
            return endpoint_for(&n);
        }
    }
    Ok(FINNEY.into())
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
    }
}
