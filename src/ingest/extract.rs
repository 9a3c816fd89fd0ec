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
    #[error("the HTML nests elements {0} levels deep; at most {MAX_HTML_DEPTH} are supported")]
    TooDeep(usize),
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
    if format == Format::Html {
        let depth = html_nesting_depth(bytes);
        if depth > MAX_HTML_DEPTH {
            return Err(ExtractError::TooDeep(depth));
        }
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

/// HTML rendering time grows with the square of the nesting depth (100,000
/// nested elements took minutes); real pages stay far below this.
pub const MAX_HTML_DEPTH: usize = 1_000;

/// Elements that are never closed (void) or usually closed implicitly by the
/// parser (a `<p>` or `<li>` without its end tag): counting them would make a
/// long flat page look deep.
const NOT_NESTING: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr", "p", "li",
    "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup", "colgroup", "rt", "rp", "html",
    "head", "body",
];

/// The deepest element nesting in `html`, estimated in one pass over its tags
/// (comments, doctypes and script/style bodies skipped), before the parser
/// sees it.
fn html_nesting_depth(html: &[u8]) -> usize {
    let find = |from: usize, needle: &[u8]| -> Option<usize> {
        html.get(from..)?.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).map(|p| from + p)
    };
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while let Some(lt) = find(i, b"<") {
        let rest = &html[lt + 1..];
        if rest.starts_with(b"!--") {
            i = find(lt + 4, b"-->").map_or(html.len(), |end| end + 3);
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_start = lt + 1 + usize::from(closing);
        let name_len = html[name_start..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
        let name = String::from_utf8_lossy(&html[name_start..name_start + name_len]).to_ascii_lowercase();
        let Some(gt) = find(name_start, b">") else { break };
        i = gt + 1;
        if name.is_empty() || NOT_NESTING.contains(&name.as_str()) {
            continue;
        }
        if closing {
            depth = depth.saturating_sub(1);
        } else if html[gt - 1] != b'/' {
            if name == "script" || name == "style" {
                i = find(i, format!("</{name}").as_bytes()).unwrap_or(html.len());
                continue;
            }
            depth += 1;
            deepest = deepest.max(depth);
        }
    }
    deepest
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
        let noise = crate::testkit::noise(100_000, 0x2545_f491_4f6c_dd1du64);
        assert_eq!(extract(Format::Html, &noise, LIMIT).unwrap_err(), ExtractError::Binary("text/html"));
        assert_eq!(extract(Format::Text, &noise, LIMIT).unwrap_err(), ExtractError::Binary("text/plain"));
        // Real text in another script is not binary.
        assert!(extract(Format::Text, "Ünïcödé тексты 文本 ".repeat(1000).as_bytes(), LIMIT).is_ok());
    }

    #[test]
    fn html_nesting_is_measured_and_bounded() {
        assert_eq!(html_nesting_depth(b"<div><p>a<p>b<ul><li>c<li>d</ul></div><br><img src=x/>"), 2);
        assert_eq!(html_nesting_depth(b"<!-- <div><div> --><script>if (a<b) { x = '<div>' }</script><b>t</b>"), 1);
        let deep = format!("{}text{}", "<div>".repeat(5000), "</div>".repeat(5000));
        assert_eq!(extract(Format::Html, deep.as_bytes(), LIMIT).unwrap_err(), ExtractError::TooDeep(5000));
        // A long flat page with unclosed paragraphs and list items is not deep.
        let flat = "<p>para<li>item".repeat(10_000);
        assert!(html_nesting_depth(flat.as_bytes()) < 5);
    }

    #[test]
    fn text_above_the_limit_is_refused_with_its_size() {
        let err = extract(Format::Text, "word ".repeat(100).as_bytes(), 100).unwrap_err();
        assert_eq!(err, ExtractError::TooLarge { bytes: 500, limit: 100 });
        assert!(err.to_string().contains("MAX_EXTRACTED_BYTES"));
    }
}
