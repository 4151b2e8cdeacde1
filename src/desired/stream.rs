//! The desired-state file read in one pass over toml_parser's token stream, for a file
//! laid out plainly (as `init`, `import` and most hands write it): blank and comment
//! lines; the headers `[postfix]`, `[relayhost]` (each at most once) and `[[sender]]`,
//! spelt exactly so; under each, `key = value` lines with a bare key the table knows
//! and a value of the type it takes. Each table goes to the entry checks as soon as it
//! ends, so the text is never held a second time as a document tree (toml's tree of a
//! 100,000-sender file is about 20 times the file), and lines come from the tokens'
//! offsets.
//!
//! Anything else (a syntax error, an unknown or repeated key, a value of another type,
//! another spelling of a header, dotted or quoted keys, arrays, inline tables, keys at
//! the top level) makes [`parse`] give up, and the caller parses the file as a whole
//! with `raw`, whose messages are toml's own. So a file this accepts means what toml
//! reads in it (the tokens are toml's, and strings are decoded by toml's decoder), and
//! every error is reported exactly as before.

use std::borrow::Cow;
use std::iter::Peekable;

use toml::Spanned;
use toml_parser::lexer::{Lexer, Token, TokenKind};

use super::Source;
use super::entries::{Checker, Parts};
use super::raw::{RawPassword, RawPostfix, RawRelayHost, RawSender};
use crate::problems::Problems;

/// The entries of `source` checked, with the problems found; `None` when the file is
/// not laid out plainly (see the module's documentation).
pub(super) fn parse(source: &Source) -> Option<(Parts, Problems)> {
    // Whether there is a `[relayhost]` changes what is said of senders without a relay,
    // which may come before it: a guess from the text, and a second pass if it was wrong
    // (the words in a comment or a string).
    let guess = source.text.contains("[relayhost]");
    let (parts, problems, has_relayhost) = pass(source, guess)?;
    if has_relayhost == guess {
        return Some((parts, problems));
    }
    let (parts, problems, _) = pass(source, has_relayhost)?;
    Some((parts, problems))
}

/// The table being read.
enum Table {
    /// Before the first header: no keys.
    Root,
    Postfix(RawPostfix),
    Relayhost(Spanned<RawRelayHost>),
    Sender(Spanned<RawSender>),
}

/// One pass, checking senders as if the file had a `[relayhost]` or not; also returns
/// whether it has one.
fn pass(source: &Source, has_relayhost: bool) -> Option<(Parts, Problems, bool)> {
    let mut problems = Problems::new(source.path);
    // Room for every sender at once: growing the list would copy it, twice its size.
    // (Lines that start with `[[sender]]`, found as one string: faster than line by line.)
    let text = source.text;
    let capacity =
        text.matches("\n[[sender]]").count() + usize::from(text.starts_with("[[sender]]"));
    let mut checker = Checker::new(source, &mut problems, has_relayhost, capacity);
    let mut tokens = Tokens::new(source.text);
    let mut table = Table::Root;
    let (mut postfix, mut relayhost, mut senders) = (false, false, false);
    loop {
        tokens.skip_whitespace();
        let token = tokens.next()?;
        match token.kind() {
            TokenKind::Eof => break,
            TokenKind::Newline => tokens.newline(token)?,
            TokenKind::Comment => {
                tokens.comment(token)?;
                tokens.end_of_line()?;
            }
            TokenKind::LeftSquareBracket => {
                let header = tokens.header(token)?;
                tokens.end_of_line()?;
                let next = match header {
                    Header::Postfix if !postfix => {
                        postfix = true;
                        Table::Postfix(RawPostfix::default())
                    }
                    Header::Relayhost(span) if !relayhost => {
                        relayhost = true;
                        Table::Relayhost(Spanned::new(span, RawRelayHost::default()))
                    }
                    Header::Sender(span) => {
                        senders = true;
                        Table::Sender(Spanned::new(span, RawSender::default()))
                    }
                    // Defined twice: toml's error.
                    Header::Postfix | Header::Relayhost(_) => return None,
                };
                finish(std::mem::replace(&mut table, next), &mut checker);
            }
            TokenKind::Atom => {
                tokens.key_value(token, &mut table)?;
                tokens.end_of_line()?;
            }
            _ => return None,
        }
    }
    finish(table, &mut checker);
    let parts = checker.finish(senders);
    Some((parts, problems, relayhost))
}

