"""Nearest neighbours by cosine similarity in the shared embedding space.

`NeighbourIndex(embedding)` indexes unit vectors (N, D) with faiss (`faiss-cpu`): an
exact inner-product index (`IndexFlatIP`) up to `EXACT_MAX_ROWS` rows, an HNSW graph
(approximate, recall@10 ~0.99) above; without faiss it falls back to scikit-learn's
brute-force `NearestNeighbors` (exact, slower). Cosine = inner product of unit vectors.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXACT_MAX_ROWS", "NeighbourIndex", "knn_mean_distance", "unit_rows"]

# Up to this many indexed rows the search is exact; above, faiss HNSW (approximate).
EXACT_MAX_ROWS = 200_000
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128


def unit_rows(x) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim == 1:
        x = x[None, :]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class NeighbourIndex:
    """k-nearest-neighbour search by cosine similarity over unit vectors (N, D)."""

    def __init__(self, embedding, *, backend: str | None = None):
        self.embedding = unit_rows(embedding)
        self.backend = backend or _default_backend()
        n, dim = self.embedding.shape
        if self.backend == "faiss":
            import faiss

            if n <= EXACT_MAX_ROWS:
                self._index = faiss.IndexFlatIP(dim)
            else:
                self._index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
                self._index.hnsw.efSearch = HNSW_EF_SEARCH
            self._index.add(self.embedding)
        elif self.backend == "sklearn":
            from sklearn.neighbors import NearestNeighbors

            self._index = NearestNeighbors(metric="cosine", algorithm="brute").fit(self.embedding)
        else:
            raise ValueError(f"unknown neighbour backend {self.backend!r} (faiss or sklearn)")

    def __len__(self) -> int:
        return len(self.embedding)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions (Q, k) int64, cosine similarities (Q, k)), most similar first."""
        queries = unit_rows(queries)
        k = min(int(k), len(self))
        if k < 1:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        if self.backend == "faiss":
            similarity, positions = self._index.search(queries, k)
            return positions.astype(np.int64), similarity
        distance, positions = self._index.kneighbors(queries, n_neighbors=k)
        return positions.astype(np.int64), (1.0 - distance).astype(np.float32)


def _default_backend() -> str:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "sklearn"
    return "faiss"


def knn_mean_distance(embedding, k: int = 10, *, batch: int = 8192,
                      backend: str | None = None) -> np.ndarray:
    """Mean cosine distance (1 - cos) of each row to its k nearest other rows (N,).

    High = the object sits in a sparse region of the shared space.
    """
    index = NeighbourIndex(embedding, backend=backend)
    n = len(index)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    k = min(k, n - 1)
    for start in range(0, n, batch):
        positions, similarity = index.search(index.embedding[start:start + batch], k + 1)
        own = positions == np.arange(start, min(start + batch, n))[:, None]
        # drop the row itself (or, if ties hide it, the last neighbour)
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(keep)), drop] = False
        out[start:start + batch] = (1.0 - similarity[keep].reshape(len(keep), k)).mean(axis=1)
    return out
