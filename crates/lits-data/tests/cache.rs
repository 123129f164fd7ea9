//! The preprocessed-case cache: what is redone when, bad cases, interrupted runs, and the
//! cache as a training store read from disk, which must give what the cases loaded in
//! memory give, bit for bit.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lits_data::cache::{self, Cache, Event, Report};
use lits_data::intensity::{Intensity, Normaliser};
use lits_data::nifti::{self, Geometry, ImageDtype};
use lits_data::patch::{Augment, Batch, PatchConfig, PatchSampler, Prefetcher};
use lits_data::preprocess::{PreprocessConfig, SpacingConfig};
use lits_data::store::{self, StoreCase, StoreKind};
use lits_data::{Image, Labels, Volume};
use ndarray::Array3;

const SHAPE: [usize; 3] = [24, 20, 8];

/// A small case: soft tissue with a block of liver (80 HU) and a tumor voxel (40 HU).
fn case(id: u32) -> (Image, Labels) {
    let img = Array3::from_shape_fn(SHAPE, |(i, j, k)| {
        let liver = (6..14).contains(&i) && (5..12).contains(&j) && (2..6).contains(&k);
        if liver {
            80.0 + id as f32
        } else {
            ((i + 2 * j + 3 * k) % 40) as f32 - 20.0
        }
    });
    let lab = Array3::from_shape_fn(SHAPE, |(i, j, k)| {
        let liver = (6..14).contains(&i) && (5..12).contains(&j) && (2..6).contains(&k);
        u8::from(liver) + u8::from(liver && i == 9 && j == 8)
    });
    let spacing = [0.8, 0.8, 2.5];
    (Volume::with_spacing(img, spacing), Volume::with_spacing(lab, spacing))
}

fn write(dir: &Path, id: u32, img: &Image, lab: &Labels) {
    let geom = Geometry::from_affine(img.affine);
    nifti::write_image(&dir.join(format!("volume-{id}.nii")), img, &geom, ImageDtype::I16 { slope: 1.0, inter: 0.0 }).unwrap();
    nifti::write_labels(&dir.join(format!("segmentation-{id}.nii")), lab, &Geometry::from_affine(lab.affine)).unwrap();
}

fn dataset(ids: &[u32]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for &id in ids {
        let (img, lab) = case(id);
        write(dir.path(), id, &img, &lab);
    }
    dir
}

fn config(target: f64, intensity: Intensity) -> PreprocessConfig {
    PreprocessConfig::Spacing(SpacingConfig { target_spacing: Some([target, target, 2.5]), intensity, ..SpacingConfig::default() })
}

fn window() -> Intensity {
    Intensity::Window { lower: -100.0, upper: 200.0 }
}

fn build(data: &Path, cfg: &PreprocessConfig, out: &Path) -> Report {
    let events = std::sync::Mutex::new(Vec::new());
    let r = cache::build(data, cfg, out, &|e| events.lock().unwrap().push(e)).unwrap();
    let events = events.into_inner().unwrap();
    // One start, then one event per case of the dataset.
    assert!(matches!(events[0], Event::Start { .. }));
    let n = r.processed.len() + r.unchanged.len() + r.failed.iter().filter(|f| f.id.is_some()).count();
    assert_eq!(events.len(), n + 1);
    r
}

fn modified(p: &Path) -> std::time::SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

fn case_file(out: &Path, id: u32, name: &str) -> PathBuf {
    out.join("cases").join(format!("case-{id}")).join(name)
}

#[test]
fn first_run_caches_everything_and_loads_normalised() {
    let data = dataset(&[0, 1, 2]);
    let out = tempfile::tempdir().unwrap();
    let r = build(data.path(), &config(1.6, window()), out.path());
    assert_eq!((r.processed, r.unchanged, r.failed.len()), (vec![0, 1, 2], vec![], 0));

    let c = Cache::open(out.path()).unwrap();
    assert_eq!(c.ids(), vec![0, 1, 2]);
    let fp = c.fingerprint();
    assert_eq!(fp.cases[0].image.sha256.len(), 64);
    assert_eq!(fp.cases[0].image.size, fs::metadata(data.path().join("volume-0.nii")).unwrap().len());
    assert_eq!(fp.cases[0].source_shape, SHAPE);
    assert_eq!(fp.cases[0].shape, [12, 10, 8]);
    assert_eq!(fp.cases[0].spacing, [1.6, 1.6, 2.5]);
    assert!(fp.intensity_stats.as_ref().unwrap().count > 0);

    let (img, lab) = c.load(1).unwrap();
    assert_eq!(img.shape(), [12, 10, 8]);
    assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)), "window normalised to 0..1");
    // The liver (81 HU) maps to (81 + 100) / 300.
    let liver: Vec<f32> = img.data.iter().zip(lab.data.iter()).filter(|(_, &l)| l == 1).map(|(v, _)| *v).collect();
    assert!(!liver.is_empty() && liver.iter().all(|v| (v - 181.0 / 300.0).abs() < 1e-5));
    // The arrays are plain .npy files.
    let npy = fs::read(case_file(out.path(), 1, "image.npy")).unwrap();
    assert_eq!(&npy[..6], b"\x93NUMPY");
}

