//! Branching vessel trees: chains of straight tubes that fork, each child thinner and
//! shorter than its parent.
//!
//! A fork splits a tube of radius `r` into two of about `0.79 r`, Murray's law for a
//! symmetric fork (`r³ = r₁³ + r₂³`; Murray, "The physiological principle of minimum work",
//! PNAS 12, 1926), turned 20-45° away from the parent's direction.

use super::norm;
use crate::rng::SeededRng;

/// One straight tube from `a` to `b`.
#[derive(Debug, Clone)]
struct Segment {
    a: [f64; 3],
    b: [f64; 3],
    r: f64,
    /// Generation: 0 for the trunk.
    depth: u8,
    lo: [f64; 3],
    hi: [f64; 3],
}

impl Segment {
    fn new(a: [f64; 3], b: [f64; 3], r: f64, depth: u8) -> Self {
        let lo = [0, 1, 2].map(|k| a[k].min(b[k]) - r);
        let hi = [0, 1, 2].map(|k| a[k].max(b[k]) + r);
        Segment { a, b, r, depth, lo, hi }
    }

    /// Distance from `p` to the segment's axis.
    fn distance(&self, p: [f64; 3]) -> f64 {
        let d = [0, 1, 2].map(|k| self.b[k] - self.a[k]);
        let q = [0, 1, 2].map(|k| p[k] - self.a[k]);
        let len2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
        let t = if len2 > 0.0 { ((q[0] * d[0] + q[1] * d[1] + q[2] * d[2]) / len2).clamp(0.0, 1.0) } else { 0.0 };
        norm([0, 1, 2].map(|k| q[k] - t * d[k]))
    }
}

/// A vessel tree: a trunk and its generations of branches.
#[derive(Debug, Clone)]
pub(super) struct Tree {
    segments: Vec<Segment>,
    lo: [f64; 3],
    hi: [f64; 3],
}

/// How a tree grows from its trunk.
pub(super) struct Growth {
    /// Generations after the trunk.
    pub generations: u8,
    /// Tubes thinner than this (mm) are not drawn.
    pub min_radius: f64,
}

impl Tree {
    /// A tree whose first segments run from `root` to each of `targets`, radius `radius`
    /// (mm), each then forking `growth.generations` times.
    pub(super) fn grow(rng: &mut SeededRng, root: [f64; 3], targets: &[[f64; 3]], radius: f64, growth: &Growth) -> Self {
        let mut segments = Vec::new();
        for &t in targets {
            let len = norm([0, 1, 2].map(|k| t[k] - root[k]));
            let dir = [0, 1, 2].map(|k| (t[k] - root[k]) / len.max(1e-9));
            branch(rng, &mut segments, root, dir, len, radius, 0, growth);
        }
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for s in &segments {
            for k in 0..3 {
                lo[k] = lo[k].min(s.lo[k]);
                hi[k] = hi[k].max(s.hi[k]);
            }
        }
        Tree { segments, lo, hi }
    }

    /// Adds `other`'s tubes to this tree.
    pub(super) fn extend(&mut self, other: Tree) {
        for k in 0..3 {
            self.lo[k] = self.lo[k].min(other.lo[k]);
            self.hi[k] = self.hi[k].max(other.hi[k]);
        }
        self.segments.extend(other.segments);
    }

    /// The generation of the thickest tube holding `p`, if any.
    pub(super) fn at(&self, p: [f64; 3]) -> Option<u8> {
        if (0..3).any(|k| p[k] < self.lo[k] || p[k] > self.hi[k]) {
            return None;
        }
        self.segments.iter().filter(|s| (0..3).all(|k| p[k] >= s.lo[k] && p[k] <= s.hi[k]) && s.distance(p) < s.r).map(|s| s.depth).min()
    }
}

#[allow(clippy::too_many_arguments)]
fn branch(rng: &mut SeededRng, out: &mut Vec<Segment>, from: [f64; 3], dir: [f64; 3], len: f64, r: f64, depth: u8, growth: &Growth) {
    if r < growth.min_radius {
        return;
    }
    let to = [0, 1, 2].map(|k| from[k] + dir[k] * len);
    out.push(Segment::new(from, to, r, depth));
    if depth >= growth.generations {
        return;
    }
    // Two children, turned to either side of the parent about a random axis across it.
    let axis = across(rng, dir);
    for side in [-1.0, 1.0] {
        let angle = side * rng.uniform(20.0, 45.0).to_radians();
        let child = rotate(dir, axis, angle);
        let child_len = len * rng.uniform(0.6, 0.8);
        let child_r = r * rng.uniform(0.74, 0.84);
        branch(rng, out, to, child, child_len, child_r, depth + 1, growth);
    }
}

/// A random unit vector perpendicular to `d` (a unit vector).
fn across(rng: &mut SeededRng, d: [f64; 3]) -> [f64; 3] {
    loop {
        let v = [rng.normal(), rng.normal(), rng.normal()];
        let dot = v[0] * d[0] + v[1] * d[1] + v[2] * d[2];
        let w = [0, 1, 2].map(|k| v[k] - dot * d[k]);
        let n = norm(w);
        if n > 1e-6 {
            return w.map(|x| x / n);
        }
    }
}

/// `v` rotated by `angle` about the unit axis `k` perpendicular to it.
fn rotate(v: [f64; 3], k: [f64; 3], angle: f64) -> [f64; 3] {
    let cross = [k[1] * v[2] - k[2] * v[1], k[2] * v[0] - k[0] * v[2], k[0] * v[1] - k[1] * v[0]];
    let (s, c) = angle.sin_cos();
    [0, 1, 2].map(|i| v[i] * c + cross[i] * s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_forks_thins_and_holds_its_trunk() {
        let mut rng = SeededRng::new(0, 0);
        let growth = Growth { generations: 3, min_radius: 0.5 };
        let tree = Tree::grow(&mut rng, [0.0, 0.0, 0.0], &[[0.0, 0.0, 50.0]], 6.0, &growth);
        // One trunk, two children, four grandchildren, eight of the third generation.
        assert_eq!(tree.segments.len(), 15);
        for s in &tree.segments[1..] {
            assert!(s.r < 6.0 * 0.85 && s.depth >= 1);
        }
        assert_eq!(tree.at([0.0, 0.0, 20.0]), Some(0));
        assert_eq!(tree.at([0.0, 7.0, 20.0]), None);
        assert_eq!(tree.at([100.0, 0.0, 20.0]), None);
    }
}
