//! HTML to the text that is chunked: block boundaries as line breaks, headings
//! as Markdown `#` lines (the Markdown splitter and heading paths rely on
//! them), list items, preformatted code as written, table cells one per line;
//! scripts, styles and other non-text content dropped.
//!
//! One pass of html5ever's tokenizer (the WHATWG tokenizer: character
//! references, raw text elements, malformed markup) and no tree. A document
//! tree and a layout engine (html2text) were a fifth of the worker's CPU for
//! output that never needed either: this is linear in the input however
//! deeply it nests.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};

/// The text of `html` (not yet whitespace-normalised: blank lines may repeat).
pub fn to_text(html: &str) -> String {
    let tokenizer = Tokenizer::new(Writer::default(), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never asks to pause for a script, so one feed consumes everything.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.text.into_inner().out
}

/// Lists and quotes nested deeper than this are indented no further: a page
/// nested thousands deep would otherwise repeat its prefixes quadratically.
const MAX_SHOWN_DEPTH: usize = 8;

#[derive(Default)]
struct Writer {
    text: RefCell<Text>,
}

#[derive(Default)]
struct Text {
    out: String,
    /// The element whose content is being dropped (`script`, `svg`, ...) and
    /// how many of it are open (an `svg` inside an `svg`).
    dropping: Option<(String, usize)>,
    /// Open `pre` elements: their text is kept as written.
    pre: usize,
    /// A `pre` just opened: a newline right after its tag is not content.
    pre_start: bool,
    /// Open lists, innermost last: `None` bullets, `Some(n)` numbers the next item `n`.
    lists: Vec<Option<i64>>,
    quotes: usize,
    /// Inside a heading: it stays on one line.
    heading: bool,
    /// A list item's bullet or number, written with its first text, so that
    /// a paragraph inside the item (`<li><p>`) starts on the bullet's line.
    marker: Option<String>,
    /// Whitespace seen since the last word, written as one space before the next.
    space: bool,
}

impl TokenSink for Writer {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut text = self.text.borrow_mut();
        match token {
            Token::CharacterTokens(chars) => text.characters(&chars),
            Token::TagToken(tag) => return text.tag(&tag),
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

impl Text {
    fn tag(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let name = &*tag.name;
        let start = tag.kind == TagKind::StartTag;
        if let Some((dropped, depth)) = &mut self.dropping {
            if name == dropped.as_str() && !tag.self_closing {
                if start {
                    *depth += 1;
                } else {
                    *depth -= 1;
                    if *depth == 0 {
                        self.dropping = None;
                    }
                }
            }
            return TokenSinkResult::Continue;
        }
        if start {
            // Elements whose content is not the page's text. The raw-text ones
            // must also switch the tokenizer's state, as a tree builder would,
            // or a `<` inside a script would be read as a tag.
            let raw = match name {
                "script" => Some(RawKind::ScriptData),
                "style" | "noscript" | "iframe" | "noembed" | "noframes" | "xmp" => Some(RawKind::Rawtext),
                "title" => Some(RawKind::Rcdata),
                "svg" | "math" | "template" | "select" | "object" | "canvas" | "audio" | "video" => None,
                "textarea" => return TokenSinkResult::RawData(RawKind::Rcdata),
                "plaintext" => {
                    self.pre += 1;
                    return TokenSinkResult::Plaintext;
                }
                _ => return self.start(name, tag),
            };
            if !tag.self_closing || raw.is_some() {
                self.dropping = Some((name.to_string(), 1));
            }
            return raw.map_or(TokenSinkResult::Continue, TokenSinkResult::RawData);
        }
        self.end(name);
        TokenSinkResult::Continue
    }

    fn start(&mut self, name: &str, tag: &Tag) -> TokenSinkResult<()> {
        match name {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.blank_line();
                let level = usize::from(name.as_bytes()[1] - b'0');
                self.begin_text();
                self.out.extend(std::iter::repeat_n('#', level));
                self.out.push(' ');
                self.heading = true;
            }
            "blockquote" => {
                self.blank_line();
                self.quotes += 1;
            }
            "hr" => self.blank_line(),
            "pre" => {
                self.blank_line();
                self.pre += 1;
                self.pre_start = true;
            }
            "ul" | "ol" => {
                self.new_line();
                let numbered = name == "ol";
                let first = attribute(tag, "start").and_then(|s| s.trim().parse().ok()).unwrap_or(1);
                self.lists.push(numbered.then_some(first));
            }
            "li" => {
                self.new_line();
                let depth = self.lists.len().clamp(1, MAX_SHOWN_DEPTH);
                let indent = "  ".repeat(depth - 1);
                self.marker = Some(match self.lists.last_mut() {
                    Some(Some(next)) => {
                        *next += 1;
                        format!("{indent}{}. ", *next - 1)
                    }
                    _ => format!("{indent}* "),
                });
            }
            "br" => {
                if self.heading {
                    self.space = true;
                } else {
                    self.out.push('\n');
                    self.space = false;
                }
            }
            "img" => {
                if let Some(alt) = attribute(tag, "alt").filter(|alt| !alt.trim().is_empty()) {
                    self.words(alt);
                }
            }
            _ if is_paragraph_block(name) => self.blank_line(),
            _ if is_line_block(name) => self.new_line(),
            _ => {}
        }
        TokenSinkResult::Continue
    }

    fn end(&mut self, name: &str) {
        match name {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.heading = false;
                self.blank_line();
            }
            "blockquote" => {
                self.quotes = self.quotes.saturating_sub(1);
                self.blank_line();
            }
            "pre" => {
                self.pre = self.pre.saturating_sub(1);
                self.pre_start = false;
                self.blank_line();
            }
            "ul" | "ol" | "li" => {
                // An item that ended without text leaves no marker behind.
                self.marker = None;
                if name != "li" {
                    self.lists.pop();
                }
                self.new_line();
            }
            _ if is_paragraph_block(name) => self.blank_line(),
            _ if is_line_block(name) => self.new_line(),
            _ => {}
        }
    }

    fn characters(&mut self, chars: &str) {
        if self.dropping.is_some() {
            return;
        }
        if self.pre > 0 {
            let chars =
                if std::mem::take(&mut self.pre_start) { chars.strip_prefix('\n').unwrap_or(chars) } else { chars };
            for line in chars.split_inclusive('\n') {
                self.begin_text();
                self.out.push_str(line);
            }
            return;
        }
        self.words(chars);
    }

    /// Inline text: runs of whitespace become one space, none at a line's start.
    fn words(&mut self, chars: &str) {
        for (i, word) in chars.split(|c: char| c.is_ascii_whitespace()).enumerate() {
            // Pieces after the first were preceded by whitespace.
            self.space |= i > 0;
            if word.is_empty() {
                continue;
            }
            if self.at_line_start() {
                self.begin_text();
            } else if self.space && !self.out.ends_with(' ') {
                self.out.push(' ');
            }
            self.out.push_str(word);
            self.space = false;
        }
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    /// What a line of text starts with: `> ` inside a blockquote, then the
    /// list item's marker if its text has not started yet.
    fn begin_text(&mut self) {
        if self.quotes > 0 && self.at_line_start() {
            self.out.extend(std::iter::repeat_n("> ", self.quotes.min(MAX_SHOWN_DEPTH)));
        }
        if let Some(marker) = self.marker.take() {
            self.out.push_str(&marker);
        }
    }

    fn new_line(&mut self) {
        self.space = false;
        // A block opening inside a list item before any of its text stays on the marker's line.
        if self.marker.is_none() && !self.at_line_start() {
            self.out.push('\n');
        }
    }

    fn blank_line(&mut self) {
        self.new_line();
        if self.marker.is_none() && !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }
}

/// Block elements set apart by blank lines, before and after.
fn is_paragraph_block(name: &str) -> bool {
    matches!(name, "p" | "table" | "dl" | "figure" | "address" | "details" | "fieldset")
}

/// Block elements that end a line but do not make a paragraph of their own.
fn is_line_block(name: &str) -> bool {
    matches!(
        name,
        "div"
            | "section"
            | "article"
            | "main"
            | "nav"
            | "aside"
            | "header"
            | "footer"
            | "tr"
            | "td"
            | "th"
            | "caption"
            | "dt"
            | "dd"
            | "figcaption"
            | "summary"
            | "legend"
            | "form"
            | "body"
    )
}

fn attribute<'t>(tag: &'t Tag, name: &str) -> Option<&'t str> {
    tag.attrs.iter().find(|a| &*a.name.local == name).map(|a| &*a.value)
}

