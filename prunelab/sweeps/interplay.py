"""From summed single-layer drops to the joint drop: a prediction on the metric's own scale.

Pruning one layer alone costs a little; pruning all of them at once costs more than the sum,
because each layer then works on inputs the layers before it have already damaged (and, near
chance, less than the sum: accuracy cannot fall below guessing). :class:`DropModel` maps the
summed drop ``S`` to the joint drop ``D`` with a curve that starts additive, bends as joint
measurements say, and stays in range:

* bounded metrics (accuracy, agreement): ``D = C * (1 - exp(-(a * S / C) ** b))``, where the
  ceiling ``C`` is the way from the dense value down to chance (``1 / classes``), so the
  predicted accuracy is never below chance nor above dense;
* unbounded ones (loss, KL, perplexity): ``D = a * S ** b`` (never below the dense value).

``a = b = 1`` is plain additivity (clamped); :meth:`DropModel.refit` fits ``a`` (one joint
measurement) or ``a`` and ``b`` (two or more) by least squares on ``log(-log(1 - D / C))``.
What is summed can be the single-layer KL divergences instead of the metric's drops: an
accuracy drop below one sample's worth reads as 0 for every layer, while the KL still sees
it, so a map from summed KL to the joint drop predicts the first points of damage that
summed accuracy drops miss (the planner uses it once it has a measurement to fit).

The curve alone bends one way for every point; joint measurements do not always agree with
one bend. So the model also keeps the measurements it was fitted to (those carried in from an
earlier fit included) and, between the smallest and the largest of them, interpolates them
(made monotone first: more summed damage never predicts less joint damage) instead of
trusting the curve; outside them it follows the curve, never on the far side of the nearest
measurement, and :meth:`DropModel.extrapolated` says so. A prediction there is a guess
beyond what was measured, and is shown as one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .config import LOWER_IS_BETTER

__all__ = ["DropModel", "lower_is_better"]

_POWER = (0.5, 3.0)  # a fitted exponent outside this is a fit to noise


def lower_is_better(metric: str | None) -> bool:
    """Whether a rise of ``metric`` is the damage (loss, KL, perplexity)."""
    return metric in LOWER_IS_BETTER


@dataclass(frozen=True)
class DropModel:
    """Joint drop predicted from the summed single-layer drops; see the module docstring.

    >>> model = DropModel.for_metric("accuracy", 0.95, classes=10)
    >>> round(model(2.0), 3)  # additivity says 2.0; accuracy cannot fall below chance (0.1)
    0.769
    >>> fitted = model.refit([(0.05, 0.30)])  # measured: the layers interact
    >>> round(fitted(0.05), 3), round(fitted.inverse(0.30), 3)
    (0.3, 0.05)
    """

    metric: str
    ceiling: float  # the largest possible drop (inf: unbounded)
    scale: float = 1.0
    power: float = 1.0
    fitted_on: int = 0  # joint measurements behind scale and power
    feature: str = "drop"  # what is summed: the metric's drops, or the single-layer KLs
    points: tuple[tuple[float, float], ...] = ()  # the (summed, drop) measurements fitted

    @classmethod
    def for_metric(cls, metric: str, baseline: float, *, classes: int | None = None) -> DropModel:
        """The additive model, clamped to the range of ``metric`` below ``baseline``."""
        chance = 1.0 / classes if classes else 0.0
        if lower_is_better(metric):
            ceiling = math.inf
        elif metric == "energy_removed":
            ceiling = 1.0
        elif metric == "agreement":
            ceiling = max(1.0 - chance, 0.0)
        else:  # accuracy: from the dense value down to guessing
            ceiling = max(float(baseline) - chance, 0.0)
        return cls(metric, ceiling)

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.ceiling)

    def __call__(self, summed: float) -> float:
        """The predicted joint drop for a summed single-layer drop: between the measurements
        fitted, interpolated from them; outside, the curve through the nearest one."""
        summed = max(float(summed), 0.0)
        knots = self._knots()
        if summed <= 0 or knots is None or (self.bounded and self.ceiling <= 0):
            return self._curve(summed)
        xs, ys = knots
        x = math.log(summed)
        if xs[0] <= x <= xs[-1]:
            return self._untransform(float(np.interp(x, xs, ys)))
        end = 0 if x < xs[0] else -1
        # outside: the fitted curve, held on the near side of the nearest measurement (so the
        # map stays monotone); shifting the curve through that point extrapolated worse
        # (bench_allocations --predictions-only: 19 of 28 within 2 points against 21)
        knot, curve = self._untransform(ys[end]), self._curve(summed)
        return min(curve, knot) if end == 0 else max(curve, knot)

    def extrapolated(self, summed: float) -> bool:
        """Whether ``summed`` lies outside the measurements fitted (the prediction is then a
        guess beyond them; always, before any measurement)."""
        knots = self._knots()
        if knots is None:
            return True
        x = math.log(max(float(summed), 1e-300))
        return not knots[0][0] - 1e-9 <= x <= knots[0][-1] + 1e-9

    def _transform(self, drop: float) -> float:
        """Where the curve is a line in ``log(summed)`` (slope ``power``)."""
        if not self.bounded:
            return math.log(max(drop, 1e-12))
        share = min(max(drop / self.ceiling, 1e-4), 1 - 1e-3)
        return math.log(-math.log1p(-share))

    def _untransform(self, y: float) -> float:
        if not self.bounded:
            return math.exp(y)
        return self.ceiling * -math.expm1(-math.exp(y))

    def _knots(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The measurements in the curve's linear space, made monotone (pooled where a larger
        sum measured less), one knot per distinct sum; None without any."""
        if not self.points or self.fitted_on == 0:
            return None  # only drops of 0: nothing measured to interpolate towards
        same: dict[float, list[float]] = {}  # one knot per distinct sum: their mean
        for s, d in self.points:
            same.setdefault(math.log(s), []).append(self._transform(d))
        pairs = sorted((x, float(np.mean(y))) for x, y in same.items())
        blocks: list[list[float]] = []  # [y sum, count], pooled until non-decreasing
        for _, y in pairs:
            blocks.append([y, 1.0])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                last = blocks.pop()
                blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1]]
        # a pooled block spans its sums: its value holds from its smallest to its largest
        xs, ys, start = [], [], 0
        for total, n in blocks:
            span = [x for x, _ in pairs[start : start + int(n)]]
            start += int(n)
            for edge in dict.fromkeys((span[0], span[-1])):
                xs.append(edge)
                ys.append(total / n)
        return np.array(xs), np.array(ys)

    def _curve(self, summed: float) -> float:
        if not self.bounded:
            return self.scale * summed**self.power
        if self.ceiling <= 0:
            return 0.0
        return self.ceiling * -math.expm1(-((self.scale * summed / self.ceiling) ** self.power))

    def inverse(self, drop: float) -> float:
        """The summed drop whose prediction is ``drop`` (inf: never reached)."""
        drop = max(float(drop), 0.0)
        if self.points and drop > 0:
            return self._search(drop)
        if not self.bounded:
            return (drop / self.scale) ** (1 / self.power)
        if drop >= self.ceiling:
            return math.inf
        return self.ceiling / self.scale * (-math.log1p(-drop / self.ceiling)) ** (1 / self.power)

    def _search(self, drop: float) -> float:
        """The inverse of the interpolated map: bisection on ``log(summed)`` (it is monotone)."""
        if self.bounded and drop >= self.ceiling:
            return math.inf
        low, high = -60.0, 60.0
        if self(math.exp(high)) < drop:
            return math.inf
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (mid, high) if self(math.exp(mid)) < drop else (low, mid)
        return math.exp(high)

    def value(self, baseline: float, drop: float) -> float:
        """The metric's value ``drop`` worse than ``baseline``."""
        return baseline + drop if lower_is_better(self.metric) else baseline - drop

    def refit(
        self, points: Sequence[tuple[float, float]], *, feature: str | None = None
    ) -> DropModel:
        """Fitted to joint measurements ``(summed, measured drop)``, where ``summed`` adds up
        ``feature`` (default: the one this model uses) over the layers; unchanged without any
        usable point (a summed drop of 0 says nothing about the bend)."""
        feature = feature or self.feature
        # the measurements this model was fitted to count too, where they sum the same thing
        points = [*(self.points if feature == self.feature else ()), *points]
        floor = self.ceiling * 0.005 if self.bounded else 1e-6
        # a drop of a sample or two is noise: it says nothing about the bend
        # every measurement is a knot to interpolate (a drop of 0 or at chance included) ...
        known = tuple((s, max(d, 0.0)) for s, d in points if s > 1e-12 and math.isfinite(d))
        usable = [(s, d) for s, d in known if d > floor]  # ... but not all bend the curve
        if self.bounded and self.ceiling > 0:
            # a drop at chance says only "at least this much": it bends no curve while a
            # measurement inside the range is there to fit
            inside = [(s, d) for s, d in usable if d < 0.97 * self.ceiling]
            usable = inside or usable
        if not usable or (self.bounded and self.ceiling <= 0):
            return replace(self, feature=feature, points=known) if known else self
        summed = np.array([s for s, _ in usable])
        drops = np.array([d for _, d in usable])
        if self.bounded:
            share = np.clip(drops / self.ceiling, 1e-4, 1 - 1e-3)
            x, y = np.log(summed / self.ceiling), np.log(-np.log1p(-share))
        else:
            x, y = np.log(summed), np.log(drops)
        power = 1.0
        if len(usable) >= 2 and np.ptp(x) > math.log(1.5):
            power = float(np.clip(np.polyfit(x, y, 1)[0], *_POWER))
        # y = power * (log a + x): the scale that fits best for this power
        if self.bounded:
            scale = math.exp(float(np.mean(y / power - x)))
        else:
            scale = math.exp(float(np.mean(y - power * x)))
        return DropModel(self.metric, self.ceiling, scale, power, len(usable), feature, known)
