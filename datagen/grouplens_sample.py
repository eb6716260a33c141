"""Write a small GroupLens ``ml-1m``-layout dataset drawn from a latent model (for tests and
smoke runs of the MovieLens import path without downloading anything).

    python -m datagen.grouplens_sample OUT_DIR [--users 300] [--items 200] [--seed 0]

Files (latin-1, ``::``-separated, as GroupLens ships them): ``ratings.dat``
(``UserID::MovieID::Rating::Timestamp``), ``movies.dat`` (``MovieID::Title::Genre|Genre``) and
``users.dat`` (``UserID::Gender::Age::Occupation::Zip``; the importer ignores it).

Latent model, like :mod:`datagen.synth` but smaller: genres have unit centres; a movie's
vector is ``0.8 c_genre + 0.6 e``; a user likes 1–2 genres; a user rates the movies with the
highest ``affinity + popularity + Gumbel noise`` (no movie twice), stars are the affinity's
quintile, and ratings are spread over ~2 years in each user's own time order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

GENRES = "Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Horror Romance Sci-Fi".split()
DIM = 8
START = 978_300_000  # 2001-01-01, ml-1m's era


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_ml1m(out: str | Path, n_users: int = 300, n_items: int = 200, seed: int = 0, ratings_per_user: tuple[int, int] = (8, 40)) -> Path:
    """Write the three files into ``out`` (created); returns ``out``. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    centres = _unit(rng.normal(size=(len(GENRES), DIM)))
    genre = rng.integers(0, len(GENRES), n_items)
    second = np.where(rng.random(n_items) < 0.4, rng.integers(0, len(GENRES), n_items), -1)
    items = _unit(0.8 * centres[genre] + 0.6 * _unit(rng.normal(size=(n_items, DIM))))
    pop = np.log(1.0 / np.arange(1, n_items + 1) ** 1.05)[rng.permutation(n_items)]
    pop = (pop - pop.mean()) / pop.std()
    lines = []
    for u in range(n_users):
        fav = rng.choice(len(GENRES), rng.integers(1, 3), replace=False)
        vec = _unit(0.8 * _unit(centres[fav].mean(0)) + 0.6 * _unit(rng.normal(size=DIM)))
        affinity = 3.0 * items @ vec
        n = min(int(rng.integers(*ratings_per_user)), n_items // 2)
        chosen = np.argsort(-(affinity + 0.7 * pop + rng.gumbel(size=n_items)))[:n]
        stars = np.clip(np.digitize(affinity[chosen], [-1.0, 0.0, 0.8, 1.6]) + 1, 1, 5)
        t = START + int(rng.integers(0, 600 * 86_400)) + np.cumsum(rng.integers(60, 3 * 86_400, n))
        for i, s, ts in zip(chosen, stars, t, strict=True):
            lines.append(f"{u + 1}::{i + 1}::{int(s)}::{int(ts)}")
    (out / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    movies = []
    for i in range(n_items):
        names = [GENRES[genre[i]]] + ([GENRES[second[i]]] if second[i] >= 0 and second[i] != genre[i] else [])
        movies.append(f"{i + 1}::Movie {i + 1} ({1960 + i % 40})::{'|'.join(names)}")
    (out / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    users = [f"{u + 1}::{'MF'[u % 2]}::{[1, 18, 25, 35, 45, 50, 56][u % 7]}::{u % 21}::{10000 + u}" for u in range(n_users)]
    (out / "users.dat").write_text("\n".join(users) + "\n", encoding="latin-1")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(write_ml1m(a.out, a.users, a.items, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