/// Hands a table that ended to the entry checks.
fn finish(table: Table, checker: &mut Checker) {
    match table {
        Table::Root => {}
        Table::Postfix(pf) => checker.postfix(pf),
        Table::Relayhost(rh) => checker.relayhost(rh),
        Table::Sender(s) => checker.sender(s),
    }
}

/// A table header, with its span for a table whose line is reported.
enum Header {
    Postfix,
    Relayhost(std::ops::Range<usize>),
    Sender(std::ops::Range<usize>),
}

/// A value as the fields take it.
enum Value {
    String(Spanned<String>),
    Bool(Spanned<bool>),
}

/// Sets `field` unless a value of another type or a second one is given for it.
fn set<T>(field: &mut Option<T>, value: Option<T>) -> Option<()> {
    match (field.is_some(), value) {
        (false, Some(v)) => {
            *field = Some(v);
            Some(())
        }
        _ => None,
    }
}

fn string(v: Value) -> Option<Spanned<String>> {
    match v {
        Value::String(s) => Some(s),
        Value::Bool(_) => None,
    }
}

fn boolean(v: Value) -> Option<Spanned<bool>> {
    match v {
        Value::Bool(b) => Some(b),
        Value::String(_) => None,
    }
}

fn password(v: Value) -> Option<Spanned<RawPassword>> {
    let s = string(v)?;
    let span = s.span();
    Some(Spanned::new(span, RawPassword(s.into_inner())))
}

/// toml_parser's tokens of the whole text, one at a time.
struct Tokens<'i> {
    toml: toml_parser::Source<'i>,
    lexer: Peekable<Lexer<'i>>,
}

impl<'i> Tokens<'i> {
    fn new(text: &'i str) -> Tokens<'i> {
        let toml = toml_parser::Source::new(text);
        Tokens {
            toml,
            lexer: toml.lex().peekable(),
        }
    }

    fn next(&mut self) -> Option<Token> {
        self.lexer.next()
    }

    fn next_is(&mut self, kind: TokenKind) -> Option<Token> {
        self.lexer.next_if(|t| t.kind() == kind)
    }

    fn skip_whitespace(&mut self) {
        self.next_is(TokenKind::Whitespace);
    }

    /// The text of a token (sliced here: toml_parser's `get` is not inlined, and this is
    /// called for most tokens).
    fn text(&self, token: Token) -> &'i str {
        let span = token.span();
        self.toml
            .input()
            .get(span.start()..span.end())
            .unwrap_or_default()
    }

    /// A newline token as toml checks it (a lone carriage return is an error).
    fn newline(&self, token: Token) -> Option<()> {
        // The common case, which needs no check.
        if self.text(token) == "\n" {
            return Some(());
        }
        let mut ok = true;
        self.toml
            .get(token.span())?
            .decode_newline(&mut |_| ok = false);
        ok.then_some(())
    }

    /// A comment as toml checks it (no control characters).
    fn comment(&self, token: Token) -> Option<()> {
        let mut ok = true;
        self.toml
            .get(token.span())?
            .decode_comment(&mut |_| ok = false);
        ok.then_some(())
    }

    /// What may end a line: whitespace, a comment, then a newline or the end (left for
    /// the caller to see).
    fn end_of_line(&mut self) -> Option<()> {
        self.skip_whitespace();
        if let Some(c) = self.next_is(TokenKind::Comment) {
            self.comment(c)?;
        }
        if let Some(nl) = self.next_is(TokenKind::Newline) {
            return self.newline(nl);
        }
        // The end of the text, which `pass` reads next.
        self.lexer
            .peek()
            .is_some_and(|t| t.kind() == TokenKind::Eof)
            .then_some(())
    }

    /// `[postfix]`, `[relayhost]` or `[[sender]]`, from the first `[`.
    fn header(&mut self, open: Token) -> Option<Header> {
        let array = self.next_is(TokenKind::LeftSquareBracket).is_some();
        let name = self.next_is(TokenKind::Atom)?;
        let name = self.text(name);
        let mut close = self.next_is(TokenKind::RightSquareBracket)?;
        if array {
            close = self.next_is(TokenKind::RightSquareBracket)?;
        }
        let span = open.span().start()..close.span().end();
        match (array, name) {
            (false, "postfix") => Some(Header::Postfix),
            (false, "relayhost") => Some(Header::Relayhost(span)),
            (true, "sender") => Some(Header::Sender(span)),
            _ => None,
        }
    }

