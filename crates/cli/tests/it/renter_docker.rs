//! The Docker runtime end to end through the renter's commands: a devnet, `nicompute miner run
//! --runtime docker` with a simulated H100, `sync`, `a` with an injected key, `ssh` into the
//! container, `d`, and no container of this allocation left. Skipped (with a message) where no
//! Docker daemon answers, unless NICOMPUTE_REQUIRE_DOCKER=1.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use compute::runtime::docker::{DockerConfig, DockerRuntime};
use compute::runtime::{ContainerRuntime, ContainerState};

use crate::renter_world::{docker, json, keygen, python, text, World, H100};

/// The allocation id in the miner's state (`miner.sqlite` under its state dir), if it holds one.
fn miner_allocation_id(state_dir: &Path) -> Option<String> {
    let db = state_dir.join("miner.sqlite");
    if !db.exists() {
        return None;
    }
    let code = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
                r = c.execute('SELECT allocation_id FROM allocation').fetchone()\nprint(r[0] if r else '')";
    let id = python(code, &[db.to_str().expect("utf8")]).trim().to_owned();
    (!id.is_empty()).then_some(id)
}

/// Containers of ours that carry one of `ids` as their allocation id.
async fn containers_of(docker: &DockerRuntime, ids: &HashSet<String>) -> Vec<String> {
    docker
        .list()
        .await
        .expect("docker list")
        .into_iter()
        .filter(|c| ids.contains(&c.allocation_id))
        .map(|c| c.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_allocation_through_the_renter_cli() {
    let Some(docker) = docker().await else { return };
    let mut w = World::new().await;
    let m = Arc::new(w.add_miner().await);
    let w = Arc::new(w);
    // Allocation ids this test's miner used: whatever happens, their containers are removed.
    let ids = Arc::new(Mutex::new(HashSet::new()));

    let miner = Arc::new(w.spawn_miner(&m, "docker", H100).await);
    let body = {
        let (w, m, ids, miner) = (w.clone(), m.clone(), ids.clone(), miner.clone());
        let docker = DockerRuntime::connect(crate::common::docker_config()).await.expect("docker");
        async move {
            let state_dir = m.state.path();
            w.wait_ready(&m, &miner).await;
            let hotkey = m.key.ss58();
            let out = w.cli(&["sync", "--json"]).await;
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert_eq!(json(&out)["answered"], 1);

            let keys = tempfile::tempdir().expect("tmp");
            let key = keygen(keys.path());
            let pubkey = key.with_extension("pub");
            let out = w
                .cli(&[
                    "a",
                    "--gpu_type",
                    "h100",
                    "--gpu_size",
                    "80",
                    "--ssh-key",
                    pubkey.to_str().expect("utf8"),
                    "--ttl",
                    "1h",
                    "--json",
                ])
                .await;
            let id = miner_allocation_id(state_dir);
            if let Some(id) = &id {
                ids.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone());
            }
            assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
            let v = json(&out);
            assert_eq!(v["hotkey"], hotkey.as_str());
            assert_eq!(v["ssh_key_injected"], true);
            assert_eq!(v["ssh_ready"], true);
            let id = id.expect("the miner records the allocation");
            let mine = HashSet::from([id.clone()]);
            assert_eq!(containers_of(&docker, &mine).await.len(), 1, "one container runs the allocation");

            let out = w.cli(&["ssh", &hotkey, "-i", key.to_str().expect("utf8"), "--", "uname", "-a"]).await;
            assert!(
                out.status.success() && text(&out.stdout).contains("Linux"),
                "stdout: {}\nstderr: {}",
                text(&out.stdout),
                text(&out.stderr)
            );

            // The allocation is authenticated: a nicompute miner signed its answer and host key.
            let listed = json(&w.cli(&["list_a", "--json"]).await);
            assert_eq!(listed[0]["authenticated"], true, "{listed}");

            // The lifecycle commands, each checked against the container's real state.
            let container = containers_of(&docker, &mine).await.pop().expect("the container");
            let state = || async {
                docker.list().await.expect("docker list").into_iter().find(|c| c.id == container).map(|c| c.state)
            };
            let out = w.cli(&["pause", &hotkey, "--wait", "20s", "--json"]).await;
            assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
            assert_eq!(json(&out)["signed"], true);
            assert_eq!(state().await, Some(ContainerState::Paused));
            let out = w.cli(&["resume", &hotkey, "--wait", "20s", "--json"]).await;
            assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
            assert_eq!(state().await, Some(ContainerState::Running));
            let out = w.cli(&["restart", &hotkey, "--wait", "30s", "--json"]).await;
            assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
            assert_eq!(state().await, Some(ContainerState::Running));
            // exchange-key: the container's authorized_keys holds the new key, not the old one.
            let new_dir = tempfile::tempdir().expect("tmp");
            let new_pub = keygen(new_dir.path()).with_extension("pub");
            let new_line = std::fs::read_to_string(&new_pub).expect("pub").trim().to_owned();
            let out = w.cli(&["exchange-key", &hotkey, "--ssh-key", new_pub.to_str().expect("utf8"), "--json"]).await;
            assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
            let out = w.cli(&["ssh", &hotkey, "--builtin", "--", "cat", "/root/.ssh/authorized_keys"]).await;
            let installed = text(&out.stdout);
            assert!(installed.contains(&new_line), "{installed}{}", text(&out.stderr));
            let old_line = std::fs::read_to_string(&pubkey).expect("pub").trim().to_owned();
            assert!(!installed.contains(&old_line), "the old key is gone: {installed}");
            let out = w.cli(&["d", &hotkey, "-y", "--json"]).await;
            assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
            assert_eq!(json(&out)[0]["result"], "released");
            assert_eq!(json(&w.cli(&["list_a", "--json"]).await), serde_json::json!([]));
            assert_eq!(containers_of(&docker, &mine).await, Vec::<String>::new(), "the container is gone");
            assert_eq!(miner_allocation_id(state_dir), None, "the miner holds nothing");
        }
    };
    // The body runs as its own task so that a failure still reaches the cleanup below.
    let result = tokio::spawn(body).await;
    if let Ok(miner) = Arc::try_unwrap(miner) {
        miner.stop();
    }
    if let Some(id) = miner_allocation_id(m.state.path()) {
        ids.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }
    let ids = ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for c in containers_of(&docker, &ids).await {
        let _ = docker.remove(&c).await;
    }
    // And its warm container (its scope is this test's fresh hotkey: nobody else's).
    let scoped = DockerConfig { scope: Some(m.key.ss58()), ..crate::common::docker_config() };
    if let Ok(scoped) = DockerRuntime::connect(scoped).await {
        for c in scoped.list().await.unwrap_or_default() {
            let _ = scoped.remove(&c.id).await;
        }
    }
    if let Ok(w) = Arc::try_unwrap(w) {
        w.chain.shutdown().await;
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
