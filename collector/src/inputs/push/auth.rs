//! The credentials a push request must present: a bearer token or a username and password,
//! read from files when the listener starts (Secret references come beside the file fields).

use metricshard_crds::PushAuth;

/// Where the expected credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A token in a file.
    BearerTokenFile(String),
    /// A username and a password in a file.
    BasicAuth {
        /// The username.
        username: String,
        /// The file holding the password.
        password_file: String,
    },
}

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("{0} is empty")]
    Empty(String),
}

impl CredentialSource {
    /// The source named by the spec; the CEL rules make sure exactly one is set.
    pub fn from_spec(auth: &PushAuth) -> Result<Self, &'static str> {
        match (&auth.bearer_token, &auth.basic_auth) {
            (Some(token), None) => {
                token.token_file.clone().map(Self::BearerTokenFile).ok_or("bearerToken needs tokenFile")
            }
            (None, Some(basic)) => basic
                .password_file
                .clone()
                .map(|password_file| Self::BasicAuth { username: basic.username.clone(), password_file })
                .ok_or("basicAuth needs passwordFile"),
            _ => Err("exactly one of auth.bearerToken and auth.basicAuth must be set"),
        }
    }

    /// Reads the files.
    pub fn load(&self) -> Result<Credentials, CredentialError> {
        let read = |path: &str| {
            let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read { path: path.to_owned(), source })?;
            let secret = text.trim().to_owned();
            if secret.is_empty() { Err(CredentialError::Empty(path.to_owned())) } else { Ok(secret) }
        };
        Ok(match self {
            Self::BearerTokenFile(path) => Credentials::Bearer(read(path)?),
            Self::BasicAuth { username, password_file } => {
                Credentials::Basic { username: username.clone(), password: read(password_file)? }
            }
        })
    }
}

/// The credentials a request must present.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>` or `Token <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            Self::Bearer(_) => f.write_str("Bearer(..)"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ..)"),
        }
    }
}

impl Credentials {
    /// True when the `Authorization` header value presents these credentials.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(header) = authorization.and_then(|value| std::str::from_utf8(value).ok()) else { return false };
        let Some((scheme, value)) = header.trim().split_once(' ') else { return false };
        let value = value.trim();
        match self {
            Self::Bearer(token) => {
                (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
                    && constant_time_eq(value.as_bytes(), token.as_bytes())
            }
            Self::Basic { username, password } => {
                if !scheme.eq_ignore_ascii_case("basic") {
                    return false;
                }
                let Some(decoded) = decode_base64(value) else { return false };
                let expected = format!("{username}:{password}");
                constant_time_eq(&decoded, expected.as_bytes())
            }
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (index, byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(index).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

/// Standard base64 (RFC 4648) with the padding optional: clients differ on it.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const PADDING_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    PADDING_OPTIONAL.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bearer_and_token_schemes_are_admitted_with_the_right_token_only() {
        let credentials = Credentials::Bearer("s3cret".into());
        assert!(credentials.admits(Some(b"Bearer s3cret")));
        assert!(credentials.admits(Some(b"Token s3cret")));
        assert!(credentials.admits(Some(b"bearer  s3cret ")));
        assert!(!credentials.admits(Some(b"Bearer s3cre")));
        assert!(!credentials.admits(Some(b"Bearer s3cret2")));
        assert!(!credentials.admits(Some(b"Basic s3cret")));
        assert!(!credentials.admits(None));
    }

    #[test]
    fn basic_auth_checks_user_and_password() {
        let credentials = Credentials::Basic { username: "falcon".into(), password: "pw:1".into() };
        // base64("falcon:pw:1")
        assert!(credentials.admits(Some(b"Basic ZmFsY29uOnB3OjE=")));
        // base64("falcon:pw:2")
        assert!(!credentials.admits(Some(b"Basic ZmFsY29uOnB3OjI=")));
        assert!(!credentials.admits(Some(b"Basic !!!")));
        assert_eq!(format!("{credentials:?}"), "Basic(falcon, ..)");
    }

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        for (encoded, decoded) in [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYg", "foob"), ("Zm9vYmE=", "fooba"), ("Zm9vYmFy", "foobar")] {
            assert_eq!(decode_base64(encoded).unwrap(), decoded.as_bytes(), "{encoded}");
        }
        assert!(decode_base64("Z").is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(header in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Credentials::Basic { username: "u".into(), password: "p".into() }.admits(Some(&header));
            let _ = Credentials::Bearer("t".into()).admits(Some(&header));
        }
    }
}
