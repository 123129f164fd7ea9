use std::path::PathBuf;
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
    Ok(for_each_scan(&files, "explained", |f| {
        let e = predictor.explain_file(f, &args.out, &opts)?;
        Ok(report(f, &e.map, e.peak_memory, &e.timings))
    }))
}
