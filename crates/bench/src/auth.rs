//! `nicompute-bench auth`: what nicompute's signed allocations (`docs/signed-allocations.md`) add
//! to one allocation, against the target of under 1 ms.
//!
//! An allocation is two `Allocate` round trips (the check, then the allocation), each signed by
//! the renter and verified by the miner, answered signed by the miner and verified by the renter.
//! The timed unit is one such round on an `Allocate` as `a` sends it (a real RSA-2048 public key
//! PEM, an H100 requirement, an SSH key) and an answer with encrypted credentials and a host key:
//! canonical JSON of the fields, sr25519 sign and verify, both ways. The figure per allocation
//! is twice the round.

use std::time::Instant;

use anyhow::{Context, Result};
use bittensor::{Keypair, Synapse};
use compute::crypto::AllocationKey;
use compute::protocol::auth::{self, Binding};
use compute::protocol::Allocate;
use compute::specs::{GpuRequirement, Requirement};
use serde_json::{json, Map, Value};

const WARMUP: usize = 50;
const TARGET_MS: f64 = 1.0;

pub fn run(iterations: usize) -> Result<()> {
    let renter = Keypair::from_seed(&[7; 32])?;
    let miner = Keypair::from_seed(&[8; 32])?;
    let (r, m) = (renter.ss58(), miner.ss58());
    let pem = AllocationKey::generate().context("rsa")?.public_pem().context("pem")?;
    let requirement = Requirement::sn27(Some(GpuRequirement { count: 1, memory_mib: 80 * 1024, kind: "h100".into() }));
    let mut a = Allocate {
        timeline: 90,
        checking: false,
        public_key: pem,
        device_requirement: requirement.to_json().as_object().cloned().unwrap_or_default(),
        ..Allocate::default()
    };
    a.docker_requirement.insert(
        "ssh_key".into(),
        json!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x me@laptop"),
    );
    let fields = a.to_fields();
    // An answer as large as a real one: 344 base64 characters of RSA-2048 ciphertext per block.
    let mut out = Map::new();
    out.insert("output".into(), json!({"status": true, "info": "A".repeat(688), "port": 4444}));
    let host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x";
    let (renter_id, miner_id) = (renter.account_id(), miner.account_id());

    let round = |nonce: u64| -> Result<()> {
        let b = Binding { dendrite: &r, axon: &m, nonce, uuid: "5f0c7f4e-2d7e-11ef-9a3c-0242ac120002" };
        let (ext, digest) = auth::sign_request(&renter, "Allocate", &fields, &b)?;
        let seen = auth::verify_request(&ext, "Allocate", &fields, &b, &renter_id)?;
        let answer = auth::sign_response(&miner, "Allocate", &out, &b, &seen, Some(host_key))?;
        let key = auth::verify_response(&answer, "Allocate", &out, &b, &digest, &miner_id)?;
        anyhow::ensure!(key.as_deref() == Some(host_key));
        Ok(())
    };
    for n in 0..WARMUP {
        round(n as u64)?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for n in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(round((WARMUP + n) as u64)?);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    let per_allocation = 2.0 * p50;
    println!(
        "{}",
        json!({
            "round_ms_p50": p50,
            "round_ms_p99": p99,
            "per_allocation_ms": per_allocation,
            "target_ms": TARGET_MS,
            "meets_target": per_allocation < TARGET_MS,
            "iterations": iterations,
            "request_fields_bytes": serde_json::to_vec(&Value::Object(fields.clone()))?.len(),
        })
    );
    Ok(())
}
