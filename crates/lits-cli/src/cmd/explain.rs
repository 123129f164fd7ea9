use std::path::PathBuf;

use anyhow::Context;
use std::process::ExitCode;

use lits_infer::explain::{self, ExplainOptions};
use lits_model::attribution::{Choice, Explain, Layer, Method};

use super::predict::{expand, for_each_scan, report, Model};

/// Arguments of `lits explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NIfTI scans (`.nii`, `.nii.gz`) or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Folder for the maps (`<mask stem>_explain_<class>.nii.gz`, the mask named as
    /// `lits predict` names it).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: Model,
    /// The class whose segmentation is explained: background, liver or tumor.
    #[arg(long, default_value = "tumor", value_parser = explain::parse_class)]
    class: i64,
    /// Attribution method: guided-gradcam (guided backpropagation times Grad-CAM) or
    /// gradcam (Grad-CAM alone, upsampled).
    #[arg(long, default_value = "guided-gradcam", value_parser = Method::parse)]
    method: Method,
    /// Layer of Grad-CAM, a block of the U-Net: inc, down1, down2, mid, up1, up2 or outc
    /// (the last convolution, as the original).
    #[arg(long, default_value = "outc", value_parser = Layer::parse)]
    layer: Layer,
    /// Run the network on the stored voxels (no reorientation, resampling or
    /// normalisation); on a volume of one window, the bare method.
    #[arg(long)]
    no_preprocess: bool,
    /// Also write `<mask stem>_explain_<class>.png`: axial, coronal and sagittal slices
    /// through the map's maximum, the mask over the CT above, the map as heat below.
    #[arg(long)]
    preview: bool,
    /// Also write a JSON summary: per scan the map, the class, the voxels where the model
    /// predicts it, whether the map is zero (and the warning that goes with it), peak memory
    /// and times; or the scan's error.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// A scan's entry in the `--json` summary.
#[derive(Debug, Default, serde::Serialize)]
struct ScanRecord {
    input: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class_voxels: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map_is_zero: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = expand(&args.inputs)?;
    lits_infer::predict::check_out_dir(&args.out)?;
    let predictor = args.model.load()?;
    let opts = ExplainOptions {
        what: Explain { class: args.class, method: args.method, layer: args.layer },
        preprocess: !args.no_preprocess,
        preview: args.preview,
    };
    predictor.check_explain(&opts)?;
    let mut records = Vec::new();
    let code = for_each_scan(&files, "explained", |f| {
        let e = match predictor.explain_file(f, &args.out, &opts) {
            Ok(e) => e,
            Err(err) => {
                records.push(ScanRecord { input: f.to_path_buf(), error: Some(err.to_string()), ..ScanRecord::default() });
                return Err(err.into());
            }
        };
        let warning = e.warning();
        if let Some(w) = &warning {
            tracing::warn!("{}: {w}", f.display());
        }
        let line = format!("{}; {}", report(f, &e.map, e.peak_memory, &e.timings), e.prediction());
        records.push(ScanRecord {
            input: f.to_path_buf(),
            map: Some(e.map.clone()),
            class: Some(e.class.clone()),
            class_voxels: Some(e.class_voxels),
            map_is_zero: Some(e.map_is_zero),
            warning,
            peak_memory_bytes: e.peak_memory,
            seconds: Some(e.timings.total()),
            error: None,
        });
        Ok(line)
    });
    if let Some(path) = &args.json {
        lits_data::json::write(path, &serde_json::json!({ "scans": records }))
            .with_context(|| format!("{}: cannot write the summary", path.display()))?;
    }
    Ok(code)
}
