//! Properties of the geometry lits promises, over generated inputs: a volume stored in any of
//! the 48 axis orientations reads back and reorients back exactly; labels resampled and
//! restored to their own grid keep their values; a patch cut anywhere, borders and beyond
//! included, holds the volume's voxels and the documented padding; and every written file
//! carries the geometry of its input.

use std::collections::BTreeSet;
use std::path::Path;

use lits_data::crop::{padded_block, Crop};
use lits_data::nifti::{read_image, read_labels, write_image, write_labels, Geometry, ImageDtype};
use lits_data::orient::{orientation_code, to_canonical};
use lits_data::patch::{Augment, PatchConfig, PatchSampler};
use lits_data::preprocess::{prepare_spacing, SpacingConfig};
use lits_data::resample::{Alignment, LabelInterp};
use lits_data::store::StoreCase;
use lits_data::{Image, Labels, Volume};
use ndarray::Array3;
use proptest::prelude::*;

/// Voxel sizes that float32 (the header's precision) holds exactly.
const SPACINGS: [f64; 7] = [0.5, 0.75, 1.0, 1.25, 2.0, 2.5, 3.0];

/// The 48 signed axis permutations: array axis `a` runs along world axis `perm[a]`,
/// towards `sign[a]`.
fn signed_permutations() -> Vec<([usize; 3], [f64; 3])> {
    let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let mut out = Vec::new();
    for perm in perms {
        for bits in 0..8 {
            out.push((perm, [0, 1, 2].map(|a| if bits >> a & 1 == 1 { -1.0 } else { 1.0 })));
        }
    }
    out
}

fn axis_affine(perm: [usize; 3], sign: [f64; 3], spacing: [f64; 3], origin: [f64; 3]) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for ax in 0..3 {
        a[perm[ax]][ax] = sign[ax] * spacing[ax];
        a[ax][3] = origin[ax];
    }
    a[3][3] = 1.0;
    a
}

fn world(a: &[[f64; 4]; 4], idx: [usize; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| (0..3).map(|c| a[r][c] * idx[c] as f64).sum::<f64>() + a[r][3])
}

/// A volume of `shape` filled from `values` (cycled).
fn filled<T: Copy>(shape: [usize; 3], values: &[T]) -> Array3<T> {
    let mut it = values.iter().cycle();
    Array3::from_shape_fn(shape, |_| *it.next().expect("values are not empty"))
}

fn spacing() -> impl Strategy<Value = [f64; 3]> {
    prop::array::uniform3(prop::sample::select(SPACINGS.to_vec()))
}

/// Whole or half millimetres, exact in float32.
fn origin() -> impl Strategy<Value = [f64; 3]> {
    prop::array::uniform3((-400i32..400).prop_map(|v| f64::from(v) / 2.0))
}

fn shape(max: usize) -> impl Strategy<Value = [usize; 3]> {
    prop::array::uniform3(1..=max)
}

