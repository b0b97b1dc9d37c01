//! The smallest HTTP client the harness needs: one `GET` over loopback, for the query APIs of
//! Jaeger and Prometheus and the services' admin ports. HTTP/1.0, so the server closes the
//! connection after the body and never sends it chunked.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context, bail};

/// `GET http://{address}{path_and_query}`: the status code and the body as text. Fails on a
/// connection error or a reply that is not HTTP; each step is bounded by `timeout`.
pub fn get(
    address: &str,
    path_and_query: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let socket = address
        .parse()
        .with_context(|| format!("{address} is not host:port"))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: {address}\r\nAccept: */*\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .with_context(|| format!("reading the answer of {address}{path_and_query}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let Some((head, body)) = reply.split_once("\r\n\r\n") else {
        bail!("{address}{path_and_query} answered without HTTP headers: {reply:?}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes `text` for a query string.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A free loopback port (bound and released: another process could take it before it is used,
/// so callers retry a start that fails to bind).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
