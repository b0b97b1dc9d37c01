//! Where the login token is kept: `SHIPPY_TOKEN` wins, else the file `SHIPPY_TOKEN_FILE`, else
//! `<config dir>/shippy/token` (e.g. `~/.config/shippy/token`), readable only by its owner.

use std::path::PathBuf;

use crate::error::CliError;

/// The token file's path.
pub fn token_file() -> Result<PathBuf, CliError> {
    if let Some(path) = std::env::var_os("SHIPPY_TOKEN_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    dirs::config_dir()
        .map(|dir| dir.join("shippy").join("token"))
        .ok_or_else(|| CliError::Setup("no config directory: set SHIPPY_TOKEN_FILE or HOME".into()))
}

/// The token to send.
pub fn load() -> Result<String, CliError> {
    if let Ok(token) = std::env::var("SHIPPY_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let path = token_file()?;
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        Ok(_) => Err(CliError::NotLoggedIn),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::NotLoggedIn),
        Err(e) => Err(CliError::Setup(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Saves `token` with owner-only permissions; returns where.
pub fn save(token: &str) -> Result<PathBuf, CliError> {
    let path = token_file()?;
    let fail = |e: std::io::Error| {
        CliError::Setup(format!("cannot save the token to {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(fail)?;
    std::io::Write::write_all(&mut file, token.as_bytes()).map_err(fail)?;
    Ok(path)
}

/// Deletes the saved token, if any.
pub fn remove() -> Result<(), CliError> {
    let path = token_file()?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::Setup(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
        _ => Ok(()),
    }
}