/// Writes `v` with `geom` to `path` and reads it back (labels).
fn labels_through_file(path: &Path, v: &Labels, geom: &Geometry) -> (Labels, Geometry) {
    write_labels(path, v, geom).unwrap();
    read_labels(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Every orientation: written and read back bit for bit, reoriented to RAS with every
    /// voxel at its world position, and brought back to the stored array and geometry exactly.
    #[test]
    fn every_axis_orientation_round_trips_exactly(
        shape in shape(5),
        spacing in spacing(),
        origin in origin(),
        labels in prop::collection::vec(0u8..3, 1..40),
        values in prop::collection::vec(-2000i16..2000, 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut codes = BTreeSet::new();
        for (perm, sign) in signed_permutations() {
            let affine = axis_affine(perm, sign, spacing, origin);
            codes.insert(orientation_code(&affine));
            let geom = Geometry::from_affine(affine);
            let lab = Volume { data: filled(shape, &labels), spacing, affine };
            let (read, g) = labels_through_file(&dir.path().join("l.nii"), &lab, &geom);
            prop_assert_eq!(&read, &lab);
            prop_assert_eq!(&g, &geom);

            let (c, r) = to_canonical(&read);
            prop_assert_eq!(orientation_code(&c.affine), "RAS");
            for row in 0..3 {
                for col in 0..3 {
                    let diagonal_positive = if row == col { c.affine[row][col] > 0.0 } else { c.affine[row][col] == 0.0 };
                    prop_assert!(diagonal_positive, "{:?}", c.affine);
                }
            }
            for (idx, &v) in read.data.indexed_iter() {
                let w = world(&read.affine, [idx.0, idx.1, idx.2]);
                let n = [0, 1, 2].map(|a| ((w[a] - c.affine[a][3]) / c.affine[a][a]).round() as usize);
                prop_assert_eq!(world(&c.affine, n), w);
                prop_assert_eq!(c.data[n], v);
            }
            let back = r.undo(&c);
            prop_assert_eq!(&back, &read);
            // Written back with the source geometry: the same file, byte for byte.
            write_labels(&dir.path().join("back.nii"), &back, &g).unwrap();
            prop_assert_eq!(std::fs::read(dir.path().join("back.nii")).unwrap(), std::fs::read(dir.path().join("l.nii")).unwrap());
            // The canonical volume, written with the source geometry, keeps its own affine.
            let (cread, _) = labels_through_file(&dir.path().join("c.nii.gz"), &c, &g);
            prop_assert_eq!(&cread, &c);

            let img: Image = Volume { data: filled(shape, &values).mapv(f32::from), spacing, affine };
            let p = dir.path().join("i.nii.gz");
            write_image(&p, &img, &geom, ImageDtype::F32).unwrap();
            let (iread, ig) = read_image(&p).unwrap();
            prop_assert_eq!(&iread, &img);
            prop_assert_eq!(&ig, &geom);
            let (ic, ir) = to_canonical(&iread);
            prop_assert_eq!(ir.undo(&ic), iread);
        }
        prop_assert_eq!(codes.len(), 48);
    }
}

/// The target spacing along one axis, as a multiple of the source's: the same, an integer
/// refinement (every source centre is a target centre), or anything from a quarter to four
/// times.
#[derive(Debug, Clone, Copy)]
enum Target {
    Same,
    Finer(u32),
    Any(f64),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Same), (2u32..4).prop_map(Target::Finer), (0.25f64..4.0).prop_map(Target::Any)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Labels prepared as training prepares them (reoriented from any orientation, cropped
    /// to the liver or not, resampled with nearest neighbours) and restored as `predict`
    /// restores them: back on the source grid with its shape and affine, holding only labels
    /// the input holds; identical to the input where the target spacing keeps every source
    /// voxel centre (the same spacing, or an integer refinement anchored at the origin).
    #[test]
    fn nearest_labels_restored_to_their_grid_keep_their_values(
        code in 0usize..48,
        shape in shape(7),
        spacing in spacing(),
        origin in origin(),
        targets in prop::array::uniform3(target()),
        corners in any::<bool>(),
        crop in any::<bool>(),
        labels in prop::collection::vec(prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)], 1..60),
    ) {
        let (perm, sign) = signed_permutations()[code];
        let affine = axis_affine(perm, sign, spacing, origin);
        let lab = Volume { data: filled(shape, &labels), spacing, affine };
        let img = lab.map_data(lab.data.mapv(f32::from));
        // The target is given along the RAS axes, as a config gives it.
        let (canonical, _) = to_canonical(&lab);
        let target = [0, 1, 2].map(|a| match targets[a] {
            Target::Same => canonical.spacing[a],
            Target::Finer(k) => canonical.spacing[a] / f64::from(k),
            Target::Any(f) => canonical.spacing[a] * f,
        });
        let cfg = SpacingConfig {
            alignment: if corners { Alignment::Corners } else { Alignment::Origin },
            label_interp: LabelInterp::Nearest,
            crop: if crop { Crop::Liver { margin_mm: [1.0, 0.0, 2.0] } } else { Crop::None },
            ..SpacingConfig::default()
        };
        let prepared = prepare_spacing(&cfg, target, &img, Some(&lab)).unwrap();
        let on_grid = prepared.labels.unwrap();
        let input: BTreeSet<u8> = lab.data.iter().copied().collect();
        prop_assert!(on_grid.data.iter().all(|l| input.contains(l)));
        let restored = prepared.record.restore_labels(&on_grid).unwrap();
        prop_assert_eq!(restored.shape(), lab.shape());
        prop_assert_eq!(restored.affine, lab.affine);
        prop_assert_eq!(restored.spacing, lab.spacing);
        prop_assert!(restored.data.iter().all(|l| input.contains(l)));
        let keeps_centres = targets.iter().all(|t| match t {
            Target::Same => true,
            Target::Finer(_) => !corners,
            Target::Any(_) => false,
        });
        if keeps_centres {
            prop_assert_eq!(&restored.data, &lab.data);
        }
    }

    /// A block cut at any start, inside, across any border or wholly outside: the block's
    /// shape, the volume's voxels where it overlaps the volume, `fill` elsewhere.
    #[test]
    fn a_block_anywhere_holds_the_volume_and_the_fill(
        vshape in shape(6),
        bshape in shape(9),
        start in prop::array::uniform3(-10i64..10),
    ) {
        let v = Array3::from_shape_fn(vshape, |(i, j, k)| (1 + i * 100 + j * 10 + k) as i32);
        let b = padded_block(v.view(), start, bshape, -1);
        prop_assert_eq!(b.shape(), &bshape[..]);
        for ((i, j, k), &x) in b.indexed_iter() {
            let src = [i, j, k].iter().zip(start).map(|(&o, s)| o as i64 + s).collect::<Vec<_>>();
            let inside = src.iter().zip(vshape).all(|(&s, n)| (0..n as i64).contains(&s));
            let want = if inside { v[[src[0] as usize, src[1] as usize, src[2] as usize]] } else { -1 };
            prop_assert_eq!(x, want);
        }
    }

    /// Training patches, unaugmented, from volumes smaller, equal to and larger than the
    /// patch, with foreground anywhere (corners included) and any share of
    /// foreground-centred patches: every patch has the patch's shape, is the volume's block
    /// at some start where the patch overlaps it, and is padded with the case's minimum
    /// intensity and label 0 elsewhere; a patch that fits inside the volume never leaves it.
    #[test]
    fn training_patches_at_every_border_are_the_volume_padded_as_documented(
        vshape in shape(9),
        patch in shape(8),
        foreground in prop::collection::vec((prop::array::uniform3(0usize..9), 1u8..3), 0..6),
        fraction in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        // Intensities encode the voxel (and stay above the case's minimum, -5, at voxel 0).
        let mut img = Array3::from_shape_fn(vshape, |(i, j, k)| (i * 10000 + j * 100 + k) as f32);
        img[[0, 0, 0]] = -5.0;
        let mut lab = Array3::<u8>::zeros(vshape);
        for (at, class) in &foreground {
            lab[[at[0] % vshape[0], at[1] % vshape[1], at[2] % vshape[2]]] = *class;
        }
        let case = (Volume::with_spacing(img.clone(), [1.0; 3]), Volume::with_spacing(lab.clone(), [1.0; 3]));
        let cfg = PatchConfig { patch, batch_size: 4, foreground_fraction: fraction, augment: Augment::none() };
        let sampler = PatchSampler::new(vec![StoreCase::in_memory(std::sync::Arc::new(case)).unwrap()], cfg, seed).unwrap();
        let n: usize = patch.iter().product();
        for step in 0..3 {
            let batch = sampler.batch(0, step).unwrap();
            prop_assert_eq!(batch.patch, patch);
            prop_assert_eq!((batch.image.len(), batch.label.len()), (4 * n, 4 * n));
            for (pi, pl) in batch.image.chunks(n).zip(batch.label.chunks(n)) {
                // The start, from the first voxel of the volume (other than voxel 0, whose
                // value is also the padding's) that the patch holds.
                let Some((t, &v)) = pi.iter().enumerate().find(|(_, &v)| v != -5.0) else {
                    // Only voxel 0 of the volume, or none, and padding.
                    prop_assert!(pl.iter().all(|&l| l == 0 || l == lab[[0, 0, 0]]));
                    continue;
                };
                let v = v as usize;
                let at = [v / 10000, v / 100 % 100, v % 100];
                let offset = [t / (patch[1] * patch[2]), t / patch[2] % patch[1], t % patch[2]];
                let start = [0, 1, 2].map(|a| at[a] as i64 - offset[a] as i64);
                for a in 0..3 {
                    if patch[a] <= vshape[a] {
                        prop_assert!(start[a] >= 0 && start[a] + patch[a] as i64 <= vshape[a] as i64, "{:?} leaves {:?}", start, vshape);
                    } else {
                        prop_assert!(start[a] <= 0 && start[a] + patch[a] as i64 >= vshape[a] as i64, "{:?} misses part of {:?}", start, vshape);
                    }
                }
                let want_img = padded_block(img.view(), start, patch, -5.0);
                let want_lab = padded_block(lab.view(), start, patch, 0);
                prop_assert_eq!(pi, want_img.as_slice().unwrap());
                prop_assert_eq!(pl, want_lab.as_slice().unwrap());
            }
        }
    }
}

