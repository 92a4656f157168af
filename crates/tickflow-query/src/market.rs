//! Market-data SQL, in every entry point (CLI, HTTP, Postgres wire): `time_bucket(width,
//! ts)` as TimescaleDB has it, `first(value, ts)` and `last(value, ts)` by time, and an
//! exact `vwap(price, size)`. docs/sql.md shows each.
//!
//! `time_bucket`, `first` and `last` are rewritten while planning into DataFusion's own
//! `date_bin`, `first_value(… ORDER BY ts)` and `last_value(… ORDER BY ts)`, so they run as
//! fast as those. `vwap` sums `price × size` and `size` exactly (256-bit) and divides once.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef, IntervalMonthDayNano, i256};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, SortExpr, Volatility,
};
use datafusion::prelude::SessionContext;

/// Registers every function of this module in `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(TimeBucket::new()));
    ctx.register_udaf(AggregateUDF::from(ByTime::new("first")));
    ctx.register_udaf(AggregateUDF::from(ByTime::new("last")));
    ctx.register_udaf(AggregateUDF::from(Vwap::new()));
}

/// `time_bucket(width, ts)`: the start of the `width`-long bucket holding `ts`, buckets
/// aligned to 1970-01-01 UTC (a Thursday: TimescaleDB starts week buckets on Monday
/// 2000-01-03, so `'1 week'` buckets differ from its). `width` is an interval (`INTERVAL '5 minutes'`) or its text
/// (`'5 minutes'`, `'1h'`, Grafana's `'300.000s'`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// A bucket width as an interval literal.
fn width(expr: Expr) -> Result<Expr> {
    let text = match &expr {
        Expr::Literal(ScalarValue::Utf8(Some(t)) | ScalarValue::Utf8View(Some(t)), _) => t.clone(),
        _ => return Ok(expr),
    };
    parse_width(&text)
        .map(|nanos| {
            Expr::Literal(
                ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 0, nanos))),
                None,
            )
        })
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "time_bucket: {text:?} is not a bucket width; use e.g. '5 minutes', '1h' or INTERVAL '30 seconds'"
            ))
        })
}

/// Nanoseconds in `text`: a number and a unit (`300.000s`, `5 minutes`, `1h`, `2 days`).
fn parse_width(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit_nanos: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e9,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e9,
        "h" | "hr" | "hour" | "hours" => 3600e9,
        "d" | "day" | "days" => 86_400e9,
        "w" | "week" | "weeks" => 604_800e9,
        _ => return None,
    };
    let nanos = (number * unit_nanos).round();
    (nanos >= 1.0 && nanos < i64::MAX as f64).then_some(nanos as i64)
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &args[1] {
            t @ DataType::Timestamp(..) => Ok(t.clone()),
            other => plan_err!("time_bucket takes a timestamp as its second argument, not {other}"),
        }
    }

    fn simplify(&self, mut args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let ts = args
            .pop()
            .unwrap_or_else(|| Expr::Literal(ScalarValue::Null, None));
        let stride = width(
            args.pop()
                .unwrap_or_else(|| Expr::Literal(ScalarValue::Null, None)),
        )?;
        Ok(ExprSimplifyResult::Simplified(
            datafusion::functions::datetime::date_bin().call(vec![stride, ts]),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // Planning always rewrites it (see `simplify`).
        Err(DataFusionError::Internal(
            "time_bucket runs as date_bin".into(),
        ))
    }
}

/// `first(value, ts)` / `last(value, ts)`: the value with the earliest or latest `ts` in
/// the group, as TimescaleDB has them.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ByTime {
    name: &'static str,
    signature: Signature,
}

