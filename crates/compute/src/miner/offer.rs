//! What a miner offers renters beyond SN27 1.8.3, set by its operator: SN27 v2.x's user ports
//! (`--external.ports`), images and environment variables (2.4.0), and whether it serves only
//! requests signed with nicompute's extension. [`Offer::resolve`] turns a renter's
//! [`DockerRequest`] into what to start, or a typed refusal saying what is not offered.

use crate::protocol::docker::{DockerRequest, SN27_USER_PORTS};
use crate::protocol::refusal::{Code, Refusal};

/// The operator's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offer {
    /// Refuse `Allocate` and `Specs` requests without a valid signed extension
    /// (`--require-signed-requests`): only nicompute renters can allocate.
    pub require_signed: bool,
    /// Host ports for renters' extra container ports, in order (SN27's `--external.ports`;
    /// `nicompute miner run` defaults to 27015–27018). Empty: no user ports.
    pub external_ports: Vec<u16>,
    /// Images a renter may name in `docker_requirement.image` (besides the runtime's own,
    /// which is what an allocation runs when it names none).
    pub images: Vec<String>,
    /// Whether a renter may set environment variables (`docker_requirement.env`).
    pub renter_env: bool,
}

/// What an allocation runs, once the offer allowed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// `None`: the runtime's own image.
    pub image: Option<String>,
    pub env: Vec<(String, String)>,
    pub ssh_container_port: u16,
    /// (container port, host port).
    pub user_ports: Vec<(u16, u16)>,
}

fn not_offered(msg: impl Into<String>) -> Refusal {
    Refusal::new(Code::NotOffered, msg)
}

impl Offer {
    /// Decides what to start for `req`. A renter that names no ports gets SN27's four
    /// (27015–27018) as far as the operator's host ports go; one that names ports gets exactly
    /// those or a refusal.
    pub fn resolve(&self, req: &DockerRequest) -> Result<Resolved, Refusal> {
        let image = match &req.image {
            None => None,
            Some(i) if self.images.contains(i) => Some(i.clone()),
            Some(i) => {
                let offered = if self.images.is_empty() { "none".to_owned() } else { self.images.join(", ") };
                return Err(not_offered(format!(
                    "the image {i} is not offered by this miner (images a renter may choose: {offered})"
                )));
            }
        };
        if !req.env.is_empty() && !self.renter_env {
            return Err(not_offered("this miner does not let renters set environment variables"));
        }
        let ssh_container_port = match req.ssh_internal_port {
            None | Some(22) => 22,
            Some(p) if image.is_some() => p,
            Some(p) => {
                return Err(not_offered(format!(
                    "internal_ports.ssh {p}: sshd listens on 22 in this miner's image (another port needs an image you choose)"
                )))
            }
        };
        let user_ports = match &req.user_ports {
            None => SN27_USER_PORTS.iter().copied().zip(self.external_ports.iter().copied()).collect(),
            Some(asked) if asked.len() > self.external_ports.len() => {
                return Err(not_offered(format!(
                    "{} user port(s) asked for; this miner maps {} (its --external.ports)",
                    asked.len(),
                    self.external_ports.len()
                )))
            }
            Some(asked) => asked.iter().copied().zip(self.external_ports.iter().copied()).collect(),
        };
        let user_ports: Vec<(u16, u16)> = user_ports;
        if user_ports.iter().any(|(c, _)| *c == ssh_container_port) {
            return Err(Refusal::new(
                Code::BadRequest,
                format!("container port {ssh_container_port} is SSH's; ask for other user ports"),
            ));
        }
        Ok(Resolved { image, env: req.env.clone(), ssh_container_port, user_ports })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            external_ports: vec![40001, 40002, 40003, 40004],
            images: vec!["nvidia/cuda:12.4.1".into()],
            renter_env: true,
            ..Offer::default()
        }
    }

    #[test]
    fn sn27_ports_by_default_and_the_renters_when_asked() {
        let r = offer().resolve(&DockerRequest::default()).expect("default");
        assert_eq!(r.user_ports, [(27015, 40001), (27016, 40002), (27017, 40003), (27018, 40004)]);
        assert_eq!((r.image, r.ssh_container_port), (None, 22));
        let asked = DockerRequest { user_ports: Some(vec![8888]), ..DockerRequest::default() };
        assert_eq!(offer().resolve(&asked).expect("asked").user_ports, [(8888, 40001)]);
        let none = Offer { external_ports: vec![], ..offer() };
        assert!(none.resolve(&DockerRequest::default()).expect("no ports").user_ports.is_empty());
        assert_eq!(none.resolve(&asked).map_err(|r| r.code), Err(Some(Code::NotOffered)));
    }

    #[test]
    fn images_env_and_ssh_port_within_the_offer() {
        let cuda = DockerRequest {
            image: Some("nvidia/cuda:12.4.1".into()),
            ssh_internal_port: Some(2222),
            env: vec![("A".into(), "1".into())],
            ..DockerRequest::default()
        };
        let r = offer().resolve(&cuda).expect("offered");
        assert_eq!((r.image.as_deref(), r.ssh_container_port), (Some("nvidia/cuda:12.4.1"), 2222));
        for (req, o) in [
            (DockerRequest { image: Some("evil/miner:latest".into()), ..DockerRequest::default() }, offer()),
            (cuda.clone(), Offer { renter_env: false, ..offer() }),
            (DockerRequest { ssh_internal_port: Some(2222), ..DockerRequest::default() }, offer()),
        ] {
            assert_eq!(o.resolve(&req).map_err(|r| r.code), Err(Some(Code::NotOffered)), "{req:?}");
        }
        let clash = DockerRequest { user_ports: Some(vec![22]), ..DockerRequest::default() };
        assert_eq!(offer().resolve(&clash).map_err(|r| r.code), Err(Some(Code::BadRequest)));
    }
}
