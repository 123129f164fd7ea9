//! What lies above the diaphragm: the heart in its pericardial fat, the mediastinum and the
//! lung bases with their vessels.

use super::{norm, Body};

/// Half-width of the two zero-sheets whose crossing draws a lung vessel (about 2-3 mm).
const LUNG_VESSEL_WIDTH: f64 = 0.22;

impl Body {
    /// HU and label (always background) at `p`, a point of the chest cavity above the
    /// diaphragm.
    pub(super) fn chest_at(&self, p: [f64; 3]) -> (f64, u8) {
        let t = &self.tissue;
        let s = self.scale;
        let heart = &self.heart;
        let level = heart.blob.level(p);
        if level < 0.0 {
            if level > -heart.wall {
                return (t.myocardium, 0);
            }
            // The interventricular septum divides the chambers.
            let d = [0, 1, 2].map(|k| p[k] - heart.blob.c[k]);
            let across = d[0] * heart.septum[0] + d[1] * heart.septum[1] + d[2] * heart.septum[2];
            if across.abs() < 5.0 * s {
                return (t.myocardium, 0);
            }
            return (t.blood, 0);
        }
        if level < heart.fat {
            return (t.fat + 10.0, 0);
        }
        // The posterior mediastinum between the lungs, in front of the spine: fat around the
        // oesophagus.
        let [x, y, _] = p;
        let front = self.spine_y + self.spine_r[1];
        if y > front - 6.0 * s && y < heart.blob.c[1] && (x + 0.02 * self.a).abs() < 0.12 * self.a {
            if norm([x + 0.02 * self.a, y - front - 8.0 * s, 0.0]) < 8.0 * s {
                return (t.muscle, 0);
            }
            return (t.fat + 15.0, 0);
        }
        if self.lung_vessels.iter().all(|w| w.at(p).abs() < LUNG_VESSEL_WIDTH) {
            return (t.blood, 0);
        }
        // Dependent (posterior) lung is denser, as in a supine patient.
        let behind = (0.5 - 0.5 * y / self.b).clamp(0.0, 1.0);
        (t.lung + 60.0 * behind * behind + 15.0 * self.lung_texture.at(p), 0)
    }
}
