//! Which voxels of a scan drove its segmentation: Guided Grad-CAM (or Grad-CAM) maps of a
//! trained run, on the scan's own grid.
//!
//! A scan goes through `predict`'s pipeline: read with its geometry, prepared as in
//! training, the network run by sliding windows. Each window's attribution
//! ([`lits_model::attribution`]: Captum's `GuidedGradCam` on the original project's
//! per-class sum of logits) is blended with the windows' importance weights, beside the
//! probabilities of the same forward passes; the map is restored to the scan's grid
//! (trilinear, 0 outside a crop) and written as float32 with the scan's header geometry.
//! The mask those probabilities give (argmax, largest liver component) is only drawn in
//! the preview, next to the map.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lits_data::nifti::{self, ImageDtype};
use lits_eval::preview;
use lits_model::attribution::{self, Explain};

use lits_train::error::{Error, Result};
use lits_train::memory;

use crate::predict::{self, fold_classes, named, output_name, to_source, Predictor, Scan, Timings};

/// The classes by name, in label order.
pub const CLASSES: [&str; 3] = ["background", "liver", "tumor"];

/// The label of a class name, or an error naming the choices.
pub fn parse_class(name: &str) -> Result<i64> {
    CLASSES
        .iter()
        .position(|c| *c == name)
        .map(|c| c as i64)
        .ok_or_else(|| Error::config("class", format!("unknown class `{name}`: choose one of {}", CLASSES.join(", "))))
}

/// What [`Predictor::explain_file`] explains, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainOptions {
    /// The class, method and Grad-CAM layer.
    pub what: Explain,
    /// Prepare the scan as in training; off, the network sees the stored voxels (one
    /// window of them is the bare method, for parity checks).
    pub preprocess: bool,
    /// Also write a PNG of the map over the CT beside the mask.
    pub preview: bool,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions { what: Explain::default(), preprocess: true, preview: false }
    }
}

impl ExplainOptions {
    /// The class's name (its label for classes beyond [`CLASSES`]).
    pub fn class_name(&self) -> String {
        CLASSES.get(self.what.class as usize).map_or_else(|| self.what.class.to_string(), |c| c.to_string())
    }
}

/// What [`Predictor::explain_file`] wrote for one scan, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The map.
    pub map: PathBuf,
    /// The preview, if asked for.
    pub extra: Vec<PathBuf>,
    /// Peak resident memory of the process while the scan was explained, in bytes.
    pub peak_memory: Option<u64>,
    /// Where the time went; `network` is the sliding-window attribution (forward and
    /// backward passes and the blending).
    pub timings: Timings,
    /// The explained class's name.
    pub class: String,
    /// Voxels of the scan where the network predicts the class (the argmax of its
    /// probabilities, before the largest-liver clean-up). Where it is 0 the class wins
    /// nowhere, and the map, the gradient of a sum over no voxel, is zero everywhere.
    pub class_voxels: u64,
    /// Whether the map is zero everywhere.
    pub map_is_zero: bool,
}

impl Explanation {
    /// What a reader of the map must be told, if anything: that it is zero everywhere, and
    /// why (`None` for a map with something in it).
    pub fn warning(&self) -> Option<String> {
        match (self.class_voxels, self.map_is_zero) {
            (0, _) => Some(format!("the model predicts {} nowhere in the scan, so its map is zero everywhere", self.class)),
            (_, true) => {
                Some(format!("the map of {} is zero everywhere, though the model predicts it in {} voxels", self.class, self.class_voxels))
            }
            _ => None,
        }
    }

    /// Where the class is predicted, for the scan's line: "tumor predicted in N voxels", or
    /// that it is predicted nowhere and the map is zero.
    pub fn prediction(&self) -> String {
        match self.class_voxels {
            0 => format!("{} predicted nowhere: the map is zero", self.class),
            n if self.map_is_zero => format!("{} predicted in {n} voxels, the map is zero", self.class),
            n => format!("{} predicted in {n} voxels", self.class),
        }
    }
}

impl Predictor {
    /// Refuses a class this network does not have, and preparing scans with a config that
    /// does not say how, before any scan is read.
    pub fn check_explain(&self, opts: &ExplainOptions) -> Result<()> {
        opts.what.check(&self.net)?;
        self.check_preprocess(opts.preprocess)
    }

    /// Explains `input`'s segmentation of `opts.what.class` and writes the map into
    /// `out_dir` as `<stem>_explain_<class>.nii.gz` (`<stem>` the mask's name of
    /// [`output_name`] without `.nii.gz`), with `--preview` `<stem>_explain_<class>.png`
    /// beside it. Nothing is written for a scan that fails.
    pub fn explain_file(&self, input: &Path, out_dir: &Path, opts: &ExplainOptions) -> Result<Explanation> {
        self.check_explain(opts)?;
        memory::reset_peak();
        let start = Instant::now();
        let mut timings = Timings::default();
        let Scan { image, record, geom, grey } = self.read_scan(input, opts.preprocess, opts.preview, &mut timings)?;
        let sw = self.cfg.validation.sliding_window.clone();
        let mut maps = self
            .run_network(image, &mut timings.network, |x| Ok(attribution::explain_volume(&self.net, x, &sw, &opts.what)?))
            .map_err(|e| named(input, e))?;
        let map = maps.pop().ok_or_else(|| Error::invalid(input, "the network gave no map"))?;
        let map = match &record {
            Some(r) => r.to_source(r.restore_image_oriented(&map, 0.0).map_err(|e| named(input, e.into()))?),
            None => map,
        };
        let map_is_zero = map.data.iter().all(|&v| v == 0.0);
        let (labels, _) = fold_classes(input, maps, &record, false, |_, _| Ok(()))?;
        let mut labels = to_source(&record, labels);
        let class_voxels = labels.data.iter().filter(|&&l| i64::from(l) == opts.what.class).count() as u64;
        let labels = grey.is_some().then(|| {
            predict::keep_largest_liver(&mut labels.data);
            labels
        });

        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let name = output_name(input);
        let stem = format!("{}_explain_{}", name.trim_end_matches(".nii.gz"), opts.class_name());
        let out = out_dir.join(format!("{stem}.nii.gz"));
        nifti::write_image(&out, &map, &geom, ImageDtype::F32)?;
        let mut extra = Vec::new();
        if let (Some(grey), Some(labels)) = (&grey, &labels) {
            let path = out_dir.join(format!("{stem}.png"));
            preview::render_heat(grey, labels, &map).save_png(&path)?;
            extra.push(path);
        }
        timings.rest = start.elapsed().as_secs_f64() - timings.read - timings.preprocess - timings.network;
        Ok(Explanation {
            map: out,
            extra,
            peak_memory: memory::peak_resident_bytes(),
            timings,
            class: opts.class_name(),
            class_voxels,
            map_is_zero,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_name_and_unknown_ones_list_the_choices() {
        assert_eq!(parse_class("tumor").unwrap(), 2);
        assert_eq!(parse_class("background").unwrap(), 0);
        let e = parse_class("kidney").unwrap_err().to_string();
        assert!(e.contains("unknown class `kidney`: choose one of background, liver, tumor"), "{e}");
        let opts = ExplainOptions::default();
        assert_eq!(opts.class_name(), "tumor");
    }
}