/// A NIfTI file of `shape` (int16, scaled) whose geometry fields are exactly those of `g`:
/// the writer stores a geometry's fields as they are for a volume carrying its affine
/// (here a placeholder; reading computes the affine from the fields).
fn file_with_geometry(path: &Path, shape: [usize; 3], g: &Geometry) {
    let data = Array3::from_shape_fn(shape, |(i, j, k)| (i * 7 + j * 3 + k) as f32 * 2.0 - 40.0);
    let img = Volume { data, spacing: [1.0; 3], affine: g.affine };
    let dtype = ImageDtype::I16 { slope: 2.0, inter: -40.0 };
    write_image(path, &img, g, dtype).unwrap();
}

/// A rotation (unit quaternion `w, b, c, d`, `w ≥ 0`) as a matrix.
fn rotation(q: [f64; 4]) -> [[f64; 3]; 3] {
    let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    let [w, b, c, d] = q.map(|v| v / n);
    [
        [w * w + b * b - c * c - d * d, 2.0 * (b * c - w * d), 2.0 * (b * d + w * c)],
        [2.0 * (b * c + w * d), w * w + c * c - b * b - d * d, 2.0 * (c * d - w * b)],
        [2.0 * (b * d - w * c), 2.0 * (c * d + w * b), w * w + d * d - b * b - c * c],
    ]
}

