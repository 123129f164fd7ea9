//! Finding the cases of a dataset folder, and train/validation/test splits.
//!
//! Two layouts are recognised:
//! - LiTS: `volume-N.nii[.gz]` with `segmentation-N.nii[.gz]`, in the folder itself or in its
//!   direct subfolders (the challenge ships two "Training Batch" folders);
//! - MSD Task03: `imagesTr/liver_N.nii[.gz]` with `labelsTr/liver_N.nii[.gz]` (the archive's
//!   `._liver_N` resource-fork files are skipped with every other hidden file).
//!
//! Splits are JSON files `{"train": [ids], "val": [ids], "test": [ids]}`. The LiTS default is
//! the original project's 13 held-out volumes; seeded k-fold splits cover any dataset.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::SeededRng;

/// How a dataset folder is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `volume-N.nii[.gz]` + `segmentation-N.nii[.gz]`.
    Lits,
    /// `imagesTr/liver_N.nii[.gz]` + `labelsTr/liver_N.nii[.gz]`.
    Msd,
}

/// One scan and, where there is one, its label map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// The `N` of the file names.
    pub id: u32,
    /// The CT volume.
    pub image: PathBuf,
    /// The segmentation (0 background, 1 liver, 2 tumor).
    pub label: Option<PathBuf>,
}

/// The cases found in a folder, sorted by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The folder searched.
    pub root: PathBuf,
    /// Its layout.
    pub layout: Layout,
    /// Cases in increasing id order.
    pub cases: Vec<Case>,
}

impl Dataset {
    /// The ids, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.cases.iter().map(|c| c.id).collect()
    }

    /// The case with this id.
    pub fn case(&self, id: u32) -> Option<&Case> {
        self.cases.binary_search_by_key(&id, |c| c.id).ok().map(|i| &self.cases[i])
    }

    /// The cases with these ids, in the order given; an id the dataset lacks is an error.
    pub fn select(&self, ids: &[u32]) -> Result<Vec<&Case>> {
        ids.iter().map(|&id| self.case(id).ok_or_else(|| Error::invalid(&self.root, format!("the dataset has no case {id}")))).collect()
    }
}

/// Finds every image/label pair under `dir`. An image without a label, a label without an
/// image, two files for the same id, or no case at all is an error naming the file (or
/// `dir`).
pub fn discover(dir: &Path) -> Result<Dataset> {
    find(dir, true)?.into_strict(dir)
}

/// Like [`discover`], but images without a label are cases too (`label: None`), for
/// prediction; a label without its image is still an error.
pub fn discover_images(dir: &Path) -> Result<Dataset> {
    find(dir, false)?.into_strict(dir)
}

/// What [`survey`] found: the usable cases (images without a label included, `label:
/// None`) and the files that make no case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// The cases.
    pub dataset: Dataset,
    /// Labels without their image, and ids with two files of one kind (the id is left out of
    /// `dataset`), in id order.
    pub problems: Vec<Problem>,
}

/// A file that makes no case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The case number in its name.
    pub id: u32,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Like [`discover_images`], but a label without its image or an id with two files is a
/// [`Problem`] beside the other cases rather than an error, so that a run over a dataset can
/// report it and go on with the rest. No image or label file at all is still an error.
pub fn survey(dir: &Path) -> Result<Survey> {
    let s = find(dir, false)?;
    if s.dataset.cases.is_empty() && s.problems.is_empty() {
        return Err(no_cases(dir));
    }
    Ok(s)
}

impl Survey {
    fn into_strict(self, dir: &Path) -> Result<Dataset> {
        match self.problems.as_slice() {
            [] => {}
            [p] => return Err(Error::invalid(&p.path, p.message.clone())),
            many => {
                let list: Vec<String> = many.iter().map(|p| format!("{} {}", p.path.display(), p.message)).collect();
                return Err(Error::invalid(dir, format!("{} unpaired files: {}", many.len(), list.join("; "))));
            }
        }
        if self.dataset.cases.is_empty() {
            return Err(no_cases(dir));
        }
        Ok(self.dataset)
    }
}

fn no_cases(dir: &Path) -> Error {
    Error::invalid(
        dir,
        "no cases found: expected volume-N.nii[.gz] with segmentation-N.nii[.gz] (LiTS) or \
         imagesTr/liver_N.nii[.gz] with labelsTr/liver_N.nii[.gz] (MSD Task03)",
    )
}

