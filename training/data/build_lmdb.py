"""Build the Chinese-CLIP LMDB (`lmdb/{split}/imgs`, `lmdb/{split}/pairs`) from the TSV/JSONL files.

    python -m training.data.build_lmdb --data-dir DIR --splits train,valid [--lmdb-dir DIR/lmdb]

Same layout and values as the official `build_lmdb_dataset.py`, streamed line by line, with a clear error
naming the file and line of a malformed record.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

from training.data.records import DataError, LineIndex

_COMMIT_EVERY = 1000
_MAP_SIZE = 1 << 40  # virtual reservation only; LMDB grows the file as needed


def build_split(data_dir: Path, split: str, lmdb_dir: Path) -> tuple[int, int]:
    """Write one split; returns (number of pairs, number of images)."""
    import lmdb

    out = lmdb_dir / split
    out.mkdir(parents=True, exist_ok=True)
    texts = LineIndex.build(data_dir / f"{split}_texts.jsonl")
    with lmdb.open(str(out / "pairs"), map_size=_MAP_SIZE) as env:
        txn, n_pairs = env.begin(write=True), 0
        for i in range(len(texts)):
            record = texts.read_json(i)
            if not all(key in record for key in ("text_id", "text", "image_ids")):
                raise DataError(f"{texts.where(i)}: needs text_id, text and image_ids")
            for image_id in record["image_ids"]:
                txn.put(str(n_pairs).encode(), pickle.dumps((image_id, record["text_id"], record["text"])))
                n_pairs += 1
                if n_pairs % _COMMIT_EVERY == 0:
                    txn.commit()
                    txn = env.begin(write=True)
        txn.put(b"num_samples", str(n_pairs).encode())
        txn.commit()
    images_path = data_dir / f"{split}_imgs.tsv"
    with lmdb.open(str(out / "imgs"), map_size=_MAP_SIZE) as env, open(images_path, "rb") as handle:
        txn, n_images = env.begin(write=True), 0
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            image_id, sep, payload = line.partition(b"\t")
            if not sep or not payload:
                raise DataError(f"{images_path}:{number}: expected `image_id<TAB>base64`")
            txn.put(image_id, payload)
            n_images += 1
            if n_images % _COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"num_images", str(n_images).encode())
        txn.commit()
    return n_pairs, n_images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="holds {split}_imgs.tsv, {split}_texts.jsonl"
    )
    parser.add_argument("--splits", required=True, help="comma-separated, e.g. train,valid,test")
    parser.add_argument("--lmdb-dir", type=Path, default=None, help="default: DATA_DIR/lmdb")
    args = parser.parse_args(argv)
    lmdb_dir = args.lmdb_dir or args.data_dir / "lmdb"
    for split in [s for s in args.splits.split(",") if s]:
        n_pairs, n_images = build_split(args.data_dir, split, lmdb_dir)
        print(f"{split}: {n_pairs} pairs, {n_images} images -> {lmdb_dir / split}")


if __name__ == "__main__":
    main()
