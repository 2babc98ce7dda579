//! `nicompute api token create|list|revoke`: the API's bearer tokens, in the same database the
//! server reads. A token is printed once when made (`--json`: `{"token": …}`) and stored only
//! as its SHA-256; a revoked token stops working within seconds (the server's token cache).

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cmd::open_db;
use crate::opts::GlobalOpts;
use crate::output::{table, Output, Reported, UsageError};

#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// The API's bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token (printed once).
    Create(CreateArgs),
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token by name.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A unique name (who or what uses it).
    #[arg(long)]
    pub name: String,
    /// read, allocate or admin; add ",secrets" to see passwords in every answer
    #[arg(long, default_value = "read")]
    pub scope: String,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's name.
    pub name: String,
}

impl ApiCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            ApiCommand::Token(TokenCommand::Create(a)) => a.run(g, out),
            ApiCommand::Token(TokenCommand::List) => list(g, out),
            ApiCommand::Token(TokenCommand::Revoke(a)) => a.run(g, out),
        }
    }
}

impl CreateArgs {
    fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(UsageError("--name must be 1 to 100 printable characters".into()).into());
        }
        let scope: api::Scope = self.scope.parse().map_err(|e: api::ScopeError| UsageError(e.to_string()))?;
        let db = open_db(g)?;
        if db.tokens()?.iter().any(|t| t.name == name) {
            return Err(UsageError(format!("a token named '{name}' exists already (names are unique)")).into());
        }
        let (secret, hash) = api::new_token();
        let rec = db.create_token(name, &scope.to_string(), &hash)?;
        #[derive(Serialize)]
        struct Doc<'a> {
            token: &'a str,
            id: i64,
            name: &'a str,
            scope: String,
        }
        let doc = Doc { token: &secret, id: rec.id, name: &rec.name, scope: scope.to_string() };
        out.result(&doc, |o| {
            writeln!(o, "{secret}")?;
            writeln!(o, "token '{}' ({}) made; it is shown this once, store it now", rec.name, doc.scope)
        });
        Ok(())
    }
}

impl RevokeArgs {
    fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        if !db.revoke_token(self.name.trim())? {
            return Err(Reported(format!("no active token named '{}'", self.name.trim())).into());
        }
        let doc = serde_json::json!({"name": self.name.trim(), "revoked": true});
        out.result(&doc, |o| writeln!(o, "token '{}' revoked", self.name.trim()));
        Ok(())
    }
}

fn list(g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let db = open_db(g)?;
    #[derive(Serialize)]
    struct Row {
        id: i64,
        name: String,
        scope: String,
        created_ms: u64,
        revoked: bool,
    }
    let rows: Vec<Row> = db
        .tokens()?
        .into_iter()
        .map(|t| Row {
            id: t.id,
            name: t.name,
            scope: t.scope,
            created_ms: t.created_ms,
            revoked: t.revoked_ms.is_some(),
        })
        .collect();
    out.result(&rows, |o| {
        let now = g.clock.now_ms();
        let t = rows
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.name.clone(),
                    r.scope.clone(),
                    crate::duration::human_duration_ms(i128::from(now) - i128::from(r.created_ms)) + " ago",
                    if r.revoked { "revoked".into() } else { "active".into() },
                ]
            })
            .collect();
        writeln!(o, "{}", table(&["ID", "Name", "Scope", "Created", "State"], t))
    });
    Ok(())
}
