//! A small evaluator for the CloudWatch Logs Insights queries the operations guide (`docs/operations.md`)
//! documents, so a test can run them over the log lines of a real run: a
//! renamed field or event then breaks a test instead of an operator's query.
//!
//! It covers the part of the language those queries use: `filter` (`=`, `!=`,
//! `<`, `>`, `<=`, `>=`, `and`, `or`, `not`, parentheses, `ispresent(f)`),
//! `stats` (`count`, `sum`, `avg`, `min`, `max`, `pct`; `as`; `by` fields and
//! `bin(5m)`; chained, each stage reading the rows of the one before), `sort`,
//! `fields` and `limit`. Fields are JSON paths with dots (`span.request_id`),
//! as Logs Insights names the fields it discovers; `@timestamp` is the line's
//! `timestamp`. A JSON `null` counts as absent. `pct` takes the nearest rank.

use serde_json::{Map, Value};

pub type Row = Map<String, Value>;

/// The queries of the operations guide's Logs Insights block: (the `#` line above it, the query).
pub fn documented_queries(guide: &str) -> Vec<(String, String)> {
    let start = guide.find("CloudWatch Logs Insights").expect("the guide has a Logs Insights section");
    let block = &guide[start..];
    let open = block.find("```\n").expect("a code block") + 4;
    let close = open + block[open..].find("```").expect("a closed code block");
    let mut queries: Vec<(String, String)> = Vec::new();
    for line in block[open..close].lines() {
        if let Some(title) = line.strip_prefix('#') {
            queries.push((title.trim().to_string(), String::new()));
        } else if !line.trim().is_empty()
            && let Some((_, query)) = queries.last_mut()
        {
            query.push_str(line.trim());
            query.push(' ');
        }
    }
    queries
}

/// Runs `query` over `lines` (JSON objects), returning the result rows.
pub fn run(query: &str, lines: &[Value]) -> Result<Vec<Row>, String> {
    let mut rows: Vec<Row> = lines.iter().filter_map(|l| l.as_object().cloned()).collect();
    for command in split_commands(query) {
        let tokens = tokenize(&command)?;
        let mut p = Parser { tokens, at: 0 };
        let verb = p.word()?;
        rows = match verb.as_str() {
            "filter" => {
                let expr = p.expr()?;
                p.end()?;
                rows.into_iter().filter(|row| truthy(&eval(&expr, row))).collect()
            }
            "stats" => stats(&mut p, &rows)?,
            "sort" => {
                let field = p.word()?;
                let descending = match p.peek_word().as_deref() {
                    Some("desc") => true,
                    Some("asc") | None => false,
                    Some(other) => return Err(format!("sort order {other}")),
                };
                rows.sort_by(|a, b| compare(&field_value(a, &field), &field_value(b, &field)));
                if descending {
                    rows.reverse();
                }
                rows
            }
            "fields" => {
                let mut names = vec![p.word()?];
                while p.eat(",") {
                    names.push(p.word()?);
                }
                rows.into_iter().map(|row| names.iter().map(|n| (n.clone(), field_value(&row, n))).collect()).collect()
            }
            "limit" => {
                let n = p.word()?.parse::<usize>().map_err(|e| e.to_string())?;
                rows.into_iter().take(n).collect()
            }
            other => return Err(format!("unsupported command `{other}`")),
        };
    }
    Ok(rows)
}

