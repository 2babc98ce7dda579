//! The warm container: one container of the runtime's image made in advance, so that an
//! allocation only uploads its credentials (the archive API, as a cold start does) and sets it
//! going, then waits for the SSH banner.
//!
//! - It is made by [`ContainerRuntime::prepare_warm`] (the miner calls it in the background at
//!   start, after each allocation and after each end), from the image's id rather than its tag,
//!   labelled like every container of this runtime (owner, scope, an allocation id starting with
//!   [`WARM_PREFIX`]) plus [`WARM_LABEL`], so a restarted miner's reconciliation sees it as a
//!   container with no allocation and removes it.
//! - **Parked** when the image promises it ([`AWAIT_LABEL`], as `nicompute/sshd` does): the
//!   container is created with `NICOMPUTE_AWAIT_CREDENTIALS=1`, started, and paused while its
//!   entrypoint waits for `/run/nicompute/go` before doing anything (no sshd runs, no key is
//!   made, no password is set). Docker's start (network namespace, port proxy, runc: about
//!   200 ms here) is then behind it: an allocation uploads the credentials with `go` last and
//!   unpauses it (about 10 ms). A parked container publishes its ports (nothing answers behind
//!   them), so it is parked only while no allocation holds them: one made during an allocation
//!   stays created until that allocation ends (the miner prepares again then), and an allocation
//!   that needs its ports and does not fit it removes it first. Where Docker cannot pause, the
//!   runtime stops parking and keeps created ones.
//!   A parkable container has no restart policy until an allocation takes it (a daemon restart
//!   would otherwise start it unpaused, waiting).
//! - Otherwise **created**, not started: it holds no port, no memory and runs nothing, so it may
//!   sit beside a running allocation that publishes the same SSH port. An allocation starts it.
//! - Its RSA and ECDSA host keys are made in advance too (in the miner, off the async threads)
//!   and uploaded into it, so the entrypoint's `ssh-keygen -A` finds every key and generates
//!   none: RSA-3072 generation in the container was ~0.5 s of every cold start. The ed25519 key,
//!   the one the miner signs to renters, is made per allocation as on the cold path. Each warm
//!   container gets keys of its own: a renter is root in it and can read them.
//! - [`WarmSlot::take`] hands it out under a mutex, so two allocations never get the same one;
//!   an allocation first waits for a warm container in the making or being parked (it may be
//!   the one to take, or one that would take the allocation's ports), then renames it
//!   `nicompute-<allocation id>` before it starts, so a crash between taking and starting leaves a
//!   container that reconciliation removes with its half-started allocation.
//! - An allocation takes it only when its spec fits: the runtime's own image, no environment, the
//!   same SSH port, extra ports (SN27's four by default), address and GPU request. CPU and memory
//!   limits are applied to it with Docker's update API. If the tag now names another image (the
//!   image was rebuilt), or anything on the warm path fails, the container is removed and the
//!   allocation starts cold.

use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::{CreateContainerOptions, RenameContainerOptions};

use super::*;
use crate::runtime::WARM_PREFIX;

/// The label marking a warm container (its value: `1`).
pub const WARM_LABEL: &str = "io.nicompute.warm";
/// The image label (value `1`) promising an entrypoint that, with [`AWAIT_ENV`] set, waits for
/// [`GO_PATH`] before anything else: what lets a warm container be parked.
pub const AWAIT_LABEL: &str = "io.nicompute.await-credentials";
/// The environment variable (value `1`) a parked warm container is created with.
const AWAIT_ENV: &str = "NICOMPUTE_AWAIT_CREDENTIALS";
/// The file an allocation's archive ends with: a waiting entrypoint goes on when it appears.
pub(super) const GO_PATH: &str = "/run/nicompute/go";

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

    /// The host ports a container made for this fit publishes.
    fn host_ports(&self) -> Vec<u16> {
        std::iter::once(self.ssh_port).chain(self.user_ports.iter().map(|&(_, host)| host)).collect()
    }

    /// Whether a container published this way would take a host port `spec` needs.
    fn ports_clash(&self, spec: &ContainerSpec) -> bool {
        let ours = self.host_ports();
        std::iter::once(spec.ssh_port).chain(spec.user_ports.iter().map(|&(_, h)| h)).any(|p| ours.contains(&p))
    }
}

