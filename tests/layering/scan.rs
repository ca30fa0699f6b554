//! A small hand-written scanner of Rust source text: enough of a tokenizer to skip
//! comments, strings and characters, and enough of a parser to find every path that leaves
//! the file's own module (`use crate::…`, grouped and nested `use` trees, inline
//! `crate::x::y`, `super::…`, `self::…`, `$crate::…`, and in `main.rs` `troika::…`).
//!
//! Items under `#[cfg(test)]` are skipped, and a `#[cfg(test)] mod x;` marks the file of
//! `x` as test-only. Comments are kept by line so that an import can carry a `cycle:`
//! explanation.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    PathSep,
    Arrow,
    Punct(char),
    Literal,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

/// The tokens of a file, and the text of its comments by line (1-based).
pub struct Lexed {
    pub tokens: Vec<Token>,
    pub comments: BTreeMap<usize, String>,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: usize,
    out: Lexed,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn push(&mut self, tok: Tok, line: usize) {
        self.out.tokens.push(Token { tok, line });
    }

    fn comment(&mut self, line: usize, text: &str) {
        let entry = self.out.comments.entry(line).or_default();
        entry.push_str(text);
        entry.push(' ');
    }

    fn line_comment(&mut self) {
        let line = self.line;
        let mut text = String::new();
        while let Some(c) = self.peek(0) {
            if c == '\n' {
                break;
            }
            text.push(c);
            self.bump();
        }
        self.comment(line, &text);
    }

    fn block_comment(&mut self) {
        let line = self.line;
        let mut text = String::new();
        let mut nesting = 0usize;
        while let Some(c) = self.bump() {
            text.push(c);
            if c == '/' && self.peek(0) == Some('*') {
                self.bump();
                nesting += 1;
            } else if c == '*' && self.peek(0) == Some('/') {
                self.bump();
                nesting -= 1;
                if nesting == 0 {
                    break;
                }
            }
        }
        self.comment(line, &text);
    }

    /// A `"…"` string with escapes; the opening quote is next.
    fn string(&mut self) {
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.bump();
                }
                '"' => return,
                _ => {}
            }
        }
    }

    /// `r"…"`, `r#"…"#`: the `r` is consumed, hashes and quote are next.
    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            self.bump();
            hashes += 1;
        }
        self.bump();
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|k| self.peek(k) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                return;
            }
        }
    }

    /// A character literal or a lifetime; the `'` is next.
    fn quote(&mut self) {
        self.bump();
        if self.peek(0) == Some('\\') {
            while let Some(c) = self.bump() {
                if c == '\\' {
                    self.bump();
                } else if c == '\'' {
                    return;
                }
            }
        } else if self.peek(1) == Some('\'') {
            self.bump();
            self.bump();
        } else {
            while self.peek(0).is_some_and(is_ident_char) {
                self.bump();
            }
        }
    }

    fn ident_or_prefixed_literal(&mut self) {
        let line = self.line;
        let mut word = String::new();
        while let Some(c) = self.peek(0).filter(|&c| is_ident_char(c)) {
            word.push(c);
            self.bump();
        }
        let next = self.peek(0);
        match (word.as_str(), next) {
            ("r" | "br" | "cr", Some('"')) => self.raw_string(),
            ("r" | "br" | "cr", Some('#')) if matches!(self.peek(1), Some('#' | '"')) => {
                self.raw_string()
            }
            ("r", Some('#')) => {
                self.bump();
                return self.ident_or_prefixed_literal();
            }
            ("b" | "c", Some('"')) => self.string(),
            ("b", Some('\'')) => self.quote(),
            _ => return self.push(Tok::Ident(word), line),
        }
        self.push(Tok::Literal, line);
    }

    fn number(&mut self) {
        let line = self.line;
        while let Some(c) = self.peek(0) {
            let decimal_point = c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit());
            if !(is_ident_char(c) || decimal_point) {
                break;
            }
            self.bump();
        }
        self.push(Tok::Literal, line);
    }

    fn run(mut self) -> Lexed {
        while let Some(c) = self.peek(0) {
            let line = self.line;
            match (c, self.peek(1)) {
                (c, _) if c.is_whitespace() => {
                    self.bump();
                }
                ('/', Some('/')) => self.line_comment(),
                ('/', Some('*')) => self.block_comment(),
                ('"', _) => {
                    self.string();
                    self.push(Tok::Literal, line);
                }
                ('\'', _) => {
                    self.quote();
                    self.push(Tok::Literal, line);
                }
                (c, _) if c.is_ascii_digit() => self.number(),
                (c, _) if is_ident_start(c) => self.ident_or_prefixed_literal(),
                (':', Some(':')) => {
                    self.bump();
                    self.bump();
                    self.push(Tok::PathSep, line);
                }
                ('-' | '=', Some('>')) => {
                    self.bump();
                    self.bump();
                    self.push(Tok::Arrow, line);
                }
                (c, _) => {
                    self.bump();
                    self.push(Tok::Punct(c), line);
                }
            }
        }
        self.out
    }
}