/// The pattern of a case file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseName {
    /// LiTS `volume-N`: a scan.
    Volume,
    /// LiTS `segmentation-N`: labels.
    Segmentation,
    /// MSD Task03 `liver_N` (a scan in `imagesTr`, labels in `labelsTr`).
    Msd,
}

/// The pattern and case number of a LiTS or MSD file name (`volume-N`, `segmentation-N`,
/// `liver_N`; `.nii` or `.nii.gz`; hidden files are none): `Ok(None)` for a name of no
/// case file, an error naming the file when its case number is not a number. The one
/// reading of case file names, for datasets and for evaluation folders alike.
pub fn parse_case_name(path: &Path) -> Result<Option<(CaseName, u32)>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(None) };
    if name.starts_with('.') {
        return Ok(None);
    }
    let Some(stem) = name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")) else { return Ok(None) };
    let found = [("volume-", CaseName::Volume), ("segmentation-", CaseName::Segmentation), ("liver_", CaseName::Msd)]
        .into_iter()
        .find_map(|(prefix, kind)| stem.strip_prefix(prefix).map(|n| (n, kind)));
    let Some((number, kind)) = found else { return Ok(None) };
    let id = parse_id(number).ok_or_else(|| Error::invalid(path, "the case number is not a number"))?;
    Ok(Some((kind, id)))
}

/// Non-hidden entries of `dir`, sorted.
pub fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Which file of a case a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Image,
    Label,
}

/// Every case under `dir`, and the files that make none (with `labels_required`, images
/// without a label among them).
fn find(dir: &Path, labels_required: bool) -> Result<Survey> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(dir, "is not a folder"));
    }
    let images_tr = dir.join("imagesTr");
    let (layout, files) = if images_tr.is_dir() {
        let mut files = scan(&images_tr, Layout::Msd, Some(Role::Image))?;
        let labels_tr = dir.join("labelsTr");
        if labels_tr.is_dir() {
            files.extend(scan(&labels_tr, Layout::Msd, Some(Role::Label))?);
        }
        (Layout::Msd, files)
    } else {
        let mut files = scan(dir, Layout::Lits, None)?;
        for sub in subfolders(dir)? {
            files.extend(scan(&sub, Layout::Lits, None)?);
        }
        (Layout::Lits, files)
    };

    let mut images: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut labels: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut problems = Vec::new();
    for (id, role, path) in files {
        let map = if role == Role::Image { &mut images } else { &mut labels };
        if let Some(first) = map.get(&id) {
            let message = format!("case {id} already has {}; keep one of the two", first.display());
            problems.push(Problem { id, path, message });
        } else {
            map.insert(id, path);
        }
    }
    // An id with two files of one kind is no case at all.
    for p in &problems {
        images.remove(&p.id);
        labels.remove(&p.id);
    }

    let (image_word, label_word) = match layout {
        Layout::Lits => ("volume-", "segmentation-"),
        Layout::Msd => ("imagesTr/liver_", "labelsTr/liver_"),
    };
    for (id, path) in &labels {
        if !images.contains_key(id) {
            let message = format!("has no image {image_word}{id}.nii[.gz]");
            problems.push(Problem { id: *id, path: path.clone(), message });
        }
    }
    if labels_required {
        for (id, path) in &images {
            if !labels.contains_key(id) {
                let message = format!("has no label {label_word}{id}.nii[.gz]");
                problems.push(Problem { id: *id, path: path.clone(), message });
            }
        }
    }
    problems.sort_by(|a, b| (a.id, &a.path).cmp(&(b.id, &b.path)));
    let cases = images.into_iter().map(|(id, image)| Case { id, image, label: labels.remove(&id) }).collect();
    Ok(Survey { dataset: Dataset { root: dir.to_path_buf(), layout, cases }, problems })
}

fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(entries(dir)?.into_iter().filter(|p| p.is_dir()).collect())
}

