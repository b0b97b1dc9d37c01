//! A real OpenID Connect provider for tests: panva's certified `oidc-provider` npm package run
//! under Node (`oidc/provider.mjs`) on a free loopback port, with RS256 keys made at its start,
//! two confidential clients and the accounts a test gives it. ID tokens come from it through the
//! real authorization-code flow (`oidc/login.mjs`: authorization request, sign-in form, consent,
//! code, token endpoint), so what a test checks them against is what a real provider issues.
//!
//! Install it once with `scripts/install-oidc-provider.sh` (`make test-deps` does it); it needs
//! Node.js 20 or later on PATH.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The client the system under test is configured with: its ID tokens carry this audience.
const CLIENT_ID: &str = "shippy";
/// A second client of the same provider: its ID tokens are valid but for another audience.
const OTHER_CLIENT_ID: &str = "someone-else";
/// The secret of both clients (they are confidential; login.mjs authenticates with it).
const CLIENT_SECRET: &str = "shippy-test-secret";
/// How long the provider may take to start and answer its discovery document.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// One account the provider knows. Its `sub` is a stable id made from the email (never the email
/// itself); sign-in takes the email and any password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The `email` claim, also what the sign-in form is filled with.
    pub email: String,
    /// The `email_verified` claim.
    pub email_verified: bool,
}

impl Account {
    /// An account whose email the provider says is verified.
    pub fn verified(email: &str) -> Self {
        Self {
            email: email.to_owned(),
            email_verified: true,
        }
    }

    /// An account whose email the provider says is not verified.
    pub fn unverified(email: &str) -> Self {
        Self {
            email: email.to_owned(),
            email_verified: false,
        }
    }
}

/// A running `oidc-provider`; the process is stopped when this is dropped, also when a test fails.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    issuer: String,
    /// Holds the provider's stderr log (`provider.log`), quoted in errors.
    dir: tempfile::TempDir,
}

/// `crates/test-support/oidc`: the package, provider.mjs and login.mjs.
fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

impl OidcProvider {
    /// Starts the provider on a free loopback port and waits (bounded, no fixed sleeps) until its
    /// discovery document answers. ID tokens live for an hour. Fails with the fix ("run
    /// scripts/install-oidc-provider.sh (make test-deps)") when not installed.
    pub fn start(accounts: &[Account]) -> anyhow::Result<Self> {
        Self::start_with_id_token_ttl(accounts, 3600)
    }

    /// As [`OidcProvider::start`], with ID tokens that expire `ttl_secs` seconds after issue (for
    /// expiry tests).
    pub fn start_with_id_token_ttl(accounts: &[Account], ttl_secs: u64) -> anyhow::Result<Self> {
        if ttl_secs == 0 {
            bail!("the ID token lifetime must be at least one second");
        }
        let package = package_dir();
        if !package
            .join("node_modules/oidc-provider/package.json")
            .is_file()
        {
            bail!(
                "oidc-provider is not installed in {}: run scripts/install-oidc-provider.sh (make test-deps)",
                package.join("node_modules").display()
            );
        }
        // A second try when the first process does not come up: on the loaded 2-core CI machine one
        // Node start-up (module loading, an RSA key) once did not print its address within 30 s.
        // The provider is a fixture, not the system under test; both failures are reported.
        match Self::launch(&package, accounts, ttl_secs) {
            Ok(provider) => Ok(provider),
            Err(first) => {
                eprintln!("the OIDC test provider did not start, starting it once more: {first:#}");
                Self::launch(&package, accounts, ttl_secs)
                    .map_err(|second| second.context(format!("and before that: {first:#}")))
            }
        }
    }

    /// One start of the provider process, waiting for its discovery document.
    fn launch(
        package: &std::path::Path,
        accounts: &[Account],
        ttl_secs: u64,
    ) -> anyhow::Result<Self> {
        let accounts_json = serde_json::Value::Array(
            accounts
                .iter()
                .map(
                    |a| serde_json::json!({ "email": a.email, "email_verified": a.email_verified }),
                )
                .collect(),
        )
        .to_string();
        let dir = tempfile::Builder::new().prefix("shippy-oidc-").tempdir()?;
        let log = std::fs::File::create(dir.path().join("provider.log"))?;
        let mut child = Command::new("node")
            .arg(package.join("provider.mjs"))
            .args(["0", "--exit-on-stdin-close"])
            .current_dir(package)
            .env("OIDC_ACCOUNTS", accounts_json)
            .env("OIDC_ID_TOKEN_TTL", ttl_secs.to_string())
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            // Held open by `child` until it is dropped: if the test process dies without running
            // Drop, the pipe closes and the provider exits by itself.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context(
                "starting `node` for the OIDC test provider (is Node.js 20+ installed and on PATH?)",
            )?;