pub fn lex(source: &str) -> Lexed {
    Lexer {
        chars: source.chars().collect(),
        at: 0,
        line: 1,
        out: Lexed {
            tokens: Vec::new(),
            comments: BTreeMap::new(),
        },
    }
    .run()
}

/// One path in a file that may leave its module, as written (not yet resolved).
#[derive(Clone, Debug)]
pub struct RawRef {
    /// The module the path is written in: the file's module and any inline `mod x { … }`.
    pub from: Vec<String>,
    /// The path's segments as written (`super`, `crate`, `self` included).
    pub path: Vec<String>,
    /// Whether a first segment that names no keyword may be a child module (a `use`).
    pub in_use: bool,
    /// The line of the path's last segment, and of the start of its statement.
    pub line: usize,
    pub statement_line: usize,
}

/// What a file says about modules: its references, the `#[cfg(test)] mod x;` children
/// it declares, the inline modules it opens, and the macros it exports at the crate root.
#[derive(Default, Debug)]
pub struct FileScan {
    pub refs: Vec<RawRef>,
    pub test_children: Vec<Vec<String>>,
    pub inline_modules: Vec<Vec<String>>,
    pub exported_macros: Vec<String>,
    /// `#![cfg(test)]` at the top: the whole file is test-only.
    pub test_only: bool,
}

struct Parser<'a> {
    toks: &'a [Token],
    at: usize,
    module: Vec<String>,
    /// Inline modules open at this point, with the brace depth inside each.
    inline: Vec<(String, usize)>,
    depth: usize,
    crate_alias: &'a str,
    out: FileScan,
}

