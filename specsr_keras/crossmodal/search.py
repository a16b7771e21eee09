"""`find_similar`: the library side of `specsr similar` (query parsing, search, mosaic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsr_keras.crossmodal.neighbours import NeighbourIndex
from specsr_keras.crossmodal.store import read_embeddings

__all__ = ["find_similar"]


def find_similar(index_path, query: str, *, k: int = 10, cross_modal=None, png=None) -> dict:
    """Neighbours of `query` (an id of index_path, or a .npy of embeddings).

    Returns {"rows": [{query, rank, object_id, cosine}], "searched", "backend"}; the
    query object itself is left out when searching its own index.
    """
    source = read_embeddings(index_path)
    searched = read_embeddings(cross_modal) if cross_modal else source
    if str(query).endswith(".npy") and Path(query).is_file():
        vectors = np.load(query).astype(np.float32)
        vectors = vectors[None, :] if vectors.ndim == 1 else vectors
        labels, own = [f"{Path(query).name}[{i}]" for i in range(len(vectors))], None
    else:
        position = source.position(query)
        vectors, labels = source.embedding[position:position + 1], [str(query)]
        own = str(query) if searched is source else None
    if vectors.shape[1] != searched.embedding.shape[1]:
        raise ValueError(f"query embeddings have {vectors.shape[1]} dimensions, the index "
                         f"{searched.embedding.shape[1]}")
    nn = NeighbourIndex(searched.embedding)
    positions, similarity = nn.search(vectors, k + (own is not None))
    rows = []
    for label, pos_row, sim_row in zip(labels, positions, similarity, strict=True):
        kept = [(p, s) for p, s in zip(pos_row, sim_row, strict=True)
                if p >= 0 and searched.ids[p] != own][:k]
        rows += [{"query": label, "rank": rank, "object_id": str(searched.ids[p]),
                  "cosine": float(s), "position": int(p)}
                 for rank, (p, s) in enumerate(kept, start=1)]
    if png:
        _mosaic(source, searched, query, labels, rows, png)
    return {"rows": rows, "searched": str(cross_modal or index_path), "backend": nn.backend}


def _mosaic(source, searched, query, labels, rows, png) -> None:
    from specsr_keras.crossmodal.plots import mosaic, object_views

    views, titles = [], []
    if labels == [str(query)]:
        views += object_views(source, [source.position(query)])
        titles.append(f"query {query}")
    views += object_views(searched, [r["position"] for r in rows])
    titles += [f"{r['object_id']} cos={r['cosine']:.3f}" for r in rows]
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    mosaic(views, titles, png, title=f"neighbours of {query}")
