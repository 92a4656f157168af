//! Alert rules written as SQL boolean expressions over the row they watch: a trade, a quote,
//! a final bar of one interval or a day's metrics.
//!
//! ```text
//! symbol = 'NVDA' AND close > 500
//! daily_pct_change < -5
//! volume > 3 * sma(volume, 20)
//! ```
//!
//! The text is parsed by `sqlparser` (the parser DataFusion uses, so it reads as the SQL
//! endpoint does), then checked against the watched table's columns and types, and built
//! into a small tree evaluated per row without allocating. Numbers are exact decimals
//! (`rust_decimal`, 28 significant digits): `close > 500.10` compares the stored price
//! itself, never a float near it. SQL's three-valued logic holds: a comparison with NULL
//! (a missing column, an indicator still warming up, a division by zero or an overflow) is
//! NULL, and a rule whose expression is NULL neither fires nor clears.
//!
//! Indicators read a symbol's recent final bars of the rule's interval (for a `daily_metrics`
//! rule, its daily rows); see [`indicators`].

use std::fmt;

use rust_decimal::Decimal;
use sqlparser::ast::{self, BinaryOperator, UnaryOperator};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;
use tickflow_model::{Bar, BarInterval, DailyMetric, Price, Qty, Quote, Symbol, Trade, Volume};

pub mod indicators;

pub use indicators::{Func, Indicator};

/// The table whose rows a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Watch {
    Trades,
    Quotes,
    /// Final bars of one interval.
    Bars(BarInterval),
    DailyMetrics,
}

impl Watch {
    /// The table named by a rule's `on`, with the `interval` a `bars` rule needs.
    ///
    /// # Errors
    /// An unknown table, or `bars` without an interval.
    pub fn parse(on: &str, interval: Option<BarInterval>) -> Result<Self, String> {
        match on {
            "trades" => Ok(Self::Trades),
            "quotes" => Ok(Self::Quotes),
            "bars" => interval.map(Self::Bars).ok_or_else(|| {
                "a rule on bars needs `interval` (1s, 1m, 5m, 1h or 1d)".to_string()
            }),
            "daily_metrics" => Ok(Self::DailyMetrics),
            other => Err(format!(
                "unknown table {other:?}: expected trades, quotes, bars or daily_metrics"
            )),
        }
    }

    /// Where the rule's indicators read from: its own bars, the daily rows, or for trades
    /// and quotes the bars of `interval` when one is given.
    fn source(self, interval: Option<BarInterval>) -> Option<Source> {
        match self {
            Self::Bars(i) => Some(Source::Bars(i)),
            Self::DailyMetrics => Some(Source::DailyMetrics),
            Self::Trades | Self::Quotes => interval.map(Source::Bars),
        }
    }

    fn columns(self) -> &'static [Column] {
        use Column::*;
        match self {
            Self::Trades => &[Symbol, Price, Size, Exchange, Source, Feed],
            Self::Quotes => &[Symbol, Bid, BidSize, Ask, AskSize, Source, Feed],
            Self::Bars(_) => &[
                Symbol, Open, High, Low, Close, Volume, Vwap, TradeCount, Source,
            ],
            Self::DailyMetrics => &[
                Symbol,
                Open,
                High,
                Low,
                Close,
                Volume,
                Volatility,
                RollingAvg5d,
                DailyPctChange,
            ],
        }
    }
}

impl fmt::Display for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Trades => f.write_str("trade"),
            Self::Quotes => f.write_str("quote"),
            Self::Bars(i) => write!(f, "{i} bar"),
            Self::DailyMetrics => f.write_str("daily metrics"),
        }
    }
}

/// The rows an indicator's series is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Bars(BarInterval),
    DailyMetrics,
}

impl Source {
    fn watch(self) -> Watch {
        match self {
            Self::Bars(i) => Watch::Bars(i),
            Self::DailyMetrics => Watch::DailyMetrics,
        }
    }
}

/// A column a rule may name; which ones exist depends on the table ([`Watch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    Symbol,
    Source,
    Feed,
    Exchange,
    Price,
    Size,
    Bid,
    BidSize,
    Ask,
    AskSize,
    Open,
    High,
    Low,
    Close,
    Volume,
    Vwap,
    TradeCount,
    Volatility,
    RollingAvg5d,
    DailyPctChange,
}

