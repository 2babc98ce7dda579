//! The warm container: one container of the runtime's image created in advance and never
//! started, so that an allocation only uploads its credentials (the archive API, as a cold start
//! does), starts it and waits for the SSH banner; creating a container is the part of a cold
//! start it saves.
//!
//! - It is made by [`ContainerRuntime::prepare_warm`] (the miner calls it in the background at
//!   start, after each allocation and after each end), from the image's id rather than its tag,
//!   labelled like every container of this runtime (owner, scope, an allocation id starting with
//!   [`WARM_PREFIX`]) plus [`WARM_LABEL`], so a restarted miner's reconciliation sees it as a
//!   container with no allocation and removes it.
//! - Created is not started: it holds no port, no memory and runs nothing, so it may sit beside a
//!   running allocation that publishes the same SSH port.
//! - Its RSA and ECDSA host keys are made in advance too (in the miner, off the async threads)
//!   and uploaded into it, so the entrypoint's `ssh-keygen -A` finds every key and generates
//!   none: RSA-3072 generation in the container was ~0.5 s of every cold start. The ed25519 key,
//!   the one the miner signs to renters, is made per allocation as on the cold path. Each warm
//!   container gets keys of its own: a renter is root in it and can read them.
//! - [`WarmSlot::take`] hands it out under a mutex, so two allocations never get the same one;
//!   the taker renames it `nicompute-<allocation id>` before it starts, so a crash between taking
//!   and starting leaves a container that reconciliation removes with its half-started
//!   allocation.
//! - An allocation takes it only when its spec fits: the runtime's own image, no environment, the
//!   same SSH port, extra ports (SN27's four by default), address and GPU request. CPU and memory limits are applied
//!   to it with Docker's update API. If the tag now names another image (the image was rebuilt),
//!   or anything on the warm path fails, the container is removed and the allocation starts cold.
//!
//! A variant that starts the warm container and pauses it (so an allocation only unpauses it)
//! was measured against this one and is slower, besides publishing the port and running sshd
//! with the wrong host key and no password before anyone allocates: see the README's
//! Performance section.

use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::{CreateContainerOptions, RenameContainerOptions};

use super::*;
use crate::runtime::WARM_PREFIX;

/// The label marking a warm container (its value: `1`).
pub const WARM_LABEL: &str = "io.nicompute.warm";

/// What a warm container is made for: an allocation's spec must match all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fit {
    ssh_port: u16,
    bind_ip: IpAddr,
    gpus: bool,
    ssh_container_port: u16,
    user_ports: Vec<(u16, u16)>,
}

impl Fit {
    /// `None` when no warm container can serve `spec`: another image or an environment (fixed
    /// when a container is created; ports are compared as part of the fit).
    fn of(spec: &ContainerSpec, image: &str) -> Option<Self> {
        let own_image = spec.image.as_deref().is_none_or(|i| i == image);
        (own_image && spec.env.is_empty()).then(|| Self {
            ssh_port: spec.ssh_port,
            bind_ip: spec.bind_ip,
            gpus: spec.gpus,
            ssh_container_port: spec.ssh_container_port,
            user_ports: spec.user_ports.clone(),
        })
    }
}

/// The warm container kept.
#[derive(Debug)]
pub(super) struct Warm {
    id: String,
    /// The image id it was created from.
    image_id: String,
    fit: Fit,
}

/// Where the runtime keeps its warm container.
#[derive(Debug, Default)]
pub(super) struct WarmSlot {
    kept: std::sync::Mutex<Option<Warm>>,
    /// One [`DockerRuntime::prepare_warm_inner`] at a time.
    making: tokio::sync::Mutex<()>,
}

impl WarmSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Warm>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the warm container if it fits: whoever takes it is the only one who ever gets it.
    fn take(&self, fit: &Fit) -> Option<Warm> {
        let mut kept = self.lock();
        if kept.as_ref().is_some_and(|w| &w.fit == fit) {
            kept.take()
        } else {
            None
        }
    }
}