/// The warm container kept.
#[derive(Debug)]
pub(super) struct Warm {
    id: String,
    /// The image id it was created from.
    image_id: String,
    fit: Fit,
    /// Its entrypoint waits for [`GO_PATH`] (created with [`AWAIT_ENV`]).
    awaits: bool,
    /// Started and paused: an allocation unpauses it. Locked while it is being parked, so
    /// that an allocation taking it then waits to know how to set it going.
    parked: std::sync::Arc<tokio::sync::Mutex<bool>>,
}

impl Warm {
    /// Whether it is parked, or being parked.
    fn parked_now(&self) -> bool {
        self.parked.try_lock().map_or(true, |p| *p)
    }
}

/// Where the runtime keeps its warm container.
#[derive(Debug, Default)]
pub(super) struct WarmSlot {
    kept: std::sync::Mutex<Option<Warm>>,
    /// One [`DockerRuntime::prepare_warm_inner`] at a time.
    making: tokio::sync::Mutex<()>,
    /// Docker refused to pause a container: warm containers are only created from then on.
    cannot_pause: std::sync::atomic::AtomicBool,
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

    /// Takes the warm container if it is parked on a port `spec` needs.
    fn take_in_the_way(&self, spec: &ContainerSpec) -> Option<Warm> {
        let mut kept = self.lock();
        if kept.as_ref().is_some_and(|w| w.parked_now() && w.fit.ports_clash(spec)) {
            kept.take()
        } else {
            None
        }
    }
}

/// What parking a container came to.
enum Parking {
    Parked,
    /// Docker would not start it (its port is taken): it is still created.
    NotNow,
    /// Started but not paused: it must go.
    Failed,
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
    /// The id of the image the runtime's tag names now, and whether it promises the parked
    /// start ([`AWAIT_LABEL`]).
    async fn image_info(&self) -> Result<(String, bool), RuntimeError> {
        let image = self.docker.inspect_image(&self.image).await.map_err(|e| self.map_err(e, &self.image))?;
        let awaits = image
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .is_some_and(|l| l.get(AWAIT_LABEL).is_some_and(|v| v == "1"));
        let id = image
            .id
            .ok_or_else(|| RuntimeError::Failed(format!("Docker reports no id for the image {}", self.image)))?;
        Ok((id, awaits))
    }

