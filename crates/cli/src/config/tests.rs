//! The config file and precedence, parsed without the process environment (these tests must not
//! depend on the developer's; the binary's tests set variables explicitly), and the README's
//! configuration table checked against the clap declaration both ways.

use super::*;
use crate::cli::EnvPolicy;

fn parse(args: &[&str]) -> Cli {
    let mut v = vec!["nicompute"];
    v.extend_from_slice(args);
    v.push("list_a");
    resolve(Cli::parse_args_with(v, EnvPolicy::Ignore).expect("parse")).expect("resolve")
}

fn sample(dir: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    let mut cfg = ConfigFile::new();
    cfg.set("db", "database.db")
        .set("subtensor.chain_endpoint", "ws://127.0.0.1:9")
        .set("subtensor.netuid", 5)
        .set("wallet.path", "wallets")
        .set("wallet.name", "validator")
        .set(DEVNET_DIR, ".");
    cfg.save(&path, "written by a test").expect("save");
    path
}

#[test]
fn round_trip_resolves_relative_paths_and_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let path = sample(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.starts_with("# written by a test\n"), "{text}");
    assert!(text.contains("[subtensor]") && text.contains("netuid = 5"), "{text}");
    assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    let cfg = ConfigFile::load(&path).expect("load");
    let text_of = |k: &str| cfg.get(k).and_then(toml::Value::as_str).map(PathBuf::from);
    assert_eq!(text_of("db"), Some(dir.path().join("database.db")));
    assert_eq!(text_of("wallet.path"), Some(dir.path().join("wallets")));
    assert_eq!(cfg.devnet_dir(), Some(dir.path().join(".")));
    assert_eq!(cfg.get("subtensor.netuid").and_then(toml::Value::as_integer), Some(5));
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = sample(dir.path()).display().to_string();

    let g = parse(&["--config", &config]).global;
    assert_eq!(g.wallet.name, "validator");
    assert_eq!(g.wallet.hotkey, "default", "unset in the file: the default");
    assert_eq!(g.given.source("wallet.hotkey"), Source::Default);
    assert_eq!(g.given.source("wallet.name"), Source::File);
    assert_eq!(g.subtensor.netuid(), 5);
    assert_eq!(g.subtensor.endpoint().expect("endpoint"), "ws://127.0.0.1:9");
    assert_eq!(g.db, Some(dir.path().join("database.db")));
    assert_eq!(g.wallet.wallet_dir(), dir.path().join("wallets"));

    let g = parse(&["--config", &config, "--wallet.name", "mine", "--netuid", "27", "--subtensor.network", "finney"])
        .global;
    assert_eq!(g.wallet.name, "mine");
    assert_eq!(g.subtensor.netuid(), 27);
    assert_eq!(g.subtensor.endpoint().expect("endpoint"), bittensor::subtensor::network::FINNEY);
    assert_eq!(g.subtensor.chain_endpoint, None, "a network flag is not overridden by the file's endpoint");
    assert_eq!(g.db, Some(dir.path().join("database.db")), "the rest still comes from the file");

    // A flag given after the command counts the same, and the shell's lines parse alike.
    let g = parse(&["--config", &config, "--db", "/elsewhere.db"]).global;
    assert_eq!(g.db, Some(PathBuf::from("/elsewhere.db")));
}

#[test]
fn the_chain_is_one_setting() {
    // Both flags: the endpoint wins, as in the SDK.
    let g = parse(&["--subtensor.network", "test", "--subtensor.chain_endpoint", "ws://10.0.0.1:1"]).global;
    assert_eq!(g.subtensor.endpoint().expect("endpoint"), "ws://10.0.0.1:1");
    // Nothing given: finney.
    assert_eq!(parse(&[]).global.subtensor.endpoint().expect("endpoint"), bittensor::subtensor::network::FINNEY);
    // A file naming a network, a flag naming an endpoint: the flag.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[subtensor]\nnetwork = \"test\"\n").expect("write");
    let config = path.display().to_string();
    let g = parse(&["--config", &config, "--subtensor.chain_endpoint", "ws://10.0.0.1:2"]).global;
    assert_eq!(g.subtensor.endpoint().expect("endpoint"), "ws://10.0.0.1:2");
    let g = parse(&["--config", &config]).global;
    assert_eq!(g.subtensor.endpoint().expect("endpoint"), bittensor::subtensor::network::TEST);
}

#[test]
fn resolving_twice_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = sample(dir.path()).display().to_string();
    let once = parse(&["--config", &config]);
    let (wallet, db) = (format!("{:?}", once.global.wallet), once.global.db.clone());
    let twice = resolve(once).expect("again");
    assert_eq!(wallet, format!("{:?}", twice.global.wallet));
    assert_eq!(db, twice.global.db);
}

