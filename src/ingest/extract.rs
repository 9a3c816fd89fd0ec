//! Text extraction per format. HTML becomes clean text that keeps its headings
//! as Markdown `#` lines (so the Markdown splitter and heading paths work on it),
//! scripts and styles dropped.

/// A supported document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl Format {
    /// From a declared content type, falling back to the file name's extension.
    pub fn detect(content_type: Option<&str>, file_name: Option<&str>) -> Option<Format> {
        let mime = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let by_mime = match mime.as_deref() {
            Some("text/plain") => Some(Format::Text),
            Some("text/markdown") | Some("text/x-markdown") => Some(Format::Markdown),
            Some("text/html") | Some("application/xhtml+xml") => Some(Format::Html),
            Some("application/pdf") => Some(Format::Pdf),
            _ => None,
        };
        let by_extension = || {
            let ext = file_name?.rsplit_once('.')?.1.to_ascii_lowercase();
            match ext.as_str() {
                "txt" | "text" => Some(Format::Text),
                "md" | "markdown" => Some(Format::Markdown),
                "html" | "htm" | "xhtml" => Some(Format::Html),
                "pdf" => Some(Format::Pdf),
                _ => None,
            }
        };
        // A generic type (application/octet-stream, text/plain from a browser) defers to the extension.
        match by_mime {
            Some(Format::Text) | None => by_extension().or(by_mime),
            known => known,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
        }
    }

    pub fn from_content_type(content_type: &str) -> Option<Format> {
        Self::detect(Some(content_type), None)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExtractError {
    #[error("the document is not valid UTF-8 text")]
    NotUtf8,
    #[error("the PDF could not be read: {0}")]
    Pdf(String),
    #[error("the document contains no text")]
    Empty,
    #[error("the document looks like binary data, not {0}")]
    Binary(&'static str),
    #[error("the extracted text is {bytes} bytes, above the limit of {limit} (MAX_EXTRACTED_BYTES)")]
    TooLarge { bytes: usize, limit: usize },
}

/// Extracted text, and whether it is Markdown (headings as `#` lines).
#[derive(Debug, Clone)]
pub struct Extracted {
    pub text: String,
    pub markdown: bool,
}

/// Extracts the text of `bytes`, refusing binary data and text longer than
/// `max_text_bytes` (chunking and embedding cost grow with it). NUL characters,
/// which Postgres text cannot hold, are dropped.
pub fn extract(format: Format, bytes: &[u8], max_text_bytes: usize) -> Result<Extracted, ExtractError> {
    if format != Format::Pdf && looks_binary(bytes) {
        return Err(ExtractError::Binary(format.content_type()));
    }
    let mut extracted = match format {
        Format::Text => Extracted { text: utf8(bytes)?, markdown: false },
        Format::Markdown => Extracted { text: utf8(bytes)?, markdown: true },
        Format::Html => Extracted { text: html_to_text(bytes), markdown: true },
        Format::Pdf => {
            let text = pdf_extract::extract_text_from_mem(bytes).map_err(|e| ExtractError::Pdf(e.to_string()))?;
            Extracted { text: normalize_whitespace(&text), markdown: false }
        }
    };
    if extracted.text.contains('\0') {
        extracted.text.retain(|c| c != '\0');
    }
    if extracted.text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    if extracted.text.len() > max_text_bytes {
        return Err(ExtractError::TooLarge { bytes: extracted.text.len(), limit: max_text_bytes });
    }
    Ok(extracted)
}

/// Whether the start of a supposedly textual file is mostly not text: bytes
/// that are not valid UTF-8, or control characters other than whitespace.
/// A stray NUL in a real text file stays far below the threshold.
fn looks_binary(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(64 * 1024)];
    let text = String::from_utf8_lossy(sample);
    let (mut total, mut odd) = (0usize, 0usize);
    for c in text.chars() {
        total += 1;
        if c == char::REPLACEMENT_CHARACTER || (c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b')) {
            odd += 1;
        }
    }
    // The last character of the sample may be a multi-byte sequence cut in half.
    odd > 16 && odd * 10 > total
}

fn utf8(bytes: &[u8]) -> Result<String, ExtractError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ExtractError::NotUtf8)?;
    Ok(text.trim_start_matches('\u{feff}').replace("\r\n", "\n"))
}

fn html_to_text(bytes: &[u8]) -> String {
    normalize_whitespace(&super::html::to_text(&String::from_utf8_lossy(bytes)))
}