/// Commands split at `|` outside string literals.
fn split_commands(query: &str) -> Vec<String> {
    let (mut out, mut current, mut quote) = (Vec::new(), String::new(), None);
    for c in query.chars() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('|', None) => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let end = chars[i + 1..].iter().position(|&d| d == c).ok_or("unclosed string")? + i + 1;
            tokens.push(Token::Str(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if c.is_ascii_digit() {
            let end = chars[i..]
                .iter()
                .position(|d| !(d.is_ascii_alphanumeric() || *d == '.'))
                .map_or(chars.len(), |p| p + i);
            let text: String = chars[i..end].iter().collect();
            tokens.push(match text.parse::<f64>() {
                Ok(n) => Token::Num(n),
                Err(_) => Token::Word(text), // a duration such as 5m
            });
            i = end;
        } else if c.is_alphabetic() || c == '_' || c == '@' {
            let end = chars[i..]
                .iter()
                .position(|d| !(d.is_alphanumeric() || matches!(d, '_' | '.' | '@')))
                .map_or(chars.len(), |p| p + i);
            tokens.push(Token::Word(chars[i..end].iter().collect()));
            i = end;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = ["!=", "<=", ">="].into_iter().find(|s| *s == two);
            let sym = sym.or_else(|| ["=", "<", ">", "(", ")", ",", "*"].into_iter().find(|s| s.starts_with(c)));
            let sym = sym.ok_or_else(|| format!("unexpected `{c}`"))?;
            tokens.push(Token::Sym(sym));
            i += sym.len();
        }
    }
    Ok(tokens)
}

#[derive(Debug)]
enum Expr {
    Field(String),
    Literal(Value),
    Present(String),
    Not(Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }
    fn peek_word(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let w = w.clone();
                self.at += 1;
                Some(w)
            }
            _ => None,
        }
    }
    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Token::Sym(s)) if *s == sym) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) { Ok(()) } else { Err(format!("expected `{sym}` at token {}", self.at)) }
    }
    fn word(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            other => Err(format!("expected a name, got {other:?}")),
        }
    }
    fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(token) => Err(format!("unexpected {token:?}")),
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.conjunction()?;
        while self.eat_word("or") {
            left = Expr::Binary("or", Box::new(left), Box::new(self.conjunction()?));
        }
        Ok(left)
    }
    fn conjunction(&mut self) -> Result<Expr, String> {
        let mut left = self.comparison()?;
        while self.eat_word("and") {
            left = Expr::Binary("and", Box::new(left), Box::new(self.comparison()?));
        }
        Ok(left)
    }
    fn comparison(&mut self) -> Result<Expr, String> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.comparison()?)));
        }
        let left = self.operand()?;
        for op in ["!=", "<=", ">=", "=", "<", ">"] {
            if self.eat(op) {
                return Ok(Expr::Binary(op, Box::new(left), Box::new(self.operand()?)));
            }
        }
        Ok(left)
    }
    fn operand(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Sym("(")) => {
                let inner = self.expr()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::Str(s)) => Ok(Expr::Literal(Value::String(s))),
            Some(Token::Num(n)) => Ok(Expr::Literal(serde_json::json!(n))),
            Some(Token::Word(w)) if w == "ispresent" => {
                self.expect("(")?;
                let field = self.word()?;
                self.expect(")")?;
                Ok(Expr::Present(field))
            }
            Some(Token::Word(w)) => Ok(Expr::Field(w)),
            other => Err(format!("expected a value, got {other:?}")),
        }
    }
}

fn field_value(row: &Row, name: &str) -> Value {
    let name = if name == "@timestamp" { "timestamp" } else { name };
    if let Some(value) = row.get(name) {
        return value.clone();
    }
    let mut parts = name.split('.');
    let mut value = row.get(parts.next().unwrap_or_default()).cloned().unwrap_or(Value::Null);
    for part in parts {
        value = value.get(part).cloned().unwrap_or(Value::Null);
    }
    value
}

fn eval(expr: &Expr, row: &Row) -> Value {
    match expr {
        Expr::Field(name) => field_value(row, name),
        Expr::Literal(value) => value.clone(),
        Expr::Present(name) => Value::Bool(!field_value(row, name).is_null()),
        Expr::Not(inner) => Value::Bool(!truthy(&eval(inner, row))),
        Expr::Binary(op, left, right) => {
            let (l, r) = (eval(left, row), eval(right, row));
            let ordering = compare(&l, &r);
            Value::Bool(match *op {
                "and" => truthy(&l) && truthy(&r),
                "or" => truthy(&l) || truthy(&r),
                // A comparison with an absent field is false, whatever the operator.
                _ if l.is_null() || r.is_null() => false,
                "=" => ordering.is_eq(),
                "!=" => !ordering.is_eq(),
                "<" => ordering.is_lt(),
                ">" => ordering.is_gt(),
                "<=" => ordering.is_le(),
                ">=" => ordering.is_ge(),
                _ => false,
            })
        }
    }
}

fn truthy(value: &Value) -> bool {
    matches!(value, Value::Bool(true))
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => text(a).cmp(&text(b)),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

enum Key {
    Field(String),
    /// `bin(5m)`: `@timestamp` floored to the period, in ms.
    Bin(String, i64),
}

struct Aggregate {
    function: String,
    field: Option<String>,
    percent: Option<f64>,
    name: String,
}

fn stats(p: &mut Parser, rows: &[Row]) -> Result<Vec<Row>, String> {
    let mut aggregates = Vec::new();
    loop {
        let function = p.word()?;
        p.expect("(")?;
        let field = if p.eat("*") { None } else { Some(p.word()?) };
        let percent = if p.eat(",") {
            match p.next() {
                Some(Token::Num(n)) => Some(n),
                other => return Err(format!("pct needs a number, got {other:?}")),
            }
        } else {
            None
        };
        p.expect(")")?;
        let default_name = format!("{function}({})", field.as_deref().unwrap_or("*"));
        let name = if p.eat_word("as") { p.word()? } else { default_name };
        aggregates.push(Aggregate { function, field, percent, name });
        if !p.eat(",") {
            break;
        }
    }
    let mut keys = Vec::new();
    if p.eat_word("by") {
        loop {
            let name = p.word()?;
            if name == "bin" {
                p.expect("(")?;
                let period = p.word()?;
                p.expect(")")?;
                keys.push(Key::Bin(format!("bin({period})"), duration_ms(&period)?));
            } else {
                keys.push(Key::Field(name));
            }
            if !p.eat(",") {
                break;
            }
        }
    }
    p.end()?;
    let mut groups: Vec<(Vec<Value>, Vec<&Row>)> = Vec::new();
    for row in rows {
        let key: Vec<Value> = keys
            .iter()
            .map(|k| match k {
                Key::Field(name) => field_value(row, name),
                Key::Bin(_, ms) => {
                    let at = field_value(row, "@timestamp");
                    let at = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap_or_default())
                        .map(|t| t.timestamp_millis())
                        .unwrap_or_default();
                    serde_json::json!(at - at.rem_euclid(*ms))
                }
            })
            .collect();
        // Logs Insights leaves out rows whose group key is absent.
        if key.iter().any(Value::is_null) {
            continue;
        }
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(row),
            None => groups.push((key, vec![row])),
        }
    }
    if keys.is_empty() && groups.is_empty() {
        groups.push((vec![], vec![]));
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let mut row = Row::new();
        for (k, value) in keys.iter().zip(key) {
            let name = match k {
                Key::Field(name) => name.clone(),
                Key::Bin(name, _) => name.clone(),
            };
            row.insert(name, value);
        }
        for a in &aggregates {
            row.insert(a.name.clone(), aggregate(a, &members)?);
        }
        out.push(row);
    }
    Ok(out)
}

