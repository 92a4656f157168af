//! Candlestick charts drawn in process with plotters into an RGB buffer, encoded as PNG.
//!
//! The x axis counts trading days, not calendar days, so weekends and holidays leave no gaps;
//! its labels are the bars' dates. The font is Noto Sans, compiled in, so a chart looks the
//! same on a server without fonts.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::DailyBar;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, ttf_noto_sans::REGULAR)
            .is_err()
        {
            tracing::error!("the compiled-in chart font did not load; charts will have no text");
        }
    });
}

const GAIN: RGBColor = RGBColor(26, 127, 55);
const LOSS: RGBColor = RGBColor(198, 40, 40);

/// A `width` × `height` PNG of `bars` (one symbol's, oldest first) as candlesticks.
///
/// # Errors
/// No bars, or a drawing or encoding failure, as text.
pub fn candlesticks(
    symbol: &str,
    bars: &[&DailyBar],
    width: u32,
    height: u32,
) -> Result<Vec<u8>, String> {
    let (Some(first), Some(last)) = (bars.first(), bars.last()) else {
        return Err(format!("{symbol}: no bars to chart"));
    };
    register_font();
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| format!("{symbol}: drawing the chart: {e}");
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let low = bars.iter().map(|b| b.low.as_f64()).fold(f64::MAX, f64::min);
        let high = bars
            .iter()
            .map(|b| b.high.as_f64())
            .fold(f64::MIN, f64::max);
        let pad = ((high - low) * 0.05).max(high.abs() * 0.001).max(1e-9);
        let n = bars.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{symbol}: {} trading days, {} to {}",
                    n, first.date, last.date
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (low - pad)..(high + pad))
            .map_err(|e| fail(&e))?;
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 || i as usize >= n {
                return String::new();
            }
            let (_, m, d) = bars[i as usize].date.ymd();
            format!("{m:02}-{d:02}")
        };
        chart
            .configure_mesh()
            .x_labels(n.min(10))
            .x_label_formatter(&label)
            .y_label_formatter(&|y| format!("{y:.2}"))
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| fail(&e))?;
        let plot_width = f64::from(width.saturating_sub(100));
        let candle = ((plot_width / n as f64) * 0.6).clamp(1.0, 40.0) as u32;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                CandleStick::new(
                    i as f64,
                    b.open.as_f64(),
                    b.high.as_f64(),
                    b.low.as_f64(),
                    b.close.as_f64(),
                    GAIN.filled(),
                    LOSS.filled(),
                    candle,
                )
            }))
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    encode_png(&rgb, width, height).map_err(|e| format!("{symbol}: encoding the chart: {e}"))
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tickflow_model::{Date, Price, Symbol};

    use super::*;

    #[test]
    fn a_chart_is_a_png_of_the_stated_size_with_both_colours() {
        let bars: Vec<DailyBar> = (0..30)
            .map(|i| {
                let o = 100 + (i % 7);
                let c = if i % 2 == 0 { o + 3 } else { o - 2 };
                DailyBar {
                    symbol: Symbol::parse("NVDA").unwrap(),
                    date: Date(20_400 + i),
                    open: Price::parse(&o.to_string()).unwrap(),
                    high: Price::parse(&(o.max(c) + 1).to_string()).unwrap(),
                    low: Price::parse(&(o.min(c) - 1).to_string()).unwrap(),
                    close: Price::parse(&c.to_string()).unwrap(),
                }
            })
            .collect();
        let refs: Vec<&DailyBar> = bars.iter().collect();
        let png_bytes = candlesticks("NVDA", &refs, 640, 320).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (640, 320));
        let has = |c: RGBColor| pixels.chunks(3).any(|p| p == [c.0, c.1, c.2]);
        assert!(
            has(GAIN) && has(LOSS),
            "rising and falling candles are drawn"
        );
        // Text was drawn: some pixels are neither background, grid nor candle colours.
        let dark = pixels
            .chunks(3)
            .filter(|p| p.iter().all(|v| *v < 80))
            .count();
        assert!(
            dark > 200,
            "labels and caption are drawn ({dark} dark pixels)"
        );
        assert!(candlesticks("NVDA", &[], 640, 320).is_err());
    }
}
