//! Exact decimal sums, `sum(x)` and `sum(a * b)`: the heart of volume, VWAP and notional.
//!
//! DataFusion sums DECIMAL128 with a wrapping add, so a sum past 2^127 comes back as a wrong
//! number, and it evaluates `sum(price * size)` by first multiplying into a new 128-bit array,
//! checked row by row. The rule here hands both to [`ExactSum`]:
//! - products are taken inside the summing loop: when a batch's values fit 64 bits (every
//!   DECIMAL(18, s) does) each is one 64×64→128-bit multiply that cannot overflow;
//! - sums are checked, and a total past the result's DECIMAL(38) is an error, never a
//!   wrapped number;
//! - consecutive rows of one group (the lake's files hold one symbol each) are added in a
//!   register before touching the group's slot.
//!
//! The result has the name, type and value DataFusion's `sum` gives whenever that is right.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Decimal128Array};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DataType, Decimal64Type, Decimal128Type, DecimalType, Field, FieldRef,
};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, Aggregate, AggregateUDF, AggregateUDFImpl, BinaryExpr, EmitTo, Expr,
    ExprSchemable, GroupsAccumulator, LogicalPlan, Operator, Signature, Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// Rewrites DataFusion's `sum` of a decimal into [`ExactSum`] wherever the result type is
/// unchanged: `sum(a * b)` becomes `exact_sum(a, b)`, any other `sum(x)` becomes
/// `exact_sum(x)`. `DISTINCT` and ordered sums are left alone; `FILTER` is kept.
#[derive(Debug, Default)]
pub(crate) struct ExactDecimalSums;

impl OptimizerRule for ExactDecimalSums {
    fn name(&self) -> &str {
        "tickflow_exact_decimal_sums"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        let input_schema = aggregate.input.schema();
        let mut rewrote_any = false;
        let mut aggr_expr = Vec::with_capacity(aggregate.aggr_expr.len());
        for expr in &aggregate.aggr_expr {
            match exact(expr, input_schema)? {
                Some(exact) => {
                    rewrote_any = true;
                    aggr_expr.push(exact);
                }
                None => aggr_expr.push(expr.clone()),
            }
        }
        if !rewrote_any {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let Aggregate {
            input, group_expr, ..
        } = aggregate;
        let rewritten = Aggregate::try_new(input, group_expr, aggr_expr)?;
        Ok(Transformed::yes(LogicalPlan::Aggregate(rewritten)))
    }
}

/// `expr` as an [`ExactSum`] under the name it had, if it is a plain `sum` of a decimal.
fn exact(expr: &Expr, schema: &DFSchema) -> Result<Option<Expr>> {
    let (inner, relation, name) = match expr {
        Expr::Alias(alias) => (
            alias.expr.as_ref(),
            alias.relation.clone(),
            alias.name.clone(),
        ),
        other => (other, None, other.schema_name().to_string()),
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
        return Ok(None);
    };
    let plain = func.inner().is::<Sum>()
        && params.args.len() == 1
        && !params.distinct
        && params.order_by.is_empty()
        && params.null_treatment.is_none();
    if !plain {
        return Ok(None);
    }
    let decimal = |e: &Expr| -> Result<bool> { Ok(digits(&e.get_type(schema)?).is_some()) };
    let args = match &params.args[0] {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Multiply,
            right,
        }) if decimal(left)? && decimal(right)? => {
            vec![left.as_ref().clone(), right.as_ref().clone()]
        }
        x if decimal(x)? => vec![x.clone()],
        _ => return Ok(None),
    };
    let exact = Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(AggregateUDF::from(ExactSum::new())),
        args,
        false,
        params.filter.clone(),
        vec![],
        None,
    ));
    // Anything the exact sum cannot type exactly as `sum` does stays DataFusion's.
    match (exact.get_type(schema), inner.get_type(schema)) {
        (Ok(a), Ok(b)) if a == b => {}
        _ => return Ok(None),
    }
    Ok(Some(exact.alias_qualified(relation, name)))
}

/// `exact_sum(x)`: the sum of a DECIMAL128 over rows where it is set; `exact_sum(a, b)`: the
/// sum of `a * b` over rows where both are set. Typed as DataFusion types `sum(x)`,
/// DECIMAL(min(38, p + 10), s), and `sum(a * b)`, DECIMAL(min(38, p1 + p2 + 11), s1 + s2).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ExactSum {
    signature: Signature,
}

