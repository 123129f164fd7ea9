//! Surface distances against medpy 0.5.2 (`medpy.metric.binary.assd`, `hd`, `hd95`, and
//! RMSD from medpy's directed distances) on random and structured masks with anisotropic
//! spacing, through scripts/reference/medpy_metrics.py.

use std::path::Path;
use std::process::Command;

use lits_eval::distance::surface_distances;
use ndarray::Array3;

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/reference/medpy_metrics.py");

struct Case {
    name: &'static str,
    spacing: [f64; 3],
    pred: Array3<u8>,
    reference: Array3<u8>,
}

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

/// Labels drawn voxel by voxel: 2 with probability `p2`, 1 with `p1`, else 0.
fn noise(dim: (usize, usize, usize), p1: f64, p2: f64, seed: u64) -> Array3<u8> {
    let mut s = seed;
    Array3::from_shape_simple_fn(dim, || {
        let u = lcg(&mut s);
        if u < p2 {
            2
        } else if u < p2 + p1 {
            1
        } else {
            0
        }
    })
}

/// A liver ellipsoid (centre and radii in voxels) holding a spherical tumor.
fn organ(dim: (usize, usize, usize), c: [f64; 3], r: [f64; 3], tumor: Option<([f64; 3], f64)>) -> Array3<u8> {
    Array3::from_shape_fn(dim, |(i, j, k)| {
        let p = [i as f64, j as f64, k as f64];
        let e: f64 = (0..3).map(|a| ((p[a] - c[a]) / r[a]).powi(2)).sum();
        if e > 1.0 {
            return 0;
        }
        match tumor {
            Some((tc, tr)) if (0..3).map(|a| (p[a] - tc[a]).powi(2)).sum::<f64>() <= tr * tr => 2,
            _ => 1,
        }
    })
}

/// A union of random balls, some with a tumor core: lumpy shapes with holes and several
/// components.
fn blobs(dim: (usize, usize, usize), n: usize, seed: u64) -> Array3<u8> {
    let mut s = seed;
    let balls: Vec<([f64; 3], f64)> = (0..n)
        .map(|_| {
            let c = [lcg(&mut s) * dim.0 as f64, lcg(&mut s) * dim.1 as f64, lcg(&mut s) * dim.2 as f64];
            (c, 1.5 + lcg(&mut s) * 5.0)
        })
        .collect();
    Array3::from_shape_fn(dim, |(i, j, k)| {
        let p = [i as f64, j as f64, k as f64];
        let mut v = 0;
        for (n, (c, r)) in balls.iter().enumerate() {
            let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
            if d2 <= r * r {
                v = v.max(if n % 3 == 0 && d2 <= r * r / 4.0 { 2 } else { 1 });
            }
        }
        v
    })
}

fn cases() -> Vec<Case> {
    let d = (40, 36, 18);
    let mut single = Array3::zeros(d);
    single[[3, 30, 17]] = 2;
    vec![
        Case {
            name: "noise",
            spacing: [0.7, 1.3, 2.5],
            pred: noise((16, 14, 12), 0.3, 0.1, 1),
            reference: noise((16, 14, 12), 0.25, 0.05, 2),
        },
        Case {
            name: "sparse_noise",
            spacing: [2.5, 0.6, 0.9],
            pred: noise((20, 17, 9), 0.01, 0.005, 3),
            reference: noise((20, 17, 9), 0.02, 0.0, 4),
        },
        Case {
            name: "offset_ellipsoids",
            spacing: [0.74, 0.74, 3.0],
            pred: organ(d, [19.0, 17.0, 9.0], [14.0, 11.0, 6.0], Some(([22.0, 15.0, 9.0], 3.5))),
            reference: organ(d, [20.5, 16.0, 8.5], [15.0, 10.0, 6.5], Some(([24.0, 14.0, 10.0], 4.0))),
        },
        Case {
            name: "touching_edges",
            spacing: [1.0, 0.8, 5.0],
            pred: organ(d, [5.0, 30.0, 2.0], [12.0, 14.0, 8.0], Some(([0.0, 35.0, 0.0], 3.0))),
            reference: organ(d, [2.0, 33.0, 0.0], [14.0, 12.0, 9.0], Some(([1.0, 34.0, 1.0], 4.0))),
        },
        Case { name: "lumpy", spacing: [0.9, 0.7, 1.6], pred: blobs(d, 14, 5), reference: blobs(d, 12, 6) },
        Case { name: "single_voxel", spacing: [0.6, 0.6, 4.0], pred: single, reference: organ(d, [25.0, 8.0, 5.0], [6.0, 5.0, 3.0], None) },
        Case {
            name: "missing_tumor",
            spacing: [0.8, 0.8, 2.0],
            pred: organ(d, [20.0, 18.0, 9.0], [10.0, 10.0, 5.0], None),
            reference: organ(d, [20.0, 18.0, 9.0], [10.0, 9.0, 5.0], Some(([20.0, 18.0, 9.0], 3.0))),
        },
        Case { name: "identical", spacing: [0.5, 0.9, 1.5], pred: blobs(d, 8, 9), reference: blobs(d, 8, 9) },
    ]
}

/// Write the cases for the reference script and return its JSON answer.
fn medpy(cases: &[Case], dir: &Path) -> serde_json::Value {
    let mut manifest = Vec::new();
    for c in cases {
        let (p, r) = (format!("{}_pred.raw", c.name), format!("{}_ref.raw", c.name));
        std::fs::write(dir.join(&p), c.pred.as_standard_layout().as_slice().unwrap()).unwrap();
        std::fs::write(dir.join(&r), c.reference.as_standard_layout().as_slice().unwrap()).unwrap();
        manifest.push(serde_json::json!({
            "name": c.name, "shape": c.pred.shape(), "spacing": c.spacing, "pred": p, "ref": r,
        }));
    }
    std::fs::write(dir.join("cases.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = Command::new(PYTHON).arg(SCRIPT).arg(dir).output().expect("run the medpy reference");
    assert!(out.status.success(), "medpy reference failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn surface_distances_match_medpy() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let want = medpy(&cases, dir.path());
    let mut compared = 0;
    for c in &cases {
        for (class, select) in [("liver", (|v: &u8| *v >= 1) as fn(&u8) -> bool), ("tumor", |v: &u8| *v == 2)] {
            let p = c.pred.map(select);
            let r = c.reference.map(select);
            let got = surface_distances(&p.view(), &r.view(), c.spacing);
            let w = &want[c.name][class];
            let Some(got) = got else {
                assert!(w["hd"].is_null() && w["assd"].is_null(), "{} {class}: medpy scored {w}", c.name);
                continue;
            };
            for (key, value) in [("assd", got.assd), ("hd", got.msd), ("hd95", got.hd95), ("rmsd", got.rmsd)] {
                let expected = w[key].as_f64().unwrap_or_else(|| panic!("{} {class}: medpy has no {key}", c.name));
                assert!((value - expected).abs() <= 1e-4, "{} {class} {key}: {value} vs medpy {expected}", c.name);
            }
            compared += 1;
        }
    }
    // Every case has a liver; sparse_noise, single_voxel and missing_tumor miss a tumor.
    assert_eq!(compared, 2 * cases.len() - 3);
}
