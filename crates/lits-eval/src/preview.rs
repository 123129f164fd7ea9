//! A quick look at a segmentation: axial, coronal and sagittal slices through the centre of
//! the liver, the CT in a soft-tissue window with the mask laid over it, as one image.
//!
//! Slices are shown as radiologists read them, whatever the scan's stored orientation: the
//! volume is viewed in RAS order ([`orient::canonical_view`], no voxel copied), axial and
//! coronal slices with the patient's right on the image's left, axial with anterior up,
//! coronal and sagittal with superior up, sagittal with anterior on the left. Voxels keep
//! their physical aspect: every panel is drawn at the same number of pixels per mm, the
//! scan's longest side [`LONGEST_SIDE_PX`] pixels long, nearest-voxel sampling.
//!
//! Layout: the three panels side by side on black, axial, coronal, sagittal, each
//! [`MARGIN_PX`] from its neighbours and the edges, under a band of [`TITLE_PX`] holding the
//! panel's name and the patient direction at its left and right edges. A panel of a scan
//! that is `e` mm wide is `max(1, round(e · s))` pixels wide, `s` = [`LONGEST_SIDE_PX`] /
//! the longest extent; pixel column `x` shows voxel `n − 1 − floor((x + ½) · n / w)` of the
//! `n` voxels across, and likewise for rows. [`render_heat`] adds a second row of the same
//! slices with a map (an attribution) over the CT.

use ndarray::ArrayView3;

use crate::plot::{Align, Canvas, Rgb};
use lits_data::orient;
use lits_data::{Image, Labels, Volume};

/// The soft-tissue window, level 40 HU and width 400 HU: −160 HU is black, 240 HU white.
pub const WINDOW_HU: [f32; 2] = [-160.0, 240.0];
/// Colour laid over liver (label 1), as ITK-SNAP's first label.
pub const LIVER: Rgb = [255, 0, 0];
/// Colour laid over tumor (label 2), as ITK-SNAP's second label.
pub const TUMOR: Rgb = [0, 255, 0];
/// Opacity of the mask colours over the CT.
pub const MASK_ALPHA: f64 = 0.4;
/// Length in pixels of the scan's longest physical side.
pub const LONGEST_SIDE_PX: f64 = 384.0;
/// Space between panels and around them, pixels.
pub const MARGIN_PX: u32 = 16;
/// Height of the band above the panels, pixels.
pub const TITLE_PX: u32 = 24;

const TEXT: Rgb = [225, 225, 225];

/// One panel: the slice at `index` across canonical axis `fixed`, canonical axis
/// `horizontal` running right to left and `vertical` bottom to top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Panel {
    name: &'static str,
    fixed: usize,
    horizontal: usize,
    vertical: usize,
    /// Patient directions at the panel's left and right edges.
    edges: [&'static str; 2],
}

const PANELS: [Panel; 3] = [
    Panel { name: "axial", fixed: 2, horizontal: 0, vertical: 1, edges: ["R", "L"] },
    Panel { name: "coronal", fixed: 1, horizontal: 0, vertical: 2, edges: ["R", "L"] },
    Panel { name: "sagittal", fixed: 0, horizontal: 1, vertical: 2, edges: ["A", "P"] },
];