impl Column {
    const ALL: [Column; 20] = {
        use Column::*;
        [
            Symbol,
            Source,
            Feed,
            Exchange,
            Price,
            Size,
            Bid,
            BidSize,
            Ask,
            AskSize,
            Open,
            High,
            Low,
            Close,
            Volume,
            Vwap,
            TradeCount,
            Volatility,
            RollingAvg5d,
            DailyPctChange,
        ]
    };

    /// The name used in expressions and in the tables.
    pub fn name(self) -> &'static str {
        use Column::*;
        match self {
            Symbol => "symbol",
            Source => "source",
            Feed => "feed",
            Exchange => "exchange",
            Price => "price",
            Size => "size",
            Bid => "bid",
            BidSize => "bid_size",
            Ask => "ask",
            AskSize => "ask_size",
            Open => "open",
            High => "high",
            Low => "low",
            Close => "close",
            Volume => "volume",
            Vwap => "vwap",
            TradeCount => "trade_count",
            Volatility => "volatility",
            RollingAvg5d => "rolling_avg_5d",
            DailyPctChange => "daily_pct_change",
        }
    }

    fn is_text(self) -> bool {
        matches!(
            self,
            Self::Symbol | Self::Source | Self::Feed | Self::Exchange
        )
    }

    fn named(name: &str, watch: Watch) -> Result<Self, String> {
        let lower = name.to_ascii_lowercase();
        watch
            .columns()
            .iter()
            .copied()
            .find(|c| c.name() == lower)
            .ok_or_else(|| {
                let known = watch
                    .columns()
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", ");
                let elsewhere = Self::ALL.iter().any(|c| c.name() == lower);
                format!(
                    "{} {name:?} on a {watch} row: its columns are {known}",
                    if elsewhere {
                        "no column"
                    } else {
                        "unknown column"
                    }
                )
            })
    }
}