    /// `key = value` into the table, from the key.
    fn key_value(&mut self, key: Token, table: &mut Table) -> Option<()> {
        let key = self.text(key);
        self.skip_whitespace();
        self.next_is(TokenKind::Equals)?;
        self.skip_whitespace();
        let value = self.value()?;
        match table {
            Table::Root => None,
            Table::Postfix(pf) => match key {
                "config_dir" => set(&mut pf.config_dir, string(value)),
                "map_type" => set(&mut pf.map_type, string(value)),
                _ => None,
            },
            Table::Relayhost(rh) => {
                let rh = rh.get_mut();
                match key {
                    "relay" => set(&mut rh.relay, string(value)),
                    "username" => set(&mut rh.username, string(value)),
                    "password" => set(&mut rh.password, password(value)),
                    "password_file" => set(&mut rh.password_file, string(value)),
                    "tls" => set(&mut rh.tls, string(value)),
                    "accept_cleartext" => set(&mut rh.accept_cleartext, boolean(value)),
                    "provider" => set(&mut rh.provider, string(value)),
                    "region" => set(&mut rh.region, string(value)),
                    "secret_access_key_file" => set(&mut rh.secret_access_key_file, string(value)),
                    _ => None,
                }
            }
            Table::Sender(s) => {
                let s = s.get_mut();
                match key {
                    "domain" => set(&mut s.domain, string(value)),
                    "address" => set(&mut s.address, string(value)),
                    "relay" => set(&mut s.relay, string(value)),
                    "username" => set(&mut s.username, string(value)),
                    "password" => set(&mut s.password, password(value)),
                    "password_file" => set(&mut s.password_file, string(value)),
                    "tls" => set(&mut s.tls, string(value)),
                    "accept_cleartext" => set(&mut s.accept_cleartext, boolean(value)),
                    "provider" => set(&mut s.provider, string(value)),
                    "region" => set(&mut s.region, string(value)),
                    "secret_access_key_file" => set(&mut s.secret_access_key_file, string(value)),
                    _ => None,
                }
            }
        }
    }

    /// A string (any of TOML's four kinds, decoded by toml's decoder) or `true`/`false`.
    fn value(&mut self) -> Option<Value> {
        let token = self.next()?;
        let span = token.span().start()..token.span().end();
        match token.kind() {
            // The common case without a decoder: one-line, no escape, no character TOML
            // forbids in it (controls other than tab). The rest goes through toml's.
            TokenKind::BasicString | TokenKind::LiteralString
                if plain(self.text(token)).is_some() =>
            {
                let inner = plain(self.text(token))?;
                Some(Value::String(Spanned::new(span, inner.to_owned())))
            }
            TokenKind::BasicString
            | TokenKind::LiteralString
            | TokenKind::MlBasicString
            | TokenKind::MlLiteralString => {
                let raw = self.toml.get(token)?;
                let mut decoded = Cow::Borrowed("");
                let mut ok = true;
                let kind = raw.decode_scalar(&mut decoded, &mut |_| ok = false);
                (ok && kind == toml_parser::decoder::ScalarKind::String).then_some(())?;
                Some(Value::String(Spanned::new(span, decoded.into_owned())))
            }
            TokenKind::Atom => match self.text(token) {
                "true" => Some(Value::Bool(Spanned::new(span, true))),
                "false" => Some(Value::Bool(Spanned::new(span, false))),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The text of a one-line string token (`"..."` or `'...'`) that needs no decoding:
/// no backslash, and no control character but tab.
fn plain(token: &str) -> Option<&str> {
    let bytes = token.as_bytes();
    let quote = *bytes.first()?;
    let closed = bytes.len() >= 2 && bytes[bytes.len() - 1] == quote;
    let inner = &token[1..token.len().saturating_sub(1).max(1)];
    let needs_decoding =
        |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f || (quote == b'"' && b == b'\\');
    (closed && !inner.bytes().any(needs_decoding)).then_some(inner)
}

#[cfg(test)]
mod tests;
