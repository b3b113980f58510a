//! A request head hyper cannot read is answered by hyper itself, before any service sees it: `414` for a URL
//! over [`MAX_URL_BYTES`], `431` for a head over [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] headers,
//! `400` for a malformed one, each with an empty body. Every other error of the server is JSON
//! (`{"error":{"code","message"}}`), so the socket under hyper's connection is wrapped in [`JsonHeadErrors`],
//! which writes those answers as JSON instead, with the same status.
//!
//! How it tells them apart: such an answer is a status line of 400, 414 or 431 with `content-length: 0`, written
//! first thing of a response. No response of the router looks like that (every error it sends has a JSON body)
//! and no body does (bodies are JSON and SSE text, which never start with a status line).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest request target hyper reads (its `MAX_URI_LEN`, not configurable).
pub(crate) const MAX_URL_BYTES: usize = 65_534;
/// The largest request head: hyper's read buffer (its default size) and the longest head it parses.
pub(crate) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// The most headers a request may have, set to hyper's default.
pub(crate) const MAX_HEADERS: usize = 100;

/// hyper's own answers have a head of a status line, `content-length: 0` and a date: far shorter than this.
const SHORT_HEAD: usize = 512;

/// The socket of a hyper connection, whose empty answers to unreadable heads are replaced by JSON ones.
pub(crate) struct JsonHeadErrors<S> {
    inner: S,
    /// The JSON answer being written in place of hyper's, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<S> JsonHeadErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, replacing: None }
    }

    /// The socket (after an upgrade: hyper's answers are long written).
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

/// The JSON answer to write instead of `bytes`, when they start with one of hyper's own answers.
fn replacement(bytes: &[u8]) -> Option<Vec<u8>> {
    // Every write of a hyper connection passes here, upgraded WebSockets' included: rule almost all of them out
    // in a few byte comparisons, and look for the end of a head only in hyper's own short ones.
    if ![&b"HTTP/1.1 400 "[..], b"HTTP/1.1 414 ", b"HTTP/1.1 431 "].iter().any(|s| bytes.starts_with(s)) {
        return None;
    }
    let bytes = &bytes[..bytes.len().min(SHORT_HEAD)];
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &bytes[..head_end];
    if !head.windows(21).any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n")) {
        return None;
    }
    let (status, code, message) = match head.get(..13)? {
        b"HTTP/1.1 414 " => ("414 URI Too Long", "url_too_long", format!("the URL is over {MAX_URL_BYTES} bytes")),
        b"HTTP/1.1 431 " => (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            format!("the request head is over {MAX_HEAD_BYTES} bytes or has more than {MAX_HEADERS} headers"),
        ),
        b"HTTP/1.1 400 " => ("400 Bad Request", "invalid_request", "the request head is not valid HTTP/1.1".into()),
        _ => return None,
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(answer.into_bytes())
}

impl<S: AsyncWrite + Unpin> JsonHeadErrors<S> {
    /// Writes what is left of the replacement; ready once it is all written (or there is none).
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = self.replacing.as_mut() {
            if *written == answer.len() {
                self.replacing = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonHeadErrors<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonHeadErrors<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacing(cx))?;
        if let Some(answer) = replacement(buf) {
            // hyper's answer counts as written; the JSON one goes out before anything else, by the next flush.
            self.replacing = Some((answer, 0));
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacing(cx))?;
        // hyper encodes a head into one buffer: its own answers are whole in the first slice.
        if let Some(answer) = bufs.first().and_then(|first| replacement(first)) {
            self.replacing = Some((answer, 0));
            return Poll::Ready(Ok(bufs[0].len()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacing(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacing(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_empty_answers_to_unreadable_heads_are_replaced() {
        let answer =
            replacement(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n");
        let answer = String::from_utf8(answer.expect("replaced")).unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.ends_with(r#""code":"headers_too_large","message":"the request head is over 417792 bytes or has more than 100 headers"}}"#), "{answer}");
        for kept in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"{\"messages\":[]}",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n", // not a whole head
        ] {
            assert!(replacement(kept).is_none(), "{}", String::from_utf8_lossy(kept));
        }
    }
}
