//! The `--filter` expression of `golemw worker list`: the filters of `golem:api/host`'s
//! `get-workers`, written as text and turned into any-of-all-of form.
//!
//! ```text
//! expr       := and-expr ("or" and-expr)*
//! and-expr   := primary ("and" primary)*
//! primary    := "(" expr ")" | condition
//! condition  := "name" str-op value
//!             | "env." VAR str-op value
//!             | ("status" | "version" | "created-at") op value
//! str-op     := "==" | "=" | "!=" | "like" | "not like"
//! op         := "==" | "=" | "!=" | ">=" | ">" | "<=" | "<"
//! value      := 'quoted' | "quoted" | bare-word
//! ```
//!
//! `and` binds tighter than `or`; keywords are case-insensitive. Parentheses are expanded into
//! the any-of-all-of form the API takes (`a and (b or c)` becomes `a and b or a and c`).

use std::fmt;

use golemw_runtime::worker_filter::{
    status_from_name, AllFilter, Comparator, PropertyFilter, StringComparator, WorkerFilter,
    ALL_STATUSES,
};

/// The most all-filters an expression may expand to.
const MAX_ALTERNATIVES: usize = 1024;
/// The longest expression accepted, in characters: far past any a person writes (the example
/// of `--help` is 60), and it bounds the parser's work on input a client controls.
pub const MAX_FILTER_CHARS: usize = 4096;
/// The deepest nesting of parentheses accepted. The parser recurses once per level; without a
/// bound, a query string of a few thousand `(` overflowed the server's stack and aborted it.
pub const MAX_NESTING: usize = 32;

/// A syntax or type error, at a character column of the expression (0-based).
#[derive(Debug, PartialEq, Eq)]
pub struct FilterError {
    pub message: String,
    pub column: usize,
    pub expression: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid --filter expression: {} (at column {})",
            self.message,
            self.column + 1
        )?;
        writeln!(f, "  {}", self.expression)?;
        write!(f, "  {}^", " ".repeat(self.column))
    }
}

impl std::error::Error for FilterError {}

/// Parses a `--filter` expression.
pub fn parse(expression: &str) -> Result<WorkerFilter, FilterError> {
    let error = |message: String, column: usize| FilterError {
        message,
        column,
        expression: expression.to_string(),
    };
    let length = expression.chars().count();
    if length > MAX_FILTER_CHARS {
        return Err(error(
            format!("the expression is {length} characters long; at most {MAX_FILTER_CHARS} are accepted"),
            MAX_FILTER_CHARS,
        ));
    }
    let tokens = lex(expression).map_err(|(m, c)| error(m, c))?;
    let end = expression.chars().count();
    let mut parser = Parser {
        tokens,
        pos: 0,
        end,
        depth: 0,
    };
    if parser.tokens.is_empty() {
        return Err(error(
            "the expression is empty; write conditions such as `name like 'acc-%'`".into(),
            0,
        ));
    }
    let expr = parser.expr().map_err(|(m, c)| error(m, c))?;
    if let Some(token) = parser.peek() {
        return Err(error(
            format!(
                "expected `and`, `or` or the end of the expression, found {}",
                token.describe()
            ),
            token.column,
        ));
    }
    let alternatives = expand(expr).map_err(|m| error(m, 0))?;
    Ok(WorkerFilter(
        alternatives.into_iter().map(AllFilter).collect(),
    ))
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Open,
    Close,
    Op(&'static str),
    Word(String),
    Quoted(String),
    /// `env.VAR`, with the variable name.
    Env(String),
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    column: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Open => "`(`".into(),
            Kind::Close => "`)`".into(),
            Kind::Op(op) => format!("`{op}`"),
            Kind::Word(w) => format!("`{w}`"),
            Kind::Quoted(q) => format!("'{q}'"),
            Kind::Env(v) => format!("`env.{v}`"),
        }
    }

    fn keyword(&self, keyword: &str) -> bool {
        matches!(&self.kind, Kind::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

type Failure = (String, usize);

fn lex(text: &str) -> Result<Vec<Token>, Failure> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let is_word_char = |c: char| !c.is_whitespace() && !"()'\"=!<>".contains(c);
    while i < chars.len() {
        let c = chars[i];
        let column = i;
        let push = |kind, tokens: &mut Vec<Token>| tokens.push(Token { kind, column });
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            push(Kind::Open, &mut tokens);
            i += 1;
        } else if c == ')' {
            push(Kind::Close, &mut tokens);
            i += 1;
        } else if "=!<>".contains(c) {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = match two.as_str() {
                "==" => "==",
                "!=" => "!=",
                ">=" => ">=",
                "<=" => "<=",
                "<>" => "!=",
                _ => match c {
                    '=' => "==",
                    '>' => ">",
                    '<' => "<",
                    _ => return Err(("`!` must be followed by `=`".into(), i)),
                },
            };
            i += if two == "==" || two == "!=" || two == ">=" || two == "<=" || two == "<>" {
                2
            } else {
                1
            };
            push(Kind::Op(op), &mut tokens);
        } else if c == '\'' || c == '"' {
            let (text, next) = quoted(&chars, i)?;
            push(Kind::Quoted(text), &mut tokens);
            i = next;
        } else {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if let Some(var) = word
                .strip_prefix("env.")
                .or_else(|| word.strip_prefix("ENV."))
            {
                let var = if var.is_empty() {
                    match chars.get(i) {
                        Some('\'' | '"') => {
                            let (text, next) = quoted(&chars, i)?;
                            i = next;
                            text
                        }
                        _ => {
                            return Err((
                                "`env.` must be followed by a variable name, e.g. env.REGION"
                                    .into(),
                                start,
                            ))
                        }
                    }
                } else {
                    var.to_string()
                };
                push(Kind::Env(var), &mut tokens);
            } else {
                push(Kind::Word(word), &mut tokens);
            }
        }
    }
    Ok(tokens)
}

