"""How much a night of the SAME labels "drifts" by sampling alone, against a night of OTHER labels: the numbers
behind pca.DEFAULT_MIN_DRIFT_ROWS and DEFAULT_DRIFT_THRESHOLD (docs/choices.md §7).

    .venv/bin/python benchmarks/pca_drift_noise.py --features <featurize output of ../shared's sample>

For a basis fitted (0.95 of the variance) on m random photos and a night of n others, prints the captured-share
drop (mean ± std [min, max] over the draws), the mean shift and k. Plain numpy (SVD of the m rows), the drift
figures of pca.measure_drift.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def fit(rows: np.ndarray, variance: float = 0.95):
    mean = rows.mean(0)
    _, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
    spectrum = s**2 / (s**2).sum()
    k = int(np.searchsorted(np.cumsum(spectrum), variance - 1e-9) + 1)
    return mean, vt[:k].T, np.cumsum(spectrum)[k - 1], np.sqrt((s**2).sum() / (len(rows) - 1))


def drift(basis, night: np.ndarray) -> tuple[float, float, int]:
    mean, components, at_fit, spread = basis
    centred = night - night.mean(0)
    captured = ((centred @ components) ** 2).sum() / (centred**2).sum()
    return at_fit - captured, float(np.linalg.norm(night.mean(0) - mean) / spread), components.shape[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", required=True)
    parser.add_argument("--draws", type=int, default=6)
    args = parser.parse_args(argv)
    frame = pd.read_parquet(args.features, columns=["path", "label", "features"]).sort_values("path")
    X, labels = np.stack(frame.features.to_numpy()).astype(np.float64), frame.label.to_numpy()
    first = np.isin(labels, sorted(set(labels))[: len(set(labels)) // 2])
    rng = np.random.default_rng(0)
    for kind, sizes in (("same", (66, 132, 200, 320, 480)), ("other", (66, 240, 480))):
        for m in sizes:
            for n in (24, 66, 240, 480):
                if kind == "same" and m + n > len(X):
                    continue
                figures = []
                for _ in range(args.draws):
                    pool = rng.permutation(np.where(first)[0] if kind == "other" else np.arange(len(X)))
                    night = rng.permutation(np.where(~first)[0])[:n] if kind == "other" else pool[m : m + n]
                    figures.append(drift(fit(X[pool[:m]]), X[night]))
                a = np.array(figures)
                print(
                    f"{kind:5s} m={m:4d} n={n:4d} drop {a[:, 0].mean():.3f} ± {a[:, 0].std():.3f} "
                    f"[{a[:, 0].min():.3f}, {a[:, 0].max():.3f}] shift {a[:, 1].mean():.3f} k {a[:, 2].mean():.0f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