#[test]
fn rerun_redoes_nothing_and_a_changed_file_redoes_its_case_only() {
    let data = dataset(&[0, 1, 2]);
    let out = tempfile::tempdir().unwrap();
    let cfg = config(1.6, window());
    build(data.path(), &cfg, out.path());
    let before = modified(&case_file(out.path(), 0, "image.npy"));

    let r = build(data.path(), &cfg, out.path());
    assert_eq!((r.processed, r.unchanged), (vec![], vec![0, 1, 2]));
    assert_eq!(modified(&case_file(out.path(), 0, "image.npy")), before);

    // New content for case 1's labels: only case 1 is redone.
    let (img, mut lab) = case(1);
    // An even index, so the 2× downsampling keeps it (source index = 2 × target index).
    lab.data[[8, 6, 3]] = 2;
    write(data.path(), 1, &img, &lab);
    let r = build(data.path(), &cfg, out.path());
    assert_eq!((r.processed, r.unchanged), (vec![1], vec![0, 2]));
    let (_, cached, _) = Cache::open(out.path()).unwrap().load_raw(1).unwrap();
    assert_eq!(cached.data.iter().filter(|&&l| l == 2).count(), 1);

    // Rewritten with the same bytes (a new time stamp): hashed again, found unchanged.
    write(data.path(), 2, &case(2).0, &case(2).1);
    let r = build(data.path(), &cfg, out.path());
    assert_eq!((r.processed, r.unchanged), (vec![], vec![0, 1, 2]));
}

#[test]
fn a_changed_config_redoes_every_case() {
    let data = dataset(&[3, 4]);
    let out = tempfile::tempdir().unwrap();
    build(data.path(), &config(1.6, window()), out.path());
    let r = build(data.path(), &config(2.4, window()), out.path());
    assert_eq!(r.processed, vec![3, 4]);
    assert_eq!(Cache::open(out.path()).unwrap().fingerprint().cases[0].shape, [8, 7, 8]);
    // The intensity scheme is applied on loading, but it is part of the config too.
    let r = build(data.path(), &config(2.4, Intensity::None), out.path());
    assert_eq!(r.processed, vec![3, 4]);
}

#[test]
fn bad_cases_are_all_reported_and_good_ones_cached() {
    let data = dataset(&[0, 1, 2, 3, 4]);
    let out = tempfile::tempdir().unwrap();
    build(data.path(), &config(1.6, window()), out.path());
    let d = data.path();
    // 1: a label value outside 0..2.
    let (img, mut lab) = case(1);
    lab.data[[0, 0, 0]] = 3;
    write(d, 1, &img, &lab);
    // 2: labels on another shape.
    let (img, _) = case(2);
    let small = Volume::with_spacing(Array3::<u8>::zeros((24, 20, 7)), [0.8, 0.8, 2.5]);
    write(d, 2, &img, &small);
    // 3: labels on a shifted grid.
    let (img, mut lab) = case(3);
    lab.affine[0][3] = 4.0;
    write(d, 3, &img, &lab);
    // 5: an image without labels.
    let (img, _) = case(5);
    nifti::write_image(&d.join("volume-5.nii"), &img, &Geometry::from_affine(img.affine), ImageDtype::F32).unwrap();
    // 4 becomes unreadable.
    fs::write(d.join("volume-4.nii"), b"not a nifti file").unwrap();

    let r = build(d, &config(1.6, window()), out.path());
    assert_eq!(r.unchanged, vec![0]);
    let got: Vec<(Option<u32>, String)> =
        r.failed.iter().map(|f| (f.id, f.path.file_name().unwrap().to_string_lossy().into_owned())).collect();
    let want: Vec<(Option<u32>, String)> =
        [(1, "segmentation-1.nii"), (2, "segmentation-2.nii"), (3, "segmentation-3.nii"), (4, "volume-4.nii"), (5, "volume-5.nii")]
            .iter()
            .map(|(i, p)| (Some(*i), p.to_string()))
            .collect();
    assert_eq!(got, want);
    assert!(r.failed[0].problem.contains("outside 0..2"), "{}", r.failed[0].problem);
    assert!(r.failed[1].problem.contains("shape"), "{}", r.failed[1].problem);
    assert!(r.failed[2].problem.contains("affine"), "{}", r.failed[2].problem);
    assert!(r.failed[4].problem.contains("no segmentation"), "{}", r.failed[4].problem);
    // Cases cached before that are bad now are gone, so training cannot load them.
    assert_eq!(r.removed, vec![1, 2, 3, 4]);
    let c = Cache::open(out.path()).unwrap();
    assert_eq!(c.ids(), vec![0]);
    assert_eq!(c.fingerprint().failed.len(), 5);
    assert!(c.load(1).is_err());
}