#[test]
fn unknown_keys_bad_values_and_bad_syntax_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[wallet]\nnmae = \"x\"\n").expect("write");
    let e = ConfigFile::load(&path).expect_err("typo").to_string();
    assert!(e.contains("unknown field `wallet.nmae`") && e.contains("c.toml"), "{e}");
    assert!(e.contains("wallet.name"), "the known keys are listed: {e}");
    std::fs::write(&path, "db = \n").expect("write");
    assert!(matches!(ConfigFile::load(&path), Err(ConfigError::Parse { .. })));
    std::fs::write(&path, "[subtensor]\nnetuid = \"x\"\n").expect("write");
    let cli =
        Cli::parse_args_with(["nicompute", "--config", path.to_str().expect("utf8"), "list_a"], EnvPolicy::Ignore)
            .expect("parse");
    let e = resolve(cli).expect_err("not a number").to_string();
    assert!(e.contains("c.toml") && e.contains("netuid") && e.contains("'x'"), "{e}");
    std::fs::write(&path, "password = \"x\"\n").expect("write");
    assert!(ConfigFile::load(&path).is_err(), "secrets have no key");
    let e = ConfigFile::load(&dir.path().join("missing.toml")).expect_err("missing").to_string();
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn file_settings_are_the_global_settings_that_take_a_value() {
    let keys: Vec<String> = file_settings().into_iter().map(|s| s.key).collect();
    for k in ["wallet.path", "wallet.name", "subtensor.network", "subtensor.netuid", "db", "wandb.mode", "docker.host"]
    {
        assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
    }
    for k in ["config", "json", "verbose", "wallet.password", "wandb.api_key", "home"] {
        assert!(!keys.iter().any(|x| x == k), "{k} is not a file setting");
    }
}

// ---- the README's configuration table ----

/// One row of the README table: its cells and the `code` spans in each.
#[derive(Debug)]
struct Row {
    cells: Vec<String>,
}

impl Row {
    fn codes(&self, col: usize) -> Vec<String> {
        self.cells[col].split('`').skip(1).step_by(2).map(|c| c.replace("\\|", "|")).collect()
    }
    fn envs(&self) -> Vec<String> {
        self.codes(2).into_iter().filter(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_')).collect()
    }
    fn flags(&self) -> Vec<String> {
        self.codes(1).into_iter().filter_map(|c| c.split_whitespace().next().map(str::to_owned)).collect()
    }
}

fn cells(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut esc) = (Vec::new(), String::new(), false);
    for ch in line.trim().trim_matches('|').chars() {
        if ch == '|' && !esc {
            out.push(cur.trim().to_owned());
            cur.clear();
        } else {
            cur.push(ch);
        }
        esc = ch == '\\';
    }
    out.push(cur.trim().to_owned());
    out
}

fn readme_rows() -> Vec<Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let mut lines =
        readme.lines().skip_while(|l| !l.starts_with("| what | flag | environment | config file | default |"));
    assert!(lines.next().is_some(), "the README has the configuration table");
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells = cells(l);
            assert_eq!(cells.len(), 5, "{l}");
            Row { cells }
        })
        .collect()
}

#[test]
fn the_readme_configuration_table_matches_the_clap_declaration() {
    let cmd = Cli::command();
    let rows = readme_rows();
    let file_keys: Vec<String> = file_settings().into_iter().map(|s| s.key).collect();
    let settings: Vec<&clap::Arg> =
        cmd.get_arguments().filter(|a| a.is_global_set() && a.get_action().takes_values()).collect();
    let mut flags: Vec<String> = Vec::new();
    for a in cmd.get_arguments() {
        flags.extend(a.get_long_and_visible_aliases().unwrap_or_default().iter().map(|l| format!("--{l}")));
        if let Some(s) = a.get_short() {
            flags.push(format!("-{s}"));
        }
    }
    let mut matched = vec![false; rows.len()];
    for a in &settings {
        let id = a.get_id().as_str();
        let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
        let long = a.get_long().map(|l| format!("--{l}")).unwrap_or_default();
        let found = rows.iter().position(|r| match &env {
            Some(env) => r.envs().contains(env),
            None => r.flags().contains(&long),
        });
        let Some(i) = found else { panic!("the README's configuration table has no row for `{id}` ({env:?})") };
        matched[i] = true;
        let row = &rows[i];
        if a.is_hide_set() {
            assert!(!row.flags().contains(&long), "`{id}` is environment only, but the README names {long}");
        } else {
            for alias in a.get_long_and_visible_aliases().unwrap_or_default() {
                assert!(row.flags().contains(&format!("--{alias}")), "README row for `{id}` lacks --{alias}");
            }
        }
        let config = row.codes(3);
        if file_keys.iter().any(|k| k == id) {
            assert_eq!(config, vec![id.to_owned()], "README: `{id}` is a config file key");
        } else {
            assert!(config.is_empty(), "README: `{id}` is not a config file key, but the row says {config:?}");
        }
        for d in a.get_default_values() {
            let d = d.to_string_lossy();
            assert!(row.cells[4].contains(d.as_ref()), "README row for `{id}`: the default is {d}");
        }
    }
    for (row, matched) in rows.iter().zip(matched) {
        assert!(matched, "README row {:?} names no setting of the clap declaration", row.cells[0]);
        for f in row.flags() {
            assert!(flags.contains(&f), "README row {:?}: no flag {f}", row.cells[0]);
        }
        for e in row.envs() {
            assert!(settings.iter().any(|a| a.get_env().is_some_and(|x| x == e.as_str())), "README: no variable {e}");
        }
    }
    // The one file key that is not a flag is documented beside the table.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    assert!(readme.contains("[devnet]"), "README's config example shows the devnet section");
}
