//! Overlap metrics of label volumes: confusion counts, Dice, IoU, accuracy, and the
//! original project's batch-wise IoU.
//!
//! Pure functions on label arrays (0 background, 1 liver, 2 tumor, or any `classes`).
//! Where a ratio is 0/0 — a class absent from both prediction and reference — the result
//! is `None`, and the caller decides what that means (LiTS conventions differ by metric).

use ndarray::{ArrayView3, Zip};

/// Confusion counts of a prediction against a reference, `classes × classes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: usize,
    /// Row-major `[reference][prediction]` counts.
    counts: Vec<u64>,
    /// Voxels where either label is `>= classes`; they are in no other count.
    pub out_of_range: u64,
}

impl Confusion {
    /// An all-zero table for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Confusion { classes, counts: vec![0; classes * classes], out_of_range: 0 }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Voxels with reference `reference` and prediction `predicted`.
    pub fn count(&self, reference: usize, predicted: usize) -> u64 {
        self.counts[reference * self.classes + predicted]
    }

    /// Counts one more voxel.
    #[inline]
    pub fn add(&mut self, predicted: u8, reference: u8) {
        let (p, r) = (predicted as usize, reference as usize);
        if p < self.classes && r < self.classes {
            self.counts[r * self.classes + p] += 1;
        } else {
            self.out_of_range += 1;
        }
    }

    /// Adds the counts of `other` (same number of classes) to these.
    pub fn merge(&mut self, other: &Confusion) {
        assert_eq!(self.classes, other.classes, "merging confusions of different class counts");
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.out_of_range += other.out_of_range;
    }

    /// Voxels counted (out-of-range ones excluded).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// True positives of `class`.
    pub fn tp(&self, class: usize) -> u64 {
        self.count(class, class)
    }

    /// False positives of `class`: predicted `class`, reference something else.
    pub fn fp(&self, class: usize) -> u64 {
        (0..self.classes).map(|r| self.count(r, class)).sum::<u64>() - self.tp(class)
    }

    /// False negatives of `class`: reference `class`, predicted something else.
    pub fn fn_(&self, class: usize) -> u64 {
        (0..self.classes).map(|p| self.count(class, p)).sum::<u64>() - self.tp(class)
    }

    /// Voxels predicted as `class`.
    pub fn predicted(&self, class: usize) -> u64 {
        self.tp(class) + self.fp(class)
    }

    /// Voxels of `class` in the reference.
    pub fn reference(&self, class: usize) -> u64 {
        self.tp(class) + self.fn_(class)
    }
}

/// Counts every voxel of `pred` against `target`.
///
/// # Panics
/// If the shapes differ (callers check shapes of user files first and report them).
pub fn confusion(pred: &ArrayView3<u8>, target: &ArrayView3<u8>, classes: usize) -> Confusion {
    assert_eq!(pred.shape(), target.shape(), "prediction and reference shapes differ");
    if let (Some(p), Some(t)) = (pred.as_slice_memory_order(), target.as_slice_memory_order()) {
        if pred.strides() == target.strides() {
            return confusion_slices(p, t, classes);
        }
    }
    let mut c = Confusion::new(classes);
    Zip::from(pred).and(target).for_each(|&p, &t| c.add(p, t));
    c
}

/// [`confusion`] on flat label slices of equal length.
///
/// # Panics
/// If the lengths differ.
pub fn confusion_slices(pred: &[u8], target: &[u8], classes: usize) -> Confusion {
    assert_eq!(pred.len(), target.len(), "prediction and reference lengths differ");
    let mut c = Confusion::new(classes);
    for (&p, &t) in pred.iter().zip(target) {
        c.add(p, t);
    }
    c
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Dice of `class`: 2·TP / (2·TP + FP + FN); `None` when the class is in neither volume.
pub fn dice(c: &Confusion, class: usize) -> Option<f64> {
    let tp = c.tp(class);
    ratio(2 * tp, 2 * tp + c.fp(class) + c.fn_(class))
}

/// IoU (Jaccard) of `class`: TP / (TP + FP + FN); `None` when the class is in neither volume.
pub fn iou(c: &Confusion, class: usize) -> Option<f64> {
    let tp = c.tp(class);
    ratio(tp, tp + c.fp(class) + c.fn_(class))
}

/// Fraction of voxels whose prediction equals the reference; `None` for no voxels.
pub fn accuracy(c: &Confusion) -> Option<f64> {
    ratio((0..c.classes).map(|k| c.tp(k)).sum(), c.total())
}

/// The original project's IoU of one batch: the batch is flattened and IoU computed per
/// class, `None` where a class is in neither prediction nor reference (the original's
/// NaN, which its averages skip).
pub fn batch_iou_original(pred: &[u8], target: &[u8], classes: usize) -> Vec<Option<f64>> {
    let c = confusion_slices(pred, target, classes);
    (0..classes).map(|k| iou(&c, k)).collect()
}

/// The original's epoch metrics: per batch, accuracy and [`batch_iou_original`]; per
/// class, the IoU summed over batches divided by 1e-10 plus the number of batches holding
/// the class, so a class no batch held scores 0; the mean IoU is taken over all classes.
/// These are the numbers of the original's results table (`test_iou_*`, `test_mean_iou`,
/// `test_avg_acc`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeanIou {
    sums: Vec<f64>,
    counts: Vec<u64>,
    accuracy_sum: f64,
    batches: u64,
}