/// The (id, role, path) of every case file directly in `dir`. `role` forces the role (MSD
/// keeps images and labels apart by folder, with the same file names).
fn scan(dir: &Path, layout: Layout, role: Option<Role>) -> Result<Vec<(u32, Role, PathBuf)>> {
    let mut out = Vec::new();
    for path in entries(dir)? {
        let Some((kind, id)) = parse_case_name(&path)? else { continue };
        let found_role = match (layout, kind) {
            (Layout::Lits, CaseName::Volume) => Role::Image,
            (Layout::Lits, CaseName::Segmentation) => Role::Label,
            (Layout::Msd, CaseName::Msd) => role.unwrap_or(Role::Image),
            _ => continue,
        };
        if !path.is_file() {
            return Err(Error::invalid(&path, "is not a file"));
        }
        out.push((id, found_role, path));
    }
    Ok(out)
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The 13 LiTS volumes the original project held out for testing (it trained on the other
/// 118 of ids 0..=130).
pub const LITS_HELD_OUT: [u32; 13] = [17, 64, 27, 114, 74, 45, 61, 38, 106, 100, 117, 51, 62];

/// Number of volumes in the LiTS training set (ids `0..LITS_CASES`).
pub const LITS_CASES: u32 = 131;

/// Which case ids train, validate and test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Ids to train on.
    pub train: Vec<u32>,
    /// Ids to watch during training (checkpoint choice, early stopping).
    #[serde(default)]
    pub val: Vec<u32>,
    /// Ids kept for the final evaluation.
    #[serde(default)]
    pub test: Vec<u32>,
}

impl Split {
    /// The original project's split of LiTS: 118 train, the 13 of [`LITS_HELD_OUT`] test
    /// (the original also watched those 13 during training; here `val` is left empty).
    pub fn lits_original() -> Split {
        let mut test = LITS_HELD_OUT.to_vec();
        test.sort_unstable();
        let train = (0..LITS_CASES).filter(|id| !test.contains(id)).collect();
        Split { train, val: Vec::new(), test }
    }

    /// `k` seeded folds over `ids`: fold `f` validates on one k-th of the ids and trains on
    /// the rest (`test` empty). The ids are sorted before shuffling, so the input order
    /// does not matter; fold sizes differ by at most one.
    pub fn k_fold(ids: &[u32], k: usize, seed: u64) -> Result<Vec<Split>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        if ids.len() != n {
            return Err(Error::Config { field: "ids".into(), msg: "an id is listed twice".into() });
        }
        if k < 2 || k > ids.len() {
            return Err(Error::Config {
                field: "folds".into(),
                msg: format!("{k} folds need 2..={} cases; there are {}", ids.len().max(2), ids.len()),
            });
        }
        SeededRng::new(seed, 0).shuffle(&mut ids);
        let folds = (0..k)
            .map(|f| {
                let mut val: Vec<u32> = ids.iter().skip(f).step_by(k).copied().collect();
                let mut train: Vec<u32> = ids.iter().filter(|id| !val.contains(id)).copied().collect();
                val.sort_unstable();
                train.sort_unstable();
                Split { train, val, test: Vec::new() }
            })
            .collect();
        Ok(folds)
    }

    /// Every id, in train, val, test order.
    pub fn all_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.train.iter().chain(&self.val).chain(&self.test).copied()
    }

    /// Checks that no id appears twice and that `train` is not empty.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.train.is_empty() {
            return Err("`train` is empty".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (set, ids) in [("train", &self.train), ("val", &self.val), ("test", &self.test)] {
            for &id in ids {
                if !seen.insert(id) {
                    return Err(format!("id {id} appears twice (again in `{set}`)"));
                }
            }
        }
        Ok(())
    }

    /// Checks every id against the dataset's cases.
    pub fn check_against(&self, dataset: &Dataset) -> Result<()> {
        let missing: Vec<String> = self.all_ids().filter(|&id| dataset.case(id).is_none()).map(|id| id.to_string()).collect();
        if !missing.is_empty() {
            return Err(Error::invalid(&dataset.root, format!("the split names case(s) the dataset lacks: {}", missing.join(", "))));
        }
        Ok(())
    }

    /// Reads and validates a split file.
    pub fn read(path: &Path) -> Result<Split> {
        let split: Split = read_split_file(path)?;
        split.validate().map_err(|m| Error::invalid(path, m))?;
        Ok(split)
    }

    /// Writes the split as JSON (atomically: a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        self.validate().map_err(|m| Error::invalid(path, m))?;
        crate::json::write(path, self)
    }
}