/// One row a rule is evaluated on.
#[derive(Clone, Copy, Debug)]
pub enum Row<'a> {
    Trade(&'a Trade),
    Quote(&'a Quote),
    Bar(&'a Bar),
    /// A day's metrics, with the previous session's close (for the exact % change) and the
    /// end of the daily bar they come from (the alert's time).
    Daily {
        metric: &'a DailyMetric,
        prev_close: Option<Price>,
        end: i64,
    },
}

impl<'a> Row<'a> {
    pub fn symbol(&self) -> &'a Symbol {
        match *self {
            Self::Trade(t) => &t.symbol,
            Self::Quote(q) => &q.symbol,
            Self::Bar(b) => &b.symbol,
            Self::Daily { metric, .. } => &metric.symbol,
        }
    }

    /// Event time: the tick's, or the end of the bar.
    pub fn ts(&self) -> i64 {
        match *self {
            Self::Trade(t) => t.ts_event.0,
            Self::Quote(q) => q.ts_event.0,
            Self::Bar(b) => b.end.0,
            Self::Daily { end, .. } => end,
        }
    }

    /// The price an alert on this row reports: the trade's, the quote's mid, the close.
    pub fn price(&self) -> Price {
        match *self {
            Self::Trade(t) => t.price,
            Self::Quote(q) => Price::from_ratio(
                i128::from(q.bid.raw()) + i128::from(q.ask.raw()),
                2,
                q.bid.precision().max(q.ask.precision()) + 1,
            )
            .unwrap_or(q.bid),
            Self::Bar(b) => b.close,
            Self::Daily { metric, .. } => metric.close,
        }
    }

    /// The series this row belongs to, if it is a final bar or a day's metrics, and its
    /// place in it (the bar's start, the day's date).
    pub(crate) fn series_key(&self) -> Option<(Source, i64)> {
        match *self {
            Self::Bar(b) if b.is_final => Some((Source::Bars(b.interval), b.start.0)),
            // By date: a vendor's daily bar need not end at midnight UTC, and warm-up from
            // the lake knows only the date.
            Self::Daily { metric, .. } => Some((
                Source::DailyMetrics,
                tickflow_model::UnixNanos::from_date(metric.date).0,
            )),
            _ => None,
        }
    }

    pub(crate) fn watch(&self) -> Watch {
        match self {
            Self::Trade(_) => Watch::Trades,
            Self::Quote(_) => Watch::Quotes,
            Self::Bar(b) => Watch::Bars(b.interval),
            Self::Daily { .. } => Watch::DailyMetrics,
        }
    }

    fn text(&self, column: Column) -> Option<&'a str> {
        match (*self, column) {
            (_, Column::Symbol) => Some(self.symbol().as_str()),
            (Self::Trade(t), Column::Source) => Some(&t.source),
            (Self::Trade(t), Column::Feed) => Some(&t.feed),
            (Self::Trade(t), Column::Exchange) => t.exchange.as_deref(),
            (Self::Quote(q), Column::Source) => Some(&q.source),
            (Self::Quote(q), Column::Feed) => Some(&q.feed),
            (Self::Bar(b), Column::Source) => b.source.as_deref(),
            _ => None,
        }
    }

    /// A numeric column, exactly.
    pub fn number(&self, column: Column) -> Option<Decimal> {
        use Column::*;
        match (*self, column) {
            (Self::Trade(t), Price) => Some(price(t.price)),
            (Self::Trade(t), Size) => qty(t.size),
            (Self::Quote(q), Bid) => Some(price(q.bid)),
            (Self::Quote(q), Ask) => Some(price(q.ask)),
            (Self::Quote(q), BidSize) => qty(q.bid_size),
            (Self::Quote(q), AskSize) => qty(q.ask_size),
            (Self::Bar(b), Open) => Some(price(b.open)),
            (Self::Bar(b), High) => Some(price(b.high)),
            (Self::Bar(b), Low) => Some(price(b.low)),
            (Self::Bar(b), Close) => Some(price(b.close)),
            (Self::Bar(b), Volume) => volume(b.volume),
            (Self::Bar(b), Vwap) => b.vwap.map(price),
            (Self::Bar(b), TradeCount) => b.trade_count.map(Decimal::from),
            (Self::Daily { metric: m, .. }, Open) => Some(price(m.open)),
            (Self::Daily { metric: m, .. }, High) => Some(price(m.high)),
            (Self::Daily { metric: m, .. }, Low) => Some(price(m.low)),
            (Self::Daily { metric: m, .. }, Close) => Some(price(m.close)),
            (Self::Daily { metric: m, .. }, Volume) => volume(m.volume),
            (Self::Daily { metric: m, .. }, RollingAvg5d) => Some(price(m.rolling_avg_5d)),
            // Both from the prices, exactly, rather than from the float columns stored.
            (Self::Daily { metric: m, .. }, Volatility) => {
                percent_of(price(m.high).checked_sub(price(m.low))?, price(m.close))
            }
            (
                Self::Daily {
                    metric: m,
                    prev_close: Some(prev),
                    ..
                },
                DailyPctChange,
            ) => percent_of(price(m.close).checked_sub(price(prev))?, price(prev)),
            _ => None,
        }
    }
}

fn price(p: Price) -> Decimal {
    Decimal::new(p.raw(), 9)
}

fn qty(q: Qty) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(i128::from(q.raw()), 9).ok()
}

fn volume(v: Volume) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(v.raw(), 9).ok()
}

/// `part / whole × 100`; NULL for a zero whole.
fn percent_of(part: Decimal, whole: Decimal) -> Option<Decimal> {
    part.checked_mul(Decimal::ONE_HUNDRED)?.checked_div(whole)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Self::Eq => o == Equal,
            Self::Ne => o != Equal,
            Self::Lt => o == Less,
            Self::Le => o != Greater,
            Self::Gt => o == Greater,
            Self::Ge => o != Less,
        }
    }
}

/// A checked expression tree.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Num(Decimal),
    Text(String),
    Col(Column),
    /// The rule's indicator at this position of [`Expr::indicators`].
    Ind(usize),
    Neg(Box<Node>),
    Abs(Box<Node>),
    Not(Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    /// `IS NULL`, or `IS NOT NULL` when true.
    IsNull(Box<Node>, bool),
    /// `x IN (…)`: flat, so a watch list of thousands of symbols is a loop, not a recursion.
    In(Box<Node>, Vec<Node>),
}

