"""Image embeddings and what they make possible: similarity search, near-duplicates, outliers, a map.

- :mod:`.store`: the append-only float16 matrices beside the store, keyed by image checksum;
- :mod:`.compute`: open_clip image / text features, batched and resumable (the ``embed`` job);
- :mod:`.vectors`: stored rows matched to a dataset's current images and garment crops;
- :mod:`.index`: FAISS search, exact below a few thousand rows, IVF with measured recall above;
- :mod:`.search`: "more like this" and text search;
- :mod:`.duplicates`: duplicate groups (checksum, difference hash, cosine) and keep-one review;
- :mod:`.outliers`: images far from their category, crops that look like another category;
- :mod:`.decisions`: the curator decisions these record, which export honours;
- :mod:`.projection`: the 2-D map (UMAP, PCA fallback).
"""
