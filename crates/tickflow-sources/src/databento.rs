//! Databento DBN files for replay, read through the `dbn` crate (plain or zstd, DBN versions
//! 1 to 3): trades (`trades`), top-of-book quotes (`mbp-1`, `tbbo`) and OHLCV bars
//! (`ohlcv-1s`, `-1m`, `-1h`, `-1d`) become events; other schemas are skipped and counted.
//!
//! DBN prices are integers in units of 10^-9, tickflow's own scale, so they are taken as they
//! are. Symbols come from the file's symbology (instrument id to raw symbol); a record whose
//! instrument has no mapping keeps its id as the symbol. Events get the replay's source, and
//! `databento:<dataset>` as feed; a trade's natural key uses the venue's sequence number.

use std::path::Path;
use std::sync::Arc;

use dbn::decode::{DbnMetadata, DecodeRecordRef, DynDecoder};
use dbn::{Record, RecordRefEnum, SymbolIndex, VersionUpgradePolicy, rtype};
use tickflow_model::{
    Bar, BarInterval, Event, FedBar, Price, Qty, Quote, Symbol, Trade, UnixNanos, Volume,
};

/// DBN's "no price" (an empty side of the book).
const UNDEF_PRICE: i64 = i64::MAX;

/// A DBN file name: `*.dbn` or `*.dbn.zst`.
pub fn is_dbn(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.ends_with(".dbn") || name.ends_with(".dbn.zst")
}

fn price(raw: i64) -> Price {
    Price::from_raw(raw, 9).normalized()
}

fn qty(size: u32) -> Qty {
    Qty::from_raw(u64::from(size) * 1_000_000_000, 0)
}

/// What a file held.
#[derive(Debug, Default)]
pub struct Read {
    pub events: Vec<Event>,
    /// Records of schemas not stored (definitions, statuses, deeper books).
    pub skipped: u64,
}

/// Reads every record of `file`; events get `source` and are received at `now`.
///
/// # Errors
/// The file cannot be opened or decoded (a record cut short included): the message says
/// where.
pub fn read_file(file: &Path, source: &Arc<str>, now: UnixNanos) -> Result<Read, String> {
    records_whole(file)?;
    // The `dbn` crate asserts what it assumes of a record; a damaged file that passes the
    // checks above (a compressed one is not walked) is refused, not allowed to stop replay.
    std::panic::catch_unwind(|| decode_file(file, source, now)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a malformed record");
        Err(format!("the DBN decoder refused the file: {why}"))
    })
}

/// Walks the records of an uncompressed file by their headers: each must be whole, a
/// multiple of 8 bytes (or the next is misaligned in the decoder's buffer) and at least as
/// long as its type (the decoder asserts both).
fn records_whole(file: &Path) -> Result<(), String> {
    if !file.to_string_lossy().ends_with(".dbn") {
        return Ok(());
    }
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let Some(len) = bytes.get(4..8) else {
        return Ok(()); // the decoder says what is wrong with the metadata
    };
    let mut at = 8 + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let mut index = 0u64;
    while let Some(&[words, rtype]) = bytes.get(at..at + 2) {
        index += 1;
        let size = usize::from(words) * 4;
        if size < 16 || size % 8 != 0 {
            return Err(format!(
                "record {index}: a length of {size} bytes is not a record's: the file is damaged"
            ));
        }
        if min_record_size(rtype).is_some_and(|min| size < min) {
            return Err(format!(
                "record {index}: {size} bytes, shorter than any record of its type (rtype {rtype:#04x}): the file is damaged"
            ));
        }
        at += size;
    }
    Ok(())
}

