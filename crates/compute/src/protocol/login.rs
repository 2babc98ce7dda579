//! What a login from a miner must look like before it reaches a shell, an `ssh` command line or
//! a terminal. The username and port come from the miner's decrypted credentials and the host
//! from the metagraph or the database: all of it is hostile input. A username such as
//! `-oProxyCommand=touch pwned #` once made `nicompute ssh` run a command on the renter's
//! machine. So the parts are checked when the credentials are decrypted (an allocation with a bad
//! one is refused and released) and again before `ssh` runs (rows written by other tools), and
//! OpenSSH gets them only in places it never parses as options: `-l USER -p PORT -- HOST`.

use std::borrow::Cow;
use std::net::IpAddr;

/// Longest username accepted (Linux's limit for `useradd`).
pub const MAX_USERNAME: usize = 32;

/// A part of a login that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    #[error("the username {0:?} is not a plain login name (letters, digits, '_', '.', '-', at most 32, not starting with '-')")]
    Username(String),
    #[error("the host {0:?} is not an IP address")]
    Host(String),
    #[error("port 0 is not an SSH port")]
    Port,
}

/// `[A-Za-z_][A-Za-z0-9_.-]{0,31}`: what `useradd` accepts by default, minus what a shell or an
/// option parser could read as something else.
pub fn check_username(user: &str) -> Result<(), LoginError> {
    let mut chars = user.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first && rest && user.len() <= MAX_USERNAME {
        Ok(())
    } else {
        Err(LoginError::Username(shown(user)))
    }
}

/// An IPv4 or IPv6 address (axons are published as addresses; no names to resolve).
pub fn check_host(host: &str) -> Result<IpAddr, LoginError> {
    host.parse().map_err(|_| LoginError::Host(shown(host)))
}

pub fn check_port(port: u16) -> Result<(), LoginError> {
    if port == 0 {
        Err(LoginError::Port)
    } else {
        Ok(())
    }
}

/// At most 64 characters of untrusted text for an error message (the `{:?}` around it escapes
/// the rest).
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A checked login: user, host and port that are safe on a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub host: IpAddr,
    pub port: u16,
}

impl Login {
    pub fn new(user: &str, host: &str, port: u16) -> Result<Self, LoginError> {
        check_username(user)?;
        check_port(port)?;
        Ok(Self { user: user.to_owned(), host: check_host(host)?, port })
    }

    /// OpenSSH's arguments for this login, each where OpenSSH never parses an option:
    /// `-l USER -p PORT [OPTIONS…] -- HOST`. Options go between the port and `--`.
    pub fn ssh_args(&self, options: &[String]) -> Vec<String> {
        let mut args = vec!["-l".to_owned(), self.user.clone(), "-p".to_owned(), self.port.to_string()];
        args.extend(options.iter().cloned());
        args.push("--".to_owned());
        args.push(self.host.to_string());
        args
    }

    /// The command people copy: SN27's `ssh USER@HOST -p PORT`, every part shell-quoted.
    pub fn command_line(&self) -> String {
        use std::fmt::Write as _;
        // One string, written once (a cold `list_a` makes a thousand). An address prints only
        // digits, hex letters, '.' and ':', none of which a shell reads.
        let mut line = String::with_capacity(24 + self.user.len() + 40);
        let _ = write!(line, "ssh {}@{} -p {}", shell_quote(&self.user), self.host, self.port);
        line
    }
}

/// `s` as one POSIX shell word: unchanged when it holds only characters no shell treats
/// specially, else in single quotes.
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | '%' | '+' | '=' | ',')
        });
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_usernames_are_refused() {
        for bad in
            ["-oProxyCommand=touch pwned #", "root@evil", "a b", "", "ro\u{1b}]0;x\u{7}ot", "-l", &"a".repeat(33)]
        {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        for good in ["root", "ubuntu", "_svc", "user.name-1"] {
            assert!(check_username(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn hosts_are_addresses() {
        assert!(check_host("203.0.113.7").is_ok());
        assert!(check_host("2001:db8::1").is_ok());
        for bad in ["-oProxyCommand=x", "evil.example", "1.2.3.4 -p 1", ""] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_argument_vector_keeps_the_host_after_double_dash() {
        let l = Login::new("root", "203.0.113.7", 4444).expect("login");
        assert_eq!(
            l.ssh_args(&["-o".into(), "BatchMode=yes".into()]),
            ["-l", "root", "-p", "4444", "-o", "BatchMode=yes", "--", "203.0.113.7"]
        );
        assert_eq!(l.command_line(), "ssh root@203.0.113.7 -p 4444");
        assert!(Login::new("root", "1.2.3.4", 0).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/home/me/.local/x"), "/home/me/.local/x");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
    }
}