impl ExactSum {
    pub(crate) fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for ExactSum {
    fn name(&self) -> &str {
        "exact_sum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let (precision, scale) = match args.iter().map(digits).collect::<Vec<_>>()[..] {
            [Some((p, s))] => (p, s),
            [Some((p1, s1)), Some((p2, s2))] => {
                let scale = i16::from(s1) + i16::from(s2);
                let Ok(scale) = i8::try_from(scale) else {
                    return plan_err!(
                        "the product of {:?} and {:?} has scale {scale}",
                        args[0],
                        args[1]
                    );
                };
                // As DataFusion types `a * b` (Hive's rule).
                ((p1 + p2 + 1).min(DECIMAL128_MAX_PRECISION), scale)
            }
            _ => return plan_err!("exact_sum takes one or two decimal values, not {args:?}"),
        };
        // As DataFusion types `sum`: ten more digits.
        Ok(DataType::Decimal128(
            (precision + 10).min(DECIMAL128_MAX_PRECISION),
            scale,
        ))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Total {
            sums: Sums::new(args.return_field.data_type())?,
            zeros: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[sum]", args.name),
                args.return_type().clone(),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[wraps]", args.name),
                DataType::Int64,
                true,
            )),
        ])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Sums::new(args.return_field.data_type())?))
    }
}

/// Precision and scale of a DECIMAL64 or DECIMAL128, the decimals `exact_sum` takes.
fn digits(t: &DataType) -> Option<(u8, i8)> {
    match *t {
        DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => Some((p, s)),
        _ => None,
    }
}

/// Per group: the running sum, how many times it wrapped past 2^127 (up minus down), and
/// whether any row has counted. The total is exact whenever the wraps come back to zero, in
/// whatever order the rows and partial sums arrive.
#[derive(Debug)]
struct Sums {
    sums: Vec<i128>,
    wraps: Vec<i64>,
    seen: Vec<bool>,
    precision: u8,
    scale: i8,
}

impl Sums {
    fn new(result: &DataType) -> Result<Self> {
        let DataType::Decimal128(precision, scale) = *result else {
            return exec_err!("exact_sum returns DECIMAL128, not {result}");
        };
        Ok(Self {
            sums: Vec::new(),
            wraps: Vec::new(),
            seen: Vec::new(),
            precision,
            scale,
        })
    }

    fn grow(&mut self, groups: usize) {
        if self.sums.len() < groups {
            self.sums.resize(groups, 0);
            self.wraps.resize(groups, 0);
            self.seen.resize(groups, false);
        }
    }

    fn overflowed<T>(&self) -> Result<T> {
        exec_err!(
            "sum overflows DECIMAL({}, {}); cast the values to DOUBLE to sum them approximately",
            self.precision,
            self.scale
        )
    }

    /// Adds each row's value (`x`, or `a * b`) to group `groups[i]`, for the rows where
    /// every argument is set and `filter` passes.
    fn add_rows(
        &mut self,
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        if args.iter().any(|a| a.len() != groups.len()) {
            return exec_err!("exact_sum: arguments and groups differ in length");
        }
        let nulls: Vec<_> = args.iter().map(|a| a.nulls()).collect();
        let counted = Counted::of(&nulls, filter);
        let columns = args.iter().map(Values::of).collect::<Result<Vec<_>>>()?;
        let product_overflow = match columns.as_slice() {
            [Values::Narrow(x)] => self.add_values(groups, &counted, x),
            [Values::Wide(x)] => self.add_values(groups, &counted, x),
            [Values::Narrow(a), Values::Narrow(b)] => self.add_products(groups, &counted, a, b),
            [Values::Wide(a), Values::Wide(b)] => self.add_products(groups, &counted, a, b),
            [a, b] => self.add_products(groups, &counted, &a.wide(), &b.wide()),
            _ => return exec_err!("exact_sum takes one or two arguments"),
        };
        if product_overflow {
            return self.overflowed();
        }
        Ok(())
    }

    /// `sum(x)` over the counted rows.
    #[inline]
    fn add_values<T: Value>(&mut self, groups: &[usize], counted: &Counted, x: &[T]) -> bool {
        let Counted::All = counted else {
            return self.add_counted(groups, counted, |i| Some(x[i].wide()));
        };
        // One pass sums the runs unchecked and finds the widest value; the sums are kept
        // only if that shows no run could have wrapped.
        let (runs, seen) = wrapping_runs(groups, |rows| {
            let mut seen = 0;
            let mut sum = 0i128;
            for &v in &x[rows] {
                seen |= v.magnitude();
                sum = sum.wrapping_add(v.wide());
            }
            (sum, [seen, 0])
        });
        if bits(seen[0]) + headroom(groups.len()) < 127 {
            runs.into_iter().for_each(|(g, sum)| self.add_to(g, sum, 0));
        } else {
            self.add_runs(groups, x.iter().map(|v| v.wide()));
        }
        false
    }

