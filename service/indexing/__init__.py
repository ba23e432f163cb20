"""Offline indexing of a whole corpus (`tuwen index` / `tuwen load`): sources → Ray Data → Parquet → Milvus.

Modules: ``sources`` (what to index, as a plan of rows), ``model`` (the one place that touches the
bundle, preprocessing and engines), ``shards`` (the output directory: Parquet shards, the done-manifest,
report and summary), ``pipeline`` (Ray Data), ``load`` (shards → Milvus and thumbnails). Ray is imported
only by ``pipeline``, and only when a run starts: the serving image does not install it.
"""
