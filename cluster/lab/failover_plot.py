"""A failover you can see: each trial's client timeline and the outage distribution, as a PNG.

`raylb lab failover --plot FILE.png` and `raylb demo` draw what the client saw around each
failure: every request (a dot coloured by the node that answered, a cross when none did), the
moment the node was failed, the moment the node that took over declared it dead (from that
speaker's status, `peer_deaths`), and the first answer from the new node. Below, the outages of
all trials, per family.

Every time is CLOCK_MONOTONIC, shared by every process on the machine (the prober, the
speakers, this driver), so the marks line up without any clock correction; the timelines are
drawn relative to the failure.

The PNG carries its trials as JSON in a text chunk (`TRIALS_KEY`), so a test can check which
trials a picture shows without reading pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylb.cluster.lab.failover_probe import Outage, Sample

TRIALS_KEY = "raylb-trials"
# Timeline window around the failure: a little before, and a little after the first answer.
BEFORE_S = 0.3
AFTER_S = 0.3
ROW_HEIGHT_IN = 1.0
FAILED_COLOUR = "0.6"
NODE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


@dataclass(frozen=True)
class Timeline:
    """One family of one trial: what the client saw around one failure."""

    trial: int  # 1-based
    family: str  # "ipv4" / "ipv6"
    mode: str  # "kill", "link", "graceful"
    victim: str
    vip: str
    event_s: float  # when the node was failed
    samples: tuple[Sample, ...]
    outage: Outage | None
    detected_s: float | None = None  # when the node that took over declared the victim dead

    def summary(self) -> dict[str, Any]:
        return {
            "trial": self.trial, "family": self.family, "mode": self.mode, "victim": self.victim, "vip": self.vip,
            "outage_s": None if self.outage is None else round(self.outage.duration_s, 4),
            "after": None if self.outage is None else self.outage.after,
            "detected_after_s": None if self.detected_s is None else round(self.detected_s - self.event_s, 4),
        "first_new_answer_after_s": None if (f := first_answer_from_new_node(self)) is None else round(f - self.event_s, 4),
        }  # fmt: skip


def plot_png(timelines: Sequence[Timeline], path: Path, *, title: str) -> Path:
    """Draw the timelines and the outage distribution into `path` (PNG); returns it."""
    import matplotlib  # noqa: PLC0415 - lab tooling only; never on a node

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    nodes = sorted({s.node for t in timelines for s in t.samples if s.node})
    colour = {n: NODE_COLOURS[i % len(NODE_COLOURS)] for i, n in enumerate(nodes)}
    rows = len(timelines)
    fig, axes = plt.subplots(
        rows + 1, 1, figsize=(10, ROW_HEIGHT_IN * rows + 3), squeeze=False,
        gridspec_kw={"height_ratios": [1] * rows + [2.5]},
    )  # fmt: skip
    for ax, t in zip(axes[:-1, 0], timelines):
        _timeline(ax, t, colour)
    axes[-2, 0].set_xlabel("seconds since the failure (client requests every 10 ms)")
    _distribution(axes[-1, 0], timelines)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f"answered by {n}") for n, c in colour.items()]
    handles += [
        plt.Line2D([], [], marker="x", ls="", color=FAILED_COLOUR, label="no answer"),
        plt.Line2D([], [], color="red", label="node failed"),
        plt.Line2D([], [], color="darkorange", ls="--", label="death detected by the new node"),
        plt.Line2D([], [], color="green", ls=":", label="first answer from the new node"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False, title=title, title_fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / fig.get_figheight()))  # room for the legend
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80, metadata={TRIALS_KEY: json.dumps([t.summary() for t in timelines])})
    plt.close(fig)
    return path


def first_answer_from_new_node(t: Timeline) -> float | None:
    """When the node that took over first answered after the failure (None: it never did)."""
    if t.outage is None or t.outage.after is None:
        return None
    return next((s.t for s in sorted(t.samples, key=lambda s: s.t) if s.ok and s.t > t.event_s and s.node == t.outage.after), None)


def _timeline(ax: Any, t: Timeline, colour: dict[str, str]) -> None:
    first_new = first_answer_from_new_node(t)
    marks = [m for m in (first_new, t.detected_s, t.outage.end_s if t.outage else None) if m is not None]
    start_s, stop_s = t.event_s - BEFORE_S, max(marks, default=t.event_s + 1.0) + AFTER_S
    shown = [s for s in t.samples if start_s <= s.t <= stop_s]
    for node, c in colour.items():
        xs = [s.t - t.event_s for s in shown if s.ok and s.node == node]
        ax.plot(xs, [0] * len(xs), "o", ms=3, color=c)
    failed = [s.t - t.event_s for s in shown if not s.ok]
    ax.plot(failed, [0] * len(failed), "x", ms=3, color=FAILED_COLOUR)
    ax.axvline(0, color="red")
    if t.detected_s is not None:
        ax.axvline(t.detected_s - t.event_s, color="darkorange", ls="--")
    if first_new is not None:
        ax.axvline(first_new - t.event_s, color="green", ls=":")
    ax.set_xlim(-BEFORE_S, stop_s - t.event_s)
    ax.set_yticks([])
    outage = "no takeover" if t.outage is None else f"outage {t.outage.duration_s * 1000:.0f} ms -> {t.outage.after}"
    ax.set_title(f"trial {t.trial} {t.family} {t.mode} {t.victim} ({t.vip}): {outage}", fontsize=8, loc="left")


def _distribution(ax: Any, timelines: Sequence[Timeline]) -> None:
    groups: dict[str, list[float]] = {}
    for t in timelines:
        if t.outage is not None:
            label = t.family if t.mode != "graceful" else f"{t.family} graceful"
            groups.setdefault(label, []).append(t.outage.duration_s * 1000)
    labels = sorted(groups)
    if labels:
        ax.boxplot([groups[k] for k in labels], orientation="horizontal", whis=(0, 100))
        for i, k in enumerate(labels, start=1):
            ax.plot(groups[k], [i] * len(groups[k]), "o", ms=4, alpha=0.6, color="tab:blue")
        ax.set_yticks(range(1, len(labels) + 1), [f"{k} (n={len(groups[k])})" for k in labels])
    ax.set_xlabel("client-observed outage per trial (ms)")
    ax.set_title("outage distribution per family", fontsize=9, loc="left")


def read_trials(path: Path) -> list[dict[str, Any]]:
    """The trials a PNG written by `plot` shows (its text chunk)."""
    from PIL import Image  # noqa: PLC0415 - comes with matplotlib

    with Image.open(path) as image:
        if image.format != "PNG":
            raise ValueError(f"{path}: a {image.format} image, not a PNG")
        return list(json.loads(image.info[TRIALS_KEY]))