/// An archive with fresh RSA-3072 and ECDSA P-256 host keys at OpenSSH's default paths (what
/// `ssh-keygen -A` would make besides the ed25519 key).
fn other_host_keys() -> Result<Vec<u8>, RuntimeError> {
    use russh::keys::ssh_key::private::{EcdsaKeypair, KeypairData, RsaKeypair};
    use russh::keys::{EcdsaCurve, PrivateKey};
    let fail = |e: russh::keys::ssh_key::Error| RuntimeError::Failed(format!("cannot make an SSH host key: {e}"));
    let mut rng = rand::rngs::OsRng;
    let rsa = KeypairData::from(RsaKeypair::random(&mut rng, 3072).map_err(fail)?);
    let ecdsa = KeypairData::from(EcdsaKeypair::random(&mut rng, EcdsaCurve::NistP256).map_err(fail)?);
    let mut tar = TarBuilder::new();
    tar.dir("etc/ssh", 0o755);
    for (data, file) in [(rsa, "ssh_host_rsa_key"), (ecdsa, "ssh_host_ecdsa_key")] {
        let key = PrivateKey::new(data, "").map_err(fail)?;
        let private = key.to_openssh(russh::keys::ssh_key::LineEnding::LF).map_err(fail)?;
        let public = key.public_key().to_openssh().map_err(fail)?;
        tar.file(&format!("etc/ssh/{file}"), 0o600, private.as_bytes());
        tar.file(&format!("etc/ssh/{file}.pub"), 0o644, format!("{public}\n").as_bytes());
    }
    Ok(tar.finish())
}

impl DockerRuntime {
    /// The id of the image the runtime's tag names now.
    async fn image_id(&self) -> Result<String, RuntimeError> {
        let image = self.docker.inspect_image(&self.image).await.map_err(|e| self.map_err(e, &self.image))?;
        image.id.ok_or_else(|| RuntimeError::Failed(format!("Docker reports no id for the image {}", self.image)))
    }

