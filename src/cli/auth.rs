//! Flags of `segmentd serve` that say who may call what (docs/access.md).

use std::path::PathBuf;

use clap::Args;

use crate::client::channel::BearerToken;
use crate::grpc::auth::{AuthConfig, JwtConfig, ReflectionMode};

/// The credentials of a client command.
#[derive(Debug, Args)]
pub struct ClientAuthArgs {
    /// A bearer token sent with every call. Prefer the environment
    /// variable: a flag's value shows in the process list.
    #[arg(long, env = "SEGMENTD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientAuthArgs {
    /// The token to send, if any.
    pub fn token(&self) -> Option<BearerToken> {
        self.token.clone().map(BearerToken)
    }
}

/// Authentication flags. Without `--auth-tokens` and `--jwt-jwks`,
/// authentication is off.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// The access file: JSON of hashed bearer tokens and client-certificate
    /// identities, each with a principal and scopes; read again when it
    /// changes.
    #[arg(long, env = "SEGMENTD_AUTH_TOKENS")]
    auth_tokens: Option<PathBuf>,
    /// A JWKS file of the public keys JWT bearer tokens are signed with;
    /// read again when it changes. Needs --jwt-issuer and --jwt-audience.
    #[arg(
        long,
        env = "SEGMENTD_JWT_JWKS",
        requires_all = ["jwt_issuer", "jwt_audience"]
    )]
    jwt_jwks: Option<PathBuf>,
    /// The `iss` every JWT must carry.
    #[arg(long, env = "SEGMENTD_JWT_ISSUER", requires = "jwt_jwks")]
    jwt_issuer: Option<String>,
    /// The `aud` every JWT must carry.
    #[arg(long, env = "SEGMENTD_JWT_AUDIENCE", requires = "jwt_jwks")]
    jwt_audience: Option<String>,
    /// Server reflection: `open` to anyone, `authenticated` to any valid
    /// credential, or `off`. Default: `open` when authentication is off,
    /// `authenticated` when it is on.
    #[arg(long, env = "SEGMENTD_REFLECTION", value_enum)]
    reflection: Option<ReflectionFlag>,
}

/// The values of `--reflection`: [`ReflectionMode`], named for the command
/// line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReflectionFlag {
    /// To anyone.
    Open,
    /// To callers with any valid credential.
    Authenticated,
    /// Not served.
    Off,
}

impl From<ReflectionFlag> for ReflectionMode {
    fn from(flag: ReflectionFlag) -> Self {
        match flag {
            ReflectionFlag::Open => ReflectionMode::Open,
            ReflectionFlag::Authenticated => ReflectionMode::Authenticated,
            ReflectionFlag::Off => ReflectionMode::Off,
        }
    }
}

impl AuthArgs {
    /// The server's authentication settings.
    pub fn config(&self) -> AuthConfig {
        let jwt = match (&self.jwt_jwks, &self.jwt_issuer, &self.jwt_audience) {
            (Some(jwks), Some(issuer), Some(audience)) => Some(JwtConfig {
                jwks: jwks.clone(),
                issuer: issuer.clone(),
                audience: audience.clone(),
            }),
            _ => None,
        };
        AuthConfig {
            access_file: self.auth_tokens.clone(),
            jwt,
            reflection: self.reflection.map(ReflectionMode::from),
            ..AuthConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        auth: AuthArgs,
    }

    #[test]
    fn jwt_flags_come_together() {
        assert!(Flags::try_parse_from(["x", "--jwt-jwks", "keys.json"]).is_err());
        let flags = Flags::try_parse_from([
            "x",
            "--jwt-jwks",
            "keys.json",
            "--jwt-issuer",
            "https://issuer.example",
            "--jwt-audience",
            "segmentd",
            "--reflection",
            "off",
        ])
        .unwrap();
        let config = flags.auth.config();
        assert!(config.enabled());
        assert_eq!(config.jwt.as_ref().unwrap().audience, "segmentd");
        assert_eq!(config.reflection(), ReflectionMode::Off);
        assert!(!Flags::try_parse_from(["x"])
            .unwrap()
            .auth
            .config()
            .enabled());
    }
}
