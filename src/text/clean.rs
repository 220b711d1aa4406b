//! Caption cleaning, as open_clip does it before BPE.
//!
//! open_clip's `_clean_lower` is `ftfy.fix_text`, `html.unescape` twice, whitespace collapsed and
//! stripped, then lower case. The ids depend on it: without it `&amp;`, curly quotes, `ﬁ` and
//! fullwidth letters all tokenize differently from open_clip (shared notes §5). This is a port
//! of the parts of `ftfy.fix_text` (ftfy 6.3, default settings) that matter in captions:
//!
//! - HTML entities, unescaped until stable when the text has no `<` (ftfy's `unescape_html="auto"`),
//! - Latin ligatures (`ﬁ` → `fi`, `Ĳ` → `IJ`, ...), exactly ftfy's table,
//! - fullwidth ASCII U+FF01–FF5E → ASCII and the ideographic space U+3000 → space,
//! - curly quotes → `'` and `"` (ftfy's `uncurl_quotes` ranges),
//! - control characters ftfy removes (C0 except tab/newlines, DEL, BOM, deprecated format chars),
//! - NFC.
//!
//! Not ported: mojibake repair (`fix_encoding`, `restore_byte_a0`, `decode_inconsistent_utf8`,
//! `fix_c1_controls`; it needs ftfy's encoding-detection heuristics and tables), terminal escape
//! removal, and the halfwidth katakana/hangul and fullwidth symbol forms above U+FF5E. Captions
//! with those tokenize as they are, without that repair.
//!
//! NBSP and the other Unicode spaces need no table: Rust's `char::is_whitespace` and Python's
//! `str.split()` agree on them (except U+001C–001F, which the control-character step removes
//! first), so the whitespace collapse turns them into single spaces.

use super::TextClean;
use tokenizers::NormalizedString;

/// ftfy keeps unescaping and fixing until the text stops changing; entities nested deeper than
/// this are not seen in captions, and the cap keeps adversarial input linear.
const MAX_FIX_ROUNDS: usize = 8;

/// Cleans one caption the way open_clip's default (`lower`) clean function does.
pub fn clean_text(text: &str) -> String {
    clean_whitespace(text).to_lowercase()
}

/// Cleans one caption per `clean` ([`TextClean::Auto`] cleans as [`TextClean::Clip`]; a
/// [`crate::text::TextTokenizer`] resolves it first).
pub fn clean_caption(text: &str, clean: TextClean) -> String {
    match clean {
        TextClean::Auto | TextClean::Clip => clean_text(text),
        TextClean::Whitespace => clean_whitespace(text),
        TextClean::Canonicalize => canonicalize(&clean_whitespace(text)),
        TextClean::Siglip => siglip(text, true),
        TextClean::SiglipCased => siglip(text, false),
    }
}

/// transformers' `SiglipTokenizer.canonicalize_text` after its `▁` replacement: Python's
/// `str.lower`, `string.punctuation` removed, `\s+` as one space, `strip()`.
fn siglip(text: &str, lower: bool) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if c == '▁' { ' ' } else { c })
        .collect();
    let cased = if lower { spaced.to_lowercase() } else { spaced };
    let kept: String = cased
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    join_words(kept.split(is_python_space).filter(|w| !w.is_empty()))
}

/// Python's `str.isspace`, which `re`'s `\s` and `strip()` use: Unicode's White_Space and
/// also the separators U+001C–001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// open_clip's `whitespace` clean: fixes, HTML unescaping, whitespace collapsed and stripped.
fn clean_whitespace(text: &str) -> String {
    let fixed = fix_text(text);
    // html.unescape twice, after ftfy (it catches entities ftfy skipped because of a `<`).
    let once = html_escape::decode_html_entities(&fixed);
    let twice = html_escape::decode_html_entities(&once);
    join_words(twice.split_whitespace())
}

/// open_clip's `canonicalize_text`: `_` as a space, ASCII punctuation (Python's
/// `string.punctuation`) removed, lower case, whitespace collapsed.
fn canonicalize(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| if c == '_' { ' ' } else { c })
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    join_words(kept.to_lowercase().split_whitespace())
}

fn join_words<'a>(words: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for word in words {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The ported subset of `ftfy.fix_text`, repeated until stable as ftfy does.
fn fix_text(text: &str) -> String {
    // ftfy decides once per text: any `<` means markup, so entities are left for html.unescape.
    let unescape = !text.contains('<');
    let mut current = text.to_owned();
    for _ in 0..MAX_FIX_ROUNDS {
        let unescaped = if unescape {
            html_escape::decode_html_entities(&current).into_owned()
        } else {
            current.clone()
        };
        let next = nfc(&fix_chars(&unescaped));
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Ligatures, character width, quotes and control characters in one pass.
fn fix_chars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if let Some(s) = ligature(c) {
            out.push_str(s);
            continue;
        }
        match c {
            '\u{3000}' => out.push(' '),
            // Fullwidth ASCII sits at a fixed offset from ASCII.
            '\u{FF01}'..='\u{FF5E}' => out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)),
            '\u{02BC}' | '\u{2018}'..='\u{201B}' => out.push('\''),
            '\u{201C}'..='\u{201F}' => out.push('"'),
            c if is_removed_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// ftfy's `LIGATURES` table: Latin ligatures only; other scripts' ligatures may be intended.
fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// ftfy's `CONTROL_CHARS`: tab, newline, form feed and carriage return stay (they are spaces).
fn is_removed_control(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{8}'
            | '\u{B}'
            | '\u{E}'..='\u{1F}'
            | '\u{7F}'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFC}'
    )
}

fn nfc(text: &str) -> String {
    // ASCII is already NFC; skipping it keeps the common caption cheap.
    if text.is_ascii() {
        return text.to_owned();
    }
    let mut normalized = NormalizedString::from(text);
    normalized.nfc();
    normalized.get().to_owned()
}

#[cfg(test)]
mod tests {
    use super::clean_text;

    #[test]
    fn whitespace_is_collapsed_stripped_and_lowercased() {
        assert_eq!(clean_text("  A  Dog\t\nRUNS  "), "a dog runs");
        assert_eq!(clean_text("a\u{a0}b\u{2009}c\u{3000}d"), "a b c d");
        assert_eq!(clean_text(" \t\u{a0} "), "");
    }

    #[test]
    fn html_entities_are_unescaped_repeatedly() {
        assert_eq!(clean_text("Fish &amp; Chips"), "fish & chips");
        assert_eq!(clean_text("a &amp;amp;amp;amp; b"), "a & b");
        assert_eq!(clean_text("it&#39;s &quot;ok&quot;"), "it's \"ok\"");
        // With markup ftfy leaves entities alone; html.unescape twice still runs.
        assert_eq!(clean_text("<b> &amp;amp;amp;"), "<b> &amp;");
    }

    #[test]
    fn ftfy_subset() {
        assert_eq!(clean_text("\u{201c}Don\u{2019}t\u{201d}"), "\"don't\"");
        assert_eq!(clean_text("ﬁne ﬂower oﬃce"), "fine flower office");
        assert_eq!(clean_text("ＦＵＬＬ　ｗｉｄｔｈ！"), "full width!");
        assert_eq!(clean_text("bo\u{feff}m\u{7}b"), "bomb");
        // NFD "é" becomes the single NFC code point.
        assert_eq!(clean_text("cafe\u{301}"), "caf\u{e9}");
        // A ligature produced by an entity is fixed in the next round, as in ftfy.
        assert_eq!(clean_text("&#64257;sh"), "fish");
    }
}