    /// Whether one of our containers other than the warm one publishes, or will publish when it
    /// starts again, a host port of `fit`: an allocation holds them (running, paused or stopped
    /// by its renter), and a parked container would take them from it.
    async fn ports_held(&self, fit: &Fit) -> Result<bool, RuntimeError> {
        let wanted = fit.host_ports();
        for c in self.list_inner().await? {
            if c.allocation_id.starts_with(WARM_PREFIX) {
                continue;
            }
            let inspect = self
                .docker
                .inspect_container(&c.id, None::<InspectContainerOptions>)
                .await
                .map_err(|e| self.map_err(e, &c.id))?;
            let bindings = inspect.host_config.and_then(|h| h.port_bindings).unwrap_or_default();
            let mut held = bindings.into_values().flatten().flatten().filter_map(|b| b.host_port?.parse::<u16>().ok());
            if held.any(|p| wanted.contains(&p)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Starts a container that waits for its credentials, and pauses it; not while an
    /// allocation holds its ports.
    async fn park(&self, id: &str, fit: &Fit) -> Parking {
        match self.ports_held(fit).await {
            Ok(false) => {}
            Ok(true) => return Parking::NotNow,
            Err(e) => {
                tracing::debug!(error = %e, "cannot tell whether an allocation holds the ports; not parking");
                return Parking::NotNow;
            }
        }
        if let Err(e) = self.docker.start_container(id, None::<StartContainerOptions>).await {
            tracing::debug!(container = %id, error = %e, "the warm container stays created (not parked)");
            return match self.status(id).await {
                Ok(Some(ContainerStateStatusEnum::CREATED)) => Parking::NotNow,
                _ => Parking::Failed,
            };
        }
        match self.docker.pause_container(id).await {
            Ok(()) => Parking::Parked,
            // Running and not pausable: this Docker cannot pause (rootless without the freezer,
            // say). A container that ended instead says nothing about Docker.
            Err(e) if self.status(id).await.ok().flatten() == Some(ContainerStateStatusEnum::RUNNING) => {
                tracing::warn!(error = %e, "Docker cannot pause containers here: warm containers will be created, not parked");
                self.warm.cannot_pause.store(true, std::sync::atomic::Ordering::Relaxed);
                Parking::Failed
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "the warm container ended before it was paused (see `docker logs`)");
                Parking::Failed
            }
        }
    }

    fn may_park(&self, awaits: bool) -> bool {
        awaits && !self.warm.cannot_pause.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) async fn prepare_warm_inner(&self, template: &ContainerSpec) -> Result<bool, RuntimeError> {
        let Some(fit) = Fit::of(template, &self.image) else {
            return Err(RuntimeError::Failed(
                "a warm container runs the runtime's own image, with no environment".into(),
            ));
        };
        let _making = self.warm.making.lock().await;
        let (image_id, awaits) = self.image_info().await?;
        let kept = self
            .warm
            .lock()
            .as_ref()
            .map(|w| (w.id.clone(), w.fit == fit && w.image_id == image_id, w.awaits, w.parked.clone()));
        if let Some((id, true, awaits, parked)) = &kept {
            // Still there and as we left it? (A reconciliation or an operator may have removed it.)
            let mut parked = parked.lock().await;
            match self.status(id).await.ok().flatten() {
                Some(ContainerStateStatusEnum::PAUSED) if *parked => return Ok(true),
                Some(ContainerStateStatusEnum::CREATED) if !*parked => {
                    // Made while an allocation held its ports: park it now. It stays in the slot;
                    // an allocation that takes it meanwhile waits on `parked`.
                    if !self.may_park(*awaits) {
                        return Ok(true);
                    }
                    match self.park(id, &fit).await {
                        Parking::Parked => {
                            *parked = true;
                            tracing::debug!(container = %id, "warm container parked");
                            return Ok(true);
                        }
                        Parking::NotNow => return Ok(true),
                        Parking::Failed => {
                            // Not parked, whatever state it is in: an allocation that took it
                            // meanwhile still starts it (its entrypoint goes on at `go`).
                            drop(parked);
                            if self.warm.take(&fit).is_none() {
                                return Ok(true);
                            }
                            self.force_remove(id).await?;
                        }
                    }
                }
                _ => {}
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
        let mut awaits = self.may_park(awaits);
        // Twice at most: a Docker found unable to pause gets a created one at once.
        loop {
            let mut body = self.create_body(&spec)?;
            body.image = Some(image_id.clone());
            if let Some(labels) = body.labels.as_mut() {
                labels.insert(WARM_LABEL.to_owned(), "1".to_owned());
            }
            if awaits {
                body.env = Some(vec![format!("{AWAIT_ENV}=1")]);
                // Never restarted by Docker while it waits (after a daemon restart it would wait
                // unpaused); the allocation that takes it sets the runtime's policy.
                if let Some(host) = body.host_config.as_mut() {
                    host.restart_policy =
                        Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None });
                }
            }
            let name = format!("{NAME_PREFIX}{}", spec.allocation_id);
            let keys = tokio::task::spawn_blocking(other_host_keys)
                .await
                .map_err(|e| RuntimeError::Failed(format!("host key generation stopped: {e}")))??;
            let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
            let created =
                self.docker.create_container(Some(options), body).await.map_err(|e| self.map_err(e, &name))?;
            if let Err(e) = self.upload(&created.id, keys).await {
                let _ = self.force_remove(&created.id).await;
                return Err(e);
            }
            let parked = if awaits {
                match self.park(&created.id, &fit).await {
                    Parking::Parked => true,
                    Parking::NotNow => false,
                    Parking::Failed => {
                        let _ = self.force_remove(&created.id).await;
                        if !self.may_park(true) {
                            awaits = false;
                            continue;
                        }
                        return Err(RuntimeError::Failed(
                        "the warm container ended before it was parked (see the miner's log); allocations start cold until the next one"
                            .into(),
                    ));
                    }
                }
            } else {
                false
            };
            tracing::debug!(container = %created.id, image = %image_id, parked, "warm container made");
            let parked = std::sync::Arc::new(tokio::sync::Mutex::new(parked));
            let replaced = self.warm.lock().replace(Warm {
                id: created.id,
                image_id: image_id.clone(),
                fit: fit.clone(),
                awaits,
                parked,
            });
            // Only this function stores one, under `making`: nothing can be there now.
            if let Some(w) = replaced {
                self.force_remove(&w.id).await?;
            }
            return Ok(true);
        }
    }

    pub(super) async fn discard_warm_inner(&self) -> Result<(), RuntimeError> {
        let _making = self.warm.making.lock().await;
        let kept = self.warm.lock().take();
        match kept {
            Some(w) => self.force_remove(&w.id).await,
            None => Ok(()),
        }
    }

    /// Starts the allocation in the warm container when there is one that fits: `None` when
    /// there is none or it failed (it is then removed, and the caller starts a cold one).
    pub(super) async fn start_warm(&self, spec: &ContainerSpec, password: &str, keys: &str) -> Option<Container> {
        let taken = {
            // A warm container in the making (or being parked) is finished first: it may be the
            // one this allocation takes, or one that would take its ports right after it started.
            let _making = self.warm.making.lock().await;
            match Fit::of(spec, &self.image).and_then(|fit| self.warm.take(&fit)) {
                Some(warm) => Ok(warm),
                None => Err(self.warm.take_in_the_way(spec)),
            }
        };
        let warm = match taken {
            Ok(warm) => warm,
            Err(in_the_way) => {
                // A parked one holding a port this allocation needs makes way (the miner makes
                // the next warm container once this allocation is under way).
                if let Some(in_the_way) = in_the_way {
                    tracing::debug!(container = %in_the_way.id, "removing the parked warm container: its ports are needed");
                    if let Err(e) = self.force_remove(&in_the_way.id).await {
                        tracing::warn!(container = %in_the_way.id, error = %e, "could not remove the parked warm container");
                    }
                }
                return None;
            }
        };
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
            // A parkable one was made with no restart policy: the allocation's is set now.
            let restart = (warm.awaits && self.restart_policy != RestartPolicyNameEnum::NO)
                .then_some(RestartPolicy { name: Some(self.restart_policy), maximum_retry_count: None });
            if spec.cpu_count.is_none() && spec.memory_bytes.is_none() && restart.is_none() {
                return Ok(());
            }
            let (nano_cpus, memory) = limits(spec)?;
            // What Docker sets at create for a memory limit without a swap limit: as much swap.
            let memory_swap = memory.map(|m| m.saturating_mul(2));
            let body =
                ContainerUpdateBody { nano_cpus, memory, memory_swap, restart_policy: restart, ..Default::default() };
            self.docker.update_container(id, body).await.map_err(|e| self.map_err(e, id))
        };
        let (image, renamed, limited) = tokio::join!(self.image_info(), rename, limits);
        if image?.0 != warm.image_id {
            return Err(RuntimeError::Failed(format!(
                "the image {} changed since the warm container was made",
                self.image
            )));
        }
        renamed?;
        limited?;
        // Taken while being parked: wait for the parking to end.
        let parked = *warm.parked.lock().await;
        let launch = match (parked, warm.awaits) {
            (true, _) => Launch::Unpause,
            (false, true) => Launch::StartAwaiting,
            (false, false) => Launch::Start,
        };
        self.provision_as(id, spec, password, keys, launch).await
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
        *slot.lock() = Some(Warm {
            id: "c1".into(),
            image_id: "sha256:1".into(),
            fit: fit.clone(),
            awaits: true,
            parked: Default::default(),
        });
        let other = Fit::of(&ContainerSpec { ssh_port: 1, ..spec }, DEFAULT_IMAGE).unwrap_or_else(|| panic!("fits"));
        assert!(slot.take(&other).is_none(), "another port's allocation cannot take it");
        let takers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| slot.take(&fit).map(|w| w.id))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        assert_eq!(takers.iter().flatten().count(), 1, "{takers:?}");
    }
}
