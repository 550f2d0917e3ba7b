"""Figures people can read: plain decimal ticks on log axes spanning less than a decade, no minor
labels to collide, distinct hues and markers per architecture, titles that say what is drawn."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnip_scale.scaling.plots import MARKERS, PALETTE, _nice_ticks, arch_style, frontier_figure, readable_log_axis  # noqa: E402


def labels(ax, which):
    fig = ax.figure
    fig.canvas.draw()
    axis = ax.xaxis if which == "x" else ax.yaxis
    major = [t.get_text() for t in axis.get_majorticklabels() if t.get_text()]
    minor = [t.get_text() for t in axis.get_minorticklabels() if t.get_text()]
    return major, minor


def test_less_than_a_decade_gets_plain_ticks_and_no_minor_labels():
    fig, ax = plt.subplots()
    y = np.linspace(0.93, 1.5, 20)
    x = np.geomspace(2e4, 4.5e4, 20)
    ax.plot(x, y)
    ax.set(xscale="log", yscale="log")
    readable_log_axis(ax, "x", x)
    readable_log_axis(ax, "y", y)
    for which in ("x", "y"):
        major, minor = labels(ax, which)
        assert minor == [] and 2 <= len(major) <= 6, (which, major, minor)
        assert all("10^" not in t and "times" not in t for t in major), major
    assert labels(ax, "y")[0] == ["1", "1.2", "1.5"]
    assert labels(ax, "x")[0] == ["20000", "25000", "30000", "40000"]
    plt.close(fig)


def test_several_decades_keep_powers_of_ten_without_minor_labels():
    fig, ax = plt.subplots()
    x = np.geomspace(1e9, 1e12, 10)
    ax.plot(x, x)
    ax.set(xscale="log")
    readable_log_axis(ax, "x", x)
    major, minor = labels(ax, "x")
    assert minor == [] and any("10^{" in t for t in major), major
    plt.close(fig)


def test_nice_ticks_are_round_and_inside():
    t = _nice_ticks(0.93, 1.5)
    assert all(0.93 <= v <= 1.5 for v in t) and 1.0 in t and len(t) <= 6
    assert _nice_ticks(1.01, 1.09) == [1.01, 1.09]


def test_distinct_styles_and_honest_titles(tmp_path):
    styles = [arch_style(i) for i in range(len(PALETTE))]
    assert len({c for c, _ in styles}) == len(PALETTE) and len({m for _, m in styles}) == len(MARKERS)
    pts = {"arch": np.array(["a"] * 4 + ["b"] * 4), "C": np.geomspace(1e10, 8e10, 8), "loss": np.linspace(1.5, 0.9, 8),
           "H": np.full(8, np.nan)}
    fits = {"a": {"L_C": {"frontier": {"C": [1e10, 2e10], "loss": [1.5, 1.4]}}},
            "b": {"L_C": {"frontier": {"C": [5e10, 8e10], "loss": [1.0, 0.9]}}}}
    captured = {}
    original = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        captured["title"] = fig.axes[0].get_title()
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        frontier_figure(pts, fits, "L_C", str(tmp_path / "f.png"))
    finally:
        plt.Figure.savefig = original
    assert captured["title"] == "FLOPs-optimal frontier"  # nothing fitted: the title does not say "fitted"