#[cfg(test)]
mod tests {
    use super::to_text;

    fn text(html: &str) -> String {
        to_text(html).split('\n').map(str::trim_end).collect::<Vec<_>>().join("\n").trim().to_string()
    }

    #[test]
    fn inline_text_flows_and_character_references_are_decoded() {
        assert_eq!(
            text("<p>Each   value\n has an <em>owner</em>,&nbsp;x &amp;&lt;y&gt;.</p>"),
            "Each value has an owner,\u{a0}x &<y>."
        );
        assert_eq!(text("<p>See <img alt=\"a crab\" src=c.png> here</p>"), "See a crab here");
    }

    #[test]
    fn headings_stay_on_one_line_between_blank_lines() {
        assert_eq!(
            text("<p>before</p><h2 id=x><a href=#x>Error <code>Handling</code></a><br>with Result</h2><p>after</p>"),
            "before\n\n## Error Handling with Result\n\nafter"
        );
    }

    #[test]
    fn scripts_styles_titles_and_graphics_are_dropped() {
        let html = "<html><head><title>Tab title</title><style>p > a { color: red }</style>\
            <script>if (a<b) { document.write('<p>hidden</p>') }</script></head>\
            <body><svg><title>icon</title><svg><text>inner</text></svg><text>outer</text></svg>\
            <noscript><p>enable scripts</p></noscript><p>shown</p></body></html>";
        assert_eq!(text(html), "shown");
    }