/// Reads a folds file: a JSON array of splits (as [`Split::k_fold`] makes them).
pub fn read_folds(path: &Path) -> Result<Vec<Split>> {
    let folds: Vec<Split> = read_split_file(path)?;
    if folds.is_empty() {
        return Err(Error::invalid(path, "holds no fold"));
    }
    for (f, split) in folds.iter().enumerate() {
        split.validate().map_err(|m| Error::invalid(path, format!("fold {f}: {m}")))?;
    }
    Ok(folds)
}

/// Writes folds as a JSON array (atomically).
pub fn write_folds(path: &Path, folds: &[Split]) -> Result<()> {
    for (f, split) in folds.iter().enumerate() {
        split.validate().map_err(|m| Error::invalid(path, format!("fold {f}: {m}")))?;
    }
    crate::json::write(path, &folds)
}

fn read_split_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    crate::json::read(path).map_err(|e| match e {
        Error::Invalid { path, msg } => Error::Invalid { path, msg: format!("not a valid split file: {msg}") },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, names: &[&str]) {
        for n in names {
            let p = dir.join(n);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
    }

    #[test]
    fn finds_lits_pairs_in_the_folder_and_its_subfolders() {
        let d = tempfile::tempdir().unwrap();
        touch(
            d.path(),
            &[
                "volume-10.nii",
                "segmentation-10.nii",
                "Training Batch 1/volume-2.nii.gz",
                "Training Batch 1/segmentation-2.nii.gz",
                "synth.json",
                "notes.txt",
            ],
        );
        let ds = discover(d.path()).unwrap();
        assert_eq!(ds.layout, Layout::Lits);
        assert_eq!(ds.ids(), vec![2, 10]);
        assert!(ds.cases[0].image.ends_with("Training Batch 1/volume-2.nii.gz"));
        assert!(ds.cases[1].label.as_ref().unwrap().ends_with("segmentation-10.nii"));
    }

    #[test]
    fn finds_msd_pairs_and_skips_resource_forks() {
        let d = tempfile::tempdir().unwrap();
        touch(
            d.path(),
            &[
                "imagesTr/liver_0.nii.gz",
                "imagesTr/._liver_0.nii.gz",
                "labelsTr/liver_0.nii.gz",
                "imagesTr/liver_7.nii.gz",
                "labelsTr/liver_7.nii.gz",
                "imagesTs/liver_200.nii.gz",
                "dataset.json",
            ],
        );
        let ds = discover(d.path()).unwrap();
        assert_eq!(ds.layout, Layout::Msd);
        assert_eq!(ds.ids(), vec![0, 7]);
        assert!(ds.case(7).unwrap().label.as_ref().unwrap().ends_with("labelsTr/liver_7.nii.gz"));
    }

    #[test]
    fn an_unpaired_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), &["volume-1.nii.gz", "segmentation-1.nii.gz", "volume-3.nii.gz"]);
        let e = discover(d.path()).unwrap_err().to_string();
        assert!(e.contains("volume-3.nii.gz") && e.contains("segmentation-3"), "{e}");
        // Without labels required, the lone image is a case; a lone label never is.
        let ds = discover_images(d.path()).unwrap();
        assert_eq!(ds.case(3).unwrap().label, None);
        touch(d.path(), &["segmentation-4.nii"]);
        let e = discover_images(d.path()).unwrap_err().to_string();
        assert!(e.contains("segmentation-4.nii") && e.contains("no image"), "{e}");
        let e = discover(d.path()).unwrap_err().to_string();
        assert!(e.contains("2 unpaired") && e.contains("volume-3") && e.contains("segmentation-4"), "{e}");
    }

    #[test]
    fn a_survey_keeps_the_good_cases_beside_the_files_that_make_none() {
        let d = tempfile::tempdir().unwrap();
        let e = survey(d.path()).unwrap_err().to_string();
        assert!(e.contains("no cases found"), "{e}");
        touch(
            d.path(),
            &[
                "volume-1.nii.gz",
                "segmentation-1.nii.gz",
                "volume-2.nii",
                "volume-2.nii.gz",
                "segmentation-2.nii",
                "segmentation-4.nii",
                "volume-5.nii",
            ],
        );
        let s = survey(d.path()).unwrap();
        assert_eq!(s.dataset.ids(), vec![1, 5]);
        assert_eq!(s.dataset.case(5).unwrap().label, None);
        let named: Vec<(u32, String)> =
            s.problems.iter().map(|p| (p.id, p.path.file_name().unwrap().to_string_lossy().into_owned())).collect();
        assert_eq!(named, vec![(2, "volume-2.nii.gz".to_string()), (4, "segmentation-4.nii".to_string())]);
        assert!(s.problems[0].message.contains("already has"), "{:?}", s.problems);
        assert!(s.problems[1].message.contains("no image volume-4"), "{:?}", s.problems);
        // Only orphan labels: no case, but a survey that says why.
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), &["segmentation-3.nii"]);
        let s = survey(d.path()).unwrap();
        assert!(s.dataset.cases.is_empty() && s.problems.len() == 1);
    }

    #[test]
    fn two_files_for_one_id_and_no_cases_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = discover(d.path()).unwrap_err().to_string();
        assert!(e.contains("no cases found") && e.contains(&d.path().display().to_string()), "{e}");
        touch(d.path(), &["volume-1.nii", "volume-1.nii.gz", "segmentation-1.nii"]);
        let e = discover(d.path()).unwrap_err().to_string();
        assert!(e.contains("case 1 already has"), "{e}");
        let e = discover(&d.path().join("absent")).unwrap_err().to_string();
        assert!(e.contains("absent"), "{e}");
    }

    #[test]
    fn lits_original_holds_out_13_and_trains_118() {
        let s = Split::lits_original();
        assert_eq!((s.train.len(), s.test.len()), (118, 13));
        assert!(s.test.contains(&114) && !s.train.contains(&114) && s.train.contains(&0));
        s.validate().unwrap();
    }

    #[test]
    fn k_fold_partitions_and_is_seeded() {
        let ids: Vec<u32> = (0..23).collect();
        let folds = Split::k_fold(&ids, 5, 9).unwrap();
        assert_eq!(folds.len(), 5);
        let mut all_val: Vec<u32> = folds.iter().flat_map(|f| f.val.clone()).collect();
        all_val.sort_unstable();
        assert_eq!(all_val, ids);
        for f in &folds {
            assert!((4..=5).contains(&f.val.len()));
            assert_eq!(f.train.len() + f.val.len(), 23);
            f.validate().unwrap();
        }
        let mut reversed = ids.clone();
        reversed.reverse();
        assert_eq!(Split::k_fold(&reversed, 5, 9).unwrap(), folds);
        assert_ne!(Split::k_fold(&ids, 5, 10).unwrap(), folds);
        assert!(Split::k_fold(&ids, 1, 0).is_err());
        assert!(Split::k_fold(&[1, 1, 2], 2, 0).is_err());
    }

    #[test]
    fn split_files_round_trip_and_bad_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("split.json");
        let s = Split { train: vec![1, 2], val: vec![3], test: vec![] };
        s.write(&p).unwrap();
        assert_eq!(Split::read(&p).unwrap(), s);
        let folds = Split::k_fold(&[1, 2, 3, 4], 2, 0).unwrap();
        let fp = d.path().join("folds.json");
        write_folds(&fp, &folds).unwrap();
        assert_eq!(read_folds(&fp).unwrap(), folds);

        for (text, want) in [
            (r#"{"train": [1, 2], "test": [2]}"#, "id 2 appears twice"),
            (r#"{"train": [1], "tset": [2]}"#, "unknown field"),
            (r#"{"train": []}"#, "`train` is empty"),
            ("[1, 2", "not a valid split file"),
        ] {
            fs::write(&p, text).unwrap();
            let e = Split::read(&p).unwrap_err().to_string();
            assert!(e.contains("split.json") && e.contains(want), "{text}: {e}");
        }
        let e = Split::read(&d.path().join("none.json")).unwrap_err().to_string();
        assert!(e.contains("none.json"), "{e}");
    }

    #[test]
    fn a_split_is_checked_against_the_dataset() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), &["volume-0.nii", "segmentation-0.nii", "volume-1.nii", "segmentation-1.nii"]);
        let ds = discover(d.path()).unwrap();
        Split { train: vec![0], val: vec![], test: vec![1] }.check_against(&ds).unwrap();
        let e = Split::lits_original().check_against(&ds).unwrap_err().to_string();
        assert!(e.contains("lacks") && e.contains("130"), "{e}");
        assert!(ds.select(&[1, 5]).is_err());
        assert_eq!(ds.select(&[1, 0]).unwrap()[0].id, 1);
    }
}