    pub(super) async fn prepare_warm_inner(&self, template: &ContainerSpec) -> Result<bool, RuntimeError> {
        let Some(fit) = Fit::of(template, &self.image) else {
            return Err(RuntimeError::Failed(
                "a warm container runs the runtime's own image, with no environment".into(),
            ));
        };
        let _making = self.warm.making.lock().await;
        let image_id = self.image_id().await?;
        let kept = self.warm.lock().as_ref().map(|w| (w.id.clone(), w.fit == fit && w.image_id == image_id));
        if let Some((id, true)) = &kept {
            // Still there and still created? (A reconciliation or an operator may have removed it.)
            if self.status(id).await.ok().flatten() == Some(ContainerStateStatusEnum::CREATED) {
                return Ok(true);
            }
        }
        let stale = if kept.is_some() { self.warm.lock().take() } else { None };
        if let Some(old) = stale {
            tracing::info!(container = %old.id, "replacing the warm container (its image or settings changed)");
            self.force_remove(&old.id).await?;
        }
        let mut tag = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let mut spec = template.clone();
        spec.allocation_id = format!("{WARM_PREFIX}{tag}");
        spec.image = None;
        spec.cpu_count = None;
        spec.memory_bytes = None;
        let mut body = self.create_body(&spec)?;
        body.image = Some(image_id.clone());
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(WARM_LABEL.to_owned(), "1".to_owned());
        }
        let name = format!("{NAME_PREFIX}{}", spec.allocation_id);
        let keys = tokio::task::spawn_blocking(other_host_keys)
            .await
            .map_err(|e| RuntimeError::Failed(format!("host key generation stopped: {e}")))??;
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| self.map_err(e, &name))?;
        if let Err(e) = self.upload(&created.id, keys).await {
            let _ = self.force_remove(&created.id).await;
            return Err(e);
        }
        tracing::debug!(container = %created.id, image = %image_id, "warm container created");
        let replaced = self.warm.lock().replace(Warm { id: created.id, image_id, fit });
        // Only this function stores one, under `making`: nothing can be there now.
        if let Some(w) = replaced {
            self.force_remove(&w.id).await?;
        }
        Ok(true)
    }

    /// Starts the allocation in the warm container when there is one that fits: `None` when
    /// there is none or it failed (it is then removed, and the caller starts a cold one).
    pub(super) async fn start_warm(&self, spec: &ContainerSpec, password: &str, keys: &str) -> Option<Container> {
        let fit = Fit::of(spec, &self.image)?;
        let warm = self.warm.take(&fit)?;
        match self.provision_warm(&warm, spec, password, keys).await {
            Ok(()) => {
                tracing::debug!(container = %warm.id, allocation = %spec.allocation_id, "started the warm container");
                Some(Container {
                    id: warm.id,
                    allocation_id: spec.allocation_id.clone(),
                    state: ContainerState::Running,
                    user_ports: spec.user_ports.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(container = %warm.id, error = %e, "the warm container did not start; starting a cold one");
                if let Err(cleanup) = self.force_remove(&warm.id).await {
                    tracing::warn!(container = %warm.id, error = %cleanup, "could not remove the warm container");
                }
                None
            }
        }
    }

    async fn provision_warm(
        &self,
        warm: &Warm,
        spec: &ContainerSpec,
        password: &str,
        keys: &str,
    ) -> Result<(), RuntimeError> {
        let id = warm.id.as_str();
        let name = format!("{NAME_PREFIX}{}", spec.allocation_id);
        let rename = async {
            let options = RenameContainerOptions { name: name.clone() };
            self.docker.rename_container(id, options).await.map_err(|e| self.map_err(e, id))
        };
        let limits = async {
            if spec.cpu_count.is_none() && spec.memory_bytes.is_none() {
                return Ok(());
            }
            let (nano_cpus, memory) = limits(spec)?;
            // What Docker sets at create for a memory limit without a swap limit: as much swap.
            let memory_swap = memory.map(|m| m.saturating_mul(2));
            let body = ContainerUpdateBody { nano_cpus, memory, memory_swap, ..Default::default() };
            self.docker.update_container(id, body).await.map_err(|e| self.map_err(e, id))
        };
        let (image_id, renamed, limited) = tokio::join!(self.image_id(), rename, limits);
        if image_id? != warm.image_id {
            return Err(RuntimeError::Failed(format!(
                "the image {} changed since the warm container was made",
                self.image
            )));
        }
        renamed?;
        limited?;
        self.provision(id, spec, password, keys).await
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use secrecy::SecretString;

    use super::*;

    #[test]
    fn only_specs_a_created_container_can_serve_fit() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let base = ContainerSpec::new("a", SecretString::from("p".to_owned()), 4444, ip);
        let fit = Fit::of(&base, DEFAULT_IMAGE).unwrap_or_else(|| panic!("the default spec fits"));
        let limited = ContainerSpec { cpu_count: Some(2), memory_bytes: Some(1 << 30), ..base.clone() };
        assert_eq!(Fit::of(&limited, DEFAULT_IMAGE), Some(fit.clone()), "limits are updated, not fixed");
        let same_image = ContainerSpec { image: Some(DEFAULT_IMAGE.into()), ..base.clone() };
        assert_eq!(Fit::of(&same_image, DEFAULT_IMAGE), Some(fit.clone()));
        assert_eq!(Fit::of(&ContainerSpec { image: Some("other:1".into()), ..base.clone() }, DEFAULT_IMAGE), None);
        assert_eq!(
            Fit::of(&ContainerSpec { env: vec![("A".into(), "1".into())], ..base.clone() }, DEFAULT_IMAGE),
            None
        );
        let ports = ContainerSpec { user_ports: vec![(80, 8080)], ..base.clone() };
        assert_ne!(Fit::of(&ports, DEFAULT_IMAGE), Some(fit.clone()), "other ports, another fit");
        assert_ne!(Fit::of(&ContainerSpec { ssh_port: 4445, ..base.clone() }, DEFAULT_IMAGE), Some(fit.clone()));
        assert_ne!(Fit::of(&ContainerSpec { gpus: true, ..base }, DEFAULT_IMAGE), Some(fit));
    }

    #[test]
    fn a_warm_container_is_taken_once() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let spec = ContainerSpec::new("a", SecretString::from("p".to_owned()), 4444, ip);
        let fit = Fit::of(&spec, DEFAULT_IMAGE).unwrap_or_else(|| panic!("fits"));
        let slot = WarmSlot::default();
        *slot.lock() = Some(Warm { id: "c1".into(), image_id: "sha256:1".into(), fit: fit.clone() });
        let other = Fit::of(&ContainerSpec { ssh_port: 1, ..spec }, DEFAULT_IMAGE).unwrap_or_else(|| panic!("fits"));
        assert!(slot.take(&other).is_none(), "another port's allocation cannot take it");
        let takers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| slot.take(&fit).map(|w| w.id))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        assert_eq!(takers.iter().flatten().count(), 1, "{takers:?}");
    }
}