fn aggregate(a: &Aggregate, rows: &[&Row]) -> Result<Value, String> {
    let values: Vec<f64> = match &a.field {
        Some(field) => rows.iter().filter_map(|r| field_value(r, field).as_f64()).collect(),
        None => vec![],
    };
    let number = |v: Option<f64>| v.map_or(Value::Null, |v| serde_json::json!(v));
    Ok(match a.function.as_str() {
        "count" => match &a.field {
            None => serde_json::json!(rows.len()),
            Some(field) => serde_json::json!(rows.iter().filter(|r| !field_value(r, field).is_null()).count()),
        },
        "sum" => serde_json::json!(values.iter().sum::<f64>()),
        "avg" => number((!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)),
        "min" => number(values.iter().copied().reduce(f64::min)),
        "max" => number(values.iter().copied().reduce(f64::max)),
        "pct" => {
            let mut sorted = values;
            sorted.sort_by(f64::total_cmp);
            let percent = a.percent.ok_or("pct needs a percentile")?;
            let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
            number(sorted.get(rank.saturating_sub(1)).copied())
        }
        other => return Err(format!("unsupported aggregate `{other}`")),
    })
}

fn duration_ms(period: &str) -> Result<i64, String> {
    let split = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("bad period {period}"))?;
    let (n, unit) = period.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("bad period {period}"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("bad period {period}")),
    };
    Ok(n * unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines() -> Vec<Value> {
        vec![
            json!({"event": "model_call", "conversation_id": "a", "cost_usd": 1.0, "timestamp": "2026-12-02T10:01:00Z"}),
            json!({"event": "model_call", "conversation_id": "a", "cost_usd": 2.0, "timestamp": "2026-12-02T10:02:00Z"}),
            json!({"event": "model_call", "conversation_id": "b", "cost_usd": 4.0, "timestamp": "2026-12-02T10:07:00Z"}),
            json!({"event": "model_call", "cost_usd": 8.0, "outcome": "rate_limited", "timestamp": "2026-12-02T10:08:00Z"}),
            json!({"event": "http", "span": {"request_id": "r1"}, "timestamp": "2026-12-02T10:00:00Z"}),
        ]
    }

    #[test]
    fn chained_stats_group_then_summarise() {
        let query = "filter event = \"model_call\" and ispresent(conversation_id) \
                     | stats sum(cost_usd) as cost by conversation_id \
                     | stats count(*) as conversations, max(cost) as max, pct(cost, 50) as p50";
        let rows = run(query, &lines()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0]["conversations"].as_f64(), rows[0]["max"].as_f64()), (Some(2.0), Some(4.0)));
        assert_eq!(rows[0]["p50"].as_f64(), Some(3.0));
    }

    #[test]
    fn filters_bins_nested_fields_and_absent_values() {
        let rows = run("filter outcome != \"ok\" | stats count(*) by outcome, bin(5m)", &lines()).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            rows[0]["bin(5m)"],
            json!(chrono::DateTime::parse_from_rfc3339("2026-12-02T10:05:00Z").unwrap().timestamp_millis())
        );
        let rows =
            run("filter span.request_id = \"r1\" or conversation_id = \"b\" | sort @timestamp asc", &lines()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["event"], "http");
        assert!(run("filter nosuchfield = 1", &lines()).unwrap().is_empty());
    }

    #[test]
    fn the_guides_block_is_read_query_by_query() {
        let readme =
            "CloudWatch Logs Insights:\n\n```\n# one\nfilter a = 1\n| stats count(*)\n\n# two\nfilter b = 2\n```\n";
        let queries = documented_queries(readme);
        assert_eq!(queries.len(), 2);
        assert_eq!(queries[0], ("one".to_string(), "filter a = 1 | stats count(*) ".to_string()));
    }
}
