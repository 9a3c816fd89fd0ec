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
}

/// Extracted text, and whether it is Markdown (headings as `#` lines).
#[derive(Debug, Clone)]
pub struct Extracted {
    pub text: String,
    pub markdown: bool,
}

pub fn extract(format: Format, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let extracted = match format {
        Format::Text => Extracted { text: utf8(bytes)?, markdown: false },
        Format::Markdown => Extracted { text: utf8(bytes)?, markdown: true },
        Format::Html => Extracted { text: html_to_text(bytes), markdown: true },
        Format::Pdf => {
            let text = pdf_extract::extract_text_from_mem(bytes).map_err(|e| ExtractError::Pdf(e.to_string()))?;
            Extracted { text: normalize_whitespace(&text), markdown: false }
        }
    };
    if extracted.text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(extracted)
}

fn utf8(bytes: &[u8]) -> Result<String, ExtractError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ExtractError::NotUtf8)?;
    Ok(text.trim_start_matches('\u{feff}').replace("\r\n", "\n"))
}

fn html_to_text(bytes: &[u8]) -> String {
    // A very wide line: wrapping would put newlines inside sentences.
    // The rich decorator marks headings with `#` but adds no link or emphasis syntax.
    // Raw mode renders each table cell on its own line: with table layout, a very
    // wide page pads every table row out to the full width (a 4 MB page became
    // 16 MB of spaces).
    let text = html2text::config::rich()
        .raw_mode(true)
        .link_footnotes(false)
        .no_link_wrapping()
        .string_from_read(bytes, 100_000)
        .unwrap_or_default();
    normalize_whitespace(&text)
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
        let text = extract(Format::Html, html).unwrap().text;
        assert!(text.contains("# Ownership"), "{text}");
        assert!(text.contains("## Borrowing"), "{text}");
        assert!(text.contains("Each value has an owner."), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn tables_keep_their_cells_without_padding_to_the_page_width() {
        let html = b"<h2>Keywords</h2><table><tr><th>Word</th><th>Meaning</th></tr>\
            <tr><td>fn</td><td>declares a function</td></tr><tr><td>let</td><td>binds a value</td></tr></table>";
        let text = extract(Format::Html, html).unwrap().text;
        assert!(text.contains("declares a function") && text.contains("binds a value"), "{text}");
        assert!(text.len() < 200, "padded table: {} bytes", text.len());
    }

    #[test]
    fn invalid_utf8_and_empty_documents_are_rejected() {
        assert_eq!(extract(Format::Text, &[0xff, 0xfe, 0x00]).unwrap_err(), ExtractError::NotUtf8);
        assert_eq!(extract(Format::Markdown, b"  \n ").unwrap_err(), ExtractError::Empty);
    }

    #[test]
    fn a_broken_pdf_is_an_error_not_a_panic() {
        assert!(matches!(extract(Format::Pdf, b"%PDF-1.4 garbage"), Err(ExtractError::Pdf(_))));
    }
}
