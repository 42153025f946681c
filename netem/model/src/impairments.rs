//! What one direction of the link does to packets: validated, typed settings shared by the model and the profiles.

use std::sync::Arc;
use std::time::Duration;

use crate::trace::DeliveryTrace;

/// The complete impairment settings of one direction. The default is a perfect link: no delay, no loss, no limit.
/// Probabilities must lie in `[0, 1]` and a rate must be positive (profiles check this; the model panics otherwise).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impairments {
    /// Fixed one-way delay; also the minimum, since jitter only ever adds to it.
    pub delay: Duration,
    /// Random extra delay on top of [`Impairments::delay`], if any.
    pub jitter: Option<Jitter>,
    /// How packets are randomly lost.
    pub loss: LossModel,
    /// Probability in `[0, 1]` that a packet is sent twice.
    pub duplicate: f64,
    /// Probability in `[0, 1]` that one byte of a packet is inverted.
    pub corrupt: f64,
    /// The bottleneck that serialises packets: none, a fixed rate or a delivery trace.
    pub bottleneck: Bottleneck,
    /// Bound of the bottleneck's drop-tail queue in bytes (the packet being serialised included); `None` = unbounded.
    pub queue_bytes: Option<u64>,
}

/// Random extra delay added to each packet. `mean` is the mean of the extra delay, which is never negative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter {
    /// Mean extra delay.
    pub mean: Duration,
    /// Shape of the extra-delay distribution.
    pub distribution: JitterDistribution,
    /// Whether a packet may overtake an earlier one. If so, each packet draws its extra delay independently; if
    /// not, the extra delay is one slowly varying function of time (see [`crate::jitter`]), so a packet never
    /// leaves before its predecessor and its delay has the configured distribution at any packet rate.
    pub reorder: bool,
}

/// Distribution of the extra delay; each is scaled so that its mean is [`Jitter::mean`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JitterDistribution {
    /// Uniform on `[0, 2·mean]`.
    #[default]
    Uniform,
    /// Half-normal: `|N(0, σ)|` with `σ = mean·√(π/2)`.
    Normal,
    /// Heavy-tailed Pareto (Lomax) with shape 3 and scale `2·mean`: mostly small, occasionally large.
    Pareto,
}

/// Random loss model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum LossModel {
    /// No random loss.
    #[default]
    None,
    /// Each packet is lost independently with probability `p`.
    Bernoulli {
        /// Loss probability in `[0, 1]`.
        p: f64,
    },
    /// Gilbert-Elliott two-state burst loss. Per packet: lose it with the current state's loss probability, then
    /// move Good→Bad with probability `p` or Bad→Good with probability `r`. Mean loss is
    /// `(r·loss_good + p·loss_bad) / (p + r)`. In the classic notation `loss_good = 1−k` and `loss_bad = 1−h`.
    GilbertElliott {
        /// Probability of moving from Good to Bad after a packet.
        p: f64,
        /// Probability of moving from Bad to Good after a packet.
        r: f64,
        /// Loss probability in the Good state (`1−k`).
        loss_good: f64,
        /// Loss probability in the Bad state (`1−h`).
        loss_bad: f64,
    },
}

impl LossModel {
    /// Long-run fraction of packets lost (the stationary mean for Gilbert-Elliott).
    pub fn mean_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli { p } => p,
            LossModel::GilbertElliott { p, r, loss_good, loss_bad } if p + r > 0.0 => {
                (r * loss_good + p * loss_bad) / (p + r)
            }
            // p = r = 0: the chain never leaves its initial Good state.
            LossModel::GilbertElliott { loss_good, .. } => loss_good,
        }
    }
}

/// The bottleneck that limits how fast packets leave.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Bottleneck {
    /// No limit: packets pass without queueing.
    #[default]
    Unlimited,
    /// Serialisation at a fixed rate.
    Rate {
        /// Link rate in bits per second (> 0).
        bits_per_second: u64,
    },
    /// Mahimahi packet-delivery trace, started when it is configured.
    Trace(Arc<DeliveryTrace>),
}

/// A partial change to [`Impairments`]: each `Some` field replaces the current value. Used for per-direction
/// overrides and for schedule phases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImpairmentsPatch {
    /// New fixed delay.
    pub delay: Option<Duration>,
    /// New jitter (`Some(None)` removes jitter).
    pub jitter: Option<Option<Jitter>>,
    /// New loss model.
    pub loss: Option<LossModel>,
    /// New duplication probability.
    pub duplicate: Option<f64>,
    /// New corruption probability.
    pub corrupt: Option<f64>,
    /// New bottleneck.
    pub bottleneck: Option<Bottleneck>,
    /// New queue bound (`Some(None)` makes the queue unbounded).
    pub queue_bytes: Option<Option<u64>>,
}

impl ImpairmentsPatch {
    /// Returns `base` with this patch's fields replaced.
    pub fn apply_to(&self, base: &Impairments) -> Impairments {
        let mut out = base.clone();
        if let Some(d) = self.delay {
            out.delay = d;
        }
        if let Some(j) = self.jitter {
            out.jitter = j;
        }
        if let Some(l) = self.loss {
            out.loss = l;
        }
        if let Some(d) = self.duplicate {
            out.duplicate = d;
        }
        if let Some(c) = self.corrupt {
            out.corrupt = c;
        }
        if let Some(b) = &self.bottleneck {
            out.bottleneck = b.clone();
        }
        if let Some(q) = self.queue_bytes {
            out.queue_bytes = q;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gilbert_elliott_mean_loss_is_the_stationary_mix() {
        let ge = LossModel::GilbertElliott { p: 0.01, r: 0.3, loss_good: 0.0, loss_bad: 1.0 };
        assert!((ge.mean_loss() - 0.01 / 0.31).abs() < 1e-12);
    }

    #[test]
    fn patch_replaces_only_given_fields() {
        let base = Impairments { delay: Duration::from_millis(20), duplicate: 0.1, ..Default::default() };
        let patch = ImpairmentsPatch { loss: Some(LossModel::Bernoulli { p: 0.5 }), ..Default::default() };
        let out = patch.apply_to(&base);
        assert_eq!(out.delay, Duration::from_millis(20));
        assert_eq!(out.duplicate, 0.1);
        assert_eq!(out.loss, LossModel::Bernoulli { p: 0.5 });
    }
}