fn decode_file(file: &Path, source: &Arc<str>, now: UnixNanos) -> Result<Read, String> {
    let mut decoder = DynDecoder::from_file(file, VersionUpgradePolicy::UpgradeToV3)
        .map_err(|e| e.to_string())?;
    let metadata = decoder.metadata().clone();
    let symbols = metadata.symbol_map().unwrap_or_default();
    let feed: Arc<str> = Arc::from(format!("databento:{}", metadata.dataset));
    let mut out = Read::default();
    let mut index = 0u64;
    let mut bytes = 0u64;
    while let Some(record) = decoder
        .decode_record_ref()
        .map_err(|e| format!("record {index}: {e}"))?
    {
        index += 1;
        bytes += record.record_size() as u64;
        let header = record.header();

        let id = header.instrument_id;
        // Mapped by the record's index time (its receive time), or its event time.
        let name = symbols
            .get_for_rec(&record)
            .or_else(|| symbols.get_for_ts(header.ts_event, id));
        let symbol = match name {
            Some(name) => Symbol::parse(name),
            None => Symbol::parse(&id.to_string()),
        }
        .map_err(|e| format!("record {index}: {e}"))?;
        let ts_event = UnixNanos(i64::try_from(header.ts_event).unwrap_or(i64::MAX));
        let rtype = header.rtype;
        let event = match record.as_enum() {
            Ok(RecordRefEnum::Trade(t)) => Event::Trade(Trade {
                symbol,
                ts_event,
                ts_recv: now,
                price: price(t.price),
                size: qty(t.size),
                trade_id: None,
                exchange: None,
                source: Arc::clone(source),
                feed: Arc::clone(&feed),
                seq: Some(u64::from(t.sequence)),
            }),
            Ok(RecordRefEnum::Mbp1(m)) => {
                let level = &m.levels[0];
                if level.bid_px == UNDEF_PRICE || level.ask_px == UNDEF_PRICE {
                    out.skipped += 1;
                    continue;
                }
                Event::Quote(Quote {
                    symbol,
                    ts_event,
                    ts_recv: now,
                    bid: price(level.bid_px),
                    bid_size: qty(level.bid_sz),
                    ask: price(level.ask_px),
                    ask_size: qty(level.ask_sz),
                    source: Arc::clone(source),
                    feed: Arc::clone(&feed),
                    seq: Some(u64::from(m.sequence)),
                })
            }
            Ok(RecordRefEnum::Ohlcv(o)) => {
                let interval = match rtype {
                    rtype::OHLCV_1S => BarInterval::S1,
                    rtype::OHLCV_1M => BarInterval::M1,
                    rtype::OHLCV_1H => BarInterval::H1,
                    rtype::OHLCV_1D => BarInterval::D1,
                    _ => {
                        out.skipped += 1;
                        continue;
                    }
                };
                Event::Bar(FedBar {
                    bar: Bar {
                        symbol,
                        interval,
                        start: ts_event,
                        end: UnixNanos(ts_event.0.saturating_add(interval.nanos())),
                        open: price(o.open),
                        high: price(o.high),
                        low: price(o.low),
                        close: price(o.close),
                        volume: Volume::from_raw(i128::from(o.volume) * 1_000_000_000, 0),
                        vwap: None,
                        trade_count: None,
                        is_final: true,
                        source: Some(Arc::clone(source)),
                    },
                    ts_recv: now,
                    feed: Arc::clone(&feed),
                })
            }
            _ => {
                out.skipped += 1;
                continue;
            }
        };
        out.events.push(event);
    }
    cut_short(file, bytes).map_err(|e| format!("record {index}: {e}"))?;
    Ok(out)
}

/// An uncompressed file must end where its last whole record does: a decoder stops quietly
/// at a partial record, and a file cut short (a download that failed) must not pass for a
/// whole one. (A cut zstd stream fails to decode instead.)
fn cut_short(file: &Path, records: u64) -> Result<(), String> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.ends_with(".dbn") {
        return Ok(());
    }
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let Some(len) = bytes.get(4..8) else {
        return Err("no metadata".into());
    };
    let metadata = u64::from(u32::from_le_bytes([len[0], len[1], len[2], len[3]]));
    let whole = 8 + metadata + records;
    if (bytes.len() as u64) > whole {
        return Err(format!(
            "the file ends inside a record ({} bytes after the last whole one): cut short?",
            bytes.len() as u64 - whole
        ));
    }
    Ok(())
}

