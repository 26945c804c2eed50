//! Reading a request body within the size limit and undoing its `Content-Encoding`.
//!
//! The limit holds twice: for the bytes as sent (a `Content-Length` above it is refused before
//! reading anything, a chunked body as soon as it passes it) and for the bytes after
//! decompression (a small gzip bomb is stopped at the limit, not expanded in full).

use std::io::Read as _;

use futures::StreamExt as _;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More bytes than the limit, as sent or decompressed.
    #[error("request body exceeds the limit of {limit} bytes{}", if *.decompressed { " after decompression" } else { "" })]
    TooLarge {
        /// The limit.
        limit: usize,
        /// True when the decompressed body was too large.
        decompressed: bool,
    },
    /// A content encoding the receivers do not undo.
    #[error("unsupported Content-Encoding {0:?}; use gzip or identity")]
    UnsupportedEncoding(String),
    /// The body does not decompress.
    #[error("body is not valid {encoding}: {message}")]
    Corrupt {
        /// The encoding.
        encoding: &'static str,
        /// What failed.
        message: String,
    },
    /// The connection failed while the body was read.
    #[error("reading the request body failed: {0}")]
    Read(String),
}

impl BodyError {
    /// The `outcome` label value.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::Corrupt { .. } | Self::Read(_) => "bad_request",
        }
    }
}

/// Reads at most `limit` bytes of `body`; `content_length` is refused up front when above it.
pub async fn read_limited(body: axum::body::Body, content_length: Option<u64>, limit: usize) -> Result<Vec<u8>, BodyError> {
    if content_length.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge { limit, decompressed: false });
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::with_capacity(content_length.map_or(0, |length| length as usize).min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| BodyError::Read(error.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit, decompressed: false });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Undoes `Content-Encoding` (`gzip`, `x-gzip` or `identity`/absent), decompressing at most
/// `limit` bytes.
pub fn decode_content(bytes: Vec<u8>, content_encoding: Option<&str>, limit: usize) -> Result<Vec<u8>, BodyError> {
    match content_encoding.map(|encoding| encoding.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "identity") => Ok(bytes),
        Some("gzip" | "x-gzip") => gunzip(&bytes, limit),
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
    }
}

/// Decompresses gzip (multiple members, as `gzip` concatenates them), at most `limit` bytes.
pub fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| BodyError::Corrupt { encoding: "gzip", message: error.to_string() })?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit, decompressed: true });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_bodies_decompress_within_the_limit_only() {
        let data = vec![b'x'; 10_000];
        assert_eq!(decode_content(gzip(&data), Some("gzip"), 10_000).unwrap(), data);
        // A bomb: 10 kB of zeros compress to a few dozen bytes, stopped at the limit.
        let error = decode_content(gzip(&data), Some("GZIP"), 9_999).unwrap_err();
        assert_eq!(error.to_string(), "request body exceeds the limit of 9999 bytes after decompression");
        assert_eq!(decode_content(b"plain".to_vec(), None, 1).unwrap(), b"plain");
        assert_eq!(decode_content(b"x".to_vec(), Some("br"), 10).unwrap_err().outcome(), "unsupported_encoding");
        assert_eq!(decode_content(b"not gzip".to_vec(), Some("gzip"), 10).unwrap_err().outcome(), "bad_request");
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit() {
        let read = |text: &'static str, length| read_limited(axum::body::Body::from(text), length, 5);
        assert_eq!(read("hello", None).await.unwrap(), b"hello");
        assert!(matches!(read("hello!", None).await, Err(BodyError::TooLarge { limit: 5, decompressed: false })));
        assert!(matches!(read("", Some(6)).await, Err(BodyError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = gunzip(&bytes, 1024);
        }
    }
}