impl MeanIou {
    /// An empty average over `classes` classes.
    pub fn new(classes: usize) -> Self {
        MeanIou { sums: vec![0.0; classes], counts: vec![0; classes], accuracy_sum: 0.0, batches: 0 }
    }

    /// Adds one batch (prediction and reference flattened alike).
    pub fn add_batch(&mut self, pred: &[u8], target: &[u8]) {
        let c = confusion_slices(pred, target, self.sums.len());
        for k in 0..self.sums.len() {
            if let Some(v) = iou(&c, k) {
                self.sums[k] += v;
                self.counts[k] += 1;
            }
        }
        // The original divides by all voxels of the batch.
        self.accuracy_sum += (0..c.classes).map(|k| c.tp(k)).sum::<u64>() as f64 / pred.len().max(1) as f64;
        self.batches += 1;
    }

    /// IoU per class as the original reports it (0 for a class no batch held).
    pub fn per_class(&self) -> Vec<f64> {
        self.sums.iter().zip(&self.counts).map(|(s, &n)| s / (n as f64 + 1e-10)).collect()
    }

    /// Batches that held each class (in prediction or reference).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Mean of [`per_class`](Self::per_class) over all classes.
    pub fn mean(&self) -> f64 {
        let v = self.per_class();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    /// Mean over batches of the batch accuracy; `None` before the first batch.
    pub fn accuracy(&self) -> Option<f64> {
        (self.batches > 0).then(|| self.accuracy_sum / self.batches as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn vol(v: &[u8]) -> Array3<u8> {
        Array3::from_shape_vec((1, 2, v.len() / 2), v.to_vec()).unwrap()
    }

    #[test]
    fn counts_by_hand() {
        let target = vol(&[0, 0, 1, 1, 2, 2, 1, 0]);
        let pred = vol(&[0, 1, 1, 1, 2, 0, 2, 0]);
        let c = confusion(&pred.view(), &target.view(), 3);
        assert_eq!(c.total(), 8);
        assert_eq!((c.tp(0), c.fp(0), c.fn_(0)), (2, 1, 1));
        assert_eq!((c.tp(1), c.fp(1), c.fn_(1)), (2, 1, 1));
        assert_eq!((c.tp(2), c.fp(2), c.fn_(2)), (1, 1, 1));
        assert_eq!(dice(&c, 1), Some(4.0 / 6.0));
        assert_eq!(iou(&c, 2), Some(1.0 / 3.0));
        assert_eq!(accuracy(&c), Some(5.0 / 8.0));
    }

    #[test]
    fn absent_class_is_none_and_out_of_range_is_counted_apart() {
        let target = vol(&[0, 0, 1, 7]);
        let pred = vol(&[0, 0, 1, 1]);
        let c = confusion(&pred.view(), &target.view(), 3);
        assert_eq!(dice(&c, 2), None);
        assert_eq!(iou(&c, 1), Some(1.0));
        assert_eq!(c.out_of_range, 1);
        assert_eq!(c.total(), 3);
    }

    #[test]
    fn strided_views_count_the_same() {
        let target = Array3::from_shape_fn((3, 4, 5), |(i, j, k)| ((i + j * k) % 3) as u8);
        let pred = Array3::from_shape_fn((5, 4, 3), |(k, j, i)| ((i * j + k) % 3) as u8);
        let pred_t = pred.view().reversed_axes();
        let fast = confusion(&pred_t.to_owned().view(), &target.view(), 3);
        let slow = confusion(&pred_t, &target.view(), 3);
        assert_eq!(fast, slow);
    }

    #[test]
    fn original_iou_skips_absent_classes_per_batch() {
        // Batch 1: tumor absent on both sides. Batch 2: liver absent, tumor IoU 1/2.
        let mut m = MeanIou::new(4);
        m.add_batch(&[0, 1, 1, 0], &[0, 1, 0, 0]);
        m.add_batch(&[2, 2, 0, 0], &[2, 0, 0, 0]);
        let per = m.per_class();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(per[0], 2.0 / 3.0));
        assert!(close(per[1], 0.5) && close(per[2], 0.5));
        assert_eq!(per[3], 0.0, "a class no batch held scores 0");
        assert_eq!(m.counts(), [2, 1, 1, 0]);
        assert!(close(m.mean(), (2.0 / 3.0 + 0.5 + 0.5) / 4.0));
        assert!(close(m.accuracy().unwrap(), (0.75 + 0.75) / 2.0));
    }
}