/// A quoted string starting at `chars[start]`; returns it and the index after the closing
/// quote. `\'`, `\"` and `\\` are escapes; any other backslash is kept (it is a LIKE escape).
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), Failure> {
    let quote = chars[start];
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if matches!(chars.get(i + 1), Some('\\' | '\'' | '"')) => {
                out.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return Ok((out, i + 1)),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err((format!("unterminated string: no closing {quote}"), start))
}

enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Condition(PropertyFilter),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Column just past the end of the expression, for errors at the end.
    end: usize,
    /// Parentheses open at this point.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self, expected: &str) -> Result<Token, Failure> {
        match self.tokens.get(self.pos) {
            Some(token) => {
                self.pos += 1;
                Ok(token.clone())
            }
            None => Err((
                format!("expected {expected}, found the end of the expression"),
                self.end,
            )),
        }
    }

    fn expr(&mut self) -> Result<Expr, Failure> {
        let mut alternatives = vec![self.and_expr()?];
        while self.peek().is_some_and(|t| t.keyword("or")) {
            self.pos += 1;
            alternatives.push(self.and_expr()?);
        }
        Ok(if alternatives.len() == 1 {
            alternatives.pop().expect("one element")
        } else {
            Expr::Or(alternatives)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, Failure> {
        let mut conditions = vec![self.primary()?];
        while self.peek().is_some_and(|t| t.keyword("and")) {
            self.pos += 1;
            conditions.push(self.primary()?);
        }
        Ok(if conditions.len() == 1 {
            conditions.pop().expect("one element")
        } else {
            Expr::And(conditions)
        })
    }

    fn primary(&mut self) -> Result<Expr, Failure> {
        let token = self.next("a condition such as `name like 'acc-%'`")?;
        match &token.kind {
            Kind::Open => {
                if self.depth == MAX_NESTING {
                    return Err((
                        format!("parentheses nest deeper than {MAX_NESTING} levels"),
                        token.column,
                    ));
                }
                self.depth += 1;
                let inner = self.expr()?;
                self.depth -= 1;
                let close = self.next("`)`")?;
                if close.kind != Kind::Close {
                    return Err((
                        format!("expected `)`, found {}", close.describe()),
                        close.column,
                    ));
                }
                Ok(inner)
            }
            Kind::Env(var) => {
                let comparator = self.string_op(&format!("env.{var}"))?;
                let value = self.value()?;
                Ok(Expr::Condition(PropertyFilter::Env {
                    name: var.clone(),
                    comparator,
                    value: value.0,
                }))
            }
            Kind::Word(word) => match word.to_ascii_lowercase().as_str() {
                "name" => {
                    let comparator = self.string_op("name")?;
                    let value = self.value()?;
                    Ok(Expr::Condition(PropertyFilter::Name {
                        comparator,
                        value: value.0,
                    }))
                }
                "status" => {
                    let comparator = self.op("status")?;
                    let (value, column) = self.value()?;
                    let status =
                        status_from_name(&value.to_ascii_lowercase()).ok_or_else(|| {
                            (
                                format!(
                                    "unknown status `{value}`; the statuses are {}",
                                    ALL_STATUSES.map(|s| s.as_str()).join(", ")
                                ),
                                column,
                            )
                        })?;
                    Ok(Expr::Condition(PropertyFilter::Status {
                        comparator,
                        value: status,
                    }))
                }
                "version" => {
                    let comparator = self.op("version")?;
                    let (value, column) = self.value()?;
                    let value = value.parse::<u64>().map_err(|_| {
                        (
                            format!(
                                "a version is a non-negative integer (0, 1, 2, ...), not `{value}`"
                            ),
                            column,
                        )
                    })?;
                    Ok(Expr::Condition(PropertyFilter::Version {
                        comparator,
                        value,
                    }))
                }
                "created-at" | "created_at" | "created" => {
                    let comparator = self.op("created-at")?;
                    let (value, column) = self.value()?;
                    let value = parse_time(&value).ok_or_else(|| {
                        (
                            format!(
                                "created-at takes milliseconds since the Unix epoch or a UTC \
                                 date such as 2024-05-01 or 2024-05-01T12:30:00Z, not `{value}`"
                            ),
                            column,
                        )
                    })?;
                    Ok(Expr::Condition(PropertyFilter::CreatedAt {
                        comparator,
                        value,
                    }))
                }
                _ => Err(unknown_field(&token)),
            },
            _ => Err(unknown_field(&token)),
        }
    }

    fn string_op(&mut self, field: &str) -> Result<StringComparator, Failure> {
        let expected = "==, !=, like or not like";
        let token = self.next(&format!("an operator after `{field}` ({expected})"))?;
        let op = match &token.kind {
            Kind::Op("==") => StringComparator::Equal,
            Kind::Op("!=") => StringComparator::NotEqual,
            _ if token.keyword("like") => StringComparator::Like,
            _ if token.keyword("not") => {
                let like = self.next("`like` after `not`")?;
                if !like.keyword("like") {
                    return Err((
                        format!("expected `like` after `not`, found {}", like.describe()),
                        like.column,
                    ));
                }
                StringComparator::NotLike
            }
            _ => {
                return Err((
                    format!(
                        "`{field}` is compared with {expected}, found {}",
                        token.describe()
                    ),
                    token.column,
                ))
            }
        };
        Ok(op)
    }

    fn op(&mut self, field: &str) -> Result<Comparator, Failure> {
        let expected = "==, !=, <, <=, > or >=";
        let token = self.next(&format!("an operator after `{field}` ({expected})"))?;
        Ok(match &token.kind {
            Kind::Op("==") => Comparator::Equal,
            Kind::Op("!=") => Comparator::NotEqual,
            Kind::Op(">=") => Comparator::GreaterEqual,
            Kind::Op(">") => Comparator::Greater,
            Kind::Op("<=") => Comparator::LessEqual,
            Kind::Op("<") => Comparator::Less,
            _ => {
                return Err((
                    format!(
                        "`{field}` is compared with {expected}, found {}",
                        token.describe()
                    ),
                    token.column,
                ))
            }
        })
    }

    fn value(&mut self) -> Result<(String, usize), Failure> {
        let token = self.next("a value")?;
        match token.kind {
            Kind::Word(w) => Ok((w, token.column)),
            Kind::Quoted(q) => Ok((q, token.column)),
            _ => Err((
                format!("expected a value, found {}", token.describe()),
                token.column,
            )),
        }
    }
}

fn unknown_field(token: &Token) -> Failure {
    (
        format!(
            "expected a condition on name, status, version, created-at or env.VAR, found {}",
            token.describe()
        ),
        token.column,
    )
}

/// Expands an expression into any-of-all-of form.
fn expand(expr: Expr) -> Result<Vec<Vec<PropertyFilter>>, String> {
    Ok(match expr {
        Expr::Condition(c) => vec![vec![c]],
        Expr::Or(alternatives) => {
            let mut out = Vec::new();
            for a in alternatives {
                out.extend(expand(a)?);
            }
            out
        }
        Expr::And(conditions) => {
            let mut out: Vec<Vec<PropertyFilter>> = vec![vec![]];
            for c in conditions {
                let alternatives = expand(c)?;
                if out.len() * alternatives.len() > MAX_ALTERNATIVES {
                    return Err(format!(
                        "the expression expands to more than {MAX_ALTERNATIVES} alternatives \
                         (each `and` of parenthesised `or`s multiplies them); simplify it"
                    ));
                }
                out = out
                    .iter()
                    .flat_map(|prefix| {
                        alternatives.iter().map(move |alt| {
                            let mut all = prefix.clone();
                            all.extend(alt.iter().cloned());
                            all
                        })
                    })
                    .collect();
            }
            out
        }
    })
}

/// Milliseconds since the epoch, or a UTC date `YYYY-MM-DD` with an optional
/// `THH:MM[:SS[.fff]]` and an optional `Z`.
fn parse_time(text: &str) -> Option<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Some(ms);
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    // Four-digit years: a client's `created-at < 2000000030-01-01` once overflowed the
    // arithmetic below (a panic in a debug build, a wrong date in a release one).
    if parts.next().is_some()
        || !(0..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let mut ms = 0u64;
    if let Some(time) = time {
        let (hms, fraction) = match time.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (time, None),
        };
        let fields: Vec<&str> = hms.split(':').collect();
        if !(2..=3).contains(&fields.len()) {
            return None;
        }
        let h: u64 = fields[0].parse().ok()?;
        let m: u64 = fields[1].parse().ok()?;
        let s: u64 = fields.get(2).map_or(Some(0), |s| s.parse().ok())?;
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        ms = (h * 3600 + m * 60 + s) * 1000;
        if let Some(f) = fraction {
            if f.is_empty() || f.len() > 3 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            ms += format!("{f:0<3}").parse::<u64>().ok()?;
        }
    }
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .and_then(|d| d.checked_mul(86_400_000)?.checked_add(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use golemw_runtime::WorkerStatus;

    fn name(comparator: StringComparator, value: &str) -> PropertyFilter {
        PropertyFilter::Name {
            comparator,
            value: value.into(),
        }
    }

    fn status(comparator: Comparator, value: WorkerStatus) -> PropertyFilter {
        PropertyFilter::Status { comparator, value }
    }

    fn version(comparator: Comparator, value: u64) -> PropertyFilter {
        PropertyFilter::Version { comparator, value }
    }

    fn filter(all: Vec<Vec<PropertyFilter>>) -> WorkerFilter {
        WorkerFilter(all.into_iter().map(AllFilter).collect())
    }

    #[test]
    fn dates_past_four_digit_years_are_refused_not_overflowed() {
        assert!(parse("created-at < 2000000030-01-01").is_err());
        assert!(parse("created-at < 203333333333333-01-01").is_err());
        assert!(parse("created-at < 9999-12-31T23:59:59.999Z").is_ok());
        assert!(parse(&format!("created-at < {}", u64::MAX)).is_ok());
    }

    #[test]
    fn the_example_from_the_help() {
        assert_eq!(
            parse("name like 'acc-%' and status == idle or version >= 2").unwrap(),
            filter(vec![
                vec![
                    name(StringComparator::Like, "acc-%"),
                    status(Comparator::Equal, WorkerStatus::Idle)
                ],
                vec![version(Comparator::GreaterEqual, 2)],
            ])
        );
    }

    #[test]
    fn every_field_and_operator() {
        let cases = [
            ("name == a", name(StringComparator::Equal, "a")),
            ("name = \"a b\"", name(StringComparator::Equal, "a b")),
            ("name != 'a'", name(StringComparator::NotEqual, "a")),
            ("name <> 'a'", name(StringComparator::NotEqual, "a")),
            ("name LIKE acc-%", name(StringComparator::Like, "acc-%")),
            ("name not like '%x'", name(StringComparator::NotLike, "%x")),
            ("name like 'a\\%b'", name(StringComparator::Like, "a\\%b")),
            ("name == 'it\\'s'", name(StringComparator::Equal, "it's")),
            (
                "status != failed",
                status(Comparator::NotEqual, WorkerStatus::Failed),
            ),
            (
                "status < 'idle'",
                status(Comparator::Less, WorkerStatus::Idle),
            ),
            (
                "status <= Exited",
                status(Comparator::LessEqual, WorkerStatus::Exited),
            ),
            (
                "status > running",
                status(Comparator::Greater, WorkerStatus::Running),
            ),
            ("version=3", version(Comparator::Equal, 3)),
            ("version>=3", version(Comparator::GreaterEqual, 3)),
            (
                "created-at > 1700000000000",
                PropertyFilter::CreatedAt {
                    comparator: Comparator::Greater,
                    value: 1_700_000_000_000,
                },
            ),
            (
                "created-at >= 2023-11-14T22:13:20Z",
                PropertyFilter::CreatedAt {
                    comparator: Comparator::GreaterEqual,
                    value: 1_700_000_000_000,
                },
            ),
            (
                "created-at < 2023-11-14T22:13:20.5",
                PropertyFilter::CreatedAt {
                    comparator: Comparator::Less,
                    value: 1_700_000_000_500,
                },
            ),
            (
                "created-at < 1970-01-02",
                PropertyFilter::CreatedAt {
                    comparator: Comparator::Less,
                    value: 86_400_000,
                },
            ),
            (
                "env.REGION like 'eu-%'",
                PropertyFilter::Env {
                    name: "REGION".into(),
                    comparator: StringComparator::Like,
                    value: "eu-%".into(),
                },
            ),
            (
                "env.'MY VAR' != x",
                PropertyFilter::Env {
                    name: "MY VAR".into(),
                    comparator: StringComparator::NotEqual,
                    value: "x".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(filter(vec![vec![expected]])), "{text}");
        }
    }

    #[test]
    fn parentheses_expand_to_any_of_all_of() {
        let a = || name(StringComparator::Equal, "a");
        let b = || status(Comparator::Equal, WorkerStatus::Idle);
        let c = || version(Comparator::Equal, 1);
        let d = || version(Comparator::Equal, 2);
        assert_eq!(
            parse("name == a and (status == idle or version == 1)").unwrap(),
            filter(vec![vec![a(), b()], vec![a(), c()]])
        );
        assert_eq!(
            parse("(name == a or status == idle) and (version == 1 or version == 2)").unwrap(),
            filter(vec![
                vec![a(), c()],
                vec![a(), d()],
                vec![b(), c()],
                vec![b(), d()]
            ])
        );
        assert_eq!(
            parse("((name == a)) OR status == idle AND version == 1").unwrap(),
            filter(vec![vec![a()], vec![b(), c()]])
        );
        // The expression printed back parses to the same filter.
        let f = parse("name not like 'x\\'y%' and env.'A B' == '' or created-at <= 5").unwrap();
        assert_eq!(parse(&f.to_string()).unwrap(), f);
    }

    #[test]
    fn bad_expressions_say_what_and_where() {
        let cases = [
            ("", "the expression is empty", 0),
            ("nme == a", "expected a condition on name, status, version, created-at or env.VAR, found `nme`", 0),
            ("name 'a'", "`name` is compared with ==, !=, like or not like, found 'a'", 5),
            ("name > a", "`name` is compared with ==, !=, like or not like, found `>`", 5),
            ("status like idle", "`status` is compared with ==, !=, <, <=, > or >=, found `like`", 7),
            ("status == idel", "unknown status `idel`; the statuses are running, idle, suspended, interrupted, retrying, failed, exited", 10),
            ("version >= two", "a version is a non-negative integer (0, 1, 2, ...), not `two`", 11),
            ("version >= -1", "a version is a non-negative integer", 11),
            ("created-at > yesterday", "created-at takes milliseconds since the Unix epoch", 13),
            ("created-at > 2024-13-01", "created-at takes", 13),
            ("name == a and", "expected a condition such as `name like 'acc-%'`, found the end of the expression", 13),
            ("name == a or or", "found `or`", 13),
            ("name == 'a", "unterminated string: no closing '", 8),
            ("(name == a", "expected `)`, found the end of the expression", 10),
            ("name == a)", "expected `and`, `or` or the end of the expression, found `)`", 9),
            ("name == a status == idle", "expected `and`, `or` or the end of the expression, found `status`", 10),
            ("name not a", "expected `like` after `not`, found `a`", 9),
            ("name ! a", "`!` must be followed by `=`", 5),
            ("env. == a", "`env.` must be followed by a variable name", 0),
            ("name ==", "expected a value, found the end of the expression", 7),
        ];
        for (text, message, column) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.message.contains(message),
                "{text:?}: {:?} does not contain {message:?}",
                err.message
            );
            assert_eq!(err.column, column, "{text:?}: {}", err.message);
        }
        let shown = parse("status == idel").unwrap_err().to_string();
        assert_eq!(
            shown,
            "invalid --filter expression: unknown status `idel`; the statuses are running, idle, \
             suspended, interrupted, retrying, failed, exited (at column 11)\n  status == idel\n            ^"
        );
    }

    #[test]
    fn too_many_alternatives_are_refused() {
        let factor = "(version == 1 or version == 2 or version == 3 or version == 4)";
        let text = [factor; 6].join(" and ");
        let err = parse(&text).unwrap_err();
        assert!(
            err.message.contains("more than 1024 alternatives"),
            "{}",
            err.message
        );
    }

    #[test]
    fn deep_nesting_and_long_expressions_are_refused_not_recursed() {
        // The attack from the hardening issue: thousands of `(` used to overflow the stack.
        for depth in [MAX_NESTING + 1, 2_500, 10_000] {
            let text = format!("{}version == 1{}", "(".repeat(depth), ")".repeat(depth));
            let err = parse(&text).unwrap_err();
            assert!(
                err.message.contains("nest deeper than 32")
                    || err.message.contains("at most 4096 are accepted"),
                "{}",
                err.message
            );
        }
        let at_the_limit = format!(
            "{}version == 1{}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(
            parse(&at_the_limit).unwrap(),
            filter(vec![vec![version(Comparator::Equal, 1)]])
        );
        let long = format!("name == '{}'", "a".repeat(MAX_FILTER_CHARS));
        assert!(parse(&long).unwrap_err().message.contains("at most 4096"));
    }
}

#[cfg(test)]
mod untrusted_input_tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Any text, and any soup of the language's own tokens, parses or is refused with a
        /// position; never a panic or a stack overflow.
        #[test]
        fn any_expression_parses_or_is_refused(text in ".{0,200}") {
            let _ = super::parse(&text);
        }

        #[test]
        fn token_soup_parses_or_is_refused(tokens in proptest::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("and"), Just("or"), Just("name"), Just("status"),
            Just("env.A"), Just("version"), Just("created-at"), Just("=="), Just("!="),
            Just("like"), Just("not"), Just(">="), Just("<"), Just("'x%'"), Just("idle"),
            Just("2024-05-01"), Just("7"), Just("\""), Just("'"),
        ], 0..80)) {
            let _ = super::parse(&tokens.join(" "));
        }
    }
}