    /// `sum(a * b)` over the counted rows. True if a product passes i128.
    #[inline]
    fn add_products<T: Value>(
        &mut self,
        groups: &[usize],
        counted: &Counted,
        a: &[T],
        b: &[T],
    ) -> bool {
        let product = |i: usize| i128::from(a[i].low()) * i128::from(b[i].low());
        if let Counted::Where(_) = counted {
            let seen = |v: &[T]| v.iter().fold(0, |m, &v| m | v.magnitude());
            return if T::NARROW || (bits(seen(a)) <= 64 && bits(seen(b)) <= 64) {
                self.add_counted(groups, counted, |i| Some(product(i)))
            } else {
                self.add_counted(groups, counted, |i| a[i].wide().checked_mul(b[i].wide()))
            };
        }
        let (runs, [seen_a, seen_b]) = wrapping_runs(groups, |rows| {
            let (mut seen_a, mut seen_b) = (0, 0);
            let mut sum = 0i128;
            for (&x, &y) in a[rows.clone()].iter().zip(&b[rows]) {
                seen_a |= x.magnitude();
                seen_b |= y.magnitude();
                sum = sum.wrapping_add(i128::from(x.low()) * i128::from(y.low()));
            }
            (sum, [seen_a, seen_b])
        });
        let (bits_a, bits_b) = (bits(seen_a), bits(seen_b));
        if bits_a > 64 || bits_b > 64 {
            self.add_counted(groups, counted, |i| a[i].wide().checked_mul(b[i].wide()))
        } else if bits_a + bits_b + headroom(groups.len()) < 127 {
            runs.into_iter().for_each(|(g, sum)| self.add_to(g, sum, 0));
            false
        } else {
            self.add_runs(groups, (0..groups.len()).map(product));
            false
        }
    }

    /// Adds partial states (a sum column and a wraps column) into the groups.
    fn add_partial_sums(&mut self, state: &[ArrayRef], groups: &[usize]) -> Result<()> {
        let [sums, wraps] = state else {
            return exec_err!("exact_sum: a partial state has two columns");
        };
        let sums = decimals(sums)?;
        let Some(wraps) = wraps.as_primitive_opt::<arrow::datatypes::Int64Type>() else {
            return exec_err!(
                "exact_sum: partial wraps are INT64, not {}",
                wraps.data_type()
            );
        };
        if sums.len() != groups.len() || wraps.len() != groups.len() {
            return exec_err!("exact_sum: partial sums and groups differ in length");
        }
        let (values, counts) = (sums.values(), wraps.values());
        let mut add = |i: usize| self.add_to(groups[i], values[i], counts[i]);
        match sums.nulls() {
            None => (0..groups.len()).for_each(&mut add),
            Some(valid) => valid.valid_indices().for_each(&mut add),
        }
        Ok(())
    }

    /// Adds every row's value, keeping a run of rows of one group in a register: the slot
    /// in memory is touched once per run rather than once per row.
    #[inline]
    fn add_runs(&mut self, groups: &[usize], values: impl Iterator<Item = i128>) {
        let mut run: Option<(usize, i128, i64)> = None;
        for (&group, value) in groups.iter().zip(values) {
            match &mut run {
                Some((g, sum, wraps)) if *g == group => {
                    let (s, wrapped) = sum.overflowing_add(value);
                    *sum = s;
                    *wraps += wrap(wrapped, value);
                }
                _ => {
                    if let Some((g, sum, wraps)) = run {
                        self.add_to(g, sum, wraps);
                    }
                    run = Some((group, value, 0));
                }
            }
        }
        if let Some((g, sum, wraps)) = run {
            self.add_to(g, sum, wraps);
        }
    }

    /// Adds `value(i)` to group `groups[i]` for each counted row. True if a value is `None`
    /// (a product past i128).
    #[inline]
    fn add_counted(
        &mut self,
        groups: &[usize],
        counted: &Counted,
        value: impl Fn(usize) -> Option<i128>,
    ) -> bool {
        let mut overflow = false;
        let mut add = |i: usize| match value(i) {
            Some(v) => self.add_to(groups[i], v, 0),
            None => overflow = true,
        };
        match counted {
            Counted::All => (0..groups.len()).for_each(&mut add),
            Counted::Where(mask) => mask.set_indices().for_each(&mut add),
        }
        overflow
    }