impl<'a> Parser<'a> {
    fn tok(&self, ahead: usize) -> Option<&'a Tok> {
        self.toks.get(self.at + ahead).map(|t| &t.tok)
    }

    fn is_ident(&self, ahead: usize, word: &str) -> bool {
        matches!(self.tok(ahead), Some(Tok::Ident(w)) if w == word)
    }

    fn is_punct(&self, ahead: usize, c: char) -> bool {
        self.tok(ahead) == Some(&Tok::Punct(c))
    }

    fn line(&self) -> usize {
        self.toks
            .get(self.at)
            .or(self.toks.last())
            .map_or(0, |t| t.line)
    }

    fn current_module(&self) -> Vec<String> {
        let mut module = self.module.clone();
        module.extend(self.inline.iter().map(|(name, _)| name.clone()));
        module
    }

    /// Skips from an opening bracket to just past its matching close.
    fn skip_group(&mut self) {
        let mut depth = 0usize;
        while let Some(tok) = self.tok(0) {
            self.at += 1;
            match tok {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads `#[…]` or `#![…]` at the cursor; returns its inner tokens.
    fn attribute(&mut self) -> Vec<Tok> {
        let start = self.at + if self.is_punct(1, '!') { 2 } else { 1 };
        self.at = start;
        self.skip_group();
        let end = self.at.saturating_sub(1);
        self.toks[(start + 1).min(end)..end]
            .iter()
            .map(|t| t.tok.clone())
            .collect()
    }

    fn skip_attributes(&mut self) {
        while self.is_punct(0, '#') && (self.is_punct(1, '[') || self.is_punct(1, '!')) {
            self.attribute();
        }
    }

    fn skip_visibility(&mut self) {
        if self.is_ident(0, "pub") {
            self.at += 1;
            if self.is_punct(0, '(') {
                self.skip_group();
            }
        }
    }

    /// Skips the item, statement, field or expression after a `#[cfg(test)]`.
    fn skip_test_item(&mut self) {
        self.skip_attributes();
        let start = self.at;
        self.skip_visibility();
        if self.is_ident(0, "mod") && self.is_punct(2, ';') {
            if let Some(Tok::Ident(name)) = self.tok(1) {
                let mut child = self.current_module();
                child.push(name.clone());
                self.out.test_children.push(child);
            }
            self.at += 3;
            return;
        }
        self.at = start;
        let keyword_item = matches!(self.tok(0), Some(Tok::Ident(w)) if matches!(w.as_str(),
            "pub" | "fn" | "struct" | "enum" | "impl" | "mod" | "use" | "const" | "static"
            | "type" | "trait" | "unsafe" | "async" | "let" | "extern" | "macro_rules"));
        let (mut depth, mut angle) = (0usize, 0usize);
        while let Some(tok) = self.tok(0) {
            match tok {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') if depth == 0 => return,
                Tok::Punct(')' | ']') => depth -= 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 && !self.is_ident(1, "else") {
                        self.at += 1;
                        return;
                    }
                }
                Tok::Punct('<') => angle += 1,
                Tok::Punct('>') => angle = angle.saturating_sub(1),
                Tok::Punct(';') if depth == 0 => {
                    self.at += 1;
                    return;
                }
                Tok::Punct(',') if depth == 0 && angle == 0 && !keyword_item => {
                    self.at += 1;
                    return;
                }
                _ => {}
            }
            self.at += 1;
        }
    }

    /// Reads a path `a::b::c` from the cursor (which is on its first segment); stops before
    /// a `::{`, `::*` or `::<`, leaving the cursor on that `::`.
    fn path_segments(&mut self) -> Vec<String> {
        let mut segments = Vec::new();
        while let Some(Tok::Ident(word)) = self.tok(0) {
            segments.push(word.clone());
            self.at += 1;
            if self.tok(0) == Some(&Tok::PathSep) && matches!(self.tok(1), Some(Tok::Ident(_))) {
                self.at += 1;
            } else {
                break;
            }
        }
        segments
    }

    fn record(&mut self, path: Vec<String>, in_use: bool, line: usize, statement_line: usize) {
        if path.is_empty() {
            return;
        }
        let from = self.current_module();
        self.out.refs.push(RawRef {
            from,
            path,
            in_use,
            line,
            statement_line,
        });
    }

    /// One use tree after `prefix` (`a::b`, `a::{…}`, `*`, `{…}`, `a as b`).
    fn use_tree(&mut self, prefix: &[String], statement_line: usize) {
        if self.tok(0) == Some(&Tok::PathSep) {
            self.at += 1;
        }
        if self.is_punct(0, '$') {
            self.at += 1;
        }
        if self.is_punct(0, '{') {
            self.at += 1;
            while let Some(tok) = self.tok(0) {
                match tok {
                    Tok::Punct('}') => {
                        self.at += 1;
                        return;
                    }
                    Tok::Punct(',') => self.at += 1,
                    _ => {
                        let before = self.at;
                        self.use_tree(prefix, statement_line);
                        if self.at == before {
                            self.at += 1;
                        }
                    }
                }
            }
            return;
        }
        if self.is_punct(0, '*') {
            let line = self.line();
            self.at += 1;
            return self.record(prefix.to_vec(), true, line, statement_line);
        }
        let mut path = prefix.to_vec();
        path.extend(self.path_segments());
        let line = self.toks[self.at.saturating_sub(1)].line;
        if self.tok(0) == Some(&Tok::PathSep) {
            self.at += 1;
            return self.use_tree(&path, statement_line);
        }
        if self.is_ident(0, "as") {
            self.at += 2;
        }
        if path.last().is_some_and(|s| s == "self") {
            path.pop();
        }
        self.record(path, true, line, statement_line);
    }

    fn use_statement(&mut self) {
        let statement_line = self.line();
        self.at += 1;
        self.use_tree(&[], statement_line);
        while let Some(tok) = self.tok(0) {
            self.at += 1;
            if tok == &Tok::Punct(';') {
                break;
            }
        }
    }

    fn inline_path(&mut self) {
        let statement_line = self.line();
        let segments = self.path_segments();
        let line = self.toks[self.at.saturating_sub(1)].line;
        self.record(segments, false, line, statement_line);
    }

    fn starts_inline_path(&self) -> bool {
        let after_sep = self.at > 0 && self.toks[self.at - 1].tok == Tok::PathSep;
        let keyword = matches!(self.tok(0), Some(Tok::Ident(w))
            if w == "crate" || w == "super" || w == "self" || w == self.crate_alias);
        !after_sep && keyword && self.tok(1) == Some(&Tok::PathSep)
    }

    fn run(mut self) -> FileScan {
        while let Some(tok) = self.tok(0) {
            match tok {
                Tok::Punct('#') if self.is_punct(1, '[') || self.is_punct(1, '!') => {
                    let inner_attr = self.is_punct(1, '!');
                    let attr = self.attribute();
                    let cfg_test = attr
                        == [
                            Tok::Ident("cfg".into()),
                            Tok::Punct('('),
                            Tok::Ident("test".into()),
                            Tok::Punct(')'),
                        ];
                    if cfg_test && inner_attr && self.depth == 0 {
                        self.out.test_only = true;
                        return self.out;
                    } else if cfg_test {
                        self.skip_test_item();
                    } else if attr == [Tok::Ident("macro_export".into())] {
                        self.skip_attributes();
                        if self.is_ident(0, "macro_rules")
                            && let Some(Tok::Ident(name)) = self.tok(2)
                        {
                            self.out.exported_macros.push(name.clone());
                        }
                    }
                }
                Tok::Ident(w) if w == "pub" => self.skip_visibility(),
                Tok::Ident(w) if w == "use" => self.use_statement(),
                Tok::Ident(w) if w == "mod" && self.is_punct(2, '{') => {
                    if let Some(Tok::Ident(name)) = self.tok(1) {
                        let name = name.clone();
                        self.depth += 1;
                        self.inline.push((name, self.depth));
                        self.out.inline_modules.push(self.current_module());
                    }
                    self.at += 3;
                }
                Tok::Punct('{') => {
                    self.depth += 1;
                    self.at += 1;
                }
                Tok::Punct('}') => {
                    if self.inline.last().is_some_and(|&(_, d)| d == self.depth) {
                        self.inline.pop();
                    }
                    self.depth = self.depth.saturating_sub(1);
                    self.at += 1;
                }
                Tok::Punct('$') if self.is_ident(1, "crate") => self.at += 1,
                _ if self.starts_inline_path() => self.inline_path(),
                _ => self.at += 1,
            }
        }
        self.out
    }
}

/// Scans one file whose module path is `module`. `crate_alias` is the name that means
/// the library crate in this file besides `crate` (`troika` in `main.rs`).
pub fn scan(lexed: &Lexed, module: Vec<String>, crate_alias: &str) -> FileScan {
    Parser {
        toks: &lexed.tokens,
        at: 0,
        module,
        inline: Vec::new(),
        depth: 0,
        crate_alias,
        out: FileScan::default(),
    }
    .run()
}
