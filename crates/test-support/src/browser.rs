//! A real headless Chromium for browser tests, driven over W3C WebDriver: Debian's `chromium`
//! and `chromedriver` (installed by `scripts/install-browser.sh`). [`Browser::start`] runs one
//! `chromedriver` on a free loopback port, waits until it is ready, and opens one headless
//! session with a temporary profile; dropping the [`Browser`] ends the session and the driver.
//!
//! The client is the few WebDriver commands the tests need, spoken as HTTP/1.1 over a
//! `TcpStream` with serde_json (no WebDriver crate: the protocol is a dozen JSON endpoints).

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

use crate::http;

/// Environment variable naming the driver binary, overriding `chromedriver` on PATH.
pub const DRIVER_ENV: &str = "SHIPPY_CHROMEDRIVER_BIN";

/// Environment variable naming the browser binary, overriding `chromium` on PATH.
pub const CHROMIUM_ENV: &str = "SHIPPY_CHROMIUM_BIN";

/// Longest wait for the driver's `/status` to say ready, and for the session to open.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for one WebDriver command (a navigation waits for the page to load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The key W3C WebDriver names element references with.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The path of `name` on PATH, or of the binary `env` names.
fn find_binary(env: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .with_context(|| {
            format!(
                "{name} is not installed: install it with `bash scripts/install-browser.sh` \
                 (Debian's chromium and chromium-driver), or set {env}. Browser tests never skip."
            )
        })
}