/// The grey level of every voxel of `image` (HU) in the soft-tissue window [`WINDOW_HU`]:
/// what [`render`] draws, a quarter of the image's size, so a caller can let the image go
/// and draw the preview later.
pub fn soft_tissue(image: &Image) -> Volume<u8> {
    let [lo, hi] = WINDOW_HU;
    image.map_data(image.data.mapv(|hu| if hu.is_nan() { 0 } else { (((hu - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8 }))
}

/// Draws the preview of a scan, given as its [`soft_tissue`] grey levels, with `labels`
/// (0, 1 liver, 2 tumor) over it. The slices cross at the liver's centre of mass
/// (label ≥ 1), rounded to a voxel, or at the volume's centre when there is no liver.
///
/// # Panics
/// If `labels` is not on the scan's grid (same shape and affine).
pub fn render(grey: &Volume<u8>, labels: &Labels) -> Canvas {
    assert!(grey.shape() == labels.shape() && grey.affine == labels.affine, "the preview needs the mask on the scan's grid");
    let (mask, _) = orient::canonical_view(labels);
    draw(grey, liver_centre(&mask), &[&|at| mask_colour(mask[at])])
}

/// Draws a map over a scan (an attribution: larger is more) beside its mask: the top row is
/// [`render`]'s, the bottom row the same three slices with the map over the CT in
/// [`heat_colour`], scaled so that the 99th percentile of the positive values on the three
/// slices is full strength. The slices cross at the map's largest value (the first in RAS
/// order), where a heat map is looked at, rather than at the liver's centre.
///
/// # Panics
/// If `labels` or `heat` is not on the scan's grid (same shape and affine).
pub fn render_heat(grey: &Volume<u8>, labels: &Labels, heat: &Image) -> Canvas {
    assert!(
        grey.shape() == labels.shape() && grey.affine == labels.affine && grey.shape() == heat.shape() && grey.affine == heat.affine,
        "the preview needs the mask and the map on the scan's grid"
    );
    let (mask, _) = orient::canonical_view(labels);
    let (map, _) = orient::canonical_view(heat);
    let mut hottest = (f32::NEG_INFINITY, None);
    for (at, &v) in map.indexed_iter() {
        if v > hottest.0 {
            hottest = (v, Some([at.0, at.1, at.2]));
        }
    }
    let n = [map.dim().0, map.dim().1, map.dim().2];
    let centre = hottest.1.unwrap_or(n.map(|x| x / 2));
    let mut shown: Vec<f64> = Vec::new();
    for p in &PANELS {
        let slice = map.index_axis(ndarray::Axis(p.fixed), centre[p.fixed]);
        shown.extend(slice.iter().filter(|&&v| v > 0.0).map(|&v| f64::from(v)));
    }
    let scale = lits_data::percentile::select(&mut shown, 99.0);
    let scale = if scale > 0.0 { scale as f32 } else { 1.0 };
    draw(grey, Some(centre), &[&|at| mask_colour(mask[at]), &|at| heat_colour(map[at] / scale)])
}

/// What lies over the CT at a canonical voxel: a colour and its opacity.
type Overlay<'a> = &'a dyn Fn([usize; 3]) -> Option<(Rgb, f64)>;

/// The colour of a label: liver and tumor at [`MASK_ALPHA`], nothing over background.
fn mask_colour(label: u8) -> Option<(Rgb, f64)> {
    match label {
        1 => Some((LIVER, MASK_ALPHA)),
        2 => Some((TUMOR, MASK_ALPHA)),
        _ => None,
    }
}

/// The heat colour of `t` (clamped to 0..1), black-body as matplotlib's `hot`: black, red
/// at ⅓, yellow at ⅔, white at 1; its opacity is `t`, so that low values leave the CT.
pub fn heat_colour(t: f32) -> Option<(Rgb, f64)> {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    if t == 0.0 {
        return None;
    }
    let ramp = |from: f32| ((3.0 * t - from).clamp(0.0, 1.0) * 255.0).round() as u8;
    Some(([ramp(0.0), ramp(1.0), ramp(2.0)], f64::from(t)))
}

/// The three panels crossing at `centre` (canonical voxel; the volume's centre when
/// `None`), one row per overlay, each under its band of names.
fn draw(grey: &Volume<u8>, centre: Option<[usize; 3]>, rows: &[Overlay<'_>]) -> Canvas {
    let (ct, spacing) = orient::canonical_view(grey);
    let n = [ct.dim().0, ct.dim().1, ct.dim().2];
    let centre = centre.unwrap_or(n.map(|x| x / 2));
    let extent: [f64; 3] = std::array::from_fn(|a| n[a] as f64 * spacing[a]);
    let px_per_mm = LONGEST_SIDE_PX / extent.iter().copied().fold(0.0, f64::max);
    let size = |p: &Panel| {
        let side = |a: usize| ((extent[a] * px_per_mm).round() as u32).max(1);
        (side(p.horizontal), side(p.vertical))
    };
    let sizes = PANELS.map(|p| size(&p));
    let width = MARGIN_PX + sizes.iter().map(|s| s.0 + MARGIN_PX).sum::<u32>();
    let row = TITLE_PX + sizes.iter().map(|s| s.1).max().unwrap_or(1);
    let mut canvas = Canvas::new(width, row * rows.len() as u32 + MARGIN_PX, [0, 0, 0]);
    for (r, overlay) in rows.iter().enumerate() {
        let top = row * r as u32;
        let mut left = MARGIN_PX;
        for (p, (w, h)) in PANELS.iter().zip(sizes) {
            draw_panel(&mut canvas, p, [left, top + TITLE_PX], [w, h], centre[p.fixed], &ct, *overlay);
            let (l, r, y) = (left as f64, (left + w) as f64, top as f64 + 5.0);
            canvas.text(l + w as f64 / 2.0, y, p.name, 2, TEXT, Align::Center);
            canvas.text(l, y, p.edges[0], 2, TEXT, Align::Left);
            canvas.text(r, y, p.edges[1], 2, TEXT, Align::Right);
            left += w + MARGIN_PX;
        }
    }
    canvas
}

/// The voxel of canonical axis `axis` shown at pixel `x` of a panel `w` pixels across.
fn voxel_at(x: u32, w: u32, n: usize) -> usize {
    let from_start = (((x as f64 + 0.5) * n as f64 / w as f64) as usize).min(n - 1);
    n - 1 - from_start
}

fn draw_panel(
    canvas: &mut Canvas,
    p: &Panel,
    origin: [u32; 2],
    [w, h]: [u32; 2],
    index: usize,
    ct: &ArrayView3<'_, u8>,
    overlay: Overlay<'_>,
) {
    let n = [ct.dim().0, ct.dim().1, ct.dim().2];
    for y in 0..h {
        for x in 0..w {
            let mut at = [0usize; 3];
            at[p.fixed] = index;
            at[p.horizontal] = voxel_at(x, w, n[p.horizontal]);
            at[p.vertical] = voxel_at(y, h, n[p.vertical]);
            let (px, py) = ((origin[0] + x) as i64, (origin[1] + y) as i64);
            canvas.blend(px, py, [ct[at]; 3], 1.0);
            if let Some((colour, alpha)) = overlay(at) {
                canvas.blend(px, py, colour, alpha);
            }
        }
    }
}

/// The liver's (label ≥ 1) centre of mass, rounded to a voxel; `None` without liver.
fn liver_centre(mask: &ArrayView3<'_, u8>) -> Option<[usize; 3]> {
    let (mut sum, mut count) = ([0.0f64; 3], 0u64);
    for ((i, j, k), &v) in mask.indexed_iter() {
        if v >= 1 {
            sum[0] += i as f64;
            sum[1] += j as f64;
            sum[2] += k as f64;
            count += 1;
        }
    }
    (count > 0).then(|| sum.map(|s| (s / count as f64).round() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};

    /// Pixel colour at panel `panel`'s pixel `(x, y)`.
    fn at(c: &Canvas, lefts: &[u32; 3], panel: usize, x: u32, y: u32) -> Rgb {
        c.pixel(lefts[panel] + x, TITLE_PX + y)
    }

    #[test]
    fn panels_keep_aspect_orientation_window_and_colours() {
        // RAS, 20 × 10 × 8 voxels of 1 × 2 × 3 mm: extents 20, 20, 24 mm → 16 px per mm.
        let mut ct = Array3::<f32>::from_elem((20, 10, 8), 40.0);
        ct.slice_mut(s![.., .., 0]).fill(1000.0);
        let mut mask = Array3::<u8>::zeros((20, 10, 8));
        // Liver on the patient's right (high i), tumor in its anterior part (high j).
        mask.slice_mut(s![14..20, 0..10, 2..6]).fill(1);
        mask.slice_mut(s![14..20, 8..10, 2..6]).fill(2);
        let img = Volume::with_spacing(ct, [1.0, 2.0, 3.0]);
        let lab = img.map_data(mask);
        let c = render(&soft_tissue(&img), &lab);
        // Panels 320×320, 320×384, 320×384.
        assert_eq!((c.width(), c.height()), (16 + 3 * (320 + 16), 24 + 384 + 16));
        let lefts = [16, 16 + 336, 16 + 2 * 336];
        // Soft tissue (40 HU) is mid-grey: 200/400 of 255.
        let grey = [128, 128, 128];
        let liver = [(0.6f64 * 128.0 + 0.4 * 255.0).round() as u8, 77, 77];
        // Axial (k = centre of the liver, 4 → slice 3 or 4): patient right on the left.
        assert_eq!(at(&c, &lefts, 0, 10, 160), liver, "right side is liver");
        assert_eq!(at(&c, &lefts, 0, 300, 160), grey, "left side is not");
        // Anterior (high j) at the top: tumor there, liver below it.
        let top = at(&c, &lefts, 0, 10, 5);
        assert!(top[1] > top[0] && top[0] == top[2], "tumor green at the top: {top:?}");
        // Coronal: superior up; slice k = 0 (1000 HU, white) is the bottom rows.
        assert_eq!(at(&c, &lefts, 1, 300, 383), [255; 3]);
        assert_eq!(at(&c, &lefts, 1, 300, 0), grey);
        // Sagittal through the liver (i ≈ 17): anterior on the left, tumor there; the
        // liver spans k 2..6, rows 384 − 6·48 .. 384 − 2·48.
        let sag = at(&c, &lefts, 2, 5, 200);
        assert!(sag[1] > sag[0], "tumor anterior (left): {sag:?}");
        assert_eq!(at(&c, &lefts, 2, 200, 200), liver);
        assert_eq!(at(&c, &lefts, 2, 200, 90), grey, "above the liver");
        // Background between panels stays black.
        assert_eq!(c.pixel(lefts[1] - 8, 200), [0, 0, 0]);
    }

    #[test]
    fn no_liver_means_the_volume_centre_and_other_orientations_look_the_same() {
        let ct = Array3::from_shape_fn((6, 8, 4), |(i, j, k)| (i * 50 + j * 10 + k) as f32 - 100.0);
        let ras = Volume::with_spacing(ct, [2.0, 1.5, 3.0]);
        let mut mask = Array3::<u8>::zeros((6, 8, 4));
        mask[[1, 6, 2]] = 1;
        let ras_mask = ras.map_data(mask);
        let want = render(&soft_tissue(&ras), &ras_mask);
        // The same scan stored with i flipped and axes j, i, k swapped (an LAS-like file).
        let permute = |a: &Array3<f32>| {
            let mut v = a.view();
            v.invert_axis(ndarray::Axis(0));
            v.permuted_axes([1, 0, 2]).to_owned()
        };
        let mut other = Volume::with_spacing(permute(&ras.data), [1.5, 2.0, 3.0]);
        other.affine = [[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let m = permute(&ras_mask.data.mapv(f32::from)).mapv(|v| v as u8);
        let other_mask = other.map_data(m);
        assert_eq!(render(&soft_tissue(&other), &other_mask), want);
        // Without liver the slices cross the middle voxel.
        let empty = ras.map_data(Array3::<u8>::zeros((6, 8, 4)));
        assert_eq!(liver_centre(&orient::canonical_view(&empty).0), None);
        let c = render(&soft_tissue(&ras), &empty);
        let grey = |p: Rgb| p[0] == p[1] && p[1] == p[2];
        assert!((0..c.height()).all(|y| (0..c.width()).all(|x| grey(c.pixel(x, y)))), "no colour without a mask");
    }

    #[test]
    fn heat_rows_cross_at_the_hottest_voxel_under_the_mask_row() {
        assert_eq!(heat_colour(0.0), None);
        assert_eq!(heat_colour(f32::NAN), None);
        assert_eq!(heat_colour(2.0), Some(([255, 255, 255], 1.0)));
        assert_eq!(heat_colour(1.0 / 3.0).map(|c| c.0), Some([255, 0, 0]));
        // RAS, 8 × 8 × 8 voxels of 1 mm: 48 px per voxel, panels 384 × 384.
        let img = Volume::with_spacing(Array3::<f32>::from_elem((8, 8, 8), 40.0), [1.0; 3]);
        let mut mask = Array3::<u8>::zeros((8, 8, 8));
        mask[[1, 1, 1]] = 1;
        let mut heat = Array3::<f32>::zeros((8, 8, 8));
        heat[[6, 2, 5]] = 4.0;
        heat[[6, 3, 5]] = 1.0;
        let c = render_heat(&soft_tissue(&img), &img.map_data(mask), &img.map_data(heat));
        let row = TITLE_PX + 384;
        assert_eq!((c.width(), c.height()), (16 + 3 * (384 + 16), 2 * row + 16));
        // Axial panel of the heat row through k = 5: voxel i = 6 is column 8 − 1 − 6 = 1
        // (48 px each), j = 2 is row 5 from the top, at full strength (the 99th
        // percentile of the two positive values is about 3.97).
        let hot = c.pixel(16 + 48 + 24, row + TITLE_PX + 5 * 48 + 24);
        assert_eq!(hot, [255, 255, 255], "the hottest voxel is white");
        let warm = c.pixel(16 + 48 + 24, row + TITLE_PX + 4 * 48 + 24);
        assert!(warm[0] > warm[1] && warm[1] == warm[2] && warm[0] > 128, "a quarter is red: {warm:?}");
        // The mask row shows the same slice: no liver at k = 5, so it is grey there.
        assert_eq!(c.pixel(16 + 48 + 24, TITLE_PX + 5 * 48 + 24), [128; 3]);
    }
}