/// A value while evaluating.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Val<'a> {
    Null,
    Bool(bool),
    Num(Decimal),
    Text(&'a str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Null,
    Bool,
    Num,
    Text,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Null => "NULL",
            Self::Bool => "a boolean",
            Self::Num => "a number",
            Self::Text => "text",
        })
    }
}

/// A rule's condition, parsed and checked against the table it watches.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    text: String,
    watch: Watch,
    root: Node,
    indicators: Vec<Indicator>,
    /// Columns and indicators named, in order of first appearance, for the alert's message.
    leaves: Vec<(String, Node)>,
}

/// Longest window an indicator may ask for.
pub const MAX_WINDOW: u32 = 10_000;

impl Expr {
    /// Parses `text` as a boolean SQL expression over rows of `watch`. `interval` names the
    /// bars that indicators of a trade or quote rule read.
    ///
    /// # Errors
    /// What is wrong, with the part of the expression it concerns.
    pub fn parse(text: &str, watch: Watch, interval: Option<BarInterval>) -> Result<Self, String> {
        let dialect = GenericDialect {};
        let mut parser = Parser::new(&dialect)
            .try_with_sql(text)
            .map_err(|e| e.to_string())?;
        let ast = parser.parse_expr().map_err(|e| e.to_string())?;
        if parser.peek_token().token != Token::EOF {
            return Err(format!(
                "unexpected {} after the expression `{ast}`",
                parser.peek_token()
            ));
        }
        let mut b = Builder {
            watch,
            source: watch.source(interval),
            indicators: Vec::new(),
            leaves: Vec::new(),
        };
        let (root, ty) = b.build(&ast)?;
        if !matches!(ty, Ty::Bool | Ty::Null) {
            return Err(format!(
                "`{ast}` is {ty}; a rule needs a condition (true or false), such as `{ast} > 0`"
            ));
        }
        Ok(Self {
            text: text.trim().to_string(),
            watch,
            root,
            indicators: b.indicators,
            leaves: b.leaves,
        })
    }

    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The table it watches.
    pub fn watch(&self) -> Watch {
        self.watch
    }

    /// The indicators it reads, by position.
    pub fn indicators(&self) -> &[Indicator] {
        &self.indicators
    }

