"""Stage translate: source data → data/interim/translated.jsonl (the English view of each document).

    python stages/translate.py

``data.format: cmnee`` reads CMNEE documents (one JSON file, or the release folder with its
train/valid/test splits) and translates zh→en with the backends of ``translate.backends``, in order.
Machine translations are kept in data/interim/translation_cache.json across runs (a DVC
``persist`` output), so adding documents translates only the new segments.
``data.format: alpaca`` reads the user's own {instruction, input, output} JSON/JSONL and only
validates and groups it: there is nothing to translate. Its own splits (a folder of train/validation/test
files, or a ``split`` field per record) are kept, after checking that no context is in two of them.
"""

from collections import Counter
from pathlib import Path

from ftbench.cmnee import load_corpus
from ftbench.io import write_json, write_jsonl
from ftbench.params import load_params
from ftbench.stage import main, parser
from ftbench.translate import CacheBackend, document_segments, make_backends, translate_document, translate_segments
from ftbench.userdata import alpaca_documents, check_split_overlap, load_user_data

OUT = Path("data/interim/translated.jsonl")
CACHE = Path("data/interim/translation_cache.json")
STATS = Path("data/interim/translate_stats.json")


def run() -> None:
    args = parser(__doc__).parse_args()
    params = load_params(args.params)
    counts: Counter = Counter()
    cache = CacheBackend(CACHE, params.translate.marian_model)  # persist output, rewritten by every run
    table: dict = {}
    if params.data.format == "alpaca":
        records = load_user_data(params.data.raw, params.data.encoding)
        splits = [split for _, _, split in records]
        rows = alpaca_documents([rec for rec, _, _ in records], splits if splits[0] else None)
        stats = {"documents": len(rows), "records": len(records), "translated": False}
        if splits[0]:  # the user's own splits, used as given
            stats["split_overlap"] = check_split_overlap(records, params.data.allow_split_overlap)
    else:
        corpus = load_corpus(params.data.raw, params.data.encoding, counts)
        backends = make_backends(params.translate.backends, memory=params.translate.memory,
                                 marian_model=params.translate.marian_model, batch_size=params.translate.batch_size,
                                 cache=cache)
        table = translate_segments([s for d, _ in corpus for s in document_segments(d)], backends)
        rows = []
        for doc, split in corpus:
            row = translate_document(doc, table)
            if split:
                row["split"] = split
            rows.append(row)
        by_backend = Counter(backend for _, backend in table.values())
        stats = {"documents": len(rows), "segments": len(table), "by_backend": dict(sorted(by_backend.items())),
                 "translated": True}
    stats["dropped"] = dict(sorted(counts.items()))
    cache.update(table)
    write_jsonl(OUT, rows)
    write_json(STATS, stats)
    print(f"{params.data.format}: {len(rows)} documents -> {OUT}", stats.get("by_backend", ""))


if __name__ == "__main__":
    main(run)
