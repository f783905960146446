//! The listener's controls, applied where samples leave for the listener
//! (the audio callback, or the WAV writer): volume with a short ramp, fades
//! around pause, resume, seek and skip, and a soft limiter when the volume
//! is above unity. In place, no allocation, no lock: safe in a callback.

/// Fade length around pause, resume, seek and skip: long enough that the
/// edge is not a click, short enough to feel instant.
pub const FADE_MS: f32 = 5.0;

/// Volume ramp: a change reaches its level over this long (no zipper
/// noise, heard within one device period).
pub const VOLUME_RAMP_MS: f32 = 20.0;

/// Above this magnitude the limiter bends the curve (only when the volume
/// is above unity: at or below it, samples pass untouched).
const KNEE: f32 = 0.9;

/// Gain state carried from one block to the next.
#[derive(Debug, Clone)]
pub struct Envelope {
    channels: usize,
    fade_step: f32,
    volume_step: f32,
    /// The fade level, 0 (silent) to 1 (open).
    level: f32,
    /// The volume being applied (ramps toward the one asked for).
    volume: f32,
}

impl Envelope {
    /// An open envelope at unity for `rate` × `channels` (playback starts at
    /// its level: no fade-in at the very start).
    pub fn new(rate: u32, channels: usize, volume: f32) -> Self {
        let frames = |ms: f32| (rate as f32 * ms / 1000.0).max(1.0);
        Self {
            channels: channels.max(1),
            fade_step: 1.0 / frames(FADE_MS),
            volume_step: 1.0 / frames(VOLUME_RAMP_MS),
            level: 1.0,
            volume: volume.max(0.0),
        }
    }

    /// The fade level, 0 (silent) to 1.
    pub fn level(&self) -> f32 {
        self.level
    }

    /// Frames a fade-out from here takes until silence.
    pub fn frames_to_silence(&self) -> usize {
        (self.level / self.fade_step - 1e-3).ceil().max(0.0) as usize
    }

    /// Applies the envelope to interleaved `samples` in place, moving the
    /// fade toward open (`open`) or silent, and the volume toward `volume`.
    pub fn apply(&mut self, samples: &mut [f32], open: bool, volume: f32) {
        let goal = if open { 1.0 } else { 0.0 };
        let volume = if volume.is_finite() { volume.max(0.0) } else { 1.0 };
        if self.level == goal && self.volume == volume && goal == 1.0 && volume == 1.0 {
            return; // unity: bit-exact, and no work
        }
        for frame in samples.chunks_mut(self.channels) {
            self.level += (goal - self.level).clamp(-self.fade_step, self.fade_step);
            if (goal - self.level).abs() < 1e-4 {
                self.level = goal; // no rounding residue: silence is 0
            }
            self.volume += (volume - self.volume).clamp(-self.volume_step, self.volume_step);
            let g = self.level * self.volume;
            let limit = self.volume > 1.0;
            for s in frame {
                *s = if limit { soft_limit(*s * g) } else { *s * g };
            }
        }
    }

    /// Jumps the fade to silent (what comes next fades in).
    pub fn close(&mut self) {
        self.level = 0.0;
    }
}

/// Leaves samples up to the knee alone and bends louder ones smoothly
/// toward ±1, so a boosted peak is rounded, not clipped.
fn soft_limit(x: f32) -> f32 {
    let a = x.abs();
    if a <= KNEE {
        return x;
    }
    let room = 1.0 - KNEE;
    (KNEE + room * ((a - KNEE) / room).tanh()).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unity_is_untouched_and_changes_ramp() {
        let mut e = Envelope::new(1000, 1, 1.0);
        let mut s = [0.5f32; 10];
        e.apply(&mut s, true, 1.0);
        assert_eq!(s, [0.5; 10]);
        // 20 ms at 1 kHz: the volume takes 20 frames to halve... in steps.
        let mut s = [1.0f32; 40];
        e.apply(&mut s, true, 0.5);
        assert!(s.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 0.051));
        assert!((s[39] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn closing_fades_to_silence_in_five_ms_and_reopens_smoothly() {
        let mut e = Envelope::new(1000, 2, 1.0);
        assert_eq!(e.frames_to_silence(), 5);
        let mut s = [1.0f32; 16];
        e.apply(&mut s, false, 1.0);
        let left: Vec<f32> = s.chunks(2).map(|f| f[0]).collect();
        assert_eq!(&left[5..], &[0.0; 3]);
        assert!(left.windows(2).all(|w| w[0] - w[1] <= 0.21));
        let mut s = [1.0f32; 16];
        e.apply(&mut s, true, 1.0);
        assert!((s[0] - 0.2).abs() < 1e-6, "the first frame after a pause is quiet");
        assert_eq!(s[15], 1.0);
    }

    #[test]
    fn boosted_peaks_are_bent_not_clipped() {
        let mut e = Envelope::new(1000, 1, 2.0);
        let mut s = [0.3f32, 0.6, 0.9, -0.9];
        e.apply(&mut s, true, 2.0);
        assert!((s[0] - 0.6).abs() < 1e-6, "below the knee: plain gain");
        assert!(s[1] > 0.9 && s[1] < 1.0);
        assert!(s[2] > s[1] && s[2] <= 1.0);
        assert!((s[3] + s[2]).abs() < 1e-6, "symmetric");
    }
}