    /// Adds `value`, which carries `wraps` of its own, to `group`'s sum.
    #[inline]
    fn add_to(&mut self, group: usize, value: i128, wraps: i64) {
        let (sum, wrapped) = self.sums[group].overflowing_add(value);
        self.sums[group] = sum;
        self.wraps[group] += wraps + wrap(wrapped, value);
        self.seen[group] = true;
    }

    /// The first groups per `emit_to`: the sums as a DECIMAL array, null where no row
    /// counted, and their wraps. Only a final result has to fit the type.
    fn emit(&mut self, emit_to: EmitTo) -> Result<(ArrayRef, Vec<i64>)> {
        let sums = emit_to.take_needed(&mut self.sums);
        let wraps = emit_to.take_needed(&mut self.wraps);
        let seen = emit_to.take_needed(&mut self.seen);
        let array = Decimal128Array::new(sums.into(), Some(NullBuffer::from(seen)))
            .with_precision_and_scale(self.precision, self.scale)?;
        Ok((Arc::new(array), wraps))
    }

    fn emit_state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (sums, wraps) = self.emit(emit_to)?;
        Ok(vec![sums, Arc::new(arrow::array::Int64Array::from(wraps))])
    }

    fn emit_final(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (sums, wraps) = self.emit(emit_to)?;
        let values = sums.as_primitive::<Decimal128Type>().values();
        if !values.iter().zip(&wraps).all(|(&v, &w)| self.fits(v, w)) {
            return self.overflowed();
        }
        Ok(sums)
    }

    /// Whether a final sum is exact in the result type: it did not end wrapped past 2^127,
    /// and it has no more digits than the type holds. (The array's own precision check also
    /// compares precision with scale, which a negative scale fails.)
    fn fits(&self, sum: i128, wraps: i64) -> bool {
        wraps == 0 && Decimal128Type::is_valid_decimal_precision(sum, self.precision)
    }
}

/// +1 for a sum that wrapped past i128::MAX by adding `value`, -1 past i128::MIN.
#[inline]
fn wrap(wrapped: bool, value: i128) -> i64 {
    match (wrapped, value < 0) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => -1,
    }
}

/// Which rows of a batch count.
enum Counted {
    All,
    Where(BooleanBuffer),
}

impl Counted {
    fn of(nulls: &[Option<&NullBuffer>], filter: Option<&BooleanArray>) -> Self {
        let mut mask: Option<BooleanBuffer> = None;
        let mut and = |b: &BooleanBuffer| {
            mask = Some(match mask.take() {
                Some(m) => &m & b,
                None => b.clone(),
            });
        };
        for n in nulls.iter().flatten() {
            and(n.inner());
        }
        if let Some(f) = filter {
            // A null filter value does not pass.
            let passes = match f.nulls() {
                Some(n) => f.values() & n.inner(),
                None => f.values().clone(),
            };
            and(&passes);
        }
        mask.map_or(Self::All, Self::Where)
    }
}

/// Bits a signed number needs to hold every value whose [`Value::magnitude`]s were ORed into
/// `seen`: up to 64 fit an i64.
fn bits(seen: u128) -> u32 {
    128 - seen.leading_zeros() + 1
}

/// Each run of rows of one group in `groups`, with `sum(rows)` of it, and every run's
/// `seen` ORed together: one pass, no checks, for a caller that shows afterwards (from
/// what was seen) that no run could wrap. `sum` runs over a slice with no group in sight,
/// so its loop keeps everything in registers.
fn wrapping_runs(
    groups: &[usize],
    mut sum: impl FnMut(Range<usize>) -> (i128, [u128; 2]),
) -> (Vec<(usize, i128)>, [u128; 2]) {
    let mut runs = Vec::new();
    let mut seen = [0; 2];
    let mut start = 0;
    while let Some(&group) = groups.get(start) {
        let len = run_len(&groups[start..], group);
        let (total, what) = sum(start..start + len);
        runs.push((group, total));
        seen = [seen[0] | what[0], seen[1] | what[1]];
        start += len;
    }
    (runs, seen)
}

/// How many of `groups` from the first are `group`: a block at a time with no branch
/// inside it, which the compiler turns into vector compares.
pub(crate) fn run_len<T: Copy + PartialEq>(groups: &[T], group: T) -> usize {
    let mut len = 0;
    for block in groups.chunks(64) {
        if block.iter().fold(true, |all, &g| all & (g == group)) {
            len += block.len();
        } else {
            return len + block.iter().take_while(|&&g| g == group).count();
        }
    }
    len
}