/// The fewest bytes a record of `rtype` takes: its oldest DBN version's size. The `dbn`
/// crate asserts it whenever a record is looked at (its symbol, its index time, its fields),
/// so a shorter record, in a damaged file, is refused here first.
fn min_record_size(rtype: u8) -> Option<usize> {
    use std::mem::size_of;

    use dbn::enums::RType;
    #[allow(deprecated)]
    let size = match RType::try_from(rtype).ok()? {
        RType::Mbp0 => size_of::<dbn::TradeMsg>(),
        RType::Mbp1 | RType::Tbbo => size_of::<dbn::Mbp1Msg>(),
        RType::Mbp10 => size_of::<dbn::Mbp10Msg>(),
        RType::OhlcvDeprecated
        | RType::Ohlcv1S
        | RType::Ohlcv1M
        | RType::Ohlcv1H
        | RType::Ohlcv1D
        | RType::OhlcvEod => size_of::<dbn::OhlcvMsg>(),
        RType::Imbalance => size_of::<dbn::ImbalanceMsg>(),
        RType::Status => size_of::<dbn::StatusMsg>(),
        RType::InstrumentDef => size_of::<dbn::v1::InstrumentDefMsg>(),
        RType::SymbolMapping => size_of::<dbn::v1::SymbolMappingMsg>(),
        RType::Error => size_of::<dbn::v1::ErrorMsg>(),
        RType::System => size_of::<dbn::v1::SystemMsg>(),
        RType::Statistics => size_of::<dbn::v1::StatMsg>(),
        RType::Mbo => size_of::<dbn::MboMsg>(),
        RType::Cmbp1 | RType::Tcbbo => size_of::<dbn::Cmbp1Msg>(),
        RType::Bbo1S | RType::Bbo1M => size_of::<dbn::BboMsg>(),
        RType::Cbbo1S | RType::Cbbo1M => size_of::<dbn::CbboMsg>(),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Some(size)
}

/// The first event time of [`write_sample`]'s file: 2024-05-06T13:30:00Z.
pub const SAMPLE_T0: u64 = 1_715_002_200_000_000_000;

/// Writes a small DBN file for tests and fuzz seeds: AAPL (instrument 17) trades, a quote,
/// a one-sided quote, a minute bar, and a record of an instrument the symbology does not
/// map, starting at [`SAMPLE_T0`].
///
/// # Errors
/// The file cannot be written.
pub fn write_sample(path: &Path, zstd: bool) -> std::io::Result<()> {
    use std::ffi::c_char;

    use dbn::encode::{EncodeRecord, dbn::Encoder};
    use dbn::{
        MappingInterval, Mbp1Msg, Metadata, OhlcvMsg, RecordHeader, SType, Schema, SymbolMapping,
        TradeMsg,
    };
    const T0: u64 = SAMPLE_T0;

    let date =
        time::Date::from_calendar_date(2024, time::Month::May, 6).map_err(std::io::Error::other)?;
    let metadata = Metadata::builder()
        .dataset("XNAS.ITCH")
        .schema(None)
        .start(T0)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .mappings(vec![SymbolMapping {
            raw_symbol: "AAPL".into(),
            intervals: vec![MappingInterval {
                start_date: date,
                end_date: date.next_day().unwrap_or(date),
                symbol: "17".into(),
            }],
        }])
        .build();
    let trade = TradeMsg {
        hd: RecordHeader::new::<TradeMsg>(rtype::MBP_0, 2, 17, T0),
        price: 184_410_000_000,
        size: 100,
        side: b'A' as c_char,
        sequence: 7,
        ts_recv: T0 + 500,
        ..Default::default()
    };
    let mut unmapped = trade.clone();
    unmapped.hd.instrument_id = 99;
    unmapped.sequence = 8;
    let mut quote = Mbp1Msg {
        hd: RecordHeader::new::<Mbp1Msg>(rtype::MBP_1, 2, 17, T0 + 1_000),
        sequence: 9,
        ts_recv: T0 + 1_500,
        ..Default::default()
    };
    quote.levels[0].bid_px = 184_400_000_000;
    quote.levels[0].ask_px = 184_420_000_000;
    quote.levels[0].bid_sz = 200;
    quote.levels[0].ask_sz = 300;
    let mut one_sided = quote.clone();
    one_sided.levels[0].ask_px = UNDEF_PRICE;
    let mut bar = OhlcvMsg::default_for_schema(Schema::Ohlcv1M);
    bar.hd = RecordHeader::new::<OhlcvMsg>(rtype::OHLCV_1M, 2, 17, T0);
    (bar.open, bar.high, bar.low, bar.close, bar.volume) = (
        184_350_000_000,
        184_500_000_000,
        184_250_000_000,
        184_410_000_000,
        31_210,
    );
    fn put(
        e: &mut impl EncodeRecord,
        records: (&TradeMsg, &Mbp1Msg, &Mbp1Msg, &OhlcvMsg, &TradeMsg),
    ) -> dbn::Result<()> {
        e.encode_record(records.0)?;
        e.encode_record(records.1)?;
        e.encode_record(records.2)?;
        e.encode_record(records.3)?;
        e.encode_record(records.4)?;
        e.flush()
    }
    let file = std::fs::File::create(path)?;
    let records = (&trade, &quote, &one_sided, &bar, &unmapped);
    let written = if zstd {
        Encoder::with_zstd(file, &metadata).and_then(|mut e| put(&mut e, records))
    } else {
        Encoder::new(file, &metadata).and_then(|mut e| put(&mut e, records))
    };
    written.map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = SAMPLE_T0;

    #[test]
    fn trades_quotes_and_bars_read_exactly_from_plain_and_zstd_files() {
        let dir = tempfile::tempdir().unwrap();
        for (name, zstd) in [("a.dbn", false), ("b.dbn.zst", true)] {
            let path = dir.path().join(name);
            write_sample(&path, zstd).unwrap();
            assert!(is_dbn(&path));
            let read = read_file(&path, &Arc::from("replay"), UnixNanos(1)).unwrap();
            assert_eq!(read.skipped, 1, "the one-sided quote");
            let [
                Event::Trade(t),
                Event::Quote(q),
                Event::Bar(b),
                Event::Trade(other),
            ] = &read.events[..]
            else {
                panic!("{:?}", read.events)
            };
            assert_eq!(t.symbol.as_str(), "AAPL");
            assert_eq!(t.price.to_string(), "184.41");
            assert_eq!(t.size.to_string(), "100");
            assert_eq!(t.ts_event, UnixNanos(T0 as i64));
            assert_eq!((&*t.feed, t.seq), ("databento:XNAS.ITCH", Some(7)));
            assert_eq!(
                (q.bid.to_string(), q.ask.to_string()),
                ("184.4".into(), "184.42".into())
            );
            assert_eq!(q.ask_size.to_string(), "300");
            assert_eq!(b.bar.interval, BarInterval::M1);
            assert_eq!(b.bar.low.to_string(), "184.25");
            assert_eq!(b.bar.volume.to_string(), "31210");
            assert_eq!(
                other.symbol.as_str(),
                "99",
                "an unmapped instrument keeps its id"
            );
        }
    }

    #[test]
    fn a_truncated_file_is_an_error_that_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.dbn");
        write_sample(&path, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = read_file(&path, &Arc::from("replay"), UnixNanos(1)).unwrap_err();
        assert!(err.contains("record 4"), "{err}");
    }
}
