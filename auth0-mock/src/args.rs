//! The command line and its environment fallbacks, parsed without I/O so
//! the contract can be tested as data.

use std::path::PathBuf;

use auth0_mock::Secret;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub const HELP: &str = "\
voyager-auth0: a mock Auth0 tenant (OIDC discovery, JWKS, /oauth/token, /userinfo)

Usage: voyager-auth0 [--config FILE] [--listen ADDR] [--public-url URL]

Options:
  --config FILE     tenant fixture (TOML); default: the built-in fixtures/auth0.toml
                    [env: AUTH0_MOCK_CONFIG]
  --listen ADDR     address and port to listen on [default: 127.0.0.1:8080]
                    [env: AUTH0_MOCK_LISTEN]
  --public-url URL  base URL clients reach the mock at; the token issuer is this URL
                    with a trailing slash [default: https://<tenant domain>]
                    [env: AUTH0_MOCK_PUBLIC_URL]
  -h, --help        print this help
  -V, --version     print the version

Environment only:
  AUTH0_MOCK_ADMIN_TOKEN  bearer token for the admin API (/voyager/keys/rotate,
                          /voyager/tokens); the admin API is off when unset.
                          Not a flag, so it never shows in a process list.

Prints `listening on http://ADDR` on stdout once it accepts connections; logs go
to stderr. Stops gracefully on SIGTERM or SIGINT.";

#[derive(Debug)]
pub struct Args {
    pub config: Option<PathBuf>,
    pub listen: String,
    pub public_url: Option<String>,
    pub admin_token: Option<Secret>,
}

#[derive(Debug)]
pub enum Command {
    Run(Args),
    Help,
    Version,
}

/// Flags win over the environment; empty environment values count as unset.
pub fn parse(argv: impl IntoIterator<Item = String>, env: impl Fn(&str) -> Option<String>) -> Result<Command, String> {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut config = None;
    let mut listen = None;
    let mut public_url = None;
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" => &mut config,
            "--listen" => &mut listen,
            "--public-url" => &mut public_url,
            other => return Err(format!("unexpected argument `{other}`")),
        };
        let value = match inline.or_else(|| argv.next()) {
            Some(v) if !v.is_empty() => v,
            _ => return Err(format!("{flag} needs a value")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("{flag} is given twice"));
        }
    }
    Ok(Command::Run(Args {
        config: config.or_else(|| env("AUTH0_MOCK_CONFIG")).map(PathBuf::from),
        listen: listen.or_else(|| env("AUTH0_MOCK_LISTEN")).unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        public_url: public_url.or_else(|| env("AUTH0_MOCK_PUBLIC_URL")),
        admin_token: env("AUTH0_MOCK_ADMIN_TOKEN").map(Secret::new),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], env: &[(&str, &str)]) -> Result<Args, String> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match parse(argv.iter().map(|s| s.to_string()), |k| env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone()))? {
            Command::Run(a) => Ok(a),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults_without_flags_or_environment() {
        let a = run(&[], &[]).unwrap();
        assert_eq!((a.config, a.listen.as_str(), a.public_url, a.admin_token), (None, DEFAULT_LISTEN, None, None));
    }

    #[test]
    fn flags_win_over_the_environment() {
        let a = run(
            &["--listen", "0.0.0.0:9000", "--config=t.toml"],
            &[
                ("AUTH0_MOCK_LISTEN", "127.0.0.1:1"),
                ("AUTH0_MOCK_PUBLIC_URL", "http://auth0:9000"),
                ("AUTH0_MOCK_CONFIG", "e.toml"),
            ],
        )
        .unwrap();
        assert_eq!(a.listen, "0.0.0.0:9000");
        assert_eq!(a.config, Some(PathBuf::from("t.toml")));
        assert_eq!(a.public_url.as_deref(), Some("http://auth0:9000"));
    }

    #[test]
    fn the_admin_token_comes_only_from_the_environment() {
        assert!(run(&[], &[("AUTH0_MOCK_ADMIN_TOKEN", "t0k")]).unwrap().admin_token.unwrap().matches("t0k"));
        assert!(run(&[], &[("AUTH0_MOCK_ADMIN_TOKEN", "")]).unwrap().admin_token.is_none());
        assert!(run(&["--admin-token", "x"], &[]).is_err());
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(run(&["--listen"], &[]).unwrap_err(), "--listen needs a value");
        assert_eq!(run(&["--config", "a", "--config", "b"], &[]).unwrap_err(), "--config is given twice");
        assert_eq!(run(&["serve"], &[]).unwrap_err(), "unexpected argument `serve`");
    }
}