fn unit_quaternion() -> impl Strategy<Value = [f64; 4]> {
    (0.05f64..1.0, -1.0f64..1.0, -1.0f64..1.0, -1.0f64..1.0).prop_map(|(w, b, c, d)| [w, b, c, d])
}

/// Header geometries of every kind: an oblique sform, a qform with either handedness, both,
/// or neither (pixdim alone), with the codes and units a scanner or a tool may write.
fn geometry() -> impl Strategy<Value = Geometry> {
    (
        prop::sample::select(vec![0i16, 1, 2, 4]),
        prop::sample::select(vec![0i16, 1, 2]),
        unit_quaternion(),
        unit_quaternion(),
        prop::array::uniform3(0.3f64..4.0),
        any::<bool>(),
        prop::array::uniform3(-300.0f64..300.0),
        prop::sample::select(vec![2u8, 10]),
    )
        .prop_map(|(sform_code, qform_code, sq, qq, zooms, flip, offset, units)| {
            let r = rotation(sq);
            let mut srow = [[0f32; 4]; 3];
            for (row, s) in srow.iter_mut().enumerate() {
                for c in 0..3 {
                    s[c] = (r[row][c] * zooms[c] * if flip && c == 2 { -1.0 } else { 1.0 }) as f32;
                }
                s[3] = offset[row] as f32;
            }
            let n = qq.iter().map(|v| v * v).sum::<f64>().sqrt();
            let quatern = [qq[1] / n, qq[2] / n, qq[3] / n].map(|v| v as f32);
            let mut pixdim = [1f32; 8];
            pixdim[0] = if flip { -1.0 } else { 1.0 };
            for a in 0..3 {
                pixdim[a + 1] = zooms[a] as f32;
            }
            Geometry {
                affine: [[0.0; 4]; 4],
                sform_code,
                srow,
                qform_code,
                quatern,
                qoffset: offset.map(|v| v as f32),
                pixdim,
                xyzt_units: units,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Whatever geometry a scan's header holds, what lits writes for it (its labels, an
    /// image, after reorienting there and back) carries that header's geometry field for
    /// field and the same affine; a volume on another grid (the scan reoriented to RAS)
    /// carries its own affine, to float32 precision, with the scan's codes and units.
    #[test]
    fn every_written_file_carries_its_inputs_affine(shape in shape(5), g in geometry()) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("scan.nii");
        file_with_geometry(&src, shape, &g);
        let (img, geom) = read_image(&src).unwrap();
        prop_assert_eq!(img.affine, geom.affine);
        let (c, r) = to_canonical(&img);
        let back = r.undo(&c);
        prop_assert_eq!(back.affine, img.affine);

        let labels = back.map_data(back.data.mapv(|v| u8::from(v > 0.0)));
        let out = dir.path().join("mask.nii.gz");
        let (mask, mask_geom) = labels_through_file(&out, &labels, &geom);
        prop_assert_eq!(&mask_geom, &geom);
        prop_assert_eq!(mask.affine, img.affine);
        prop_assert_eq!(mask.spacing, img.spacing);

        let out = dir.path().join("image.nii");
        write_image(&out, &back, &geom, ImageDtype::I16 { slope: 2.0, inter: -40.0 }).unwrap();
        let (again, again_geom) = read_image(&out).unwrap();
        prop_assert_eq!(&again_geom, &geom);
        prop_assert_eq!(&again, &img);

        let out = dir.path().join("canonical.nii.gz");
        let (cread, cgeom) = labels_through_file(&out, &c.map_data(c.data.mapv(|v| u8::from(v > 0.0))), &geom);
        for (row_read, row_want) in cread.affine.iter().zip(&c.affine) {
            for (a, b) in row_read.iter().zip(row_want) {
                prop_assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{:?} vs {:?}", cread.affine, c.affine);
            }
        }
        if c.affine == img.affine {
            // Already in RAS: the same grid, so the header is written as it came.
            prop_assert_eq!(&cgeom, &geom);
        } else {
            prop_assert_eq!(cgeom.sform_code, if geom.sform_code > 0 { geom.sform_code } else { 1 });
            prop_assert_eq!(cgeom.qform_code, if geom.qform_code > 0 { geom.qform_code } else { 1 });
            prop_assert_eq!(cgeom.xyzt_units, geom.xyzt_units);
        }
    }
}