impl ByTime {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for ByTime {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Err(DataFusionError::Internal(format!(
            "{} runs as first_value/last_value",
            self.name
        )))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        let last = self.name == "last";
        Some(Box::new(move |aggregate: AggregateFunction, _info| {
            let mut params = aggregate.params;
            let (Some(ts), Some(value)) = (params.args.pop(), params.args.pop()) else {
                return plan_err!("first/last take (value, time)");
            };
            let udaf = if last {
                datafusion::functions_aggregate::first_last::last_value_udaf()
            } else {
                datafusion::functions_aggregate::first_last::first_value_udaf()
            };
            Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
                udaf,
                vec![value],
                params.distinct,
                params.filter,
                vec![SortExpr::new(ts, true, false)],
                params.null_treatment,
            )))
        }))
    }
}

/// `vwap(price, size)`: Σ price·size / Σ size, exact, at the price's scale (rounded half
/// away from zero); NULL for a group without size.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Vwap {
    signature: Signature,
}

impl Vwap {
    fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The decimal an exact input is read as; floats are refused (they are not exact).
fn exact(t: &DataType) -> Result<DataType> {
    match t {
        DataType::Decimal128(p, s) => Ok(DataType::Decimal128(*p, *s)),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => Ok(DataType::Decimal128(*p, *s)),
        t if t.is_integer() => Ok(DataType::Decimal128(20, 0)),
        DataType::Null => Ok(DataType::Decimal128(20, 0)),
        other => plan_err!(
            "vwap needs exact numbers (decimals or integers), not {other}: CAST it AS DECIMAL"
        ),
    }
}

fn scale(t: &DataType) -> i8 {
    match t {
        DataType::Decimal128(_, s) => *s,
        _ => 0,
    }
}

impl AggregateUDFImpl for Vwap {
    fn name(&self) -> &str {
        "vwap"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        if args.len() != 2 {
            return plan_err!("vwap takes (price, size)");
        }
        args.iter().map(exact).collect()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Decimal128(38, scale(&exact(&args[0])?)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let price = scale(args.input_fields[0].data_type());
        let size = scale(args.input_fields[1].data_type());
        Ok(vec![
            Arc::new(Field::new(
                "sum_price_size",
                DataType::Decimal256(76, price + size),
                true,
            )),
            Arc::new(Field::new("sum_size", DataType::Decimal256(76, size), true)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let price = scale(&args.exprs[0].data_type(args.schema)?);
        let size = scale(&args.exprs[1].data_type(args.schema)?);
        Ok(Box::new(VwapAccumulator {
            price_scale: price,
            size_scale: size,
            sum_pv: i256::ZERO,
            sum_v: i256::ZERO,
        }))
    }
}

fn overflow() -> DataFusionError {
    DataFusionError::Execution("vwap: the sums are beyond 76 digits".into())
}

#[derive(Debug)]
struct VwapAccumulator {
    price_scale: i8,
    size_scale: i8,
    sum_pv: i256,
    sum_v: i256,
}

impl Accumulator for VwapAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let prices = values[0].as_primitive::<Decimal128Type>();
        let sizes = values[1].as_primitive::<Decimal128Type>();
        for i in 0..prices.len() {
            if prices.is_null(i) || sizes.is_null(i) {
                continue;
            }
            let (p, v) = (
                i256::from_i128(prices.value(i)),
                i256::from_i128(sizes.value(i)),
            );
            self.sum_pv = p
                .checked_mul(v)
                .and_then(|pv| self.sum_pv.checked_add(pv))
                .ok_or_else(overflow)?;
            self.sum_v = self.sum_v.checked_add(v).ok_or_else(overflow)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let pv = states[0].as_primitive::<arrow::datatypes::Decimal256Type>();
        let v = states[1].as_primitive::<arrow::datatypes::Decimal256Type>();
        for i in 0..pv.len() {
            if !pv.is_null(i) && !v.is_null(i) {
                self.sum_pv = self.sum_pv.checked_add(pv.value(i)).ok_or_else(overflow)?;
                self.sum_v = self.sum_v.checked_add(v.value(i)).ok_or_else(overflow)?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Decimal256(Some(self.sum_pv), 76, self.price_scale + self.size_scale),
            ScalarValue::Decimal256(Some(self.sum_v), 76, self.size_scale),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.sum_v == i256::ZERO {
            return Ok(ScalarValue::Decimal128(None, 38, self.price_scale));
        }
        // Σpv has the scale of price + size, Σv that of size: their quotient is at the
        // price's scale. Rounded half away from zero.
        let (n, d) = (self.sum_pv, self.sum_v);
        let q = n.wrapping_div(d);
        let r = n.wrapping_rem(d);
        let twice = r.wrapping_mul(i256::from_i128(2)).wrapping_abs();
        let q = if twice >= d.wrapping_abs() {
            if (n < i256::ZERO) != (d < i256::ZERO) {
                q.wrapping_sub(i256::ONE)
            } else {
                q.wrapping_add(i256::ONE)
            }
        } else {
            q
        };
        let value = q
            .to_i128()
            .filter(|v| v.unsigned_abs() < 10u128.pow(38))
            .ok_or_else(|| DataFusionError::Execution("vwap is beyond 38 digits".into()))?;
        Ok(ScalarValue::Decimal128(Some(value), 38, self.price_scale))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_read_as_grafana_and_people_write_them() {
        assert_eq!(parse_width("300.000s"), Some(300_000_000_000));
        assert_eq!(parse_width("5 minutes"), Some(300_000_000_000));
        assert_eq!(parse_width("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_width("1 day"), Some(86_400_000_000_000));
        assert_eq!(parse_width("soon"), None);
        assert_eq!(parse_width("0s"), None);
    }

    async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn time_buckets_first_last_and_vwap_answer_exactly() {
        let ticks = "(VALUES \
            (TIMESTAMP '2026-11-20T14:30:07Z', CAST(100.10 AS DECIMAL(18,9)), CAST(10 AS DECIMAL(18,9))), \
            (TIMESTAMP '2026-11-20T14:31:59Z', CAST(100.30 AS DECIMAL(18,9)), CAST(30 AS DECIMAL(18,9))), \
            (TIMESTAMP '2026-11-20T14:30:00Z', CAST(100.00 AS DECIMAL(18,9)), CAST(20 AS DECIMAL(18,9))), \
            (TIMESTAMP '2026-11-20T14:35:00Z', CAST(101.00 AS DECIMAL(18,9)), CAST(1 AS DECIMAL(18,9)))) AS t(ts, price, size)";
        let out = one(&format!(
            "SELECT time_bucket('5 minutes', ts) AS bucket, first(price, ts) AS open, last(price, ts) AS close, vwap(price, size) AS vwap FROM {ticks} GROUP BY 1 ORDER BY 1"
        ))
        .await;
        // (100.10·10 + 100.30·30 + 100.00·20) / 60 = 6010 / 60 = 100.1666… → 100.166666667
        for line in [
            "| 2026-11-20T14:30:00 | 100.000000000 | 100.300000000 | 100.166666667 |",
            "| 2026-11-20T14:35:00 | 101.000000000 | 101.000000000 | 101.000000000 |",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
        let out = one(&format!(
            "SELECT time_bucket(INTERVAL '1 minute', ts) AS b, count(*) AS n FROM {ticks} GROUP BY 1 ORDER BY 1"
        ))
        .await;
        assert!(out.contains("| 2026-11-20T14:31:00 | 1 |"), "{out}");
    }

    #[tokio::test]
    async fn vwap_of_nothing_is_null_and_floats_are_refused() {
        let out = one("SELECT vwap(CAST(1 AS DECIMAL(10,2)), CAST(0 AS DECIMAL(10,2))) AS v").await;
        assert!(out.contains("|   |"), "{out}");
        let ctx = SessionContext::new();
        register(&ctx);
        let err = ctx
            .sql("SELECT vwap(1.5, 2.0)")
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("exact numbers")),
            "{err:?}"
        );
    }
}