/// Bits a sum of `n` values may need beyond the widest value's.
fn headroom(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

fn decimals(array: &ArrayRef) -> Result<&Decimal128Array> {
    match array.as_primitive_opt::<Decimal128Type>() {
        Some(a) => Ok(a),
        None => exec_err!("exact_sum takes DECIMAL128, not {}", array.data_type()),
    }
}

/// An argument's values: 64-bit decimals as the lake stores prices and sizes, or 128-bit.
enum Values<'a> {
    Narrow(&'a [i64]),
    Wide(&'a [i128]),
}

impl<'a> Values<'a> {
    fn of(array: &'a ArrayRef) -> Result<Self> {
        if let Some(a) = array.as_primitive_opt::<Decimal64Type>() {
            return Ok(Self::Narrow(a.values()));
        }
        match array.as_primitive_opt::<Decimal128Type>() {
            Some(a) => Ok(Self::Wide(a.values())),
            None => exec_err!(
                "exact_sum takes DECIMAL64 or DECIMAL128, not {}",
                array.data_type()
            ),
        }
    }

    /// The values as 128-bit, for a product of one narrow and one wide argument.
    fn wide(&self) -> Cow<'a, [i128]> {
        match self {
            Self::Narrow(v) => Cow::Owned(v.iter().map(|&v| i128::from(v)).collect()),
            Self::Wide(v) => Cow::Borrowed(v),
        }
    }
}

/// A decimal's unscaled value, 64 or 128 bits.
trait Value: Copy {
    /// Whether every value fits 64 bits, so products need no width check.
    const NARROW: bool;
    fn wide(self) -> i128;
    /// The low 64 bits: the value itself when it fits them.
    fn low(self) -> i64;
    /// For [`bits`]: the value if it is not negative, `-v - 1` if it is (both need the
    /// same bits as a signed number).
    fn magnitude(self) -> u128;
}

impl Value for i64 {
    const NARROW: bool = true;

    #[inline]
    fn wide(self) -> i128 {
        i128::from(self)
    }

    #[inline]
    fn low(self) -> i64 {
        self
    }

    #[inline]
    fn magnitude(self) -> u128 {
        u128::from((self ^ (self >> 63)) as u64)
    }
}

impl Value for i128 {
    const NARROW: bool = false;

    #[inline]
    fn wide(self) -> i128 {
        self
    }

    #[inline]
    fn low(self) -> i64 {
        self as i64
    }

    #[inline]
    fn magnitude(self) -> u128 {
        (self ^ (self >> 127)) as u128
    }
}

impl GroupsAccumulator for Sums {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        self.add_rows(values, group_indices, opt_filter)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.emit_final(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.emit_state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        self.add_partial_sums(values, group_indices)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: the state is the row's value.
        let rows = values[0].len();
        let mut each = Self {
            sums: Vec::new(),
            wraps: Vec::new(),
            seen: Vec::new(),
            precision: self.precision,
            scale: self.scale,
        };
        each.grow(rows);
        let groups: Vec<usize> = (0..rows).collect();
        each.add_rows(values, &groups, opt_filter)?;
        each.emit_state(EmitTo::All)
    }

    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<i128>()
            + self.wraps.capacity() * size_of::<i64>()
            + self.seen.capacity()
    }
}

/// The ungrouped form (`SELECT sum(x) FROM t`): one group, with a batch's worth of its
/// index kept rather than allocated per batch.
#[derive(Debug)]
struct Total {
    sums: Sums,
    zeros: Vec<usize>,
}

impl Total {
    fn group(&mut self, rows: usize) -> (&mut Sums, &[usize]) {
        self.sums.grow(1);
        if self.zeros.len() < rows {
            self.zeros.resize(rows, 0);
        }
        (&mut self.sums, &self.zeros[..rows])
    }
}