    /// Evaluates on `row`, with `indicator(i)` the value of [`Expr::indicators`]`[i]` for the
    /// row's symbol: `Some(true)` holds, `Some(false)` does not, `None` is unknown.
    pub fn eval(
        &self,
        row: &Row<'_>,
        indicator: &mut dyn FnMut(usize) -> Option<Decimal>,
    ) -> Option<bool> {
        match eval(&self.root, row, indicator) {
            Val::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// `name=value` for each column and indicator the expression names, for a message.
    pub fn describe(
        &self,
        row: &Row<'_>,
        indicator: &mut dyn FnMut(usize) -> Option<Decimal>,
    ) -> String {
        self.leaves
            .iter()
            .map(|(name, node)| {
                let value = match eval(node, row, indicator) {
                    Val::Num(d) => d.round_dp(6).normalize().to_string(),
                    Val::Text(t) => t.to_string(),
                    Val::Bool(b) => b.to_string(),
                    Val::Null => "NULL".to_string(),
                };
                format!("{name}={value}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn eval<'a>(
    node: &'a Node,
    row: &Row<'a>,
    ind: &mut dyn FnMut(usize) -> Option<Decimal>,
) -> Val<'a> {
    let num = |d: Option<Decimal>| d.map_or(Val::Null, Val::Num);
    match node {
        Node::Null => Val::Null,
        Node::Bool(b) => Val::Bool(*b),
        Node::Num(d) => Val::Num(*d),
        Node::Text(t) => Val::Text(t),
        Node::Col(c) if c.is_text() => row.text(*c).map_or(Val::Null, Val::Text),
        Node::Col(c) => num(row.number(*c)),
        Node::Ind(i) => num(ind(*i)),
        Node::Neg(e) => match eval(e, row, ind) {
            Val::Num(d) => Val::Num(-d),
            _ => Val::Null,
        },
        Node::Abs(e) => match eval(e, row, ind) {
            Val::Num(d) => Val::Num(d.abs()),
            _ => Val::Null,
        },
        Node::Not(e) => match eval(e, row, ind) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        Node::Arith(op, l, r) => match (eval(l, row, ind), eval(r, row, ind)) {
            (Val::Num(a), Val::Num(b)) => num(match op {
                Arith::Add => a.checked_add(b),
                Arith::Sub => a.checked_sub(b),
                Arith::Mul => a.checked_mul(b),
                Arith::Div => a.checked_div(b),
            }),
            _ => Val::Null,
        },
        Node::Cmp(op, l, r) => match (eval(l, row, ind), eval(r, row, ind)) {
            (Val::Num(a), Val::Num(b)) => Val::Bool(op.holds(a.cmp(&b))),
            (Val::Text(a), Val::Text(b)) => Val::Bool(op.holds(a.cmp(b))),
            (Val::Bool(a), Val::Bool(b)) => Val::Bool(op.holds(a.cmp(&b))),
            _ => Val::Null,
        },
        // Three-valued: false AND NULL is false, true OR NULL is true.
        Node::And(l, r) => match eval(l, row, ind) {
            Val::Bool(false) => Val::Bool(false),
            a => match (a, eval(r, row, ind)) {
                (_, Val::Bool(false)) => Val::Bool(false),
                (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
                _ => Val::Null,
            },
        },
        Node::Or(l, r) => match eval(l, row, ind) {
            Val::Bool(true) => Val::Bool(true),
            a => match (a, eval(r, row, ind)) {
                (_, Val::Bool(true)) => Val::Bool(true),
                (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                _ => Val::Null,
            },
        },
        Node::IsNull(e, negated) => Val::Bool((eval(e, row, ind) == Val::Null) != *negated),
        // As a chain of `=` joined by OR: true on a match, else NULL if anything was NULL.
        Node::In(x, list) => {
            let x = eval(x, row, ind);
            if x == Val::Null {
                return Val::Null;
            }
            let mut unknown = false;
            for item in list {
                match eval(item, row, ind) {
                    Val::Null => unknown = true,
                    v if v == x => return Val::Bool(true),
                    _ => {}
                }
            }
            if unknown { Val::Null } else { Val::Bool(false) }
        }
    }
}

struct Builder {
    watch: Watch,
    source: Option<Source>,
    indicators: Vec<Indicator>,
    leaves: Vec<(String, Node)>,
}

impl Builder {
    fn build(&mut self, e: &ast::Expr) -> Result<(Node, Ty), String> {
        use ast::Expr as E;
        Ok(match e {
            E::Nested(inner) => self.build(inner)?,
            E::Value(v) => literal(&v.value)?,
            E::Identifier(ident) => {
                let column = Column::named(&ident.value, self.watch).map_err(|e| {
                    if ident.quote_style == Some('"') {
                        format!(
                            "\"{}\" is a name in SQL; write text in single quotes: '{}'",
                            ident.value, ident.value
                        )
                    } else {
                        e
                    }
                })?;
                self.leaf(column.name().to_string(), Node::Col(column));
                let ty = if column.is_text() { Ty::Text } else { Ty::Num };
                (Node::Col(column), ty)
            }
            E::UnaryOp { op, expr } => {
                let (node, ty) = self.build(expr)?;
                match op {
                    UnaryOperator::Not => (
                        Node::Not(Box::new(expect(node, ty, Ty::Bool, e)?)),
                        Ty::Bool,
                    ),
                    UnaryOperator::Minus => {
                        (Node::Neg(Box::new(expect(node, ty, Ty::Num, e)?)), Ty::Num)
                    }
                    UnaryOperator::Plus => (expect(node, ty, Ty::Num, e)?, Ty::Num),
                    other => return Err(format!("`{other}` is not supported (in `{e}`)")),
                }
            }
            E::BinaryOp { left, op, right } => self.binary(e, left, op, right)?,
            E::IsNull(inner) | E::IsNotNull(inner) => {
                let (node, _) = self.build(inner)?;
                (
                    Node::IsNull(Box::new(node), matches!(e, E::IsNotNull(_))),
                    Ty::Bool,
                )
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (x, _) = self.compare(e, Cmp::Ge, expr, low)?;
                let (y, _) = self.compare(e, Cmp::Le, expr, high)?;
                let both = Node::And(Box::new(x), Box::new(y));
                let node = if *negated {
                    Node::Not(Box::new(both))
                } else {
                    both
                };
                (node, Ty::Bool)
            }
            E::InList {
                expr,
                list,
                negated,
            } => {
                if list.is_empty() {
                    return Err(format!("an empty list in `{e}`"));
                }
                let (x, xt) = self.build(expr)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let (node, ty) = self.build(item)?;
                    if ty != xt && ty != Ty::Null && xt != Ty::Null {
                        return Err(format!(
                            "`{e}` compares {xt} (`{expr}`) with {ty} (`{item}`)"
                        ));
                    }
                    items.push(node);
                }
                let any = Node::In(Box::new(x), items);
                let node = if *negated {
                    Node::Not(Box::new(any))
                } else {
                    any
                };
                (node, Ty::Bool)
            }
            E::Function(f) => self.function(e, f)?,
            other => {
                return Err(format!(
                    "`{other}` is not supported: a rule may use columns, numbers, 'text', + - * /, comparisons, AND, OR, NOT, BETWEEN, IN, IS NULL, abs() and the indicators sma, ema, rsi, stddev and prev"
                ));
            }
        })
    }

    fn leaf(&mut self, name: String, node: Node) {
        if !self.leaves.iter().any(|(n, _)| *n == name) {
            self.leaves.push((name, node));
        }
    }

    fn compare(
        &mut self,
        whole: &ast::Expr,
        op: Cmp,
        left: &ast::Expr,
        right: &ast::Expr,
    ) -> Result<(Node, Ty), String> {
        let (l, lt) = self.build(left)?;
        let (r, rt) = self.build(right)?;
        if lt != rt && lt != Ty::Null && rt != Ty::Null {
            return Err(format!(
                "`{whole}` compares {lt} (`{left}`) with {rt} (`{right}`)"
            ));
        }
        Ok((Node::Cmp(op, Box::new(l), Box::new(r)), Ty::Bool))
    }

    fn binary(
        &mut self,
        whole: &ast::Expr,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
    ) -> Result<(Node, Ty), String> {
        use BinaryOperator as B;
        let cmp = match op {
            B::Eq => Some(Cmp::Eq),
            B::NotEq => Some(Cmp::Ne),
            B::Lt => Some(Cmp::Lt),
            B::LtEq => Some(Cmp::Le),
            B::Gt => Some(Cmp::Gt),
            B::GtEq => Some(Cmp::Ge),
            _ => None,
        };
        if let Some(cmp) = cmp {
            return self.compare(whole, cmp, left, right);
        }
        let (l, lt) = self.build(left)?;
        let (r, rt) = self.build(right)?;
        let arith = |op| -> Result<(Node, Ty), String> {
            let l = expect(l.clone(), lt, Ty::Num, left)?;
            let r = expect(r.clone(), rt, Ty::Num, right)?;
            Ok((Node::Arith(op, Box::new(l), Box::new(r)), Ty::Num))
        };
        match op {
            B::Plus => arith(Arith::Add),
            B::Minus => arith(Arith::Sub),
            B::Multiply => arith(Arith::Mul),
            B::Divide => arith(Arith::Div),
            B::And | B::Or => {
                let l = expect(l, lt, Ty::Bool, left)?;
                let r = expect(r, rt, Ty::Bool, right)?;
                let node = if *op == B::And {
                    Node::And(Box::new(l), Box::new(r))
                } else {
                    Node::Or(Box::new(l), Box::new(r))
                };
                Ok((node, Ty::Bool))
            }
            other => Err(format!(
                "the operator `{other}` is not supported (in `{whole}`)"
            )),
        }
    }

    fn function(&mut self, whole: &ast::Expr, f: &ast::Function) -> Result<(Node, Ty), String> {
        let name = f.name.to_string().to_ascii_lowercase();
        let ast::FunctionArguments::List(list) = &f.args else {
            return Err(format!("`{whole}`: expected {name}(…)"));
        };
        if f.over.is_some() || f.filter.is_some() || !list.clauses.is_empty() {
            return Err(format!(
                "`{whole}`: OVER, FILTER and ORDER BY are not supported; an indicator's window is its second argument"
            ));
        }
        let args = list
            .args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                other => Err(format!(
                    "`{other}` is not supported as an argument (in `{whole}`)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if name == "abs" {
            let [x] = args[..] else {
                return Err(format!("`{whole}`: abs takes one argument"));
            };
            let (node, ty) = self.build(x)?;
            return Ok((Node::Abs(Box::new(expect(node, ty, Ty::Num, x)?)), Ty::Num));
        }
        let func = Func::named(&name).ok_or_else(|| {
            format!(
                "unknown function {name}() in `{whole}`: expected abs, sma, ema, rsi, stddev or prev"
            )
        })?;
        let source = self.source.ok_or_else(|| {
            format!(
                "`{whole}` reads bars, but a rule on {}s needs `interval` to say which bars its indicators read",
                self.watch
            )
        })?;
        let (column, n, offset) = match (func, &args[..]) {
            (Func::Prev, [c]) => (*c, None, None),
            (Func::Prev, [c, k]) => (*c, Some(*k), None),
            (Func::Prev, _) => {
                return Err(format!(
                    "`{whole}`: prev takes a column and, optionally, how many rows back (1 when left out)"
                ));
            }
            (_, [c, n]) => (*c, Some(*n), None),
            (_, [c, n, offset]) => (*c, Some(*n), Some(*offset)),
            _ => {
                return Err(format!(
                    "`{whole}`: {name} takes a column, a window and optionally how many of the newest rows to leave out, such as {name}(close, 20) or {name}(volume, 20, 1)"
                ));
            }
        };
        let ast::Expr::Identifier(ident) = column else {
            return Err(format!(
                "`{whole}`: the first argument of {name} must be a column, not `{column}`"
            ));
        };
        let column = Column::named(&ident.value, source.watch())?;
        if column.is_text() {
            return Err(format!("`{whole}`: {} is text", column.name()));
        }
        let n = match n {
            None => 1,
            Some(n) => window(n, 1).map_err(|e| format!("`{whole}`: {e}"))?,
        };
        let offset = match offset {
            None => 0,
            Some(o) => window(o, 0).map_err(|e| format!("`{whole}`: {e}"))?,
        };
        let includes_row = self.watch == source.watch();
        let indicator = Indicator::new(func, source, column, (n, offset), includes_row)
            .map_err(|e| format!("`{whole}`: {e}"))?;
        let at = match self.indicators.iter().position(|i| *i == indicator) {
            Some(at) => at,
            None => {
                self.indicators.push(indicator);
                self.indicators.len() - 1
            }
        };
        self.leaf(whole.to_string(), Node::Ind(at));
        Ok((Node::Ind(at), Ty::Num))
    }
}

/// A window or an offset: a whole number from `least` to [`MAX_WINDOW`].
fn window(e: &ast::Expr, least: u32) -> Result<u32, String> {
    let ast::Expr::Value(v) = e else {
        return Err(format!("the window must be a whole number, not `{e}`"));
    };
    let ast::Value::Number(text, _) = &v.value else {
        return Err(format!("the window must be a whole number, not `{e}`"));
    };
    match text.parse::<u32>() {
        Ok(n) if (least..=MAX_WINDOW).contains(&n) => Ok(n),
        _ => Err(format!(
            "the window must be a whole number from {least} to {MAX_WINDOW}, not {text}"
        )),
    }
}

fn literal(v: &ast::Value) -> Result<(Node, Ty), String> {
    Ok(match v {
        ast::Value::Number(text, _) => {
            let d = Decimal::from_str_exact(text)
                .or_else(|_| Decimal::from_scientific(text))
                .map_err(|e| format!("the number {text} cannot be used: {e}"))?;
            (Node::Num(d), Ty::Num)
        }
        ast::Value::SingleQuotedString(s) => (Node::Text(s.clone()), Ty::Text),
        ast::Value::Boolean(b) => (Node::Bool(*b), Ty::Bool),
        ast::Value::Null => (Node::Null, Ty::Null),
        ast::Value::DoubleQuotedString(s) => {
            return Err(format!(
                "\"{s}\" is a name in SQL; write text in single quotes: '{s}'"
            ));
        }
        other => return Err(format!("the literal {other} is not supported")),
    })
}

fn expect(node: Node, ty: Ty, want: Ty, e: &dyn fmt::Display) -> Result<Node, String> {
    if ty == want || ty == Ty::Null {
        Ok(node)
    } else {
        Err(format!("`{e}` is {ty}, where {want} is needed"))
    }
}

#[cfg(test)]
mod tests;
