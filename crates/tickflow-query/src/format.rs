use std::str::FromStr;

use arrow::util::pretty::pretty_format_batches;

use crate::{QueryResult, Result};

/// How query results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// RFC 4180 with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown format {other:?}: expected table, csv or json"
            )),
        }
    }
}

/// Renders a result in `format`.
///
/// # Errors
/// Only if Arrow cannot encode a value.
pub fn render(result: &QueryResult, format: Format) -> Result<String> {
    match format {
        Format::Table => {
            if result.batches.is_empty() {
                let empty = arrow::record_batch::RecordBatch::new_empty(std::sync::Arc::clone(
                    &result.schema,
                ));
                return Ok(pretty_format_batches(&[empty])?.to_string());
            }
            Ok(pretty_format_batches(&result.batches)?.to_string())
        }
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                if result.batches.is_empty() {
                    w.write(&arrow::record_batch::RecordBatch::new_empty(
                        std::sync::Arc::clone(&result.schema),
                    ))?;
                }
                for b in &result.batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut out);
                for b in &result.batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            let text = String::from_utf8_lossy(&out).into_owned();
            Ok(if text.is_empty() {
                "[]".to_string()
            } else {
                text
            })
        }
    }
}

/// The result as an Arrow IPC stream (`application/vnd.apache.arrow.stream`), for pandas,
/// polars and DuckDB: every type as the query produced it, decimals exact.
///
/// # Errors
/// Only if Arrow cannot encode a batch.
pub fn render_arrow(result: &QueryResult) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &result.schema)?;
        for b in &result.batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(out)
}