        // The provider prints `issuer=...` once it listens; a thread reads it so the wait is
        // bounded, and then drains stdout until the process exits.
        let stdout = child.stdout.take().context("provider stdout")?;
        let (found, issuer_line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let (false, Some(issuer)) = (sent, line.strip_prefix("issuer=")) {
                    let _ = found.send(issuer.trim().to_owned());
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + START_WITHIN;
        let mut provider = match issuer_line.recv_timeout(START_WITHIN) {
            Ok(issuer) => Self { child, issuer, dir },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!(
                    "the OIDC test provider did not report its address within {START_WITHIN:?} (exit: {status:?})\n{}",
                    read_log(dir.path())
                );
            }
        };
        provider.wait_discovery(deadline)?;
        Ok(provider)
    }

    /// Waits until `/.well-known/openid-configuration` answers 200 and names this issuer.
    fn wait_discovery(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let address = self.address().to_owned();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the OIDC test provider exited ({status}) while starting\n{}",
                    self.log()
                );
            }
            let answer = crate::http::get(
                &address,
                "/.well-known/openid-configuration",
                Duration::from_secs(2),
            );
            match answer {
                Ok((200, body))
                    if serde_json::from_str::<serde_json::Value>(&body)
                        .is_ok_and(|document| document["issuer"] == self.issuer.as_str()) =>
                {
                    return Ok(());
                }
                other if Instant::now() >= deadline => bail!(
                    "the OIDC test provider's discovery document did not answer within {START_WITHIN:?}: {other:?}\n{}",
                    self.log()
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The issuer URL, `http://127.0.0.1:PORT` (no trailing slash), as the `iss` claim has it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer's `host:port`.
    pub fn address(&self) -> &str {
        self.issuer.trim_start_matches("http://")
    }

    /// `shippy`: the client, and so the ID token audience, the system under test is configured with.
    pub fn client_id(&self) -> &str {
        CLIENT_ID
    }

    /// `someone-else`: another client of the same provider; its ID tokens have another audience.
    pub fn other_client_id(&self) -> &str {
        OTHER_CLIENT_ID
    }

    /// An ID token for `email` issued to `client_id`, through the real authorization-code flow
    /// (runs login.mjs: sign-in with the email, consent, code, token endpoint). Fails with the
    /// provider's reason when it refuses, e.g. for an email it has no account for.
    pub fn id_token(&self, email: &str, client_id: &str) -> anyhow::Result<String> {
        let package = package_dir();
        let output = Command::new("node")
            .arg(package.join("login.mjs"))
            .args([self.issuer.as_str(), client_id, CLIENT_SECRET, email])
            .current_dir(package)
            .stdin(Stdio::null())
            .output()
            .context("running `node login.mjs` (is Node.js 20+ on PATH?)")?;
        if !output.status.success() {
            bail!(
                "no ID token for {email} from the OIDC test provider ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let token = String::from_utf8(output.stdout)
            .context("login.mjs printed a token that is not UTF-8")?
            .trim()
            .to_owned();
        if token.split('.').count() != 3 {
            bail!("login.mjs printed something that is not a JWT: {token:?}");
        }
        Ok(token)
    }

    /// What the provider wrote on stderr so far (its warnings and the reasons it refused things).
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WITHIN;
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("provider.log"))
        .map(|log| format!("provider log:\n{log}"))
        .unwrap_or_default()
}

/// The claims of a JWT (its payload, base64url-decoded and parsed), without checking the
/// signature: for tests that look at what a token says, not at whether to trust it.
pub fn claims_of(token: &str) -> anyhow::Result<serde_json::Value> {
    let payload = token
        .split('.')
        .nth(1)
        .with_context(|| format!("{token:?} is not a JWT"))?;
    let bytes = base64url_decode(payload).context("the JWT payload is not base64url")?;
    serde_json::from_slice(&bytes).context("the JWT payload is not JSON")
}

/// Unpadded base64url (RFC 4648 §5), as JWTs use it.
fn base64url_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .context("not base64url")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_decodes_unpadded_text() {
        let decode = |text| base64url_decode(text).expect("valid base64url");
        assert_eq!(decode(""), b"");
        assert_eq!(decode("Zg"), b"f");
        assert_eq!(decode("Zm8"), b"fo");
        assert_eq!(decode("Zm9v"), b"foo");
        assert_eq!(decode("-_8"), [0xfb, 0xff]);
        assert!(base64url_decode("Zm9v=").is_err());
    }
}