#[test]
fn no_cases_is_an_error_naming_the_folder() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = cache::build(data.path(), &config(1.6, window()), out.path(), &|_| {}).unwrap_err().to_string();
    assert!(e.contains(&data.path().display().to_string()) && e.contains("no cases"), "{e}");
}

#[test]
fn an_interrupted_run_never_leaves_a_case_that_loads() {
    let data = dataset(&[0, 1]);
    let out = tempfile::tempdir().unwrap();
    let cfg = config(1.6, window());
    build(data.path(), &cfg, out.path());
    // A run killed while writing case 1 leaves its hidden temporary folder; one killed
    // between swapping folders leaves case 0 without its arrays.
    let tmp = out.path().join("cases").join(".case-1.999.tmp");
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join("image.npy"), b"half").unwrap();
    fs::remove_file(case_file(out.path(), 0, "label.npy")).unwrap();
    assert!(Cache::open(out.path()).unwrap().load(0).is_err());

    let r = build(data.path(), &cfg, out.path());
    assert_eq!((r.processed, r.unchanged), (vec![0], vec![1]));
    assert!(!tmp.exists());
    assert!(Cache::open(out.path()).unwrap().load(0).is_ok());
}

#[test]
fn foreground_zscore_uses_the_statistics_of_every_case() {
    let data = dataset(&[0, 1, 2]);
    let out = tempfile::tempdir().unwrap();
    let cfg = config(0.8, Intensity::default());
    build(data.path(), &cfg, out.path());
    let c = Cache::open(out.path()).unwrap();
    let stats = c.fingerprint().intensity_stats.clone().unwrap();
    // Foreground is the liver block, 80 + id HU, equally large in each case: mean 81.
    assert!((stats.mean - 81.0).abs() < 1e-9, "{}", stats.mean);
    let sd = (2.0f64 / 3.0).sqrt();
    assert!((stats.std - sd).abs() < 1e-9);
    let (img, lab) = c.load(2).unwrap();
    let v = img.data.iter().zip(lab.data.iter()).find(|(_, &l)| l == 1).unwrap().0;
    assert!((*v as f64 - 1.0 / sd).abs() < 1e-4, "{v}");
}

#[test]
fn a_case_without_foreground_is_cached_once() {
    let data = dataset(&[0]);
    let (img, _) = case(1);
    write(data.path(), 1, &img, &img.map_data(Array3::<u8>::zeros(SHAPE)));
    let out = tempfile::tempdir().unwrap();
    let cfg = config(1.6, window());
    assert_eq!(build(data.path(), &cfg, out.path()).processed, vec![0, 1]);
    let r = build(data.path(), &cfg, out.path());
    assert_eq!((r.processed, r.unchanged), (vec![], vec![0, 1]));
}

#[test]
fn a_cached_array_altered_on_disk_is_refused_on_load_and_redone_by_the_next_build() {
    let data = dataset(&[0, 1]);
    let out = tempfile::tempdir().unwrap();
    let cfg = config(1.6, window());
    build(data.path(), &cfg, out.path());
    let (before, _) = Cache::open(out.path()).unwrap().load(0).unwrap();

    // One value changed in place: same size, the array still parses.
    let image = case_file(out.path(), 0, "image.npy");
    let mut bytes = fs::read(&image).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&image, &bytes).unwrap();
    let e = Cache::open(out.path()).unwrap().load(0).unwrap_err().to_string();
    assert!(e.contains("image.npy") && e.contains("changed since it was cached"), "{e}");
    assert!(Cache::open(out.path()).unwrap().load(1).is_ok(), "the other case is untouched");

    let r = build(data.path(), &cfg, out.path());
    assert_eq!((r.processed, r.unchanged), (vec![0], vec![1]));
    let (after, _) = Cache::open(out.path()).unwrap().load(0).unwrap();
    assert_eq!(after.data, before.data, "the case is back as it was prepared");
}