    #[test]
    fn preformatted_code_keeps_its_lines_and_indentation() {
        let html = "<p>Code:</p><pre><code>\nfn main() {\n    let x = 1 &lt; 2;\n}\n</code></pre><p>Done.</p>";
        assert_eq!(text(html), "Code:\n\nfn main() {\n    let x = 1 < 2;\n}\n\nDone.");
    }

    #[test]
    fn lists_are_bulleted_numbered_and_indented() {
        let html = "<ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>\
            <ol start=\"3\"><li>three</li><li>four</li></ol>";
        assert_eq!(text(html), "* one\n  * nested\n* two\n3. three\n4. four");
        // Loose lists: the item's paragraphs start on its bullet's line.
        assert_eq!(text("<ul><li></li></ul><p>after an empty item</p>"), "after an empty item");
        assert_eq!(
            text("<p>Steps:</p><ol><li><p>first</p></li><li><p>second</p><p>more</p></li></ol>"),
            "Steps:\n\n1. first\n\n2. second\n\nmore"
        );
    }

    #[test]
    fn quotes_cells_and_captions_get_their_own_lines() {
        assert_eq!(text("<blockquote><p>first</p><p>second</p></blockquote>"), "> first\n\n> second");
        assert_eq!(
            text("<table><tr><th>Word</th><th>Meaning</th></tr><tr><td>fn</td><td>function</td></tr></table>"),
            "Word\nMeaning\nfn\nfunction"
        );
        assert_eq!(
            text("<figure><img alt=\"diagram\"><figcaption>Figure 1</figcaption></figure>"),
            "diagram\nFigure 1"
        );
    }
}
