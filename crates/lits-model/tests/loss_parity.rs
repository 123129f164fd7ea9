//! Losses against PyTorch: the focal loss against the re-statement of the original
//! (`scripts/reference/focal_loss.py`), Dice + cross-entropy against MONAI's `DiceCELoss`,
//! per sample and over the batch, with and without the background's Dice term, including a
//! sample and a whole batch without tumour.

mod common;

use lits_model::loss::{DiceCeLoss, FocalLoss};

#[test]
fn focal_and_dice_ce_match_the_references() {
    let dir = tempfile::tempdir().unwrap();
    common::reference("losses", dir.path(), &["--seed", "7"]);
    let want = common::read(&dir.path().join("expected.safetensors"));
    let logits = &want["logits"];
    let mut checked = 0;
    for target in ["target", "missing"] {
        let t = &want[target];
        for (w, g) in [([0.2, 1.0, 2.5], 2.0), ([1.0, 1.0, 1.0], 0.0), ([0.3, 0.3, 3.0], 3.5)] {
            let key = format!("focal.{target}.{:?},{:?},{:?}.{g:?}", w[0], w[1], w[2]);
            let got = FocalLoss::new(&w, g).forward(logits, t).double_value(&[]);
            let exp = want[&key].double_value(&[0]);
            assert!((got - exp).abs() < 1e-6, "{key}: {got} vs {exp}");
            checked += 1;
        }
        for batch in [false, true] {
            for bg in [true, false] {
                let losses = [("none", DiceCeLoss::unweighted()), ("0.2,1.0,2.5", DiceCeLoss::new(&[0.2, 1.0, 2.5]))];
                for (name, loss) in losses {
                    let loss = loss.batch(batch).include_background(bg);
                    let key = format!("dicece.{target}.{name}.batch={}.bg={}", u8::from(batch), u8::from(bg));
                    loss.check(logits, t).unwrap();
                    let got = loss.forward(logits, t).double_value(&[]);
                    let exp = want[&key].double_value(&[0]);
                    assert!((got - exp).abs() < 1e-6, "{key}: {got} vs {exp}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 22);
}
