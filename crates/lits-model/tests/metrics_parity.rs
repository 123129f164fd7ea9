//! Overlap metrics against medpy (`dc`, `jc`) and against the original project's
//! batch-wise IoU and accuracy, re-stated in `scripts/reference/parity.py`.

mod common;

use lits_eval::metrics::{accuracy, confusion, dice, iou, MeanIou};
use ndarray::{Array4, Axis};

#[test]
fn dice_iou_and_the_original_batch_iou_match_the_references() {
    let dir = tempfile::tempdir().unwrap();
    common::reference("metrics", dir.path(), &["--seed", "11"]);
    let want = common::read(&dir.path().join("expected.safetensors"));
    let to_array = |t: &tch::Tensor| {
        let shape: Vec<usize> = t.size().iter().map(|&n| n as usize).collect();
        let mut v = vec![0u8; t.numel()];
        t.copy_data(&mut v, t.numel());
        Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), v).unwrap()
    };
    let (pred, reference) = (to_array(&want["pred"]), to_array(&want["ref"]));

    // Whole volume: the four batches stacked along the first axis.
    let n = pred.shape()[0] * pred.shape()[1];
    let flat = |a: &Array4<u8>| a.to_shape((n, a.shape()[2], a.shape()[3])).unwrap().to_owned();
    let c = confusion(&flat(&pred).view(), &flat(&reference).view(), 3);
    for k in 0..3 {
        let (d, j) = (dice(&c, k).unwrap(), iou(&c, k).unwrap());
        assert!((d - want["dice"].double_value(&[k as i64])).abs() < 1e-12, "Dice of class {k}");
        assert!((j - want["iou"].double_value(&[k as i64])).abs() < 1e-12, "IoU of class {k}");
    }
    assert!(accuracy(&c).unwrap() > 0.5);

    let mut m = MeanIou::new(3);
    for (p, r) in pred.axis_iter(Axis(0)).zip(reference.axis_iter(Axis(0))) {
        m.add_batch(p.as_standard_layout().as_slice().unwrap(), r.as_standard_layout().as_slice().unwrap());
    }
    for (k, v) in m.per_class().iter().enumerate() {
        assert!((v - want["batch_iou"].double_value(&[k as i64])).abs() < 1e-12, "batch IoU of class {k}");
    }
    assert_eq!(m.counts(), [4, 4, 3], "batch 2 holds no tumour");
    assert!((m.mean() - want["batch_mean_iou"].double_value(&[0])).abs() < 1e-12);
    assert!((m.accuracy().unwrap() - want["batch_acc"].double_value(&[0])).abs() < 1e-12);
}