/// A normaliser that clips on both sides of the test cases' intensities (−20 … 82 HU), so
/// padding, clipping and arithmetic all show in the values compared.
fn clipping() -> Normaliser {
    Normaliser { clip: Some([-10.0, 81.5]), shift: 3.0, scale: 7.0 }
}

/// Cases `ids` of the cache in `out`, as both stores open them.
fn both_stores(out: &Path, ids: &[u32], n: Normaliser) -> (Vec<StoreCase>, Vec<StoreCase>) {
    let c = Cache::open(out).unwrap();
    let open = |kind| ids.iter().map(|&id| c.store_case(id, n, kind).unwrap()).collect::<Vec<_>>();
    (open(StoreKind::Memory), open(StoreKind::Disk))
}

fn bits(a: &Array3<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// Starts along an axis of `n` voxels for a block of `p`: wholly before, across the first
/// border, inside, across the last border, wholly after, one voxel either side of each.
fn border_starts(n: usize, p: usize) -> Vec<i64> {
    let (n, p) = (n as i64, p as i64);
    let mut s: Vec<i64> = [-p - 1, -p, -p + 1, -1, 0, 1, n - p - 1, n - p, n - p + 1, n - 1, n, n + 1].into();
    s.sort_unstable();
    s.dedup();
    s
}

#[test]
fn disk_and_memory_stores_give_the_same_blocks_volumes_and_batches() {
    let data = dataset(&[0, 1, 2]);
    let out = tempfile::tempdir().unwrap();
    // At the source spacing, so that the tumor voxel stays.
    build(data.path(), &config(0.8, window()), out.path());
    for n in [clipping(), Normaliser::IDENTITY] {
        let (memory, disk) = both_stores(out.path(), &[0, 1, 2], n);
        for (id, (m, d)) in memory.iter().zip(&disk).enumerate() {
            assert!(d.is_on_disk() && !m.is_on_disk());
            assert_eq!((d.shape(), d.foreground()), (m.shape(), m.foreground()));
            // The recorded foreground is what the labels hold, and the padding is the
            // normalised image's minimum, as the sampler always padded.
            let whole = m.volume().unwrap();
            assert_eq!(d.foreground(), &store::foreground_voxels(&whole.1.data)[..]);
            assert!(d.foreground().iter().all(|v| !v.is_empty()), "case {id} has liver and tumor");
            let min = whole.0.data.iter().copied().fold(f32::INFINITY, f32::min);
            assert_eq!(d.pad_value().to_bits(), min.to_bits());
            assert_eq!(m.pad_value().to_bits(), min.to_bits());
            let from_disk = d.volume().unwrap();
            assert!(bits(&from_disk.0.data) == bits(&whole.0.data), "case {id}: volumes differ");
            assert_eq!(from_disk.1, whole.1);
            assert_eq!((from_disk.0.spacing, from_disk.0.affine), (whole.0.spacing, whole.0.affine));

            let shape = m.shape();
            for size in [[1, 1, 1], [5, 4, 3], shape, [shape[0] + 3, shape[1] + 2, shape[2] + 1]] {
                let starts: Vec<Vec<i64>> = (0..3).map(|a| border_starts(shape[a], size[a])).collect();
                for &i in &starts[0] {
                    for &j in &starts[1] {
                        for &k in &starts[2] {
                            let (mi, ml) = m.read_block([i, j, k], size).unwrap();
                            let (di, dl) = d.read_block([i, j, k], size).unwrap();
                            assert!(bits(&di) == bits(&mi) && dl == ml, "case {id}: block {size:?} at {:?} differs", [i, j, k]);
                        }
                    }
                }
            }
        }
        for seed in [0, 1, 7] {
            // Patches that fit and patches larger than every case (padded on every side).
            for patch in [[6, 6, 4], [28, 28, 12]] {
                let cfg = PatchConfig { patch, batch_size: 4, foreground_fraction: 0.5, augment: Augment::default() };
                let from_memory = PatchSampler::new(memory.clone(), cfg.clone(), seed).unwrap();
                let from_disk = PatchSampler::new(disk.clone(), cfg, seed).unwrap();
                for (epoch, step) in [(0, 0), (0, 1), (0, 5), (3, 2)] {
                    let (a, b) = (from_memory.batch(epoch, step).unwrap(), from_disk.batch(epoch, step).unwrap());
                    let f = |b: &Batch| b.image.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert!(
                        f(&a) == f(&b) && a.label == b.label,
                        "seed {seed}, patch {patch:?}, epoch {epoch} step {step}: batches differ"
                    );
                }
            }
        }
    }
}

#[test]
fn a_case_file_gone_or_cut_short_during_training_is_an_error_naming_it() {
    let data = dataset(&[0, 1, 2]);
    let out = tempfile::tempdir().unwrap();
    build(data.path(), &config(1.6, window()), out.path());
    let (_, disk) = both_stores(out.path(), &[0, 1, 2], clipping());
    let cfg = PatchConfig { patch: [6, 6, 4], batch_size: 2, ..PatchConfig::default() };
    // One sampler per case, so that every batch reads it.
    let samplers: Vec<Arc<PatchSampler>> =
        disk.iter().map(|c| Arc::new(PatchSampler::new(vec![c.clone()], cfg.clone(), 0).unwrap())).collect();
    for s in &samplers {
        s.batch(0, 0).unwrap();
    }

    let image0 = case_file(out.path(), 0, "image.npy");
    let len = fs::metadata(&image0).unwrap().len();
    fs::OpenOptions::new().write(true).open(&image0).unwrap().set_len(len / 2).unwrap();
    fs::remove_file(case_file(out.path(), 1, "image.npy")).unwrap();
    fs::remove_file(case_file(out.path(), 2, "label.npy")).unwrap();
    for (id, file) in [(0, "image.npy"), (1, "image.npy"), (2, "label.npy")] {
        let path = case_file(out.path(), id, file).display().to_string();
        let e = samplers[id as usize].batch(0, 1).unwrap_err().to_string();
        assert!(e.contains(&path), "case {id}: {e}");
        // Through the loader's threads: handed out in the batch's place, not a panic.
        let mut loader = Prefetcher::new(samplers[id as usize].clone(), 0, 3, 2, 2);
        let e = loader.next().unwrap().unwrap_err().to_string();
        assert!(e.contains(&path), "case {id}: {e}");
        let e = disk[id as usize].volume().unwrap_err().to_string();
        assert!(e.contains(&path), "case {id}: {e}");
    }
    let e = disk[0].read_block([0; 3], [2; 3]).unwrap_err().to_string();
    assert!(e.contains("changed during training"), "{e}");
}

#[test]
fn a_store_whose_arrays_changed_since_they_were_cached_is_refused_naming_them() {
    let data = dataset(&[0, 1]);
    let out = tempfile::tempdir().unwrap();
    build(data.path(), &config(1.6, window()), out.path());
    let c = Cache::open(out.path()).unwrap();
    let label = case_file(out.path(), 0, "label.npy");
    let mut bytes = fs::read(&label).unwrap();
    bytes.push(0);
    fs::write(&label, &bytes).unwrap();
    for kind in [StoreKind::Disk, StoreKind::Memory] {
        let e = c.store_case(0, clipping(), kind).unwrap_err().to_string();
        assert!(e.contains(&label.display().to_string()) && e.contains("changed since it was cached"), "{kind:?}: {e}");
    }
    assert!(c.store_case(1, clipping(), StoreKind::Disk).is_ok(), "the other case is untouched");

    // A header of another shape, the file's size and time as recorded: refused all the same.
    let image = case_file(out.path(), 1, "image.npy");
    let before = fs::metadata(&image).unwrap();
    let mut bytes = fs::read(&image).unwrap();
    let at = bytes.windows(10).position(|w| w == b"(12, 10, 8").unwrap();
    bytes[at..at + 10].copy_from_slice(b"(10, 12, 8");
    fs::write(&image, &bytes).unwrap();
    fs::File::options().write(true).open(&image).unwrap().set_modified(before.modified().unwrap()).unwrap();
    let e = c.store_case(1, clipping(), StoreKind::Disk).unwrap_err().to_string();
    assert!(e.contains(&image.display().to_string()) && e.contains("(10, 12, 8)"), "{e}");

    // The next build redoes the case whose size changed, and it opens again.
    let r = build(data.path(), &config(1.6, window()), out.path());
    assert_eq!(r.processed, vec![0]);
    assert!(Cache::open(out.path()).unwrap().store_case(0, clipping(), StoreKind::Disk).is_ok());
}