/// A `chromedriver` process with one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session with a 1280×900 window.
    pub fn start() -> anyhow::Result<Self> {
        let driver = find_binary(DRIVER_ENV, "chromedriver")?;
        let chromium = find_binary(CHROMIUM_ENV, "chromium")?;
        let mut last = None;
        // A free port can be taken by another process before the driver binds it: try again.
        for _ in 0..3 {
            match Self::launch(&driver, &chromium) {
                Ok(browser) => return Ok(browser),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }

    fn launch(driver: &Path, chromium: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shippy-browser-")
            .tempdir()
            .context("creating the browser's directory")?;
        let port = http::free_port()?;
        let log = fs::File::create(dir.path().join("chromedriver.log"))?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let mut browser = Self {
            driver: child,
            port,
            session: String::new(),
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = browser.driver.try_wait()? {
                bail!(
                    "chromedriver exited with {status} while starting. Log:\n{}",
                    browser.log()
                );
            }
            if let Ok((200, answer)) = browser.request("GET", "/status", None)
                && answer["value"]["ready"] == true
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "chromedriver was not ready within {READY_TIMEOUT:?}. Log:\n{}",
                    browser.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = browser.dir.path().join("profile");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let answer = browser
            .command("POST", "/session", Some(&capabilities))
            .with_context(|| format!("opening a Chromium session. Log:\n{}", browser.log()))?;
        browser.session = answer["sessionId"]
            .as_str()
            .with_context(|| format!("no sessionId in {answer}"))?
            .to_owned();
        Ok(browser)
    }

    /// What chromedriver logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session_command("POST", "/url", Some(&json!({ "url": url })))?;
        Ok(())
    }

    /// Resizes the window (`width`×`height` CSS pixels), for a screenshot of the whole page.
    pub fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.session_command(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        )?;
        Ok(())
    }

    /// The first element matching the CSS selector `css`; an error when there is none.
    pub fn find(&self, css: &str) -> anyhow::Result<Element<'_>> {
        let answer = self.session_command("POST", "/element", Some(&by_css(css)))?;
        Element::from_value(self, &answer)
    }

    /// Every element matching `css` (none is not an error).
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element<'_>>> {
        let answer = self.session_command("POST", "/elements", Some(&by_css(css)))?;
        Element::list(self, &answer)
    }

    /// Polls `check` until it returns `Some`, then returns that; fails after `within` naming
    /// `what` and the last error `check` gave. Errors count as "not yet": pages re-render, and
    /// an element found a moment ago can be gone (stale) now.
    pub fn wait_until<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&Self) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let last = match check(self) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => None,
                Err(error) => Some(error),
            };
            if Instant::now() >= deadline {
                match last {
                    Some(error) => bail!("{what}: not within {within:?}; last error: {error:#}"),
                    None => bail!("{what}: not within {within:?}"),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until an element matching `css` is displayed, and returns it.
    pub fn wait_visible(&self, css: &str, within: Duration) -> anyhow::Result<Element<'_>> {
        self.wait_until(&format!("{css} displayed"), within, |_| {
            let element = self.find(css)?;
            Ok(element.is_displayed()?.then_some(element))
        })
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its
    /// result.
    pub fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.session_command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// A PNG of the window as it is now.
    pub fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let answer = self.session_command("GET", "/screenshot", None)?;
        let encoded = answer.as_str().context("the screenshot is not a string")?;
        decode_base64(encoded).context("the screenshot is not base64")
    }

    /// The messages the page logged to its console (errors, CSP violations, `console.log`) since
    /// the last call, each as `LEVEL message`.
    pub fn console_messages(&self) -> anyhow::Result<Vec<String>> {
        let answer =
            self.session_command("POST", "/se/log", Some(&json!({ "type": "browser" })))?;
        Ok(answer
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|entry| {
                format!(
                    "{} {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["message"].as_str().unwrap_or_default()
                )
            })
            .collect())
    }

    /// A command of this session (`path` relative to `/session/{id}`); returns its `value`.
    fn session_command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    /// A WebDriver command; returns its `value`, or fails with the driver's error and message.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, mut answer) = self.request(method, path, body)?;
        let value = answer["value"].take();
        if status != 200 {
            bail!(
                "WebDriver {method} {path} failed ({status}): {}: {}",
                value["error"].as_str().unwrap_or("unknown error"),
                value["message"].as_str().unwrap_or_default()
            );
        }
        Ok(value)
    }

    /// One HTTP/1.1 exchange with the driver on a connection of its own: the status and the
    /// JSON body.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let address = format!("127.0.0.1:{}", self.port);
        let socket = address.parse()?;
        let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(5))
            .with_context(|| format!("connecting to chromedriver at {address}"))?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let (head, content) = read_answer(&mut stream)
            .with_context(|| format!("reading chromedriver's answer to {method} {path}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("no status line in {head:?}"))?;
        let value = if content.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&content).with_context(|| {
                format!(
                    "chromedriver's answer to {method} {path} is not JSON: {}",
                    String::from_utf8_lossy(&content)
                )
            })?
        };
        Ok((status, value))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Closes Chromium; the driver goes after it.
            let _ = self.command("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A W3C locator for a CSS selector.
fn by_css(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

/// An element of the page, valid until the page re-renders it.
#[derive(Debug)]
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl<'a> Element<'a> {
    fn from_value(browser: &'a Browser, value: &Value) -> anyhow::Result<Self> {
        let id = value[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("not an element reference: {value}"))?;
        Ok(Self {
            browser,
            id: id.to_owned(),
        })
    }

    fn list(browser: &'a Browser, value: &Value) -> anyhow::Result<Vec<Self>> {
        value
            .as_array()
            .with_context(|| format!("not a list of elements: {value}"))?
            .iter()
            .map(|item| Self::from_value(browser, item))
            .collect()
    }

    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.browser
            .session_command(method, &format!("/element/{}{path}", self.id), body)
    }

    /// The first element inside this one matching `css`.
    pub fn find(&self, css: &str) -> anyhow::Result<Element<'a>> {
        let answer = self.command("POST", "/element", Some(&by_css(css)))?;
        Element::from_value(self.browser, &answer)
    }

    /// Every element inside this one matching `css`.
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element<'a>>> {
        let answer = self.command("POST", "/elements", Some(&by_css(css)))?;
        Element::list(self.browser, &answer)
    }

    /// Clicks it (scrolled into view first, as a person would).
    pub fn click(&self) -> anyhow::Result<()> {
        self.command("POST", "/click", Some(&json!({})))?;
        Ok(())
    }

    /// Empties an input or textarea.
    pub fn clear(&self) -> anyhow::Result<()> {
        self.command("POST", "/clear", Some(&json!({})))?;
        Ok(())
    }

    /// Types `text` into it; for a file input, `text` is the path of the file to choose.
    pub fn send_keys(&self, text: &str) -> anyhow::Result<()> {
        self.command("POST", "/value", Some(&json!({ "text": text })))?;
        Ok(())
    }

    /// Its rendered text (empty when hidden).
    pub fn text(&self) -> anyhow::Result<String> {
        let value = self.command("GET", "/text", None)?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The DOM property `name` (`value` of an input, `hidden`, ...).
    pub fn property(&self, name: &str) -> anyhow::Result<Value> {
        self.command("GET", &format!("/property/{name}"), None)
    }

    /// The HTML attribute `name`, if it has one.
    pub fn attribute(&self, name: &str) -> anyhow::Result<Option<String>> {
        let value = self.command("GET", &format!("/attribute/{name}"), None)?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Whether it is displayed.
    pub fn is_displayed(&self) -> anyhow::Result<bool> {
        let value = self.command("GET", "/displayed", None)?;
        Ok(value.as_bool().unwrap_or(false))
    }
}

/// Reads one HTTP/1.1 answer: its head (lower-cased) and body. chromedriver keeps the
/// connection open whatever the request asks, so the body ends by its `Content-Length` (or its
/// last chunk), not by the connection closing.
fn read_answer(stream: &mut impl Read) -> anyhow::Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut buffer)?;
        anyhow::ensure!(read > 0, "the connection closed before the headers ended");
        data.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let mut body = data.split_off(head_end + 4);
    // chromedriver writes `Content-Length:250`, without the space.
    let length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|n| n.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            anyhow::ensure!(
                length.is_none() && !chunked,
                "the connection closed mid-answer"
            );
            break;
        }
        body.extend_from_slice(&buffer[..read]);
    }
    if let Some(length) = length {
        body.truncate(length);
    } else if chunked {
        body = dechunk(&body)?;
    }
    Ok((head, body))
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without a size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size, "a chunk longer than the answer");
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Standard base64 (with or without padding) to bytes.
fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    let text: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .context("not base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() -> anyhow::Result<()> {
        assert_eq!(decode_base64("aGVsbG8=")?, b"hello");
        assert_eq!(decode_base64("aGVsbG8")?, b"hello");
        assert_eq!(decode_base64("aGk/Pz4+")?, b"hi??>>");
        assert_eq!(decode_base64("")?, b"");
        assert!(decode_base64("a-b").is_err());
        Ok(())
    }

    #[test]
    fn chunked_bodies_are_joined() -> anyhow::Result<()> {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n")?,
            b"Wikipedia"
        );
        assert!(dechunk(b"zz\r\n").is_err());
        Ok(())
    }

    #[test]
    fn answers_end_by_their_length_not_the_connection() -> anyhow::Result<()> {
        let mut answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length:2\r\n\r\n{}trailing";
        let (head, body) = read_answer(&mut answer)?;
        assert!(head.starts_with("http/1.1 200"));
        assert_eq!(body, b"{}");
        let mut chunked: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(read_answer(&mut chunked)?.1, b"{}");
        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}";
        assert!(read_answer(&mut cut).is_err());
        Ok(())
    }

    /// The client against the real driver and browser, on a page of its own (a `data:` URL).
    #[test]
    fn drives_a_real_headless_chromium() -> anyhow::Result<()> {
        let browser = Browser::start().context("chromedriver and Chromium start")?;
        browser
            .goto(
                "data:text/html,<title>t</title><input id=name><button id=go \
                 onclick=\"document.getElementById('out').textContent='hi '+document.getElementById('name').value\">go</button>\
                 <p id=out></p>",
            )
            ?;
        browser.find("#name")?.send_keys("Ada")?;
        browser.find("#go")?.click()?;
        let text = browser.wait_until("the greeting", Duration::from_secs(10), |b| {
            let text = b.find("#out")?.text()?;
            Ok((!text.is_empty()).then_some(text))
        })?;
        assert_eq!(text, "hi Ada");
        assert!(browser.find("#missing").is_err());
        assert_eq!(browser.find_all("input")?.len(), 1);
        assert_eq!(
            browser.execute("return arguments[0] + 1;", &[json!(41)])?,
            json!(42)
        );
        let png = browser.screenshot()?;
        assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
        Ok(())
    }
}
