"""Plots of refusal rates, for the evaluate stage and `python -m rlaif.evaluate` (PNG, Agg backend).

- `plot_harmless_helpful`: the CAI paper's harmlessness-against-helpfulness view
  (Bai et al. 2022, Fig. 2 and 8), measured by refusals: x is how often a model declines
  red-team prompts (higher: more harmless, or more evasive), y is how often it
  answers benign prompts (1 - their refusal rate; higher: more helpful), one marker per
  benign set: task-style helpfulness requests and sensitive-but-benign ones. The ideal
  model sits top right: it declines harmful requests and answers benign ones.
- `plot_refusal_bars`: refusal rate per model, one bar per prompt set, for any sets.

matplotlib is imported inside each function, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# model -> set -> refusal rate in [0, 1].
Refusal = Mapping[str, Mapping[str, float]]


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = ("o", "s", "^", "D", "v")


def plot_harmless_helpful(
    refusal: Refusal, path: Path, harmful_set: str = "red_team", helpful_sets: tuple[str, ...] = ("helpful",)
) -> Path:
    """Per model and benign set, a point (refusal rate on `harmful_set`, 1 - refusal rate on that set).

    One marker shape per benign set in `helpful_sets` (a legend names them), one colour per
    model, and a line joins a model's points, so task-style helpfulness and the answering
    of sensitive requests read off the same axes.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    try:
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (model, by_set) in enumerate(refusal.items()):
            colour = colours[i % len(colours)]
            x = by_set[harmful_set]
            ys = [1.0 - by_set[name] for name in helpful_sets]
            if len(ys) > 1:
                ax.plot([x] * len(ys), ys, color=colour, alpha=0.4, zorder=2)
            for j, (name, y) in enumerate(zip(helpful_sets, ys, strict=True)):
                label = name if i == 0 else None
                ax.scatter([x], [y], s=60, zorder=3, color=colour, marker=MARKERS[j % len(MARKERS)], label=label)
            ax.annotate(model, (x, max(ys)), textcoords="offset points", xytext=(6, 6), color=colour)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(f"harmlessness: refusal rate on {harmful_set} prompts")
        ax.set_ylabel("helpfulness: 1 - refusal rate on the benign set")
        ax.legend(title="benign set", loc="lower left")
        ax.set_title("Harmlessness against helpfulness (top right is best)")
        ax.grid(True, alpha=0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_refusal_bars(refusal: Refusal, path: Path) -> Path:
    """Grouped bars: for each model, its refusal rate on each prompt set."""
    plt = _pyplot()
    models = list(refusal)
    sets = list(dict.fromkeys(s for by_set in refusal.values() for s in by_set))
    width = 0.8 / max(1, len(sets))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 * len(models) * max(1, len(sets)) ** 0.5), 4.5))
    try:
        for j, name in enumerate(sets):
            xs = [i + (j - (len(sets) - 1) / 2) * width for i in range(len(models))]
            ax.bar(xs, [refusal[m].get(name, 0.0) for m in models], width, label=Path(name).name or name)
        ax.set_xticks(range(len(models)), [Path(m).name or m for m in models], rotation=20, ha="right")
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("refusal rate")
        ax.set_title("Refusal rate per model and prompt set")
        ax.legend(title="prompt set", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(True, axis="y", alpha=0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
