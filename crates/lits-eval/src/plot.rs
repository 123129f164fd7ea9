//! Small PNG charts without system fonts: line charts (loss and Dice per epoch) and box
//! plots (per-case Dice by class).
//!
//! Everything is drawn on an RGB [`Canvas`]: anti-aliased lines and discs by pixel
//! coverage, text from a built-in 5×7 bitmap font (printable ASCII), and the result is
//! encoded with the `png` crate. Axis ticks use "nice" steps (1, 2 or 5 × 10ⁿ).

use std::path::Path;

use lits_data::atomic::write_atomic;
use lits_data::{Error, Result};

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// Colours given to series and groups in order (the "tab10" palette).
pub const PALETTE: [Rgb; 8] =
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127]];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const TEXT: Rgb = [40, 40, 40];

/// Where a text's reference point lies on it, horizontally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// The point is the text's left edge.
    Left,
    /// The point is the text's centre.
    Center,
    /// The point is the text's right edge.
    Right,
}

/// An RGB raster, row-major from the top-left corner.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Rgb) -> Self {
        let pixels = background.iter().copied().cycle().take(width as usize * height as usize * 3).collect();
        Canvas { width, height, pixels }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The colour at `(x, y)`.
    pub fn pixel(&self, x: u32, y: u32) -> Rgb {
        let o = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[o], self.pixels[o + 1], self.pixels[o + 2]]
    }

    /// Mix `colour` into pixel `(x, y)` with opacity `alpha` (0..=1); outside is ignored.
    pub fn blend(&mut self, x: i64, y: i64, colour: Rgb, alpha: f64) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 || alpha <= 0.0 {
            return;
        }
        let a = alpha.min(1.0);
        let o = (y as usize * self.width as usize + x as usize) * 3;
        for (px, &new) in self.pixels[o..o + 3].iter_mut().zip(&colour) {
            let old = *px as f64;
            *px = (old + (new as f64 - old) * a).round() as u8;
        }
    }

    /// Fill the pixels whose centres lie in `[x0, x1) × [y0, y1)`.
    pub fn fill_rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, colour: Rgb) {
        let (xa, xb) = (x0.min(x1).round() as i64, x0.max(x1).round() as i64);
        let (ya, yb) = (y0.min(y1).round() as i64, y0.max(y1).round() as i64);
        for y in ya..yb {
            for x in xa..xb {
                self.blend(x, y, colour, 1.0);
            }
        }
    }

    /// An anti-aliased segment `width` pixels wide with round caps (coordinates are pixel
    /// centres).
    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, width: f64, colour: Rgb) {
        let r = width / 2.0;
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len2 = dx * dx + dy * dy;
        let xa = (x0.min(x1) - r - 1.0).floor() as i64;
        let xb = (x0.max(x1) + r + 1.0).ceil() as i64;
        let ya = (y0.min(y1) - r - 1.0).floor() as i64;
        let yb = (y0.max(y1) + r + 1.0).ceil() as i64;
        for y in ya.max(0)..=yb.min(self.height as i64 - 1) {
            for x in xa.max(0)..=xb.min(self.width as i64 - 1) {
                let (px, py) = (x as f64, y as f64);
                let t = if len2 > 0.0 { (((px - x0) * dx + (py - y0) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                let d = ((px - x0 - t * dx).powi(2) + (py - y0 - t * dy).powi(2)).sqrt();
                // Coverage of a one-pixel-wide box filter across the segment's edge.
                self.blend(x, y, colour, (r + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    /// An anti-aliased filled disc.
    pub fn disc(&mut self, cx: f64, cy: f64, radius: f64, colour: Rgb, alpha: f64) {
        for y in (cy - radius - 1.0).floor() as i64..=(cy + radius + 1.0).ceil() as i64 {
            for x in (cx - radius - 1.0).floor() as i64..=(cx + radius + 1.0).ceil() as i64 {
                let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                self.blend(x, y, colour, alpha * (radius + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    /// Draw `text` with its top at `y`, aligned on `x`, glyphs enlarged `scale` times.
    pub fn text(&mut self, x: f64, y: f64, text: &str, scale: u32, colour: Rgb, align: Align) {
        let w = text_width(text, scale) as f64;
        let left = match align {
            Align::Left => x,
            Align::Center => x - w / 2.0,
            Align::Right => x - w,
        }
        .round() as i64;
        let (top, s) = (y.round() as i64, scale as i64);
        for (n, ch) in text.chars().enumerate() {
            let ox = left + n as i64 * GLYPH_ADVANCE as i64 * s;
            for_each_dot(ch, |gx, gy| {
                self.fill_rect(
                    (ox + gx as i64 * s) as f64,
                    (top + gy as i64 * s) as f64,
                    (ox + (gx as i64 + 1) * s) as f64,
                    (top + (gy as i64 + 1) * s) as f64,
                    colour,
                );
            });
        }
    }

    /// Draw `text` turned a quarter counter-clockwise (reading bottom to top), centred
    /// vertically on `y`, with its top (now its left side) at `x`.
    pub fn text_vertical(&mut self, x: f64, y: f64, text: &str, scale: u32, colour: Rgb) {
        let w = text_width(text, scale) as i64;
        let (left, bottom, s) = (x.round() as i64, (y + w as f64 / 2.0).round() as i64, scale as i64);
        for (n, ch) in text.chars().enumerate() {
            let along = n as i64 * GLYPH_ADVANCE as i64 * s;
            for_each_dot(ch, |gx, gy| {
                let px = left + gy as i64 * s;
                let py = bottom - along - (gx as i64 + 1) * s;
                self.fill_rect(px as f64, py as f64, (px + s) as f64, (py + s) as f64, colour);
            });
        }
    }

    /// The image as PNG bytes (8-bit RGB).
    pub fn encode_png(&self) -> std::result::Result<Vec<u8>, png::EncodingError> {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }

    /// Write the image to `path` as PNG, atomically (see [`write_atomic`]).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let bytes = self.encode_png().map_err(|e| Error::invalid(path, format!("cannot encode PNG: {e}")))?;
        write_atomic(path, &bytes)
    }
}

/// Glyph cells are 5 dots wide, 7 above the baseline and 2 below; letters advance by 6.
const GLYPH_ADVANCE: u32 = 6;
/// Height of a line of text at scale 1, descenders included.
pub const LINE_HEIGHT: u32 = 9;

/// Width in pixels of `text` at `scale`, without the trailing gap.
pub fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    (n * GLYPH_ADVANCE).saturating_sub(1) * scale
}

/// Calls `dot(x, y)` for every lit dot of `ch`'s glyph (`?` for characters the font
/// lacks), `y` counted down from the top of the cell.
fn for_each_dot(ch: char, mut dot: impl FnMut(u32, u32)) {
    let rows = glyph(ch).or_else(|| glyph('?')).expect("the font has '?'");
    for (y, row) in rows.split(' ').enumerate() {
        for (x, b) in row.bytes().enumerate() {
            if b == b'#' {
                dot(x as u32, y as u32);
            }
        }
    }
}

/// The rows of `ch`'s glyph, top to bottom, separated by spaces; 7 rows, or 9 for
/// glyphs that reach below the baseline.
fn glyph(ch: char) -> Option<&'static str> {
    FONT.iter().find(|(c, _)| *c == ch).map(|(_, g)| *g)
}

const FONT: &[(char, &str)] = &[
    (' ', "..... ..... ..... ..... ..... ..... ....."),
    ('!', "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#.."),
    ('"', ".#.#. .#.#. ..... ..... ..... ..... ....."),
    ('#', ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#."),
    ('%', "##... ##..# ...#. ..#.. .#... #..## ...##"),
    ('\'', "..#.. ..#.. .#... ..... ..... ..... ....."),
    ('(', "...#. ..#.. .#... .#... .#... ..#.. ...#."),
    (')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."),
    ('*', "..... ..#.. #.#.# .###. #.#.# ..#.. ....."),
    ('+', "..... ..#.. ..#.. ##### ..#.. ..#.. ....."),
    (',', "..... ..... ..... ..... ..... .##.. .##.. ..#.. .#..."),
    ('-', "..... ..... ..... .###. ..... ..... ....."),
    ('.', "..... ..... ..... ..... ..... .##.. .##.."),
    ('/', "..... ....# ...#. ..#.. .#... #.... ....."),
    ('0', ".###. #...# #..## #.#.# ##..# #...# .###."),
    ('1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('2', ".###. #...# ....# ...#. ..#.. .#... #####"),
    ('3', "##### ...#. ..#.. ...#. ....# #...# .###."),
    ('4', "...#. ..##. .#.#. #..#. ##### ...#. ...#."),
    ('5', "##### #.... ####. ....# ....# #...# .###."),
    ('6', "..##. .#... #.... ####. #...# #...# .###."),
    ('7', "##### ....# ...#. ..#.. .#... .#... .#..."),
    ('8', ".###. #...# #...# .###. #...# #...# .###."),
    ('9', ".###. #...# #...# .#### ....# ...#. .##.."),
    (':', "..... .##.. .##.. ..... .##.. .##.. ....."),
    ('<', "...#. ..#.. .#... #.... .#... ..#.. ...#."),
    ('=', "..... ..... ##### ..... ##### ..... ....."),
    ('>', ".#... ..#.. ...#. ....# ...#. ..#.. .#..."),
    ('?', ".###. #...# ....# ...#. ..#.. ..... ..#.."),
    ('A', ".###. #...# #...# ##### #...# #...# #...#"),
    ('B', "####. #...# #...# ####. #...# #...# ####."),
    ('C', ".###. #...# #.... #.... #.... #...# .###."),
    ('D', "###.. #..#. #...# #...# #...# #..#. ###.."),
    ('E', "##### #.... #.... ####. #.... #.... #####"),
    ('F', "##### #.... #.... ####. #.... #.... #...."),
    ('G', ".###. #...# #.... #.### #...# #...# .####"),
    ('H', "#...# #...# #...# ##### #...# #...# #...#"),
    ('I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('J', "..### ...#. ...#. ...#. ...#. #..#. .##.."),
    ('K', "#...# #..#. #.#.. ##... #.#.. #..#. #...#"),
    ('L', "#.... #.... #.... #.... #.... #.... #####"),
    ('M', "#...# ##.## #.#.# #.#.# #...# #...# #...#"),
    ('N', "#...# #...# ##..# #.#.# #..## #...# #...#"),
    ('O', ".###. #...# #...# #...# #...# #...# .###."),
    ('P', "####. #...# #...# ####. #.... #.... #...."),
    ('Q', ".###. #...# #...# #...# #.#.# #..#. .##.#"),
    ('R', "####. #...# #...# ####. #.#.. #..#. #...#"),
    ('S', ".#### #.... #.... .###. ....# ....# ####."),
    ('T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
    ('U', "#...# #...# #...# #...# #...# #...# .###."),
    ('V', "#...# #...# #...# #...# #...# .#.#. ..#.."),
    ('W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."),
    ('X', "#...# #...# .#.#. ..#.. .#.#. #...# #...#"),
    ('Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."),
    ('Z', "##### ....# ...#. ..#.. .#... #.... #####"),
    ('[', ".###. .#... .#... .#... .#... .#... .###."),
    (']', ".###. ...#. ...#. ...#. ...#. ...#. .###."),
    ('_', "..... ..... ..... ..... ..... ..... #####"),
    ('a', "..... ..... .###. ....# .#### #...# .####"),
    ('b', "#.... #.... #.##. ##..# #...# #...# ####."),
    ('c', "..... ..... .###. #.... #.... #...# .###."),
    ('d', "....# ....# .##.# #..## #...# #...# .####"),
    ('e', "..... ..... .###. #...# ##### #.... .###."),
    ('f', "..##. .#..# .#... ###.. .#... .#... .#..."),
    ('g', "..... ..... .#### #...# #...# #...# .#### ....# .###."),
    ('h', "#.... #.... #.##. ##..# #...# #...# #...#"),
    ('i', "..#.. ..... .##.. ..#.. ..#.. ..#.. .###."),
    ('j', "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##.."),
    ('k', "#.... #.... #..#. #.#.. ##... #.#.. #..#."),
    ('l', ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('m', "..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#"),
    ('n', "..... ..... #.##. ##..# #...# #...# #...#"),
    ('o', "..... ..... .###. #...# #...# #...# .###."),
    ('p', "..... ..... ####. #...# #...# #...# ####. #.... #...."),
    ('q', "..... ..... .#### #...# #...# #...# .#### ....# ....#"),
    ('r', "..... ..... #.##. ##..# #.... #.... #...."),
    ('s', "..... ..... .#### #.... .###. ....# ####."),
    ('t', ".#... .#... ###.. .#... .#... .#..# ..##."),
    ('u', "..... ..... #...# #...# #...# #..## .##.#"),
    ('v', "..... ..... #...# #...# #...# .#.#. ..#.."),
    ('w', "..... ..... #...# #...# #.#.# #.#.# .#.#."),
    ('x', "..... ..... #...# .#.#. ..#.. .#.#. #...#"),
    ('y', "..... ..... #...# #...# #...# #...# .#### ....# .###."),
    ('z', "..... ..... ##### ...#. ..#.. .#... #####"),
    ('|', "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
];

/// Tick positions covering `[lo, hi]` with a step of 1, 2 or 5 × 10ⁿ, about `target`
/// of them. Returns the ticks (first ≤ `lo`, last ≥ `hi`) and the step.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5 * lo.abs().max(1.0), lo + 0.5 * lo.abs().max(1.0)) };
    let rough = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= rough).unwrap_or(10.0 * mag);
    // The tolerance keeps a bound that is a multiple of the step from adding a tick.
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    ((first..=last).map(|n| n as f64 * step).collect(), step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10()).ceil() as usize };
    let s = format!("{v:.decimals$}");
    // "-0" and "-0.0" read as zero.
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// The plot area of a chart and the map from data to pixels.
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left)
    }

    fn py(&self, y: f64) -> f64 {
        self.bottom - (y - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top)
    }
}

/// Canvas with title and axis labels, y grid with tick labels, and the frame to draw in.
/// x ticks are left to the caller.
fn axes(width: u32, height: u32, title: &str, x_label: &str, y_label: &str, y: (f64, f64)) -> (Canvas, Frame, Vec<f64>, f64) {
    let mut c = Canvas::new(width, height, WHITE);
    let (yticks, ystep) = nice_ticks(y.0, y.1, 6);
    let label_w = yticks.iter().map(|t| text_width(&tick_label(*t, ystep), 2)).max().unwrap_or(0) as f64;
    let frame = Frame {
        left: 20.0 + 2.0 * LINE_HEIGHT as f64 + label_w + 12.0,
        // Room for half of the last x tick label.
        right: width as f64 - 36.0,
        top: 20.0 + 2.0 * LINE_HEIGHT as f64 + 10.0,
        bottom: height as f64 - (20.0 + 4.0 * LINE_HEIGHT as f64 + 14.0),
        x: (0.0, 1.0),
        y: (yticks[0], *yticks.last().expect("at least one tick")),
    };
    c.text(width as f64 / 2.0, 16.0, title, 2, TEXT, Align::Center);
    c.text((frame.left + frame.right) / 2.0, height as f64 - 16.0 - 2.0 * 7.0, x_label, 2, TEXT, Align::Center);
    c.text_vertical(14.0, (frame.top + frame.bottom) / 2.0, y_label, 2, TEXT);
    for t in &yticks {
        let py = frame.py(*t).round();
        c.line(frame.left, py, frame.right, py, 1.0, GRID);
        c.line(frame.left - 5.0, py, frame.left, py, 1.0, BLACK);
        c.text(frame.left - 9.0, py - 7.0, &tick_label(*t, ystep), 2, TEXT, Align::Right);
    }
    (c, frame, yticks, ystep)
}

fn draw_frame_box(c: &mut Canvas, f: &Frame) {
    let (l, r, t, b) = (f.left.round(), f.right.round(), f.top.round(), f.bottom.round());
    for (x0, y0, x1, y1) in [(l, t, r, t), (l, b, r, b), (l, t, l, b), (r, t, r, b)] {
        c.line(x0, y0, x1, y1, 1.5, BLACK);
    }
}

/// The smallest and largest finite value, or `None` if there is none.
fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// One named line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points in drawing order; a non-finite `y` breaks the line.
    pub points: Vec<(f64, f64)>,
}

/// Several series against a shared x axis, e.g. loss and Dice per epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// The lines, coloured from [`PALETTE`] in order.
    pub series: Vec<Series>,
    /// Fixed y range (e.g. `(0.0, 1.0)` for Dice); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl Default for LineChart {
    fn default() -> Self {
        LineChart {
            title: String::new(),
            x_label: "epoch".into(),
            y_label: String::new(),
            series: Vec::new(),
            y_range: None,
            width: 900,
            height: 560,
        }
    }
}

impl LineChart {
    /// Draw the chart.
    pub fn render(&self) -> Canvas {
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let xr = finite_range(all().filter(|p| p.1.is_finite()).map(|p| p.0)).unwrap_or((0.0, 1.0));
        let yr = self.y_range.or_else(|| finite_range(all().map(|p| p.1))).unwrap_or((0.0, 1.0));
        let (mut c, mut f, _, _) = axes(self.width, self.height, &self.title, &self.x_label, &self.y_label, yr);
        let (xticks, xstep) = nice_ticks(xr.0, xr.1, 8);
        f.x = (xticks[0], *xticks.last().expect("at least one tick"));
        for t in &xticks {
            let px = f.px(*t).round();
            c.line(px, f.top, px, f.bottom, 1.0, GRID);
            c.line(px, f.bottom, px, f.bottom + 5.0, 1.0, BLACK);
            c.text(px, f.bottom + 9.0, &tick_label(*t, xstep), 2, TEXT, Align::Center);
        }
        draw_frame_box(&mut c, &f);
        for (n, s) in self.series.iter().enumerate() {
            let colour = PALETTE[n % PALETTE.len()];
            let mut prev: Option<(f64, f64)> = None;
            for &(x, y) in &s.points {
                if !(x.is_finite() && y.is_finite()) {
                    prev = None;
                    continue;
                }
                let p = (f.px(x), f.py(y));
                match prev {
                    Some(q) => c.line(q.0, q.1, p.0, p.1, 2.5, colour),
                    // A lone point would otherwise not show.
                    None => c.disc(p.0, p.1, 2.5, colour, 1.0),
                }
                prev = Some(p);
            }
        }
        self.legend(&mut c, &f);
        c
    }

    /// The legend box goes in the corner of the plot that hides the fewest points.
    fn legend(&self, c: &mut Canvas, f: &Frame) {
        if self.series.is_empty() {
            return;
        }
        let w = self.series.iter().map(|s| text_width(&s.name, 2)).max().unwrap_or(0) as f64 + 52.0;
        let row = 2.0 * LINE_HEIGHT as f64 + 6.0;
        let h = row * self.series.len() as f64 + 8.0;
        let corners = [
            (f.right - w - 10.0, f.top + 10.0),
            (f.right - w - 10.0, f.bottom - h - 10.0),
            (f.left + 10.0, f.top + 10.0),
            (f.left + 10.0, f.bottom - h - 10.0),
        ];
        // Points every few pixels along every drawn segment.
        let mut trail = Vec::new();
        for s in &self.series {
            let pts: Vec<(f64, f64)> = s.points.iter().map(|(x, y)| (f.px(*x), f.py(*y))).collect();
            for pair in pts.windows(2) {
                let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
                if !(ax.is_finite() && ay.is_finite() && bx.is_finite() && by.is_finite()) {
                    continue;
                }
                let n = ((bx - ax).hypot(by - ay) / 4.0).ceil().max(1.0) as usize;
                trail.extend((0..=n).map(|t| (ax + (bx - ax) * t as f64 / n as f64, ay + (by - ay) * t as f64 / n as f64)));
            }
            trail.extend(pts.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()));
        }
        let hidden = |&(x0, y0): &(f64, f64)| {
            trail.iter().filter(|(px, py)| *px >= x0 - 4.0 && *px <= x0 + w + 4.0 && *py >= y0 - 4.0 && *py <= y0 + h + 4.0).count()
        };
        let (x0, y0) = corners.iter().copied().min_by_key(hidden).expect("four corners");
        c.fill_rect(x0, y0, x0 + w, y0 + h, WHITE);
        for (x_0, y_0, x_1, y_1) in [(x0, y0, x0 + w, y0), (x0, y0 + h, x0 + w, y0 + h), (x0, y0, x0, y0 + h), (x0 + w, y0, x0 + w, y0 + h)]
        {
            c.line(x_0, y_0, x_1, y_1, 1.0, [160, 160, 160]);
        }
        for (n, s) in self.series.iter().enumerate() {
            let y = y0 + 6.0 + row * n as f64;
            c.line(x0 + 8.0, y + 7.0, x0 + 34.0, y + 7.0, 3.0, PALETTE[n % PALETTE.len()]);
            c.text(x0 + 42.0, y, &s.name, 2, TEXT, Align::Left);
        }
    }

    /// Draw the chart and write it to `path` as PNG.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        self.render().save_png(path)
    }
}

/// Tukey box-plot statistics of one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxStats {
    /// First quartile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// Lowest value within 1.5 IQR below `q1`.
    pub whisker_lo: f64,
    /// Highest value within 1.5 IQR above `q3`.
    pub whisker_hi: f64,
}

impl BoxStats {
    /// Quartiles interpolated linearly as `numpy.percentile` does, whiskers as
    /// matplotlib's `boxplot` draws them. Non-finite values are left out; `None` if
    /// nothing is left.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| lits_data::percentile::of_sorted(&v, 100.0 * p);
        let (q1, median, q3) = (q(0.25), q(0.5), q(0.75));
        let iqr = q3 - q1;
        let whisker_lo = v.iter().copied().find(|x| *x >= q1 - 1.5 * iqr).unwrap_or(q1);
        let whisker_hi = v.iter().rev().copied().find(|x| *x <= q3 + 1.5 * iqr).unwrap_or(q3);
        Some(BoxStats { q1, median, q3, whisker_lo, whisker_hi })
    }
}

/// Box plots of several groups side by side (e.g. per-case Dice of liver and tumor), each
/// with its points overlaid.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxPlot {
    /// Title above the plot.
    pub title: String,
    /// y axis label.
    pub y_label: String,
    /// `(name, values)` per group; non-finite values are left out and the count under
    /// the name says how many were drawn.
    pub groups: Vec<(String, Vec<f64>)>,
    /// Fixed y range; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl Default for BoxPlot {
    fn default() -> Self {
        BoxPlot { title: String::new(), y_label: String::new(), groups: Vec::new(), y_range: None, width: 700, height: 560 }
    }
}

impl BoxPlot {
    /// Draw the plot.
    pub fn render(&self) -> Canvas {
        let yr = self.y_range.or_else(|| finite_range(self.groups.iter().flat_map(|g| g.1.iter().copied()))).unwrap_or((0.0, 1.0));
        let (mut c, mut f, _, _) = axes(self.width, self.height, &self.title, "", &self.y_label, yr);
        let n = self.groups.len().max(1) as f64;
        f.x = (0.0, n);
        let half = 0.2 * (f.right - f.left) / n;
        for (g, (name, values)) in self.groups.iter().enumerate() {
            let colour = PALETTE[g % PALETTE.len()];
            let cx = f.px(g as f64 + 0.5);
            let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            c.text(cx, f.bottom + 9.0, name, 2, TEXT, Align::Center);
            c.text(cx, f.bottom + 13.0 + 2.0 * LINE_HEIGHT as f64, &format!("n={}", finite.len()), 2, TEXT, Align::Center);
            let Some(s) = BoxStats::of(&finite) else { continue };
            let (top, bottom) = (f.py(s.q3), f.py(s.q1));
            let light = colour.map(|v| (v as f64 + (255.0 - v as f64) * 0.7).round() as u8);
            c.fill_rect(cx - half, top, cx + half, bottom.max(top + 1.0), light);
            for (x0, y0, x1, y1) in [
                (cx - half, top, cx + half, top),
                (cx - half, bottom, cx + half, bottom),
                (cx - half, top, cx - half, bottom),
                (cx + half, top, cx + half, bottom),
                (cx, top, cx, f.py(s.whisker_hi)),
                (cx, bottom, cx, f.py(s.whisker_lo)),
                (cx - half / 2.0, f.py(s.whisker_hi), cx + half / 2.0, f.py(s.whisker_hi)),
                (cx - half / 2.0, f.py(s.whisker_lo), cx + half / 2.0, f.py(s.whisker_lo)),
            ] {
                c.line(x0, y0, x1, y1, 2.0, colour);
            }
            c.line(cx - half, f.py(s.median), cx + half, f.py(s.median), 3.0, BLACK);
            // Points spread over the box width by a fixed pattern, so the picture is
            // the same on every run.
            for (i, v) in finite.iter().enumerate() {
                let jitter = ((i as f64 * 0.618_033_988_75).fract() - 0.5) * half;
                c.disc(cx + jitter, f.py(*v), 3.5, colour, 0.8);
            }
        }
        draw_frame_box(&mut c, &f);
        c
    }

    /// Draw the plot and write it to `path` as PNG.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        self.render().save_png(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printable_ascii_character_has_a_well_formed_glyph() {
        for ch in (0x20u8..0x7f).map(char::from).filter(|c| !"$&;@\\^`{}~".contains(*c)) {
            let g = glyph(ch).unwrap_or_else(|| panic!("no glyph for {ch:?}"));
            let rows: Vec<&str> = g.split(' ').collect();
            assert!(rows.len() == 7 || rows.len() == 9, "{ch:?} has {} rows", rows.len());
            assert!(rows.iter().all(|r| r.len() == 5 && r.bytes().all(|b| b == b'#' || b == b'.')), "{ch:?}");
        }
        let mut chars: Vec<char> = FONT.iter().map(|(c, _)| *c).collect();
        chars.sort();
        chars.dedup();
        assert_eq!(chars.len(), FONT.len(), "a character is defined twice");
    }

    #[test]
    fn nice_ticks_cover_the_range_with_round_steps() {
        let (t, s) = nice_ticks(0.0, 1.0, 6);
        assert_eq!(s, 0.2);
        assert_eq!(t.len(), 6);
        assert!((t[5] - 1.0).abs() < 1e-12);
        let (t, s) = nice_ticks(3.0, 1187.0, 8);
        assert_eq!(s, 200.0);
        assert_eq!((t[0], *t.last().unwrap()), (0.0, 1200.0));
        let (t, _) = nice_ticks(0.5, 0.5, 5);
        assert!(t[0] <= 0.5 && *t.last().unwrap() >= 0.5);
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_label(-0.0, 0.05), "0.00");
        assert_eq!(tick_label(1200.0, 200.0), "1200");
    }

    #[test]
    fn box_stats_match_numpy_and_matplotlib() {
        // numpy.percentile([1, 2, 3, 4, 100], [25, 50, 75]) == [2, 3, 4]; 100 lies beyond
        // 4 + 1.5 * 2, so matplotlib's upper whisker ends at 4.
        let s = BoxStats::of(&[4.0, 100.0, 1.0, 3.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.q1, s.median, s.q3, s.whisker_lo, s.whisker_hi), (2.0, 3.0, 4.0, 1.0, 4.0));
        // numpy.percentile([0.1, 0.9], 25) == 0.3
        assert!((BoxStats::of(&[0.9, 0.1]).unwrap().q1 - 0.3).abs() < 1e-12);
        assert!(BoxStats::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn text_lights_the_glyph_dots_at_scale() {
        let mut c = Canvas::new(20, 20, WHITE);
        c.text(2.0, 2.0, "1", 2, BLACK, Align::Left);
        // '1' row 0 is "..#..": dot (2, 0) covers pixels x 6..8, y 2..4.
        assert_eq!(c.pixel(6, 2), BLACK);
        assert_eq!(c.pixel(7, 3), BLACK);
        assert_eq!(c.pixel(4, 2), WHITE);
        assert_eq!(text_width("ab", 2), 22);
    }

    #[test]
    fn line_chart_png_decodes_with_its_size_and_series_colours() {
        let chart = LineChart {
            title: "loss".into(),
            y_label: "focal loss".into(),
            series: vec![
                Series { name: "train".into(), points: (0..50).map(|e| (e as f64, 1.0 / (1.0 + e as f64))).collect() },
                Series { name: "val".into(), points: vec![(0.0, 0.9), (10.0, f64::NAN), (20.0, 0.2), (30.0, 0.1)] },
            ],
            width: 400,
            height: 300,
            ..Default::default()
        };
        let bytes = chart.render().encode_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (400, 300));
        let has = |rgb: Rgb| buf.chunks_exact(3).any(|p| p == rgb);
        assert!(has(PALETTE[0]) && has(PALETTE[1]) && has(WHITE));
        assert!(!has(PALETTE[2]), "only two series");
    }

    #[test]
    fn save_png_writes_the_file_whole_and_names_a_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("box.png");
        let plot = BoxPlot {
            groups: vec![("liver".into(), vec![0.9, 0.95, 0.97]), ("tumor".into(), vec![])],
            y_range: Some((0.0, 1.0)),
            ..Default::default()
        };
        plot.save_png(&p).unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        let bad = dir.path().join("missing").join("box.png");
        let err = plot.save_png(&bad).unwrap_err().to_string();
        assert!(err.contains("missing/box.png"), "{err}");
    }
}