/// Trailing spaces trimmed, runs of blank lines collapsed to one.
fn normalize_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 10 * 1024 * 1024;

    #[test]
    fn formats_are_detected_from_type_then_extension() {
        assert_eq!(Format::detect(Some("text/html; charset=utf-8"), None), Some(Format::Html));
        assert_eq!(Format::detect(Some("application/octet-stream"), Some("a.MD")), Some(Format::Markdown));
        assert_eq!(Format::detect(Some("text/plain"), Some("page.html")), Some(Format::Html));
        assert_eq!(Format::detect(None, Some("notes.txt")), Some(Format::Text));
        assert_eq!(Format::detect(Some("image/png"), Some("cat.png")), None);
    }

    #[test]
    fn html_keeps_headings_and_text_and_drops_scripts() {
        let html = b"<html><head><style>p{}</style><script>var secret = 1;</script></head>
            <body><h1>Ownership</h1><p>Each value has an <a href='x'>owner</a>.</p>
            <h2>Borrowing</h2><p>References borrow.</p></body></html>";
        let text = extract(Format::Html, html, LIMIT).unwrap().text;
        assert!(text.contains("# Ownership"), "{text}");
        assert!(text.contains("## Borrowing"), "{text}");
        assert!(text.contains("Each value has an owner."), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn tables_keep_their_cells_without_padding_to_the_page_width() {
        let html = b"<h2>Keywords</h2><table><tr><th>Word</th><th>Meaning</th></tr>\
            <tr><td>fn</td><td>declares a function</td></tr><tr><td>let</td><td>binds a value</td></tr></table>";
        let text = extract(Format::Html, html, LIMIT).unwrap().text;
        assert!(text.contains("declares a function") && text.contains("binds a value"), "{text}");
        assert!(text.len() < 200, "padded table: {} bytes", text.len());
    }

    #[test]
    fn invalid_utf8_and_empty_documents_are_rejected() {
        assert_eq!(extract(Format::Text, &[0xff, 0xfe, 0x00, b'a'], LIMIT).unwrap_err(), ExtractError::NotUtf8);
        assert_eq!(extract(Format::Markdown, b"  \n ", LIMIT).unwrap_err(), ExtractError::Empty);
    }

    #[test]
    fn a_broken_pdf_is_an_error_not_a_panic() {
        assert!(matches!(extract(Format::Pdf, b"%PDF-1.4 garbage", LIMIT), Err(ExtractError::Pdf(_))));
    }

    #[test]
    fn nul_characters_are_dropped_from_text() {
        let text = extract(Format::Text, b"before\0after and more words", LIMIT).unwrap().text;
        assert_eq!(text, "beforeafter and more words");
        let html = extract(Format::Html, b"<p>a\0b and c</p>", LIMIT).unwrap().text;
        assert!(!html.contains('\0'), "{html:?}");
    }

    #[test]
    fn random_bytes_labelled_as_text_are_refused_as_binary() {
        let noise = stolid_testkit::noise(100_000, 0x2545_f491_4f6c_dd1du64);
        assert_eq!(extract(Format::Html, &noise, LIMIT).unwrap_err(), ExtractError::Binary("text/html"));
        assert_eq!(extract(Format::Text, &noise, LIMIT).unwrap_err(), ExtractError::Binary("text/plain"));
        // Real text in another script is not binary.
        assert!(extract(Format::Text, "Ünïcödé тексты 文本 ".repeat(1000).as_bytes(), LIMIT).is_ok());
    }

    #[test]
    fn html_nested_thousands_deep_is_extracted() {
        let deep = format!(
            "{}<h2>Deep</h2>text{}",
            "<div><blockquote><ul><li>".repeat(5000),
            "</li></ul></blockquote></div>".repeat(5000)
        );
        let text = extract(Format::Html, deep.as_bytes(), LIMIT).unwrap().text;
        assert!(text.contains("## Deep") && text.contains("text"), "{text}");
        assert!(text.len() < 200, "indentation and quote marks are capped: {} bytes", text.len());
    }

    #[test]
    fn text_above_the_limit_is_refused_with_its_size() {
        let err = extract(Format::Text, "word ".repeat(100).as_bytes(), 100).unwrap_err();
        assert_eq!(err, ExtractError::TooLarge { bytes: 500, limit: 100 });
        assert!(err.to_string().contains("MAX_EXTRACTED_BYTES"));
    }
}