impl Accumulator for Total {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (sums, group) = self.group(values.first().map_or(0, |v| v.len()));
        sums.add_rows(values, group, None)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (sums, group) = self.group(states.first().map_or(0, |v| v.len()));
        sums.add_partial_sums(states, group)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let Sums {
            precision, scale, ..
        } = self.sums;
        let sum = match (
            self.sums.sums.first(),
            self.sums.wraps.first(),
            self.sums.seen.first(),
        ) {
            (Some(&sum), Some(&wraps), Some(true)) => {
                if !self.sums.fits(sum, wraps) {
                    return self.sums.overflowed();
                }
                Some(sum)
            }
            _ => None,
        };
        Ok(ScalarValue::Decimal128(sum, precision, scale))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let Sums {
            precision, scale, ..
        } = self.sums;
        let (sum, wraps) = match (
            self.sums.sums.first(),
            self.sums.wraps.first(),
            self.sums.seen.first(),
        ) {
            (Some(&sum), Some(&wraps), Some(true)) => (Some(sum), wraps),
            _ => (None, 0),
        };
        Ok(vec![
            ScalarValue::Decimal128(sum, precision, scale),
            ScalarValue::Int64(Some(wraps)),
        ])
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.sums.size()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Decimal128Builder, StringArray};
    use arrow::datatypes::Schema;
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A table `t(g, a, b)`: `a` DECIMAL(18, 9) and `b` DECIMAL(pb, sb), split over
    /// `partitions` so that partial sums are merged.
    fn table(
        rows: &[(&str, Option<i128>, Option<i128>)],
        b_type: (u8, i8),
        partitions: usize,
    ) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("a", DataType::Decimal128(18, 9), true),
            Field::new("b", DataType::Decimal128(b_type.0, b_type.1), true),
        ]));
        let chunk = rows.len().div_ceil(partitions).max(1);
        let batches = rows
            .chunks(chunk)
            .map(|part| {
                let g = StringArray::from_iter_values(part.iter().map(|r| r.0));
                let mut a = Decimal128Builder::new();
                let mut b = Decimal128Builder::new();
                for r in part {
                    a.append_option(r.1);
                    b.append_option(r.2);
                }
                let a = a.finish().with_precision_and_scale(18, 9).unwrap();
                let b = b
                    .finish()
                    .with_precision_and_scale(b_type.0, b_type.1)
                    .unwrap();
                let batch = RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(g), Arc::new(a), Arc::new(b)],
                )
                .unwrap();
                vec![batch]
            })
            .collect();
        Arc::new(MemTable::try_new(schema, batches).unwrap())
    }

    async fn run(table: Arc<MemTable>, sql: &str, fused: bool) -> Result<String> {
        let ctx = SessionContext::new();
        if fused {
            ctx.add_optimizer_rule(Arc::new(ExactDecimalSums));
        }
        ctx.register_table("t", table)?;
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    /// Pseudo-random rows, some with nulls, over five groups: interleaved, or in runs of
    /// one group (as the lake's files hold one symbol each).
    fn rows(n: usize, runs: bool) -> Vec<(&'static str, Option<i128>, Option<i128>)> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let a = (x % 1_000_000_000_000) as i128 - 200_000_000_000;
                let b = ((x >> 20) % 10_000_000_000) as i128;
                let group = if runs { i * 5 / n } else { i % 5 };
                let g = ["AAPL", "MSFT", "NVDA", "SPY", "TSLA"][group];
                (g, (i % 17 != 3).then_some(a), (i % 23 != 5).then_some(b))
            })
            .collect()
    }

    #[tokio::test]
    async fn exact_sums_equal_datafusions_own_with_nulls_filters_and_partitions() {
        let queries = [
            "SELECT g, sum(a * b) AS s FROM t GROUP BY g ORDER BY g",
            "SELECT g, sum(a * b), sum(b), sum(a) FROM t GROUP BY g ORDER BY g",
            "SELECT g, CAST(sum(a * b) AS DOUBLE) / CAST(sum(b) AS DOUBLE) AS vwap FROM t GROUP BY g ORDER BY g",
            "SELECT g, sum(a * b) FILTER (WHERE b > 5000000000) AS s, sum(a) FILTER (WHERE a < 0) FROM t GROUP BY g ORDER BY g",
            "SELECT sum(a * b) AS s, sum(b * a), sum(a + b), sum(a) FROM t",
            "SELECT sum(a * b) AS s, sum(b) FROM t WHERE g = 'nobody'",
            "SELECT sum(DISTINCT a * b), sum(DISTINCT b) FROM t",
            "SELECT g, sum(a * b) AS s, sum(a) FROM t WHERE a IS NULL GROUP BY g ORDER BY g",
        ];
        for runs in [false, true] {
            let rows = rows(20_000, runs);
            for partitions in [1, 3] {
                for b_type in [(18, 9), (38, 2)] {
                    let t = table(&rows, b_type, partitions);
                    for sql in queries {
                        let exact = run(Arc::clone(&t), sql, true).await.unwrap();
                        let plain = run(Arc::clone(&t), sql, false).await.unwrap();
                        assert_eq!(
                            exact, plain,
                            "{sql} over {partitions} partitions, b {b_type:?}, runs {runs}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn values_stored_in_64_bits_sum_as_their_128_bit_forms() {
        use arrow::array::{Decimal64Array, Int64Array};
        let (values_a, values_b): (Vec<i64>, Vec<i64>) = rows(5_000, true)
            .iter()
            .map(|r| (r.1.unwrap_or(7) as i64, r.2.unwrap_or(-3) as i64))
            .chain([(i64::MAX, i64::MAX), (i64::MIN, 1), (i64::MIN, i64::MIN)])
            .unzip();
        let groups: Vec<usize> = (0..values_a.len())
            .map(|i| i * 4 / values_a.len())
            .collect();
        let narrow = |v: &[i64]| -> ArrayRef {
            Arc::new(
                Decimal64Array::from(v.to_vec())
                    .with_precision_and_scale(18, 9)
                    .unwrap(),
            )
        };
        let wide = |v: &[i64]| -> ArrayRef {
            Arc::new(
                Decimal128Array::from_iter_values(v.iter().map(|&v| i128::from(v)))
                    .with_precision_and_scale(18, 9)
                    .unwrap(),
            )
        };
        let filter = BooleanArray::from_iter((0..groups.len()).map(|i| Some(i % 3 != 0)));
        let sums = |args: &[ArrayRef], filter: Option<&BooleanArray>| {
            let mut sums = Sums::new(&DataType::Decimal128(38, 18)).unwrap();
            let state = sums
                .update_batch(args, &groups, filter, 4)
                .and_then(|()| sums.state(EmitTo::All));
            state.map(|s| {
                (
                    s[0].to_data(),
                    s[1].as_primitive::<arrow::datatypes::Int64Type>().clone(),
                )
            })
        };
        let (a, b) = (values_a.as_slice(), values_b.as_slice());
        for filter in [None, Some(&filter)] {
            for (narrowed, widened) in [
                (vec![narrow(a)], vec![wide(a)]),
                (vec![narrow(a), narrow(b)], vec![wide(a), wide(b)]),
                (vec![narrow(a), wide(b)], vec![wide(a), wide(b)]),
            ] {
                let (n, w) = (
                    sums(&narrowed, filter).unwrap(),
                    sums(&widened, filter).unwrap(),
                );
                assert_eq!(
                    n,
                    w,
                    "{} arguments, filter {}",
                    narrowed.len(),
                    filter.is_some()
                );
            }
        }
        let wrong = Arc::new(Int64Array::from(vec![1; groups.len()])) as ArrayRef;
        let err = sums(&[wrong], None).unwrap_err();
        assert!(err.to_string().contains("DECIMAL64 or DECIMAL128"), "{err}");
    }

    #[tokio::test]
    async fn negative_scales_sum_as_datafusion_does() {
        // DECIMAL(18, -2): whole hundreds. (DataFusion's own simplifier overflows on some
        // comparisons with such columns, so only sums are asked here.)
        let t = table(&rows(2_000, false), (18, -2), 2);
        for sql in [
            "SELECT g, sum(b), sum(a * b) FROM t GROUP BY g ORDER BY g",
            "SELECT sum(b), sum(a * b) FROM t",
        ] {
            let exact = run(Arc::clone(&t), sql, true).await.unwrap();
            assert_eq!(
                exact,
                run(Arc::clone(&t), sql, false).await.unwrap(),
                "{sql}"
            );
        }
    }

    #[tokio::test]
    async fn rows_passed_through_unaggregated_are_summed_alike() {
        // With many groups DataFusion stops aggregating partially and hands each row on as
        // its own partial state (`convert_to_state`).
        use datafusion::prelude::SessionConfig;
        let rows = rows(30_000, false);
        let sql = "SELECT a, sum(a * b) AS s, sum(b) FILTER (WHERE b > 1000) FROM t GROUP BY a ORDER BY a";
        let mut outputs = Vec::new();
        for exact in [true, false] {
            let config = SessionConfig::new()
                .with_target_partitions(3)
                .set_str(
                    "datafusion.execution.skip_partial_aggregation_probe_rows_threshold",
                    "100",
                )
                .set_str(
                    "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
                    "0.1",
                );
            let ctx = SessionContext::new_with_config(config);
            if exact {
                ctx.add_optimizer_rule(Arc::new(ExactDecimalSums));
            }
            ctx.register_table("t", table(&rows, (18, 9), 3)).unwrap();
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            outputs.push(
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string(),
            );
            if exact {
                let analyzed = ctx
                    .sql(&format!("EXPLAIN ANALYZE {sql}"))
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                let analyzed = arrow::util::pretty::pretty_format_batches(&analyzed)
                    .unwrap()
                    .to_string();
                assert!(analyzed.contains("exact_sum"), "{analyzed}");
                assert!(
                    !analyzed.contains("skipped_aggregation_rows=0,")
                        && analyzed.contains("skipped_aggregation_rows="),
                    "no row skipped partial aggregation: {analyzed}"
                );
            }
        }
        assert_eq!(outputs[0], outputs[1]);
    }

    #[tokio::test]
    async fn the_rule_rewrites_plain_decimal_sums_only() {
        let explain = |sql: &'static str| async move {
            let ctx = SessionContext::new();
            ctx.add_optimizer_rule(Arc::new(ExactDecimalSums));
            ctx.register_table("t", table(&rows(10, false), (18, 9), 1))
                .unwrap();
            let plan = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            arrow::util::pretty::pretty_format_batches(&plan)
                .unwrap()
                .to_string()
        };
        let plan = explain("EXPLAIN SELECT g, sum(a * b), sum(b) FROM t GROUP BY g").await;
        assert!(plan.contains("exact_sum(t.a, t.b)"), "{plan}");
        assert!(plan.contains("exact_sum(t.b)"), "{plan}");
        let plan =
            explain("EXPLAIN SELECT sum(CAST(a AS DOUBLE)), sum(a) FILTER (WHERE a > 0) FROM t")
                .await;
        assert!(!plan.contains("exact_sum(CAST"), "{plan}");
        assert!(plan.contains("exact_sum(t.a) FILTER"), "{plan}");
    }

    #[tokio::test]
    async fn values_past_64_bits_are_multiplied_exactly() {
        // b is DECIMAL(38, 2) with values past 2^63: the wide path.
        let big = 40_000_000_000_000_000_000_i128;
        let rows = [
            ("X", Some(3_000_000_000), Some(big)),
            ("X", Some(-1), Some(7)),
        ];
        let t = table(&rows, (38, 2), 1);
        let sql = "SELECT g, sum(a * b) AS s FROM t GROUP BY g";
        let fused = run(Arc::clone(&t), sql, true).await.unwrap();
        assert_eq!(fused, run(t, sql, false).await.unwrap());
        assert!(fused.contains("1199999999999999999.99999999993"), "{fused}");
    }

    #[tokio::test]
    async fn a_sum_past_decimal_38_is_an_error_not_a_wrapped_number() {
        // Each product is about 10^36 at scale 18; two hundred of them pass 2^127.
        let max = 999_999_999_999_999_999_i128;
        let rows = vec![("X", Some(max), Some(max)); 200];
        let t = table(&rows, (18, 9), 1);
        for sql in [
            "SELECT g, sum(a * b) FROM t GROUP BY g",
            "SELECT sum(a * b) FROM t",
        ] {
            let err = run(Arc::clone(&t), sql, true).await.unwrap_err();
            assert!(
                err.to_string().contains("sum overflows DECIMAL(38, 18)"),
                "{sql}: {err}"
            );
        }
        // Under 2^127 but past 38 digits: still refused.
        let rows = vec![("X", Some(max), Some(max)); 120];
        let err = run(table(&rows, (18, 9), 1), "SELECT sum(a * b) FROM t", true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
        // A plain sum of DECIMAL(38, 2) values past 2^127: DataFusion's own sum wraps to a
        // wrong number here; the exact sum refuses.
        let big = 10_i128.pow(37);
        let rows = vec![("X", Some(1), Some(big)); 20];
        let t = table(&rows, (38, 2), 1);
        let err = run(Arc::clone(&t), "SELECT g, sum(b) FROM t GROUP BY g", true)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("sum overflows DECIMAL(38, 2)"),
            "{err}"
        );
        // Past 2^127 and back: exact, whichever partial sums meet first.
        let big = 9 * 10_i128.pow(37);
        let rows = [
            ("X", Some(1), Some(big)),
            ("X", Some(1), Some(big)),
            ("X", Some(1), Some(-big)),
        ];
        for partitions in [1, 3] {
            let t = table(&rows, (38, 0), partitions);
            for sql in [
                "SELECT g, sum(b) AS s FROM t GROUP BY g",
                "SELECT sum(b) AS s FROM t",
            ] {
                let out = run(Arc::clone(&t), sql, true).await.unwrap();
                assert!(
                    out.contains("90000000000000000000000000000000000000"),
                    "{sql}: {out}"
                );
            }
        }
        if let Ok(out) = run(t, "SELECT g, sum(b) FROM t GROUP BY g", false).await {
            assert!(
                !out.contains("2000000000000000000000000000000000000.00"),
                "DataFusion's own sum now gets this right: {out}"
            );
        }
    }
}
